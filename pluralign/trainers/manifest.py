"""The run manifest, ``run.json``: what a run directory holds, so that resume and export can trust it.

A run directory outlives the command that made it: a run is killed and resumed, or a new run is
started over an old one. Without a record, ``resume_from_checkpoint: latest`` would continue
whatever checkpoints it finds, trained with whatever settings, and a model card would describe the
config of the last command rather than the one that produced the weights. The manifest records
the resolved config, the base model's identity, the dataset's fingerprint and the pluralign
version, under a run id that every checkpoint of the run also carries.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from .. import __version__
from ..config import option_defaults, to_dict
from .schedules import STEP_FREE, tail_steps

NAME = "run.json"
# Fields that change how a run is logged, saved or how long it goes on, not the trajectory it
# follows: a resume may change them freely.
FREE_FIELDS = frozenset({
    "max_steps", "num_train_epochs", "logging_steps", "checkpointing_steps", "checkpoints_total_limit", "report_to", "tracker_project",
    "validation_steps", "validation_prompts", "validation_seed", "validation_inference_steps",
    "resume_from_checkpoint", "overwrite_output_dir", "allow_config_change", "export_kohya", "push_to_hub",
    "hub_model_id", "eval_summary", "output_dir", "run_name", "cache_dir", "dataloader_num_workers",
})


def _commit() -> str | None:
    """The git commit of the pluralign source, when it runs from a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def dataset_fingerprint(ds, spec: str, indices: list[int]) -> str:
    """The rows a run trains on: their prompts, kinds and categories, plus the stored dataset's own
    fingerprint (``datasets`` renews it whenever the data on disk is rewritten)."""
    h = hashlib.sha256(spec.encode())
    stored = getattr(ds, "_fingerprint", None)
    if stored and Path(spec).exists():
        h.update(stored.encode())
    sub = ds.select(indices)
    for name in ("prompt", "kind", "category"):
        if name in sub.column_names:
            h.update(json.dumps(list(sub[name])).encode())
    return h.hexdigest()[:24]


def new_manifest(config, base: dict, dataset: dict) -> dict:
    return {"run_id": uuid.uuid4().hex[:16],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "pluralign": {"version": __version__, "commit": _commit()},
            "config": to_dict(config), "base": base, "dataset": dataset, "resumes": []}


def read_manifest(run_dir: Path) -> dict | None:
    path = run_dir / NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); the run's manifest is damaged. Start a new run "
                         "(overwrite_output_dir: true, or another output_dir)") from None


def write_manifest(run_dir: Path, manifest: dict) -> None:
    """Write to a temporary name and rename, so a kill never leaves half a manifest."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{NAME}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")
    tmp.replace(run_dir / NAME)


# the annealed tail's two spellings: 360 steps and a share of 0.2 of 1800 are the same schedule
TAIL_FIELDS = frozenset({"lr_decay_steps", "lr_decay_share"})


def _tail(cfg: dict) -> int:
    """The tail a recorded or new config anneals over, in optimizer steps (0: none)."""
    try:
        return tail_steps(cfg.get("lr_decay_steps") or 0, cfg.get("lr_decay_share") or 0.0, cfg.get("max_steps") or 0)
    except ValueError:  # both spellings in one config, which the trainer refuses before it runs
        return -1


def trajectory_changes(manifest: dict, config, base: dict, dataset: dict) -> list[str]:
    """``field: old -> new`` for every difference that would change what the resumed run computes."""
    changes = []
    old_cfg, new_cfg = manifest.get("config", {}), to_dict(config)
    # an option added after the run started, left at its default: the default is what the run did before it existed
    defaults = option_defaults(type(config))
    added = {k for k, v in new_cfg.items() if k not in old_cfg and k in defaults and v == defaults[k]}
    free = FREE_FIELDS | TAIL_FIELDS  # the tail is compared in steps below, however it was written
    if new_cfg.get("lr_scheduler", "constant") not in STEP_FREE:  # the rate at each step depends on max_steps
        free = free - {"max_steps", "num_train_epochs"}
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if key not in free and key not in added and old_cfg.get(key) != new_cfg.get(key):
            why = " (resolved from num_train_epochs x the adapter's rows / train_batch_size x " \
                  "gradient_accumulation_steps x processes)" if key == "max_steps" and new_cfg.get("num_train_epochs") else ""
            changes.append(f"{key}: {old_cfg.get(key)!r} -> {new_cfg.get(key)!r}{why}")
    old_tail, new_tail = _tail(old_cfg), _tail(new_cfg)
    if old_tail != new_tail:
        changes.append(f"annealed tail (lr_decay_steps / lr_decay_share): {old_tail} -> {new_tail} steps")
    for what, old, new in (("base", manifest.get("base", {}), base), ("dataset", manifest.get("dataset", {}), dataset)):
        if old.get("fingerprint") != new.get("fingerprint"):
            changes.append(f"{what} fingerprint: {old.get('fingerprint')} -> {new.get('fingerprint')} "
                           f"({old.get('model', old.get('spec'))} -> {new.get('model', new.get('spec'))})")
    return changes


def clear_run(run_dir: Path, adapter_dir: Path, kohya_file: Path | None) -> list[Path]:
    """Remove everything of an earlier run that resume or export could pick up; return what went."""
    gone = []
    for path in (run_dir / "checkpoints", run_dir / "validation", adapter_dir, run_dir / NAME, kohya_file):
        if path is not None and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            gone.append(path)
    return gone
