"""Shards: the unit of work of ``data generate`` that is saved, resumed and split between processes.

The prompt pairs are cut into shards of ``shard_size`` consecutive pairs. Shard ``s`` belongs to process
``s % world_size``, so the processes of ``accelerate launch`` take disjoint shards, and the shards, not
the processes, fix the batches: a run on one process and on four make the same rows.

A finished shard is two files in the shard folder ``.<output_dir name>.shards`` beside ``output_dir``:
``shard-NNNNN.parquet`` (its rows; absent when none was accepted) and ``shard-NNNNN.json`` (what best-of-n
decided for each of its prompt pairs), each written under a temporary name and renamed, the JSON last: a
shard is finished when its JSON is there. ``plan.json`` records the settings the shards were made with; a
resume with other settings is refused with the differences listed. The main process merges the shards, in
shard order, into one dataset and removes the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from pluralign.data.pairs import FEATURES as PAIR_FEATURES

PLAN = "plan.json"
PLAN_VERSION = 1

# the pair schema of `data build` plus where each row came from
FEATURES = datasets.Features({
    **PAIR_FEATURES,
    "generator": datasets.Value("string"),
    "scorer": datasets.Value("string"),
    "seeds": datasets.List(datasets.Value("int64")),
    "chosen_seed": datasets.Value("int64"),
    "rejected_seed": datasets.Value("int64"),
    "chosen_score": datasets.Value("float64"),
    "rejected_score": datasets.Value("float64"),
    "chosen_content": datasets.Value("float64"),
    "rejected_content": datasets.Value("float64"),
})
PROVENANCE = tuple(k for k in FEATURES if k not in PAIR_FEATURES)


def shard_dir_for(output_dir: str | Path) -> Path:
    out = Path(output_dir)
    return out.parent / f".{out.name}.shards"


def shard_ranges(n_rows: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of every shard: consecutive prompt pairs, the last shard possibly shorter."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return [(s, min(s + shard_size, n_rows)) for s in range(0, n_rows, shard_size)]


def shards_of_process(n_shards: int, rank: int, world_size: int) -> list[int]:
    """The shards process ``rank`` of ``world_size`` generates: every ``world_size``-th, from ``rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    return list(range(rank, n_shards, world_size))


def _files(shard_dir: Path, index: int) -> tuple[Path, Path]:
    return shard_dir / f"shard-{index:05d}.parquet", shard_dir / f"shard-{index:05d}.json"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_shard(shard_dir: Path, index: int, rows: list[dict], log: dict) -> None:
    """Save one finished shard: its rows, then its log (the log's presence marks the shard finished)."""
    data, meta = _files(shard_dir, index)
    if rows:
        table = pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)
        _atomic_write(data, lambda p: pq.write_table(table, p))
    log = {**log, "shard": index, "n_rows": len(rows)}
    _atomic_write(meta, lambda p: p.write_text(json.dumps(log, indent=1), encoding="utf-8"))


def read_log(shard_dir: Path, index: int) -> dict | None:
    """The log of a finished shard, or None if the shard is not finished (or its files do not agree)."""
    data, meta = _files(shard_dir, index)
    try:
        log = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if log.get("n_rows"):
        try:
            if pq.ParquetFile(data).metadata.num_rows != log["n_rows"]:
                return None
        except (OSError, pa.ArrowException):
            return None
    return log


def finished_shards(shard_dir: Path, n_shards: int) -> set[int]:
    return {i for i in range(n_shards) if read_log(shard_dir, i) is not None}


def _flat(plan: dict) -> dict:
    """The plan with its ``settings`` (the options) at the top, as a user names them."""
    return {**{k: v for k, v in plan.items() if k != "settings"}, **plan.get("settings", {})}


def plan_differences(old: dict, new: dict) -> list[str]:
    """``option: old -> new`` for every recorded setting that differs."""
    old, new = _flat(old), _flat(new)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def with_added_defaults(old: dict | None, plan: dict, defaults: dict) -> dict | None:
    """``old`` with the settings it lacks filled in from ``plan`` where ``plan`` has the option's default: an
    option added after the interrupted run started, left at its default, is what that run did."""
    if old is None:
        return None
    recorded, now = old.get("settings", {}), plan.get("settings", {})
    added = {k: v for k, v in now.items() if k not in recorded and k in defaults and v == defaults[k]}
    return {**old, "settings": {**recorded, **added}} if added else old


def prepare(shard_dir: Path, plan: dict, n_shards: int, resume: bool,
            defaults: dict | None = None) -> tuple[int, list[str]]:
    """Make the shard folder ready for ``plan``; returns (finished shards kept, notes for the user).

    With ``resume``, the shards of an interrupted run with the same plan are kept; other settings are an
    error listing each difference (a setting the old plan lacks counts as its ``defaults`` value). Without it,
    whatever was there is removed."""
    notes = []
    plan = json.loads(json.dumps({"version": PLAN_VERSION, **plan}))  # as it reads back from the file
    if shard_dir.exists():
        try:
            old = json.loads((shard_dir / PLAN).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None  # no readable record of what the shards are: they cannot be trusted
        old = with_added_defaults(old, plan, json.loads(json.dumps(defaults or {})))
        kept = finished_shards(shard_dir, n_shards) if old is not None else set()
        if resume and old == plan:
            for tmp in shard_dir.glob(".*.tmp-*"):  # a writer killed between its write and its rename
                with contextlib.suppress(OSError):
                    tmp.unlink()
            return len(kept), [f"resuming: {len(kept)} of {n_shards} shards are finished ({shard_dir})"] if kept else []
        if resume and old is not None:
            changes = "\n  ".join(plan_differences(old, plan))
            raise ValueError(f"{shard_dir / PLAN}: an interrupted run with other settings left {len(kept)} finished "
                             f"shards here:\n  {changes}\nRestore those settings to resume it, or pass --resume "
                             "false to discard its shards and start over")
        shutil.rmtree(shard_dir)
        if kept:
            notes.append(f"resume false: removed the {len(kept)} finished shards of an earlier run ({shard_dir})")
    shard_dir.mkdir(parents=True)
    (shard_dir / PLAN).write_text(json.dumps(plan, indent=1, sort_keys=True), encoding="utf-8")
    return 0, notes


def merged_rows(shard_dir: str, n_shards: int) -> Iterator[dict]:
    """Every row of every finished shard, in shard order (``datasets.Dataset.from_generator``)."""
    for i in range(n_shards):
        data, _ = _files(Path(shard_dir), i)
        if not data.exists():
            continue
        for batch in pq.ParquetFile(data).iter_batches(batch_size=64):
            yield from batch.to_pylist()


def merged_logs(shard_dir: Path, n_shards: int) -> list[dict]:
    """The logs of all shards, in order; a missing one is an error naming it (every process must have finished)."""
    logs = []
    for i in range(n_shards):
        log = read_log(shard_dir, i)
        if log is None:
            raise RuntimeError(f"{_files(shard_dir, i)[1]}: shard {i} is not finished; rerun the command to generate "
                               "the missing shards (finished ones are kept)")
        logs.append(log)
    return logs
