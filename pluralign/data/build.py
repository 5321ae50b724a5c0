"""``pluralign data build``: sources -> mixed pairs -> a saved ``datasets.Dataset`` with a card.

The dataset is generated into a temporary folder beside ``output_dir`` and renamed into place only
when complete, so a failed or interrupted build leaves neither a half-written dataset nor a damaged
previous one. The temporary folder's name holds the host and process id of its build: a build that
was killed cannot remove it, so the next build into the same parent folder does.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import socket
import sys
import uuid
from collections import Counter
from pathlib import Path

import datasets
import yaml

from ..config import to_dict, writable_dir
from ..hub import require_model
from . import sources as S
from .config import DataConfig
from .pairs import FEATURES, ORIGIN, generate_rows


def _find_cause(exc: BaseException, test) -> BaseException | None:
    """The first exception in ``exc``'s chain that passes ``test``: datasets wraps what the row
    generator raises in its own errors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if test(exc):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _find_data_error(exc: BaseException) -> S.DataError | None:
    return _find_cause(exc, lambda e: isinstance(e, S.DataError))


def _disk_full(exc: BaseException) -> OSError | None:
    return _find_cause(exc, lambda e: isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))


# ---------------------------------------------------------------- temporary folders
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _temp_name(out: Path, what: str) -> Path:
    return out.parent / f".{out.name}.{what}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def clean_stale_temps(parent: Path) -> list[str]:
    """Remove what killed builds into ``parent`` left behind; returns what was done, one line each.

    A ``.tmp-`` folder is a half-written dataset. An ``.old-`` folder is a previous dataset moved aside
    for the swap: when its output is missing, the build was killed between the two renames and the
    folder is put back; otherwise it is garbage. Only folders of this host's dead processes are
    touched: a live build, or one on another host sharing the folder, keeps its own."""
    done = []
    if not parent.is_dir():
        return done
    host = _host()
    for d in sorted(parent.iterdir()):
        m = _TEMP.match(d.name)
        if not m or not d.is_dir() or m["host"] != host or _alive(int(m["pid"])):
            continue
        out = parent / m["name"]
        if m["what"] == "old" and not out.exists():
            os.replace(d, out)
            done.append(f"restored {out} from {d.name}, left by process {m['pid']} (no longer running)")
        else:
            shutil.rmtree(d, ignore_errors=True)
            done.append(f"removed {d}, left by process {m['pid']} (no longer running)")
    return done


def _logged_error(logs: Path) -> S.DataError | None:
    """The earliest bad row a worker process stopped at (exceptions lose their type between processes)."""
    errors = [json.loads(f.read_text()) for f in logs.glob("error-*.json")]
    if not errors:
        return None
    e = min(errors, key=lambda e: (e["row"] is None, e["row"] if isinstance(e["row"], int) else 0))
    return S.DataError(e["source"], e["row"], e["field"], e["problem"], e["kind"], e.get("file"), e.get("line"))


def _nothing_built(logs: Path, cfg: DataConfig) -> S.DataError | None:
    """Every row skipped: ``datasets`` then fails with an error of its own ("corresponds to no data") that names
    neither the sources nor the skips; this says both."""
    shards = [json.loads(f.read_text()) for f in logs.glob("shard-*.json")]
    skipped = [r for log in shards for r in log["skipped"]]
    built = sum(v for log in shards for k, v in log["stats"].items() if k.startswith(ORIGIN) and isinstance(v, int))
    if len(shards) < cfg.num_proc or built or not skipped:  # some shard did not finish, or rows were made: not this
        return None
    kinds = Counter(r.get("kind", "invalid") for r in skipped)
    first = skipped[0]
    return S.DataError(", ".join(cfg.sources), None, None,
                       f"no row could be built: all {len(skipped)} rows were skipped ("
                       + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
                       + f"; the first: {first.get('source')} row {first.get('row')}, {first.get('problem')}); "
                       "fix the rows (`pluralign data validate SOURCE` lists each) or add a source", kind="no_rows")


def _built_kinds(src: S.Source) -> Counter | None:
    """Rows per ``kind`` of a built pair dataset on disk (its ``kind`` column alone is read); None for a hub
    dataset, which would have to be streamed to tell."""
    if src.kind == "disk":
        return Counter(datasets.load_from_disk(src.spec).data.column("kind").to_pylist())
    if src.kind == "parquet":
        import pyarrow.parquet as pq

        return Counter(k for f in S._parquet_files(Path(src.spec)) for k in pq.read_table(f, columns=["kind"])
                       .column("kind").to_pylist())
    return None


