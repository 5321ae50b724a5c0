"""Where the shipped toy checkpoints and the toy recipes live: inside the package, so that a plain
``pip install`` (not only an editable one) runs the demo.

``PLURALIGN_TOY_DIR`` overrides the checkpoints' location, e.g. to use a freshly rebuilt set.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = HERE / "checkpoints"


def toy_dir() -> Path:
    return Path(os.environ.get("PLURALIGN_TOY_DIR", SHIPPED))


def recipe(name: str) -> Path:
    """A shipped toy recipe: ``intent_dpo`` (the demo's adapter) or ``align`` (the toy alignment)."""
    return HERE / "recipes" / f"{name}.yaml"


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


def dial_dir() -> Path:
    """The per-category intent adapters ``pluralign dial`` opens on, one directory per category."""
    return toy_dir() / "dial"
