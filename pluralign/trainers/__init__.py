"""Diffusion-DPO LoRA training: losses, objectives, model families, adapters, the loop, export.

Public entry points: :func:`train` (a :class:`DPOTrainConfig` -> :class:`TrainResult`) and the
objective, :func:`intent_dpo_loss` (plain Diffusion-DPO is :func:`diffusion_dpo_loss`).
"""

from .config import CATEGORY_NAMES, DPOTrainConfig
from .loss import IntentLossConfig, diffusion_dpo_loss, intent_dpo_loss
from .trainer import NonFiniteLossError, TrainResult, plan, train

__all__ = ["CATEGORY_NAMES", "DPOTrainConfig", "IntentLossConfig", "NonFiniteLossError", "TrainResult",
           "diffusion_dpo_loss", "intent_dpo_loss", "plan", "train"]
