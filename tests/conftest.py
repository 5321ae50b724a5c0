"""Shared fixtures. Tests never touch the network: hub access is off, W&B is disabled, and
tiny models are built from config once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """Directory of a saved tiny pipeline per family, built once per session: ``tiny_pipeline_dir("sd")``."""
    from pluralign.tiny import save_tiny_pipeline

    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = save_tiny_pipeline(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return cache[family]

    return get
