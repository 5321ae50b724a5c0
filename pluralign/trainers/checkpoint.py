"""Resumable checkpoints: LoRA weights (and their EMA), optimizer, LR scheduler, RNG states and data position.

A checkpoint is written to a temporary directory and renamed into place, so a run killed while
saving never leaves a half-written ``checkpoint-N``; only the newest ``keep`` are kept. LoRA and
RNG tensors are safetensors; optimizer/scheduler state dicts are read back with
``torch.load(weights_only=True)`` (plain tensors and numbers, no arbitrary pickles).

When the optimizer state is sharded across processes (FSDP, DeepSpeed ZeRO), each process writes
its own ``optimizer.rank<r>.pt`` into the staging directory (:func:`save_optimizer_shard`) before
the main process writes the rest and renames the directory, so the rename still publishes a
complete checkpoint or nothing.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "checkpoint-"


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, state, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(state), gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_next = meta["python"]
    random.setstate((version, tuple(state), gauss_next))


class CheckpointWriteError(ValueError):
    """A checkpoint could not be written (a full disk); the earlier checkpoints are intact."""


def save_checkpoint(root: Path, step: int, lora: dict[str, torch.Tensor], optimizer, lr_scheduler,
                    state: dict, keep: int | None, ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``checkpoint-<step>`` under a temporary name and rename it into place: a kill or a full
    disk leaves the earlier checkpoints as they were and no half-written one."""
    tmp = staging_dir(root, step)
    try:
        return _save(root, step, tmp, lora, optimizer, lr_scheduler, state, keep, ema)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        intact = list_checkpoints(root)
        raise CheckpointWriteError(
            f"no space left on the device writing {root / f'{PREFIX}{step}'}; "
            f"{'the last intact checkpoint is ' + str(intact[-1]) if intact else 'no earlier checkpoint exists'}. "
            "Free space, then resume with resume_from_checkpoint: latest") from None


def staging_dir(root: Path, step: int) -> Path:
    """Where ``checkpoint-<step>`` is assembled before it is renamed into place."""
    return root / f".tmp-{PREFIX}{step}"


def prepare_staging(tmp: Path) -> None:
    """An empty staging directory (main process, before the processes write their optimizer shards)."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)


def shard_name(rank: int) -> str:
    return f"optimizer.rank{rank}.pt"


def save_optimizer_shard(tmp: Path, optimizer, rank: int) -> None:
    """This process's part of a sharded optimizer state, into the staging directory."""
    torch.save(optimizer.state_dict(), tmp / shard_name(rank))


