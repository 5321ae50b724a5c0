"""What sharded training changes for the trainer: FSDP and DeepSpeed ZeRO.

Under DDP every process holds the whole model and the whole optimizer, so the main process can
read the LoRA weights off the module and save the optimizer alone. Sharding breaks both:

- **parameters** (FSDP FULL_SHARD / SHARD_GRAD_OP, ZeRO-3): outside the wrapped forward each
  process holds only its slice, so a forward through the unwrapped module fails (or computes with
  the wrong weights) and reading the weights off the module gives slices. The frozen reference
  pass therefore goes through the wrapped module with the adapters disabled, and the LoRA state is
  gathered with ``accelerator.get_state_dict``, a collective every process must enter.
- **optimizer state** (any FSDP sharding, ZeRO-1/2/3): each process owns part of it, so each
  process saves and restores its own file, and a resume needs the same number of processes.

Everything here takes the ``Accelerator`` and asks it what it set up, so the trainer has one path
for single-process, DDP, FSDP and DeepSpeed runs.
"""

from __future__ import annotations

import torch

from .adapters import adapter_state_dict, load_adapter_state_dict


def _distributed_type(accelerator) -> str:
    return str(accelerator.distributed_type).rsplit(".", 1)[-1]


def zero_stage(accelerator) -> int:
    """The DeepSpeed ZeRO stage (0 when not running under DeepSpeed)."""
    if _distributed_type(accelerator) != "DEEPSPEED":
        return 0
    return int(accelerator.state.deepspeed_plugin.zero_stage or 0)


def _fsdp_sharded(accelerator) -> bool:
    if _distributed_type(accelerator) != "FSDP":
        return False
    strategy = accelerator.state.fsdp_plugin.sharding_strategy
    return "NO_SHARD" not in str(strategy)


def params_sharded(accelerator) -> bool:
    """Whether a process holds only a slice of the weights outside the wrapped forward."""
    return _fsdp_sharded(accelerator) or zero_stage(accelerator) >= 3


def optimizer_sharded(accelerator) -> bool:
    """Whether each process holds only part of the optimizer state (so each saves its own)."""
    return _fsdp_sharded(accelerator) or zero_stage(accelerator) >= 1


def forward_module(accelerator, model, unwrapped):
    """The module to call for a forward pass that must not build a graph (the frozen reference).

    The unwrapped module under DDP and DeepSpeed ZeRO-1/2: the same weights, without the wrapper's
    gradient bookkeeping, as every earlier run did. The wrapped one when parameters are sharded:
    only its forward gathers them."""
    return model if params_sharded(accelerator) else unwrapped


def configure_deepspeed(accelerator, *, micro_batch_size: int, gradient_accumulation_steps: int,
                        max_grad_norm: float) -> None:
    """Give DeepSpeed the batch and clipping settings it would otherwise read off a dataloader.

    The trainer samples its own pairs and passes no dataloader to ``accelerator.prepare``, so
    DeepSpeed's ``auto`` batch size has nothing to resolve from and accelerate raises. The train
    recipe is where these settings live; the accelerate file only picks the ZeRO stage, so its
    values for them are replaced here rather than silently disagreeing with the recipe."""
    if _distributed_type(accelerator) != "DEEPSPEED":
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = int(micro_batch_size)
    ds["gradient_accumulation_steps"] = int(gradient_accumulation_steps)
    ds["train_batch_size"] = int(micro_batch_size) * int(gradient_accumulation_steps) * accelerator.num_processes
    ds["gradient_clipping"] = float(max_grad_norm) if max_grad_norm > 0 else 0.0
    ds.setdefault("zero_allow_untested_optimizer", True)  # torch AdamW / bitsandbytes, not DeepSpeed's own


def full_adapter_state(accelerator, model, unwrapped, adapter_name: str) -> dict[str, torch.Tensor] | None:
    """The whole LoRA state of ``adapter_name`` (PEFT keys) on the main process, None elsewhere.

    A collective when parameters are sharded: every process must call it at the same point."""
    if not params_sharded(accelerator):
        return adapter_state_dict(unwrapped, adapter_name) if accelerator.is_main_process else None
    full = _fsdp_full_state(model) if _fsdp_sharded(accelerator) else accelerator.get_state_dict(model, unwrap=True)
    if not accelerator.is_main_process:
        return None
    return adapter_from_full_state(full, adapter_name)


def adapter_from_full_state(full: dict[str, torch.Tensor], adapter_name: str) -> dict[str, torch.Tensor]:
    """The LoRA tensors of ``adapter_name`` in a full module state dict, keyed as
    :func:`~.adapters.adapter_state_dict` keys them (the adapter's name dropped), as fp32 CPU copies."""
    tag = f".{adapter_name}."
    return {k.replace(tag, ".", 1): v.detach().to("cpu", torch.float32).clone()
            for k, v in full.items() if "lora_" in k and tag in k}


def _fsdp_full_state(model) -> dict[str, torch.Tensor]:
    """FSDP's full state dict on rank 0, as ``accelerator.get_state_dict`` gathers it, except that
    tensors already on the CPU are not "offloaded" to it: that copy crashes a CPU (gloo) run."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    on_cpu = next(model.parameters()).device.type == "cpu"
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=not on_cpu, rank0_only=True)):
        return model.state_dict()


def load_full_adapter_state(accelerator, model, unwrapped, lora: dict[str, torch.Tensor], adapter_name: str) -> None:
    """Put whole LoRA tensors (as :func:`full_adapter_state` returns them) back into the model, on every
    process. Under FSDP each process keeps its slice of them (FSDP's full-state-dict load)."""
    if not _fsdp_sharded(accelerator):
        load_adapter_state_dict(unwrapped, lora, adapter_name)
        return
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    named = {}
    for k, v in lora.items():
        head, sep, tail = k.rpartition(".weight") if k.endswith(".weight") else (k, "", "")
        named[f"{head}.{adapter_name}{sep}{tail}"] = v
    expected = {_clean(k) for k, _ in unwrapped.named_parameters() if "lora_" in k and f".{adapter_name}." in k}
    if set(named) != expected:
        raise RuntimeError(f"checkpoint LoRA keys do not match the model: {sorted(set(named) ^ expected)[:5]}")
    on_cpu = next(model.parameters()).device.type == "cpu"
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=not on_cpu, rank0_only=False)):
        result = model.load_state_dict(named, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"checkpoint has LoRA keys the model does not: {result.unexpected_keys[:5]}")


def _clean(name: str) -> str:
    """A parameter name as state dicts write it, without the wrappers FSDP nests inside the module."""
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")


def shutdown() -> None:
    """End a launched run's process group once every process is done.

    A process that leaves the interpreter with the default group still up lets the group's
    background threads be destroyed while joinable, and the C++ runtime then aborts the finished
    process ("terminate called without an active exception", exit -6) after its work is saved:
    ``accelerate launch`` reports the run as failed. A barrier first, so no process tears the group
    down while another still talks to it. A no-op outside a launched run."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()
        td.destroy_process_group()
