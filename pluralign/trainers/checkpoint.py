"""Resumable checkpoints: LoRA weights (and their EMA), optimizer, LR scheduler, RNG states and data position.

A checkpoint is written to a temporary directory and renamed into place, so a run killed while
saving never leaves a half-written ``checkpoint-N``; only the newest ``keep`` are kept. LoRA and
RNG tensors are safetensors; optimizer/scheduler state dicts are read back with
``torch.load(weights_only=True)`` (plain tensors and numbers, no arbitrary pickles).
"""

from __future__ import annotations

import json
import random
import shutil
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


def save_checkpoint(root: Path, step: int, lora: dict[str, torch.Tensor], optimizer, lr_scheduler,
                    state: dict, keep: int | None, ema: dict[str, torch.Tensor] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step}"
    tmp = root / f".tmp-{PREFIX}{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in lora.items()}, str(tmp / "lora.safetensors"))
    if ema is not None:
        save_file(ema, str(tmp / "ema.safetensors"))
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


def load_checkpoint(path: Path, optimizer, lr_scheduler) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore optimizer, scheduler and RNG in place; return ``(lora_state, state)``."""
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(load_file(str(path / "rng.safetensors")), json.loads((path / "rng.json").read_text()))
    return load_file(str(path / "lora.safetensors")), json.loads((path / "state.json").read_text())


def load_ema(path: Path) -> dict[str, torch.Tensor] | None:
    """The EMA weights saved with a checkpoint, or None if it was saved without ``ema_decay``."""
    f = path / "ema.safetensors"
    return load_file(str(f)) if f.exists() else None


def resolve_resume(arg: str | None, root: Path) -> Path | None:
    """``latest`` -> newest checkpoint under ``root`` (None if there is none); a path must exist."""
    if not arg:
        return None
    if arg == "latest":
        found = list_checkpoints(root)
        return found[-1] if found else None
    path = Path(arg)
    if not (path / "state.json").exists():
        raise ValueError(f"resume_from_checkpoint {arg}: not a checkpoint directory (no state.json)")
    return path
