"""Where the shipped toy checkpoints live (``checkpoints/toy/`` at the repository root).

``PLURALIGN_TOY_DIR`` overrides the location, e.g. to use a freshly rebuilt set.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def toy_dir() -> Path:
    return Path(os.environ.get("PLURALIGN_TOY_DIR", REPO_ROOT / "checkpoints" / "toy"))


def base_dir() -> Path:
    """The base ``StableDiffusionPipeline`` directory (follows anti-aesthetic requests)."""
    return toy_dir() / "base"


def aligned_dir() -> Path:
    """The aesthetically aligned pipeline (universal-aesthetic Diffusion-DPO fused in)."""
    return toy_dir() / "aligned"


def checker_dir() -> Path:
    """The content checker (safetensors + config.json)."""
    return toy_dir() / "checker"


def build_config() -> Path:
    return toy_dir() / "build_config.json"
