"""``pluralign eval`` under ``accelerate launch`` as two CPU processes: the rows are split between them and the
images are the ones one process makes; launched where accelerate finds fewer processes (no ACCELERATE_USE_CPU=1), it
stops instead of running two copies that each do every row and write the same output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_trainer_helpers import one_torch_thread

from pluralign.eval.runner import EvalConfig, run_eval
from pluralign.eval.suite import EvalRow

ROOT = Path(__file__).resolve().parents[1]
ROWS = [EvalRow(f"a {c} circle", f"a {c} circle, blurry", ["blurry"], 40 + i)
        for i, c in enumerate(("red", "blue", "green", "yellow"))]


def _launch(base, suite, out, port, **env_more):
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **env_more)
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", "recipes/accelerate/cpu_2proc.yaml",
           "--main_process_port", str(port), "-m", "pluralign.cli", "eval", "--base", str(base), "--suite", str(suite),
           "--n_prompts", "0", "--num_inference_steps", "2", "--batch_size", "2", "--content_checker", "none",
           "--attribute_judge", "none", "--bootstrap", "100", "--output", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_processes_split_the_rows_and_make_the_single_process_images(tiny_pipeline_dir, tmp_path):
    base = tiny_pipeline_dir("sd")
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in ROWS))
    single = tmp_path / "single"
    with one_torch_thread():  # the launched processes' arithmetic (OMP_NUM_THREADS=1), however pytest is run
        run_eval(EvalConfig(base=str(base), suite=str(suite), n_prompts=0, num_inference_steps=2, batch_size=2,
                            content_checker="none", attribute_judge="none", bootstrap=100, output=str(single)))

    res = _launch(base, suite, tmp_path / "two", 29561, ACCELERATE_USE_CPU="1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "results.json").read_text())["generation"]["num_processes"] == 2
    names = sorted(p.name for p in (single / "images" / "base").glob("*.png"))
    assert len(names) == 2 * len(ROWS)
    for name in names:  # each process's batch of 2 rows is the single process's batch of the same rows
        assert np.array_equal(np.asarray(Image.open(single / "images" / "base" / name)),
                              np.asarray(Image.open(tmp_path / "two" / "images" / "base" / name))), name


def test_launched_as_two_where_accelerate_finds_one_is_refused_before_any_work(monkeypatch, tmp_path):
    """What a CPU launch without ACCELERATE_USE_CPU=1 gives each process: WORLD_SIZE 2, a state of one process."""
    import accelerate

    class Alone:
        def __init__(self, cpu=False):
            self.num_processes, self.is_main_process = 1, True

    monkeypatch.setattr(accelerate, "PartialState", Alone)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"launched as 2 processes but accelerate set up 1 .*ACCELERATE_USE_CPU=1"):
        run_eval(EvalConfig(base="unused", output=str(tmp_path / "copies")))
    assert not (tmp_path / "copies").exists()