def check_sources(cfg: DataConfig) -> list[S.Source]:
    """Open every source, detect its schema and check the mix can be built from them."""
    if not cfg.sources:
        raise S.DataError("config", None, "sources", "no sources given; list at least one path or hub id",
                          kind="source")
    srcs = [S.open_source(s, cfg.split, cfg.streaming) for s in cfg.sources]
    for s in srcs:
        if s.schema == "prompt_set":
            raise S.DataError(s.name, None, None, "this is the anti-aesthetic prompt set (original_prompt, "
                              "disorted_long_prompt, selected): prompts without images. Render I_o/I_a for it and "
                              "give rows with columns P_o, I_o, P_a, I_a, or use it as an evaluation suite",
                              kind="columns")
        if s.schema == "photo_set":
            raise S.DataError(s.name, None, None, "this is a curated photo set (image, anti_aesthetic_caption, "
                              "major_classes): photographs that show the qualities, without a clean counterpart to "
                              "pair them with. Pair them with a generator's clean images by `pluralign data generate "
                              f"--suite {s.spec} --generator MODEL ...`, then mix that dataset in here", kind="columns")
    kinds = {s.name: _built_kinds(s) for s in srcs if s.schema == "pairs"}
    built_intent = [n for n, k in kinds.items() if k is None or k["anti"] + k["mirror"]]
    plain_intent = [s.name for s in srcs if s.schema in ("caption", "benchmark")]
    has_intent = bool(plain_intent or built_intent)
    has_general = any(s.schema in ("trl", "pickapic") for s in srcs) or any(k is None or k["general"]
                                                                            for k in kinds.values())
    if cfg.anti_fraction > 0 and not has_intent:
        raise S.DataError("config", None, "anti_fraction", f"anti_fraction={cfg.anti_fraction} needs an (image, "
                          "caption), benchmark or built pair source with anti/mirror rows; none of the sources is one "
                          "(set anti_fraction: 0 or add one)", kind="source")
    if cfg.anti_fraction < 1 and not has_general:
        raise S.DataError("config", None, "anti_fraction", f"anti_fraction={cfg.anti_fraction} needs a preference "
                          "source (Pick-a-Pic, trl prompt/chosen/rejected or a built dataset with general rows); none "
                          "given (set anti_fraction: 1 or add one)", kind="source")
    pf = cfg.pairs_fraction
    if pf is not None and pf > 0 and not built_intent:
        raise S.DataError("config", None, "pairs_fraction", f"pairs_fraction={pf} needs a pair dataset built by "
                          "pluralign (`data generate` output) with anti/mirror rows among the sources; none is one",
                          kind="source")
    if pf is not None and pf < 1 and not plain_intent:
        raise S.DataError("config", None, "pairs_fraction", f"pairs_fraction={pf} leaves {1 - pf:g} of the anti+mirror "
                          "rows to (image, caption) or benchmark sources; none given (set pairs_fraction: 1, or leave "
                          "it unset, or add one)", kind="source")
    return srcs


def check_replaceable(out: Path, option: str = "output_dir") -> None:
    """Raise :class:`FileExistsError` unless ``out`` is absent, an empty folder or a saved dataset.

    Writing swaps the new dataset in for the whole of ``out``, so ``--overwrite`` on a folder of source images,
    a suite file or anything else would delete it; only what ``datasets`` saved (its ``state.json`` and
    ``dataset_info.json``, with pluralign's card and logs beside them) may be replaced."""
    if out.is_symlink():
        raise FileExistsError(f"{option} {out} is a symbolic link; pass the folder it points to, or a new one")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{option} {out} is a file, not a dataset folder; choose a new or empty {option} "
                              "(--overwrite replaces a dataset folder, never a file)")
    if not out.is_dir():
        return
    try:
        names = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise FileExistsError(f"{option} {out} cannot be read ({exc.strerror or exc}); choose another {option}") from None
    saved = {datasets.config.DATASET_STATE_JSON_FILENAME, datasets.config.DATASET_INFO_FILENAME} <= set(names)
    if names and not saved:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise FileExistsError(f"{option} {out} holds files that are not a saved dataset ({shown}); writing replaces "
                              f"the whole folder, so choose a new or empty {option}")


