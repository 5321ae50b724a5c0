"""End-to-end runs: exact resume after SIGKILL, per-category dials, SDXL, and the accelerate entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from test_trainer_helpers import cfg, image, one_torch_thread

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _stock(model):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _env(tmp):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    env.pop("WANDB_DIR", None)
    return env


def test_sigkill_and_resume_equals_uninterrupted(tiny_pipeline_dir, tmp_path, capfd):
    """A run killed with SIGKILL after its second checkpoint, in its own process as a user's would be, then resumed
    with ``--resume_from_checkpoint latest``, equals the uninterrupted run. The uninterrupted and the resumed run go
    through the same CLI entry point in this process (each launched process adds 7 s of imports); what the resume
    reads is on disk, written by the killed process. Every run computes on one torch thread, so the arithmetic is
    the same in all three. The reference runs ahead in chunks of 3 micro-steps, so the resume lands inside a chunk
    and must recompute all of it."""
    from pluralign.train import main

    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=6, checkpointing_steps=2, checkpoints_total_limit=5, learning_rate=2e-3, dropout=0.1,
                  export_kohya=False, cache_dir=str(tmp_path / "cache"), train_batch_size=2, rank=4, alpha=4,
                  report_to="none", lr_warmup_steps=0, dataset="builtin:shapes",
                  reference_chunk=3)  # chunks [0, 3) and [3, 6): the resume at step 2 or 4 starts inside one

    def command(out, *extra):
        args = [sys.executable, "-m", "pluralign.train", "--pretrained_model", str(model), "--output_dir", str(out)]
        for k, v in common.items():
            args += [f"--{k}", str(v)]
        return args + list(extra)

    env = dict(_env(tmp_path), OMP_NUM_THREADS="1")
    straight = tmp_path / "straight"
    with one_torch_thread():
        assert main(command(straight)[3:]) == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "checkpoint-2" / "state.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()

    capfd.readouterr()
    with one_torch_thread():
        assert main(command(out, "--resume_from_checkpoint", "latest")[3:]) == 0
    said = capfd.readouterr()
    assert "resumed from" in said.out + said.err
    a = load_file(str(straight / "adapter" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(out / "adapter" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-6, diff
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k or "lora.up" in k)


def test_per_category_adapters_dial_independently(tiny_pipeline_dir, tmp_path):
    from pluralign.trainers import train

    model = tiny_pipeline_dir("sd")
    cats = ["clarity_and_focus", "lighting_and_exposure"]
    r = train(cfg(tmp_path, model, adapter_mode="per_category", categories=cats, max_steps=3, learning_rate=5e-3,
                  export_kohya=False))
    assert set(r.adapter_dirs) == set(cats)
    assert all((r.output_dir / "adapter" / c / "pytorch_lora_weights.safetensors").exists() for c in cats)
    mix = (r.adapter_dirs[cats[0]] / "README.md").read_text()
    assert "| clarity_and_focus | 18 |" in mix and "| (none) | 2 |" in mix and "lighting" not in mix.split("## Training")[0]

    both = _stock(model)
    for c in cats:
        both.load_lora_weights(str(r.adapter_dirs[c]), adapter_name=c)
    only = {}
    for c in cats:
        p = _stock(model)
        p.load_lora_weights(str(r.adapter_dirs[c]), adapter_name=c)
        only[c] = image(p)
    base = image(_stock(model))
    both.set_adapters(cats, [1.0, 0.0])
    a_only = image(both)
    both.set_adapters(cats, [0.0, 1.0])
    b_only = image(both)
    both.set_adapters(cats, [0.0, 0.0])
    none = image(both)
    assert np.abs(a_only - only[cats[0]]).max() <= 1e-5
    assert np.abs(b_only - only[cats[1]]).max() <= 1e-5
    assert np.abs(none - base).max() <= 1e-5
    assert np.abs(a_only - b_only).max() > 1e-3 and np.abs(a_only - base).max() > 1e-3


def test_sdxl_run_exports_loadable_adapter(tiny_pipeline_dir, tmp_path):
    from pluralign.trainers import train
    from pluralign.trainers.adapters import add_lora, load_adapter_state_dict, lora_config

    model = tiny_pipeline_dir("sdxl")
    r = train(cfg(tmp_path, model, max_steps=3, checkpointing_steps=3, alpha=8.0, learning_rate=5e-3, max_pairs=4))
    assert r.steps == 3 and all(np.isfinite(h["loss"]) for h in r.history)
    trained = _stock(model)
    add_lora(trained.unet, lora_config(4, 8.0, 0.0, ("to_q", "to_k", "to_v", "to_out.0")), "intent")
    load_adapter_state_dict(trained.unet, load_file(str(r.output_dir / "checkpoints" / "checkpoint-3" /
                                                        "lora.safetensors")), "intent")
    stock = _stock(model)
    stock.load_lora_weights(str(r.adapter_dir), adapter_name="intent")
    got, want = image(stock), image(trained)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(got - image(_stock(model))).max() > 1e-4
    assert load_file(str(r.kohya_files["intent"]))[next(k for k in load_file(str(r.kohya_files["intent"]))
                                                       if k.endswith(".alpha"))].item() == 8.0


def test_accelerate_launch_recipe_with_offline_wandb(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    out, wandb_dir = tmp_path / "out", tmp_path / "wandb"
    env = dict(_env(tmp_path), WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), WANDB_SILENT="true")
    wandb_dir.mkdir()
    cmd = [str(accelerate), "launch", "--config_file", "recipes/accelerate/cpu.yaml", "-m", "pluralign.train",
           "--config", "recipes/tiny_sd_intent_dpo.yaml", "--output_dir", str(out), "--cache_dir",
           str(tmp_path / "cache"), "--max_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "4"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert (out / "adapter" / "pytorch_lora_weights.safetensors").exists()
    assert "Diffusion-DPO" in (out / "adapter" / "README.md").read_text()
    assert (out / "adapter_kohya" / "intent.safetensors").exists()
    assert len(list((out / "validation" / "step-000004").glob("*.png"))) == 6
    runs = list((wandb_dir / "wandb").glob("offline-run-*"))
    assert runs and any(f.suffix == ".wandb" for f in runs[0].iterdir())
    assert "s/step" in res.stderr or "step/s" in res.stderr
