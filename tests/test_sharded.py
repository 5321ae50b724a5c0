"""Sharded training on two CPU processes (gloo): FSDP FULL_SHARD and DeepSpeed ZeRO-2 each train,
are killed after a checkpoint, resume, and export the adapter a single process trains on the
doubled batch.

accelerate sets up FSDP and DeepSpeed only on accelerators: with ``ACCELERATE_USE_CPU=1`` it
starts the gloo process group and then falls back to plain data parallelism. The driver below
completes the setup accelerate would do on a GPU (the FSDP or DeepSpeed plugin read from the
launcher's environment, the distributed type, DeepSpeed's process group), so that the trainer's
own code runs exactly as it does there: the FSDP-wrapped reference pass, the gathered LoRA
state, the per-process optimizer shards in checkpoints and the resume from them.

On a GPU machine, ``PLURALIGN_SHARDED_ON_GPU=1 pytest tests/test_sharded.py`` runs the same
checks through the stock launcher, one process per visible GPU (1, 2 or 4), with nothing forced:
the driver's set-up only fills in what accelerate left undone, and on a GPU it leaves nothing.

The kill is a hard ``os._exit(137)`` on every process right after the checkpoint of step 2 is
on disk, so nothing after it (export, tracker flush, the final checkpoint) happens.
"""

from __future__ import annotations

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
ON_GPU = os.environ.get("PLURALIGN_SHARDED_ON_GPU") == "1"
PROCS = torch.cuda.device_count() if ON_GPU else 2

DRIVER = '''
import os, sys
import torch
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"):
    # DeepSpeed's shared-memory all-reduce serves tensor-parallel inference only (ZeRO training never calls
    # it), and it is C++ compiled on first use: about a minute of both cores on every fresh machine
    # (by its module: the attribute `deepspeed.comm.torch` is torch itself, which deepspeed.comm imports)
    import importlib
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

_init = Accelerator.__init__

def __init__(self, *a, **k):
    _init(self, *a, **k)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true" and self.distributed_type != DistributedType.FSDP:
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        kind = DistributedType.FSDP
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" and self.distributed_type != DistributedType.DEEPSPEED:
        import deepspeed
        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision("no")
        self.state.deepspeed_plugins = {"default": plugin}
        plugin.select(_from_accelerator_state=True)
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
        kind = DistributedType.DEEPSPEED
    else:
        return
    self.state.distributed_type = kind
    PartialState._shared_state["distributed_type"] = kind

Accelerator.__init__ = __init__

# FSDP1 takes the CPU as its device only without an index ("cpu", not accelerate's "cpu:0")
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
_fsdp_init = FSDP.__init__

def fsdp_init(self, module, *a, **k):
    if isinstance(k.get("device_id"), torch.device) and k["device_id"].type == "cpu":
        k["device_id"] = torch.device("cpu")
    _fsdp_init(self, module, *a, **k)

FSDP.__init__ = fsdp_init

import pluralign.trainers.trainer as trainer
kill_at = int(os.environ.get("KILL_AFTER_CHECKPOINT", "0"))
_save = trainer._save_checkpoint

def save_then_die(p, run, s):
    _save(p, run, s)
    if s.global_step == kill_at:
        os._exit(137)

trainer._save_checkpoint = save_then_die
from pluralign.train import main
sys.exit(main(sys.argv[1:]))
'''

COMMON_YAML = f"""compute_environment: LOCAL_MACHINE
num_machines: 1
num_processes: {PROCS}
machine_rank: 0
main_process_ip: 127.0.0.1
mixed_precision: 'no'
use_cpu: {str(not ON_GPU).lower()}
"""
FSDP_YAML = COMMON_YAML + """distributed_type: FSDP
fsdp_config:
  fsdp_version: 1
  fsdp_auto_wrap_policy: SIZE_BASED_WRAP
  fsdp_min_num_params: 2000
  fsdp_sharding_strategy: FULL_SHARD
  fsdp_backward_prefetch: BACKWARD_PRE
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_offload_params: false
  fsdp_use_orig_params: true
  fsdp_sync_module_states: false
  fsdp_cpu_ram_efficient_loading: false
"""
ZERO2_YAML = COMMON_YAML + """distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 2
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: false
"""

COMMON = dict(max_steps=4, learning_rate=5e-3, beta=500.0, export_kohya=False, checkpointing_steps=2, max_pairs=8,
              seed=3, lr_warmup_steps=0)


