"""Two CPU processes (gloo) through ``accelerate launch``: both ranks end with the same adapter, and
it equals one process trained on the doubled batch.

The run goes through the real entry point (``pluralign.train``) under
``recipes/accelerate/cpu_2proc.yaml``. A small driver records, in each rank, accelerate's world
size and the rank's own LoRA weights when the trainer ends (``Accelerator.end_training``), so the
ranks can be compared with each other and not only through the main process's export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer_helpers import cfg, launch_argv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

DRIVER = '''
import json, sys
from pathlib import Path
from accelerate import Accelerator
from safetensors.torch import save_file
from pluralign.trainers.adapters import adapter_state_dict

out = Path(sys.argv[1])
_end = Accelerator.end_training

def end_training(self):
    model = self.unwrap_model(self._models[0])
    rank = self.process_index
    save_file({k: v.contiguous() for k, v in adapter_state_dict(model, "intent").items()},
              str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"world": self.num_processes, "rank": rank,
                                                      "type": str(self.distributed_type)}))
    return _end(self)

Accelerator.end_training = end_training
from pluralign.train import main
sys.exit(main(sys.argv[2:]))
'''

COMMON = dict(max_steps=2, learning_rate=5e-3, beta=500.0, export_kohya=False, checkpointing_steps=2, max_pairs=8,
              seed=3)


def test_two_ranks_identical_and_equal_to_doubled_batch(tiny_pipeline_dir, tmp_path):
    from pluralign.trainers import train

    model = tiny_pipeline_dir("sd")
    # one process, 4 pairs per step
    single = train(cfg(tmp_path / "single", model, train_batch_size=4, **COMMON))
    ref = load_file(str(tmp_path / "single" / "run" / "checkpoints" / "checkpoint-2" / "lora.safetensors"))

    # two processes, 2 pairs each per step
    dist = tmp_path / "dist"
    dist.mkdir()
    driver = dist / "driver.py"
    driver.write_text(DRIVER)
    config = cfg(dist, model, train_batch_size=2, **COMMON)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", "recipes/accelerate/cpu_2proc.yaml", "--main_process_port",
           "29547", str(driver), str(dist), *launch_argv(config)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]

    infos = [json.loads((dist / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2] and [i["rank"] for i in infos] == [0, 1]
    assert all(i["type"].endswith("MULTI_CPU") for i in infos), infos
    w0, w1 = (load_file(str(dist / f"rank{r}.safetensors")) for r in (0, 1))
    assert set(w0) == set(w1) == set(ref)
    for k in ref:
        assert torch.equal(w0[k], w1[k]), k                                  # DDP keeps the ranks in lockstep
        # summation order differs (gloo all-reduce vs one batch); Adam's normalised step magnifies that float
        # noise on near-zero gradients, so compare at 1e-4 of the lr-sized updates, not bitwise
        assert torch.allclose(w0[k], ref[k], atol=2e-4), (k, (w0[k] - ref[k]).abs().max())
    # lora_B starts at zero, so lora_B is the whole update: the two runs agree on it to < 0.1 %
    b_keys = [k for k in ref if "lora_B" in k]
    diff = sum(((w0[k] - ref[k]) ** 2).sum() for k in b_keys) ** 0.5
    size = sum((ref[k] ** 2).sum() for k in b_keys) ** 0.5
    assert size > 1e-3 and diff / size < 1e-3, (float(diff), float(size))
    # the main process's export is the rank-0 adapter
    exported = dist / "run" / "adapter" / "pytorch_lora_weights.safetensors"
    assert exported.exists() and single.steps == 2


def test_world_size_mismatch_is_refused(tiny_pipeline_dir, tmp_path, monkeypatch):
    """Without ACCELERATE_USE_CPU, `accelerate launch --num_processes 2` on a machine without a GPU starts two ranks
    that accelerate sets up as single-process: each would train its own copy into one folder. A process told
    WORLD_SIZE=2 whose accelerate sees one process is that rank; the trainer stops with advice before writing an
    adapter. (In this process, not under the launcher: the launcher only sets WORLD_SIZE, and the launched
    processes cost about 20 s of test time.)"""
    from pluralign.trainers import train

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    config = cfg(tmp_path, tiny_pipeline_dir("sd"), max_steps=1)
    with pytest.raises(ValueError, match="launched as 2 processes but accelerate set up 1.*ACCELERATE_USE_CPU=1"):
        train(config)
    assert not (tmp_path / "run" / "adapter").exists()
