"""``pluralign env``: what a bug report needs: versions of the stack and the compute device."""

from __future__ import annotations

import importlib.metadata as md
import platform

PACKAGES = ("pluralign", "torch", "diffusers", "transformers", "peft", "accelerate", "trl", "datasets",
            "bitsandbytes", "wandb", "safetensors", "numpy", "pillow")


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
