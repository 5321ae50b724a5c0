"""The reward-model interface: ``score(images, prompts) -> tensor [N]``, and where models come from.

Every judge and reward model (CLIPScore, PickScore, HPSv2, ImageReward, LAION aesthetic, BLIP
ITM, verifier-based rewards) implements :class:`RewardModel`, so the audit and the evaluation
loop treat them alike. Constructing one is cheap; :meth:`RewardModel.ensure_loaded` reads the
weights, and the eval loop and the audit call it for every model before their first image, so
a missing model costs seconds, not hours of generation. Missing optional packages raise
:class:`MissingDependency` naming what to install; a model that is not on this machine raises
:class:`~pluralign.hub.ModelNotFound` (:func:`~pluralign.hub.require_model`) naming what to download.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch

from ..hub import require_model


class MissingDependency(ImportError, ValueError):
    """An optional package or weight file a reward model needs is not available.

    It is a ValueError too, so the command line reports it as one line (it is the user's setup,
    not a bug), while ``except ImportError`` still catches it."""


def require(package: str, pip_name: str):
    """Import ``package`` or raise :class:`MissingDependency` naming the pip package and the extra that installs it.

    The optional reward packages all come with the ``rewards`` extra, so that is what to install.
    """
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependency(
            f"this reward model needs the optional package '{pip_name}' (import {package!r} failed: {exc});"
            " install it with `pip install 'pluralign[rewards]'`"
        ) from exc


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class RewardModel:
    """Base class: batched, device-aware; weights are read by :meth:`ensure_loaded`, not by the constructor.

    Subclasses implement :meth:`_score_batch` (list of PIL images and prompts -> 1-D float
    tensor on CPU) and, when they have modules or weights, :meth:`load`.
    """

    name: str = "reward"
    prompt_aware: bool = True
    # True when scores are probabilities in [0, 1] (BLIP ITM's match probability, a VLM's P(yes)) rather
    # than unbounded scaled similarities; the intent scorers use them as content scores directly
    probability: bool = False

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 16, dtype: torch.dtype | None = None):
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.dtype = dtype or torch.float32
        self._loaded = False

    def required_models(self) -> list[tuple[str, str]]:
        """``(hub id or path, what it is)`` of every model :meth:`load` reads, so that a caller can check
        with :meth:`check_available` that all of them are here before loading any. None for a model-free reward."""
        return []

    def check_available(self, local_option: str | None = None) -> None:
        """Raise :class:`~pluralign.hub.ModelNotFound` (or FileNotFoundError) for the first model that is not on this
        machine and cannot be downloaded; ``local_option`` names the option that takes a local directory."""
        for spec, what in self.required_models():
            require_model(spec, f"{self.name}: {what}", local_option=local_option)

    def load(self) -> None:
        """Build modules and read weights. Called once, by :meth:`ensure_loaded`, so constructing a
        model stays cheap. A model-free reward has nothing to load."""

    def ensure_loaded(self) -> RewardModel:
        """Load the weights now unless already loaded: callers do this before long work, so that a
        missing package or weight fails before it rather than at the first score."""
        if not self._loaded:
            self.load()
            self._loaded = True
        return self

    def _score_batch(self, images: list, prompts: list[str]) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    @torch.no_grad()
    def score(self, images: Sequence, prompts: Sequence[str] | str) -> torch.Tensor:
        """Rewards for ``images`` under ``prompts`` (one prompt per image, or one for all): float32 tensor [N] on CPU."""
        images = list(images)
        prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(images) != len(prompts):
            raise ValueError(f"{self.name}: got {len(images)} images but {len(prompts)} prompts")
        if not images:
            return torch.zeros(0)
        self.ensure_loaded()
        images = [_to_pil(im) for im in images]
        out = [self._score_batch(images[i : i + self.batch_size], prompts[i : i + self.batch_size]).float().cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out).reshape(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"


def _to_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    import numpy as np

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return Image.fromarray(arr[..., :3])