def build_dataset(cfg: DataConfig) -> Path:
    """Build, save and document the dataset described by ``cfg``; returns ``output_dir``."""
    out = Path(cfg.output_dir)
    for line in clean_stale_temps(out.parent):
        print(f"pluralign data build: {line}", file=sys.stderr)
    check_replaceable(out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite true to replace it (it is kept until the new one is complete)")
    srcs = check_sources(cfg)
    if cfg.llm_rewriter:  # before any row is read: offline, a missing model would fail deep inside transformers
        require_model(cfg.llm_rewriter, "llm_rewriter", local_option="--llm_rewriter DIR")
    writable_dir(out.parent, "output_dir")
    save_atomically(out, lambda tmp: _write(cfg, srcs, tmp))
    return out


def save_atomically(out: Path, fill) -> None:
    """Write a dataset folder as ``out`` in one piece: ``fill(tmp)`` writes into a temporary folder beside
    ``out`` and returns the folder to put in place; a failure, a kill or a full disk leaves ``out`` as it was.

    A full disk is a :class:`~pluralign.data.sources.DataError` (kind ``disk_full``) naming ``out``. Callers
    run :func:`clean_stale_temps` first (the temporary folder of a killed writer names its process)."""
    tmp = _temp_name(out, "tmp")
    try:
        final = fill(tmp)
        swap_into_place(final, out)
    except Exception as exc:
        full = None if isinstance(exc, S.DataError) else _disk_full(exc)
        if full is None:
            raise
        kept = "the previous dataset there is untouched" if out.exists() else "nothing was written there"
        raise S.DataError(str(out), None, None, f"no space left on the device while writing the dataset "
                          f"({full.filename or tmp}); {kept}. Free space or choose another output_dir",
                          kind="disk_full") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(cfg: DataConfig, srcs: list[S.Source], tmp: Path) -> Path:
    """Generate the rows into ``tmp``, document them; returns the finished dataset folder."""
    logs = tmp / "logs"
    gen_kwargs = {"shard": list(range(cfg.num_proc)), "num_shards": cfg.num_proc, "config": to_dict(cfg),
                  "log_dir": str(logs)}
    try:
        ds = datasets.Dataset.from_generator(generate_rows, features=FEATURES, gen_kwargs=gen_kwargs,
                                             cache_dir=str(tmp / "cache"),
                                             num_proc=cfg.num_proc if cfg.num_proc > 1 else None)
    except Exception as exc:
        err = _find_data_error(exc) or _logged_error(logs) or _nothing_built(logs, cfg)
        if err is not None:
            raise err from None
        raise
    final = tmp / "dataset"
    if not adopt_cache_files(ds, final):
        ds.save_to_disk(str(final))
    if cfg.parquet:
        (final / "parquet").mkdir()
        ds.to_parquet(str(final / "parquet" / "train-00000-of-00001.parquet"))
    skipped, stats = [], Counter()
    for f in sorted(logs.glob("shard-*.json")):
        log = json.loads(f.read_text())
        skipped += log["skipped"]
        stats.update({k: v for k, v in log["stats"].items() if isinstance(v, int)})
        for key in ("stopped", "intent_stopped"):
            if key in log["stats"]:
                stats[f"{key}: {log['stats'][key]}"] += 1
    skipped.sort(key=lambda r: (str(r["source"]), r["row"] if isinstance(r["row"], int) else -1))
    (final / "README.md").write_text(dataset_card(ds, cfg, srcs, skipped, stats), encoding="utf-8")
    (final / "build_log.json").write_text(json.dumps({"skipped": skipped, "stats": dict(stats),
                                                      "config": to_dict(cfg)}, indent=1))
    del ds
    return final


def adopt_cache_files(ds: datasets.Dataset, final: Path) -> bool:
    """Make ``final`` the ``save_to_disk`` folder of ``ds`` by moving in the Arrow files ``from_generator``
    wrote, rather than writing every row a second time: the rows are mostly PNG bytes, and the second
    write (with its re-embedding of every image) took a third of a build. Only the two small JSON files
    ``load_from_disk`` reads are written, as ``save_to_disk`` writes them. Returns False, having moved
    nothing, where ``ds`` is not exactly its cache files (an index mapping, rows in memory); the caller
    then saves it the ordinary way.
    """
    files = [Path(f["filename"]) for f in ds.cache_files]
    if not files or ds._indices is not None:
        return False
    final.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{len(files):05d}.arrow" for i in range(len(files))]
    for f, name in zip(files, names):
        os.replace(f, final / name)  # the same file system (both under the build's temporary folder)
    keys = ("_fingerprint", "_format_columns", "_format_kwargs", "_format_type", "_output_all_columns")
    state = {k: ds.__dict__[k] for k in keys}
    state["_split"] = str(ds.split) if ds.split is not None else None
    state["_data_files"] = [{"filename": n} for n in names]
    (final / datasets.config.DATASET_STATE_JSON_FILENAME).write_text(json.dumps(state, indent=2, sort_keys=True))
    info = dataclasses.asdict(ds.info)
    (final / datasets.config.DATASET_INFO_FILENAME).write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2))
    return True


