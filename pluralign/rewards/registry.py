"""Reward models by name, loaded lazily: ``get_reward("pickscore", device="cuda")``.

Nothing heavy is imported until a model's first ``score`` call; a missing optional package or
weight file raises :class:`~pluralign.rewards.base.MissingDependency` naming what to install.
"""

from __future__ import annotations

import importlib

from .base import MissingDependency, RewardModel

# name -> ("module:Class", default kwargs, one-line description)
REWARDS: dict[str, tuple[str, dict, str]] = {
    "clip": ("pluralign.rewards.models:CLIPScore", {"model_id": "openai/clip-vit-large-patch14"},
             "CLIP-L/14 text-image cosine (x100)"),
    "pickscore": ("pluralign.rewards.models:PickScore", {}, "PickScore v1 (CLIP-H fine-tuned on Pick-a-Pic)"),
    "hpsv2": ("pluralign.rewards.models:HPSv2", {}, "HPS v2.1 (open_clip ViT-H-14); extra: rewards"),
    "imagereward": ("pluralign.rewards.models:ImageRewardModel", {}, "ImageReward v1.0; extra: rewards (image-reward)"),
    "aesthetic": ("pluralign.rewards.models:LAIONAesthetic", {}, "LAION aesthetic predictor v2 (CLIP-L + MLP)"),
    "blip": ("pluralign.rewards.models:BLIPITM", {}, "BLIP ITM match probability (blip-itm-large-coco)"),
    "verifier": ("pluralign.rewards.models:VerifierReward", {}, "model-free: verifier values of attributes named in the prompt"),
}


def register_reward(name: str, target: str, defaults: dict | None = None, description: str = "") -> None:
    """Add a reward model: ``target`` is ``"package.module:ClassName"`` of a :class:`RewardModel` subclass."""
    REWARDS[name] = (target, dict(defaults or {}), description)


def available() -> list[str]:
    return sorted(REWARDS)


def get_reward(name: str, **kwargs) -> RewardModel:
    """Instantiate a registered reward model; weights load on first use."""
    if name not in REWARDS:
        raise KeyError(f"unknown reward model {name!r}; registered: {', '.join(available())}")
    target, defaults, _ = REWARDS[name]
    module, cls = target.split(":")
    try:
        klass = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise MissingDependency(f"reward model {name!r} needs {exc.name!r}: pip install {exc.name}") from exc
    return klass(**{**defaults, **kwargs})