def _launch(work: Path, yaml: str, port: int, config, *extra: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    (work / "accelerate.yaml").write_text(yaml)
    (work / "driver.py").write_text(DRIVER)
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               KILL_AFTER_CHECKPOINT=str(kill_at))
    if ON_GPU:
        env.pop("ACCELERATE_USE_CPU", None)
    else:
        env["ACCELERATE_USE_CPU"] = "1"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(work / "accelerate.yaml"), "--main_process_port", str(port),
           str(work / "driver.py"), *launch_argv(config), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def single_run(tiny_pipeline_dir, tmp_path_factory):
    """One process, 4 pairs per step: what the two processes of 2 pairs each must reproduce."""
    from pluralign.trainers import train

    tmp = tmp_path_factory.mktemp("single")
    model = tiny_pipeline_dir("sd")
    train(cfg(tmp, model, train_batch_size=4, **COMMON))
    return model, load_file(str(tmp / "run" / "adapter" / "pytorch_lora_weights.safetensors"))


@pytest.mark.parametrize("name,yaml,port", [("fsdp_full_shard", FSDP_YAML, 29581), ("deepspeed_zero2", ZERO2_YAML, 29583)])
def test_sharded_run_killed_resumed_equals_single_process(single_run, tmp_path, name, yaml, port):
    model, ref = single_run
    assert PROCS in (1, 2, 4), f"needs 1, 2 or 4 processes (4 pairs per step split evenly), found {PROCS} GPUs"
    config = cfg(tmp_path, model, train_batch_size=4 // PROCS, **COMMON)
    ckpts = tmp_path / "run" / "checkpoints"

    killed = _launch(tmp_path, yaml, port, config, kill_at=2)
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert [p.name for p in sorted(ckpts.iterdir()) if not p.name.startswith(".")] == ["checkpoint-2"]
    saved = sorted(f.name for f in (ckpts / "checkpoint-2").iterdir())
    assert all(f"optimizer.rank{r}.pt" in saved for r in range(PROCS)) and "optimizer.pt" not in saved, saved
    assert not (tmp_path / "run" / "adapter").exists()                       # killed before the export

    resumed = _launch(tmp_path, yaml, port + 1, config, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout + resumed.stderr and "checkpoint-2" in resumed.stdout + resumed.stderr

    out = load_file(str(tmp_path / "run" / "adapter" / "pytorch_lora_weights.safetensors"))
    assert set(out) == set(ref)
    for k in ref:
        assert out[k].shape == ref[k].shape, k                               # whole tensors, not one process's slice
        # gloo's all-reduce sums in another order than one batch; Adam magnifies that on near-zero gradients
        assert torch.allclose(out[k], ref[k], atol=5e-4), (name, k, (out[k] - ref[k]).abs().max())
    worst = max(float((out[k] - ref[k]).abs().max()) for k in ref)
    print(f"\n{name}: killed after step 2, resumed to step 4; max abs diff vs one process {worst:.2e}")
    b_keys = [k for k in ref if "lora.up" in k]
    diff = sum(((out[k] - ref[k]) ** 2).sum() for k in b_keys) ** 0.5
    size = sum(((ref[k]) ** 2).sum() for k in b_keys) ** 0.5
    assert size > 1e-3 and diff / size < 2e-3, (name, float(diff), float(size))
    # the final checkpoint holds the same whole weights as the export
    last = load_file(str(ckpts / "checkpoint-4" / "lora.safetensors"))
    assert all(v.numel() > 0 for v in last.values()) and len(last) == len(ref)


def test_sharded_resume_with_another_process_count_is_refused(tmp_path):
    from pluralign.trainers import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    staging = ckpt.staging_dir(root, 2)
    ckpt.prepare_staging(staging)
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    for r in (0, 1):
        ckpt.save_optimizer_shard(staging, opt, r)
    path = ckpt.save_checkpoint(root, 2, {"a.lora_A.weight": torch.zeros(1)}, None, sched,
                                {"position": 0, "history": [], "optimizer_world_size": 2}, None)
    assert sorted(p.name for p in path.glob("optimizer*")) == ["optimizer.rank0.pt", "optimizer.rank1.pt"]
    assert ckpt.problem(path) is None
    restored = {}
    with pytest.raises(ValueError, match="sharded over 2 processes, this run has 4; resume with 2"):
        ckpt.load_checkpoint(path, opt, sched, restored.update, rank=0, world_size=4)
    assert restored == {}                                                      # refused before touching anything
    ckpt.load_checkpoint(path, opt, sched, restored.update, rank=1, world_size=2)
    assert set(restored) == {"a.lora_A.weight"}


def test_a_missing_shard_is_never_published(tmp_path):
    from pluralign.trainers import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    staging = ckpt.staging_dir(root, 2)
    ckpt.prepare_staging(staging)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    ckpt.save_optimizer_shard(staging, opt, 0)
    with pytest.raises(RuntimeError, match=r"optimizer shards missing.*optimizer.rank1.pt"):
        ckpt.save_checkpoint(root, 2, {"a.lora_A.weight": torch.zeros(1)}, None, sched,
                             {"position": 0, "history": [], "optimizer_world_size": 2}, None)
    assert ckpt.list_checkpoints(root) == []
