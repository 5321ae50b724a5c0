"""``pluralign env``: what a bug report needs: versions of the stack and the compute device."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform

PACKAGES = ("pluralign", "torch", "diffusers", "transformers", "peft", "accelerate", "trl", "datasets",
            "bitsandbytes", "wandb", "safetensors", "numpy", "pillow")


def process_state():
    """accelerate's ``PartialState`` for this process, set up here first: on CPU processes
    (``ACCELERATE_USE_CPU=1``, as the trainer's Accelerator reads it) with gloo, else on the launcher's
    accelerators. Launched as N processes (``WORLD_SIZE``), it must find N: otherwise each process would see
    itself alone and do all the work, every one writing the same outputs (ValueError saying what to set)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and state.num_processes != launched:
        raise ValueError(f"launched as {launched} processes but accelerate set up {state.num_processes} (no GPU "
                         "found for a GPU config?); for CPU processes set ACCELERATE_USE_CPU=1 (see "
                         "recipes/accelerate/cpu_2proc.yaml)")
    return state


def machine() -> dict:
    """What wall times depend on: the cores this process may use (its affinity, not the host's count),
    torch's thread count, the CPU model and whether CUDA is there. Runs record it beside their timings."""
    import os

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:  # Linux names the model; platform only the architecture
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores_available": cores, "torch_threads": torch.get_num_threads(), "cpu": cpu,
            "cuda": torch.cuda.is_available()}


def check_device(device: str, option: str = "device") -> str:
    """``device`` itself if this machine can run on it ("auto" always can), else a ValueError naming ``option``.

    Asked before any model loads: torch would otherwise fail only at the first ``.to(device)``, after minutes of
    loading, with an assertion ("Torch not compiled with CUDA enabled") that names no option."""
    import torch

    if device == "auto":
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option} {device!r}: not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None
            why = "no GPU is visible" if built else "this torch is built without CUDA"
            raise ValueError(f"{option} {device}: {why} (torch {torch.__version__}); use --{option} cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {device}: this machine has {torch.cuda.device_count()} GPU(s), numbered from "
                             "0; pick one of them or use auto")
    elif dev.type != "cpu":  # mps, xpu, ...: whatever this torch can reach
        backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if not (callable(available) and available()):
            raise ValueError(f"{option} {device}: no {dev.type} device is available to this torch; use --{option} "
                             "cpu or auto")
    return device


def collect() -> dict[str, str]:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = "not installed"
    import torch

    if torch.cuda.is_available():
        info["device"] = f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
        info["bf16"] = str(torch.cuda.is_bf16_supported())
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info["device"] = "mps"
    else:
        m = machine()
        info["device"] = f"cpu: {m['cpu']}, {m['cores_available']} cores available, {m['torch_threads']} torch threads"
    return info


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(prog="pluralign env", description=__doc__).parse_args(argv)
    info = collect()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    return 0
