"""Reward models by name: ``get_reward("pickscore", device="cuda")``, or ``get_reward("clip=/models/clip")``.

A spec is a registered name, optionally ``=`` a local path that takes the place of the default
hub weights (``--judges clip=/models/clip-vit-l``, ``--rewards hpsv2=/w/hps.safetensors``): on a
machine without hub access that is the way to point a judge at weights copied there.

:func:`load_rewards` is what the eval loop and the audit use: it checks that every model is on
this machine, then loads them all, before the caller's first image. Constructing a model with
:func:`get_reward` alone reads no weights.
"""

from __future__ import annotations

from pathlib import Path

from . import models
from .base import RewardModel
from .vlm_judge import VLMJudge

# name -> (class, default kwargs, one-line description)
REWARDS: dict[str, tuple[type[RewardModel], dict, str]] = {
    "clip": (models.CLIPScore, {"model_id": "openai/clip-vit-large-patch14"}, "CLIP-L/14 text-image cosine (x100)"),
    "pickscore": (models.PickScore, {}, "PickScore v1 (CLIP-H fine-tuned on Pick-a-Pic)"),
    "hpsv2": (models.HPSv2, {}, "HPS v2.1 (open_clip ViT-H-14); extra: rewards"),
    "imagereward": (models.ImageRewardModel, {}, "ImageReward v1.0; extra: rewards (image-reward)"),
    "aesthetic": (models.LAIONAesthetic, {}, "LAION aesthetic predictor v2 (CLIP-L + MLP)"),
    "blip": (models.BLIPITM, {}, "BLIP ITM match probability (blip-itm-large-coco)"),
    "verifier": (models.VerifierReward, {}, "model-free: verifier values of attributes named in the prompt"),
    "vlm": (VLMJudge, {}, "a local VLM's P(yes) that the image shows the prompt; needs vlm=MODEL_OR_DIR"),
}

# name -> the keyword argument that ``name=PATH`` sets. imagereward is missing on purpose: its package
# reads a local checkpoint with torch.load (a pickle), which pluralign does not do with user files.
LOCAL_PATH_ARG = {"clip": "model_id", "pickscore": "model_id", "blip": "model_id", "hpsv2": "checkpoint",
                  "aesthetic": "head", "vlm": "model_id"}


class UnknownReward(ValueError):
    """A reward spec names no registered model, or gives a local path to one that takes none."""


def available() -> list[str]:
    return sorted(REWARDS)


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"clip"`` -> ("clip", {}); ``"clip=/dir"`` -> ("clip", {"model_id": "/dir"}).

    A PickScore directory that holds its own processor files is used for the processor too;
    otherwise the processor stays the default hub one (the PickScore repo ships none)."""
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if name not in REWARDS:
        raise UnknownReward(f"unknown reward model {name!r}; registered: {', '.join(available())}")
    if not sep:
        return name, {}
    if name not in LOCAL_PATH_ARG:
        raise UnknownReward(f"reward {spec!r}: {name} takes no local path (local paths: "
                            f"{', '.join(f'{n}=PATH' for n in LOCAL_PATH_ARG)})")
    if not path:
        raise UnknownReward(f"reward {spec!r}: give the path after '=', e.g. {name}=/path/to/weights")
    kwargs = {LOCAL_PATH_ARG[name]: path}
    if name == "pickscore" and any((Path(path) / f).is_file() for f in ("preprocessor_config.json",
                                                                          "processor_config.json")):
        kwargs["processor_id"] = path
    return name, kwargs


def get_reward(spec: str, **kwargs) -> RewardModel:
    """Instantiate a registered reward model (``name`` or ``name=PATH``); no weights are read yet."""
    name, local = parse_spec(spec)
    cls, defaults, _ = REWARDS[name]
    return cls(**{**defaults, **local, **kwargs})


def build_rewards(specs: list[str], *, option: str = "rewards", **kwargs) -> dict[str, RewardModel]:
    """``{name: model}`` for ``specs``, each checked to be on this machine (or downloadable), none loaded yet.

    All are checked before any is loaded, so a missing third model fails before the first one has
    spent a minute loading. ``option`` is the command-line option the specs came from: the error
    for a model that is not here names ``--option name=PATH`` as the way to give a local copy."""
    built: dict[str, RewardModel] = {}
    for spec in specs:
        name, _ = parse_spec(spec)
        if name in built:
            raise UnknownReward(f"{option}: {name} is given twice ({', '.join(specs)}); give each model once")
        built[name] = get_reward(spec, **kwargs)
    for name, model in built.items():
        model.check_available(f"--{option} {name}=PATH" if name in LOCAL_PATH_ARG else None)
    return built


def load_rewards(specs: list[str], *, option: str = "rewards", **kwargs) -> dict[str, RewardModel]:
    """:func:`build_rewards`, then every model's weights loaded: what a caller does before long work."""
    built = build_rewards(specs, option=option, **kwargs)
    for model in built.values():
        model.ensure_loaded()
    return built