def swap_into_place(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and removed only after."""
    old = None
    if out.exists():
        old = _temp_name(out, "old")
        os.replace(out, old)
    try:
        os.replace(new, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _table(counter: Counter, title: str) -> str:
    lines = [f"| {title} | rows |", "|---|---:|"]
    for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {k or '(none)'} | {v} |")
    return "\n".join(lines)


def _row_cell(skipped: dict) -> str:
    if skipped.get("line") is None:
        return str(skipped["row"])
    return f"{skipped['row']} ({Path(skipped['file']).name if skipped.get('file') else ''} line {skipped['line']})"


def _mix_section(stats: Counter, n: int, cfg: DataConfig) -> list[str]:
    """Where the rows came from: per source and kind of pair, with the shares the build reached."""
    origins = {k[len(ORIGIN):]: v for k, v in stats.items() if k.startswith(ORIGIN)}
    if not origins:
        return []
    intent = sum(v for k, v in origins.items() if not k.startswith("general"))
    built = sum(v for k, v in origins.items() if k.startswith("built pairs"))
    lines = ["## Mix", "", f"anti_fraction: requested {cfg.anti_fraction}, reached {intent / n if n else 0:.3f}."]
    if cfg.pairs_fraction is not None or built:
        requested = "unset (round-robin)" if cfg.pairs_fraction is None else f"requested {cfg.pairs_fraction}"
        lines.append(f"pairs_fraction (share of the anti+mirror rows from built pair datasets): {requested}, reached "
                     f"{built / intent if intent else 0:.3f}.")
    lines += ["", "| rows from | rows | share of all rows |", "|---|---:|---:|"]
    lines += [f"| {k} | {v} | {v / n if n else 0:.3f} |" for k, v in sorted(origins.items(), key=lambda kv: (-kv[1], kv[0]))]
    return lines + [""]


def dataset_card(ds: datasets.Dataset, cfg: DataConfig, srcs: list[S.Source], skipped: list[dict],
                 stats: Counter) -> str:
    """README.md for the dataset: what it is, counts per kind/category/source, the config, skipped rows."""
    kinds = Counter(ds.data.column("kind").to_pylist())
    cats = Counter(c for c, k in zip(ds.data.column("category").to_pylist(), ds.data.column("kind").to_pylist())
                   if k != "general")
    sources = Counter(ds.data.column("source").to_pylist())
    n = len(ds)
    share = (kinds["anti"] + kinds["mirror"]) / n if n else 0.0
    parts = [
        "---", "tags: [pluralign, preference, diffusion-dpo, anti-aesthetic]", "---", "",
        "# Intent-conditioned preference pairs", "",
        "Rows in trl's preference layout with images (`prompt`, `chosen`, `rejected`) plus `kind` "
        "(anti / mirror / general), `attributes`, `category`, `source`, `severity` and `pair_id`. "
        "An *anti* row asks for the anti-aesthetic attributes and prefers the degraded image; its *mirror* "
        "(same `pair_id`) uses the original caption and prefers the clean image.", "",
        f"**Rows:** {n}  ·  **anti+mirror share:** {share:.3f} (requested {cfg.anti_fraction})", "",
        *_mix_section(stats, n, cfg),
        "## Counts per kind", "", _table(kinds, "kind"), "",
        "## Counts per category (anti + mirror rows)", "", _table(cats, "category"), "",
        "## Counts per source", "", _table(sources, "source"), "",
        "## Sources", "",
        *[f"- `{s.name}`: {s.kind}, schema `{s.schema}`" for s in srcs], "",
        "## Build notes", "",
        *([f"- {k}: {v}" for k, v in sorted(stats.items()) if not k.startswith(ORIGIN)] or ["- none"]), "",
        f"## Skipped rows ({len(skipped)})", "",
    ]
    if skipped:
        parts += ["| source | row | field | kind | problem |", "|---|---:|---|---|---|"]
        parts += [f"| {s['source']} | {_row_cell(s)} | {s['field'] or ''} | {s['kind']} | "
                  f"{s['problem'].replace('|', '/')} |" for s in skipped]
    else:
        parts.append("None.")
    parts += ["", "## Config", "", "```yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False).strip(), "```", ""]
    return "\n".join(parts)
