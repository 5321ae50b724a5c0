"""`pluralign data generate` as separate processes: two CPU processes (gloo) under `accelerate launch` take
disjoint shards and the main one writes the dataset one process makes; a run killed with SIGKILL after a
shard resumes (in the test's process) to that same dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from test_trainer_helpers import one_torch_thread

from pluralign.onpolicy import generate as OG
from pluralign.onpolicy.config import GenerateConfig
from pluralign.onpolicy.shards import shard_dir_for
from pluralign.toy import paths

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(generator=str(paths.aligned_dir()), suite="toy", n_prompts=6, num_candidates=3, scorer="toy",
                num_inference_steps=4, guidance_scale=6.0, batch_size=6, shard_size=2, min_margin=0.0)
ARGS = [a for k, v in SETTINGS.items() for a in (f"--{k}", str(v))]


def env(**more: str) -> dict[str, str]:
    """The launched processes' environment, read when a test runs (conftest points TMPDIR at pytest's directory)."""
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="disabled", **more)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The dataset of one process (one torch thread, as the launched processes: the same arithmetic)."""
    out = tmp_path_factory.mktemp("single") / "out"
    with one_torch_thread():
        OG.generate_dataset(GenerateConfig(**SETTINGS, device="cpu", output_dir=str(out)), progress=False)
    return datasets.load_from_disk(str(out))


def test_two_processes_split_the_shards_and_make_the_single_process_dataset(single, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", "recipes/accelerate/cpu_2proc.yaml", "--main_process_port",
           "29557", "-m", "pluralign.onpolicy.cli", *ARGS, "--output_dir", str(tmp_path / "dist")]
    res = subprocess.run(cmd, cwd=ROOT, env=env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("wrote ") == 1  # the main process writes the one dataset
    dist = datasets.load_from_disk(str(tmp_path / "dist"))
    assert len(dist) > 0 and dist.data.table.equals(single.data.table)
    log = json.loads((tmp_path / "dist" / "generate_log.json").read_text())
    assert [d["index"] for d in log["decisions"]] == list(range(6))
    assert not (tmp_path / ".dist.shards").exists() and not (tmp_path / ".dist.lock").exists()


def test_a_killed_run_resumes_to_the_same_dataset(single, tmp_path, capsys):
    """Killed in its own process with SIGKILL after a shard; resumed through the same CLI entry point in this process
    (on one torch thread, as the killed one ran), which finds the dead process's lock and the finished shard."""
    from pluralign.onpolicy.cli import main

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pluralign.onpolicy.cli", *ARGS, "--output_dir", str(out)]
    first = shard_dir_for(out) / "shard-00000.json"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.exists(), proc.stderr.read() if proc.poll() is not None else "no shard within 240 s"
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up runs: the lock and any half-written file stay
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists() and (tmp_path / ".out.lock").exists()
    capsys.readouterr()
    with one_torch_thread():
        assert main([*ARGS, "--output_dir", str(out)]) == 0
    err = capsys.readouterr().err
    assert "taking over the lock of a process that is gone" in err and "resuming:" in err
    assert datasets.load_from_disk(str(out)).data.table.equals(single.data.table)
