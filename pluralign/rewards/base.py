"""The reward-model interface: ``score(images, prompts) -> tensor [N]``.

Every judge and reward model (CLIPScore, PickScore, HPSv2, ImageReward, LAION aesthetic, BLIP
ITM, verifier-based rewards) implements :class:`RewardModel`, so the audit and the evaluation
loop treat them alike. Models load lazily on the first ``score`` call; missing optional packages
or weights raise :class:`MissingDependency` naming what to install or where to put the weights.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch


class MissingDependency(ImportError):
    """An optional package or weight file a reward model needs is not available."""


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
    """Base class: batched, device-aware, lazily loaded.

    Subclasses implement :meth:`_score_batch` (list of PIL images and prompts -> 1-D float
    tensor on CPU) and, when they have modules or weights, :meth:`load`.
    """

    name: str = "reward"
    prompt_aware: bool = True

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 16, dtype: torch.dtype | None = None):
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.dtype = dtype or torch.float32
        self._loaded = False

    def load(self) -> None:
        """Build modules and read weights; :meth:`score` calls it once, before the first batch, so
        constructing a model stays cheap. A model-free reward has nothing to load."""

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
        if not self._loaded:
            self.load()
            self._loaded = True
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
