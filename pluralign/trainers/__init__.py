"""Diffusion-DPO LoRA training: losses, objectives, model families, adapters, the loop, export.

Public entry points: :func:`train` (a :class:`DPOTrainConfig` -> :class:`TrainResult`) and
:func:`diffusion_dpo_loss`. Heavy imports (torch, diffusers) happen when these are used.
"""

from .config import CATEGORY_NAMES, DPOTrainConfig


def train(config: DPOTrainConfig):
    """Train and export the adapter(s) described by ``config``; returns a ``TrainResult``."""
    from .trainer import train as _train

    return _train(config)


def __getattr__(name):
    if name in ("TrainResult", "NonFiniteLossError", "plan"):
        from . import trainer

        return getattr(trainer, name)
    if name == "diffusion_dpo_loss":
        from .loss import diffusion_dpo_loss

        return diffusion_dpo_loss
    raise AttributeError(name)


__all__ = ["CATEGORY_NAMES", "DPOTrainConfig", "train", "TrainResult", "NonFiniteLossError", "diffusion_dpo_loss",
           "plan"]