def _save(root: Path, step: int, tmp: Path, lora, optimizer, lr_scheduler, state: dict, keep: int | None,
          ema) -> Path:
    """``optimizer`` None: the processes have already written their shards into ``tmp``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step}"
    if optimizer is not None:
        prepare_staging(tmp)
    else:
        world = state["optimizer_world_size"]
        missing = [shard_name(r) for r in range(world) if not (tmp / shard_name(r)).is_file()]
        if missing:
            raise RuntimeError(f"{tmp}: optimizer shards missing after every process wrote its own: {missing}")
    save_file({k: v.contiguous() for k, v in lora.items()}, str(tmp / "lora.safetensors"))
    if ema is not None:
        save_file(ema, str(tmp / "ema.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
    rng_t, rng_meta = rng_state()
    save_file(rng_t, str(tmp / "rng.safetensors"))
    (tmp / "rng.json").write_text(json.dumps(rng_meta))
    (tmp / "state.json").write_text(json.dumps({**state, "global_step": step}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, optimizer, lr_scheduler, restore_weights, rank: int | None = None,
                    world_size: int | None = None) -> dict:
    """Restore the LoRA weights (through ``restore_weights(lora_state)``), then optimizer, scheduler and
    RNG in place; return the saved ``state``.

    Weights come first because DeepSpeed's ZeRO optimizer rebuilds its fp32 master partitions
    from the model's weights when it loads its state; loaded the other way round it would resume
    from the initial weights. ``rank``/``world_size`` given: the optimizer is sharded and this
    process reads its own file; a checkpoint written by another number of processes is refused,
    since its shards split the state differently."""
    state = _read_json(path / "state.json")
    if world_size is not None and state.get("optimizer_world_size") != world_size:
        saved = state.get("optimizer_world_size")
        raise ValueError(f"{path}: its optimizer state is sharded over {saved or 'no'} processes, this run has "
                         f"{world_size}; resume with {saved or 'one process (or DDP)'}, or start a fresh output_dir")
    restore_weights(load_file(str(path / "lora.safetensors")))
    if world_size is None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    else:
        optimizer.load_state_dict(_optimizer_state(path, rank, world_size))
    lr_scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(load_file(str(path / "rng.safetensors")), _read_json(path / "rng.json"))
    return state


def _optimizer_state(path: Path, rank: int, world_size: int):
    """This process's optimizer state. DeepSpeed's ZeRO optimizer takes the list of every process's
    state and picks its own; a plain torch optimizer (FSDP) takes its own dict.

    These files are read with full unpickling: DeepSpeed's state holds its own objects (the loss
    scaler, the ZeRO stage enum). They are files the same run wrote, under its output_dir."""
    mine = torch.load(path / shard_name(rank), weights_only=False)
    if isinstance(mine, dict) and "zero_stage" in mine:
        return [torch.load(path / shard_name(r), weights_only=False) if r != rank else mine for r in range(world_size)]
    return mine


def load_ema(path: Path) -> dict[str, torch.Tensor] | None:
    """The EMA weights saved with a checkpoint, or None if it was saved without ``ema_decay``."""
    f = path / "ema.safetensors"
    return load_file(str(f)) if f.exists() else None


def problem(path: Path) -> str | None:
    """What is wrong with a checkpoint directory (a file missing or unreadable), or None if every
    file it needs loads."""
    readers = {"state.json": _read_json, "rng.json": _read_json, "lora.safetensors": load_file,
               "rng.safetensors": load_file, "scheduler.pt": _read_torch}
    shards = sorted(path.glob("optimizer.rank*.pt"))
    if shards:  # a sharded optimizer's files may hold DeepSpeed's own objects: check they are there and whole
        readers.update({f.name: _read_any for f in shards})
    else:
        readers["optimizer.pt"] = _read_torch
    if (path / "ema.safetensors").exists():
        readers["ema.safetensors"] = load_file
    for name, read in readers.items():
        try:
            read(path / name)
        except Exception as exc:  # noqa: BLE001 - any failure to read makes the checkpoint unusable
            return f"{name}: {type(exc).__name__}: {exc}"
    return None


def _read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _read_torch(path: Path):
    return torch.load(path, weights_only=True)


def _read_any(path: Path):
    return torch.load(path, weights_only=False)


def run_id_of(path: Path) -> str | None:
    try:
        return json.loads((path / "state.json").read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        return None


def resolve_resume(arg: str | None, root: Path, run_id: str | None = None) -> Path | None:
    """The checkpoint to resume from.

    ``latest``: the newest checkpoint under ``root`` that belongs to run ``run_id`` and loads; a
    damaged one is skipped with a warning that names it, so a kill while the disk was failing costs
    the steps since the previous checkpoint, not the run. None if there is none. A path must be an
    intact checkpoint."""
    if not arg:
        return None
    if arg == "latest":
        for path in reversed(list_checkpoints(root)):
            owner = run_id_of(path)
            if run_id is not None and owner != run_id:
                warnings.warn(f"{path} belongs to run {owner}, not to this run ({run_id}); skipped", stacklevel=2)
                continue
            bad = problem(path)
            if bad is None:
                return path
            warnings.warn(f"{path} is damaged ({bad}); falling back to the previous checkpoint", stacklevel=2)
        return None
    path = Path(arg)
    if not (path / "state.json").exists():
        raise ValueError(f"resume_from_checkpoint {arg}: not a checkpoint directory (no state.json)")
    bad = problem(path)
    if bad is not None:
        raise ValueError(f"resume_from_checkpoint {arg}: the checkpoint is damaged ({bad}); resume from another "
                         "checkpoint or 'latest'")
    return path
