"""`pluralign data generate` under `accelerate launch` with two CPU processes (gloo): the processes take
disjoint shards, the main one writes one dataset, and it equals the dataset one process makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from pluralign.onpolicy import generate as OG
from pluralign.onpolicy.config import GenerateConfig
from pluralign.toy import paths

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(generator=str(paths.aligned_dir()), suite="toy", n_prompts=6, num_candidates=3, scorer="toy",
                num_inference_steps=4, guidance_scale=6.0, batch_size=6, shard_size=2, min_margin=0.0)


def test_two_processes_split_the_shards_and_make_the_single_process_dataset(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1): the same arithmetic
    try:
        OG.generate_dataset(GenerateConfig(**SETTINGS, device="cpu", output_dir=str(tmp_path / "single")),
                            progress=False)
    finally:
        torch.set_num_threads(threads)
    args = [a for k, v in SETTINGS.items() for a in (f"--{k}", str(v))]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", "recipes/accelerate/cpu_2proc.yaml", "--main_process_port",
           "29557", "-m", "pluralign.onpolicy.cli", *args, "--output_dir", str(tmp_path / "dist")]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("wrote ") == 1  # the main process writes the one dataset
    single, dist = (datasets.load_from_disk(str(tmp_path / d)) for d in ("single", "dist"))
    assert len(dist) > 0 and dist.data.table.equals(single.data.table)
    log = json.loads((tmp_path / "dist" / "generate_log.json").read_text())
    assert [d["index"] for d in log["decisions"]] == list(range(6))
    assert not (tmp_path / ".dist.shards").exists() and not (tmp_path / ".dist.lock").exists()
