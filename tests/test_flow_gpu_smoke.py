"""scripts/gpu_smoke.py: real-shape configs, the no-GPU failure, and the CPU dry run of all four families
(training, then the data generate stage)."""

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
    # --generate is left at its default: the generation stage is on unless turned off
    res = subprocess.run(["bash", "scripts/gpu_smoke.sh", "--dry-run", "--steps", "1", "--rank", "4", "--json", str(out),
                          "--work-dir", str(tmp_path), "--generate-steps", "2"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["family"] for r in rows] == ["sd15", "sdxl", "sd35m", "flux"]
    for r in rows:
        assert r["steps"] == 1 and r["s_per_step"] > 0 and r["pairs_per_s"] > 0 and r["final_loss"] > 0
        # data generate on the family's own pipeline: 2 prompt pairs x K=2 x (P_a, P_o); noise, so any acceptance
        assert "generate_error" not in r, r.get("generate_error")
        assert (r["gen_prompt_pairs"], r["gen_candidates"], r["gen_images"], r["gen_steps"]) == (2, 2, 8, 2)
        assert r["gen_images_per_s"] > 0 and 0 <= r["gen_accepted"] <= 2
        assert r["gen_accepted"] + sum(r["gen_dropped"].values()) == 2
        card = tmp_path / f"generated-{r['family']}" / "README.md"  # the dataset and its card were written
        assert card.is_file() and (card.parent / "generate_log.json").is_file()
    table = res.stdout
    assert "DRY RUN" in table and table.count("| n/a (CPU) |") == 8  # 4 training rows, 4 generation rows
    assert "| family | model (random init) |" in table and "s/step" in table and "peak GPU memory" in table
    assert "data generate on the same pipelines" in table and "| images/s | accepted pairs |" in table


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
    code = gpu_smoke.main(["--dry-run", "--families", "sd15,sdxl,flux", "--json", str(out), "--generate", "0"])
    assert code == 1  # a failure is reported in the exit status ...
    rows = json.loads(out.read_text())["rows"]  # ... but the families around it are measured and kept
    assert [r["family"] for r in rows] == ["sd15", "sdxl", "flux"]
    assert "out of memory" in rows[1]["error"] and rows[2]["s_per_step"] == 0.5
    table = capsys.readouterr().out
    assert "| sdxl | fake |" not in table and "FAILED: RuntimeError: CUDA out of memory" in table
    assert table.count("| 3.0 GiB |") == 2


def test_generate_stage_runs_after_failed_training_and_its_failure_keeps_the_row(tmp_path, monkeypatch, capsys):
    import gpu_smoke

    def fake_run(family, work, args):
        (work / f"model-{family}").mkdir(parents=True)
        (work / f"model-{family}" / "model_index.json").write_text("{}")  # the pipeline was built and saved
        if family == "sdxl":
            raise RuntimeError("cuDNN attention backward failed (simulated)")
        return {"family": family, "model": "fake", "denoiser_params_M": 1.0, "resolution": 32, "pairs_per_step": 1,
                "s_per_step": 0.5, "pairs_per_s": 2.0, "peak_gpu_mem_GiB": 3.0, "steps": 2, "final_loss": 0.7,
                "build_s": 0.1}

    def fake_generate(family, model_dir, work, res, args):
        assert model_dir == work / f"model-{family}" and res == 32 and args.generate == 2
        if family == "flux":
            raise RuntimeError("CUDA out of memory (simulated)")
        return {"gen_resolution": res, "gen_prompt_pairs": 2, "gen_candidates": 2, "gen_images": 8, "gen_steps": 20,
                "gen_load_s": 0.1, "gen_s": 4.0, "gen_images_per_s": 2.0, "gen_accepted": 0,
                "gen_dropped": {"below_min_margin": 2}, "gen_peak_gpu_mem_GiB": 5.0}

    monkeypatch.setattr(gpu_smoke, "run_family", fake_run)
    monkeypatch.setattr(gpu_smoke, "generate_family", fake_generate)
    out = tmp_path / "rows.json"
    code = gpu_smoke.main(["--dry-run", "--families", "sd15,sdxl,flux", "--json", str(out),
                           "--work-dir", str(tmp_path / "work")])
    assert code == 1
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["s_per_step"] == 0.5 and rows[0]["gen_images"] == 8
    assert "cuDNN" in rows[1]["error"] and rows[1]["gen_images"] == 8  # generated although training failed
    assert rows[2]["s_per_step"] == 0.5 and "out of memory" in rows[2]["generate_error"]  # training row kept
    table = capsys.readouterr().out
    assert table.count("| 3.0 GiB |") == 2 and "FAILED: RuntimeError: cuDNN" in table  # the training table as before
    assert table.count("| 32 | 2 | 8 | 20 | 2.00 | 0 of 2 | below_min_margin 2 | 5.0 GiB |") == 2
    assert "| flux | 32 | FAILED: RuntimeError: CUDA out of memory (simulated) |" in table


def test_generate_options_are_checked():
    import gpu_smoke

    for bad in (["--generate", "-1"], ["--generate-steps", "0"]):
        with pytest.raises(SystemExit):
            gpu_smoke.main(["--dry-run", *bad])
