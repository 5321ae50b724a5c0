"""scripts/gpu_smoke.py: real-shape configs, the no-GPU failure, and the CPU dry run of all four families."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _denoiser_params(family: str) -> int:
    import gpu_smoke

    with torch.device("meta"):                      # full size, no memory
        pipe = gpu_smoke.BUILDERS[family](False)
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    return sum(p.numel() for p in denoiser.parameters())


def test_full_size_unets_match_the_released_models():
    # parameter counts of the released stable-diffusion-v1-5 and SDXL-base-1.0 UNets
    assert _denoiser_params("sd15") == 859_520_964
    assert _denoiser_params("sdxl") == 2_567_463_684


def test_flow_transformers_are_real_width_with_fewer_blocks():
    import gpu_smoke

    with torch.device("meta"):
        sd3 = gpu_smoke.BUILDERS["sd35m"](False).transformer
        flux = gpu_smoke.BUILDERS["flux"](False).transformer
    assert sd3.config.num_attention_heads * sd3.config.attention_head_dim == 1536 and sd3.config.num_layers == 12
    assert sd3.config.joint_attention_dim == 4096 and sd3.config.pooled_projection_dim == 2048
    assert flux.config.num_attention_heads * flux.config.attention_head_dim == 3072
    assert (flux.config.num_layers, flux.config.num_single_layers, flux.config.guidance_embeds) == (10, 19, True)
    assert 5e9 < _denoiser_params("flux") < 7e9


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU failure")
def test_fails_loudly_without_gpu():
    for cmd in (["bash", "scripts/gpu_smoke.sh"], [sys.executable, "scripts/gpu_smoke.py", "--families", "sd15"]):
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "no CUDA GPU" in res.stderr, (cmd, res.stderr[-500:])


@pytest.mark.slow
def test_dry_run_all_families(tmp_path):
    out = tmp_path / "rows.json"
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    res = subprocess.run(["bash", "scripts/gpu_smoke.sh", "--dry-run", "--steps", "1", "--rank", "4", "--json", str(out),
                          "--work-dir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["family"] for r in rows] == ["sd15", "sdxl", "sd35m", "flux"]
    for r in rows:
        assert r["steps"] == 1 and r["s_per_step"] > 0 and r["pairs_per_s"] > 0 and r["final_loss"] > 0
    table = res.stdout
    assert "DRY RUN" in table and table.count("| n/a (CPU) |") == 4
    assert "| family | model (random init) |" in table and "s/step" in table and "peak GPU memory" in table


def test_a_failing_family_keeps_the_others(tmp_path, monkeypatch, capsys):
    import gpu_smoke

    def fake_run(family, work, args):
        if family == "sdxl":
            raise RuntimeError("CUDA out of memory (simulated)")
        return {"family": family, "model": "fake", "denoiser_params_M": 1.0, "resolution": 32, "pairs_per_step": 1,
                "s_per_step": 0.5, "pairs_per_s": 2.0, "peak_gpu_mem_GiB": 3.0, "steps": 2, "final_loss": 0.7,
                "build_s": 0.1}

    monkeypatch.setattr(gpu_smoke, "run_family", fake_run)
    out = tmp_path / "rows.json"
    code = gpu_smoke.main(["--dry-run", "--families", "sd15,sdxl,flux", "--json", str(out)])
    assert code == 1  # a failure is reported in the exit status ...
    rows = json.loads(out.read_text())["rows"]  # ... but the families around it are measured and kept
    assert [r["family"] for r in rows] == ["sd15", "sdxl", "flux"]
    assert "out of memory" in rows[1]["error"] and rows[2]["s_per_step"] == 0.5
    table = capsys.readouterr().out
    assert "| sdxl | fake |" not in table and "FAILED: RuntimeError: CUDA out of memory" in table
    assert table.count("| 3.0 GiB |") == 2
