"""Reward models by name: ``get_reward("pickscore", device="cuda")``.

Weights load on a model's first ``score`` call, not here; a missing optional package or weight
file then raises :class:`~pluralign.rewards.base.MissingDependency` naming what to install.
"""

from __future__ import annotations

from . import models
from .base import RewardModel

# name -> (class, default kwargs, one-line description)
REWARDS: dict[str, tuple[type[RewardModel], dict, str]] = {
    "clip": (models.CLIPScore, {"model_id": "openai/clip-vit-large-patch14"}, "CLIP-L/14 text-image cosine (x100)"),
    "pickscore": (models.PickScore, {}, "PickScore v1 (CLIP-H fine-tuned on Pick-a-Pic)"),
    "hpsv2": (models.HPSv2, {}, "HPS v2.1 (open_clip ViT-H-14); extra: rewards"),
    "imagereward": (models.ImageRewardModel, {}, "ImageReward v1.0; extra: rewards (image-reward)"),
    "aesthetic": (models.LAIONAesthetic, {}, "LAION aesthetic predictor v2 (CLIP-L + MLP)"),
    "blip": (models.BLIPITM, {}, "BLIP ITM match probability (blip-itm-large-coco)"),
    "verifier": (models.VerifierReward, {}, "model-free: verifier values of attributes named in the prompt"),
}


def available() -> list[str]:
    return sorted(REWARDS)


def get_reward(name: str, **kwargs) -> RewardModel:
    """Instantiate a registered reward model; weights load on first use."""
    if name not in REWARDS:
        raise KeyError(f"unknown reward model {name!r}; registered: {', '.join(available())}")
    cls, defaults, _ = REWARDS[name]
    return cls(**{**defaults, **kwargs})
