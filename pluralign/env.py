"""``pluralign env``: what a bug report needs: versions of the stack and the compute device."""

from __future__ import annotations

import importlib.metadata as md
import platform

PACKAGES = ("pluralign", "torch", "diffusers", "transformers", "peft", "accelerate", "trl", "datasets",
            "bitsandbytes", "wandb", "safetensors", "numpy", "pillow")


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
        info["device"] = f"cpu ({torch.get_num_threads()} threads)"
    return info


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(prog="pluralign env", description=__doc__).parse_args(argv)
    info = collect()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    return 0
