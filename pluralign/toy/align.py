"""The aesthetically aligned toy model: the base after "universal aesthetic" Diffusion-DPO.

This reproduces what the field does to real models: a preference signal that always prefers
the polished image. Every pair puts the clean render as chosen and its degraded twin as rejected,
*whatever the prompt asks*, including under the anti-aesthetic caption that requests the
degradation. Training goes through ``pluralign.trainers`` (the same LoRA trainer users run), and
the LoRA is then fused into the UNet so the aligned model ships as a plain full pipeline.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from pluralign.data import taxonomy
from pluralign.trainers import DPOTrainConfig, train

from ..config import build, load_yaml, option
from . import paths, world
from .base_model import save_pipeline


@dataclass
class AlignConfig:
    """The alignment stage of ``pluralign build-toy``: which pairs, and the training recipe."""

    align_scenes: int = option(1200, "scenes for the universal-aesthetic pairs (100 per attribute)", min=1)
    align_anti_fraction: float = option(0.5, "share of pairs whose prompt is the anti-aesthetic caption", min=0, max=1)
    align_weights: list[str] = option(
        factory=list, help="ATTRIBUTE=N entries: that attribute's scenes come N times as often in the attribute "
        "round-robin (an attribute the preference reverses only partly gets more of its pairs); empty: every "
        "attribute once")
    align_recipe: str = option(str(paths.recipe("align")), "DPOTrainConfig recipe of the alignment run (its seed "
                               "also seeds the pairs)")

    def train_config(self) -> DPOTrainConfig:
        return build(DPOTrainConfig, load_yaml(self.align_recipe), self.align_recipe)

    def weights(self) -> dict[str, int]:
        """``align_weights`` as ``{attribute: N}``; ValueError naming the entry that is not ``ATTRIBUTE=N``
        with a world attribute and a whole N >= 1."""
        out = {}
        for entry in self.align_weights:
            name, _, n = entry.partition("=")
            if name not in world.ATTRIBUTES or not n.isdigit() or int(n) < 1:
                raise ValueError(f"align_weights: {entry!r} is not ATTRIBUTE=N with N a whole number >= 1 and "
                                 f"ATTRIBUTE one of {', '.join(world.ATTRIBUTES)}")
            out[name] = int(n)
        return out


def attribute_cycle(weights: dict[str, int] | None = None) -> list[str]:
    """The round-robin of attributes the pairs follow: each world attribute, ``weights[a]`` times in a row."""
    return [a for a in world.ATTRIBUTES for _ in range((weights or {}).get(a, 1))]


def universal_pairs(n_scenes: int, seed: int, anti_fraction: float = 0.5,
                    weights: dict[str, int] | None = None) -> list[dict]:
    """Pair rows (the project's trl-style schema): chosen = clean render, rejected = degraded twin.

    The prompt is the anti-aesthetic caption for ``anti_fraction`` of the rows (the request the
    preference ignores) and the ordinary caption for the rest. Scenes take the attributes in turn,
    ``weights[a]`` times for attribute ``a`` (:func:`attribute_cycle`).
    """
    rng = random.Random(seed)
    cycle = attribute_cycle(weights)
    rows = []
    for i, scene in enumerate(world.sample_scenes(n_scenes, seed + 50_000)):
        attr = cycle[i % len(cycle)]
        clean = world.render(scene)
        bad = world.degraded_image(scene, attr, seed=seed + i)
        anti = rng.random() < anti_fraction
        rows.append({
            "prompt": world.anti_caption(scene, attr, seed + i) if anti else world.caption(scene),
            "chosen": clean, "rejected": bad, "kind": "general", "attributes": [attr],
            "category": taxonomy.ATTRIBUTES[attr].category, "source": "toy:universal_aesthetic",
            "severity": world.SEVERITY[attr], "pair_id": f"universal-{seed}-{i}",
        })
    return rows


def save_pairs(rows: list[dict], path: str | Path) -> Path:
    import datasets

    path = Path(path)
    features = datasets.Features({
        "prompt": datasets.Value("string"), "chosen": datasets.Image(), "rejected": datasets.Image(),
        "kind": datasets.Value("string"), "attributes": datasets.Sequence(datasets.Value("string")),
        "category": datasets.Value("string"), "source": datasets.Value("string"),
        "severity": datasets.Value("float32"), "pair_id": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_list(rows, features=features)
    ds.save_to_disk(str(path))
    return path


def align(base_dir: str | Path, out_dir: str | Path, work_dir: str | Path, cfg: AlignConfig) -> dict:
    """Universal-aesthetic Diffusion-DPO on the base; the fused pipeline is saved to ``out_dir``."""
    import torch
    from diffusers import StableDiffusionPipeline

    work_dir = Path(work_dir)
    recipe = cfg.train_config()
    pairs = save_pairs(universal_pairs(cfg.align_scenes, recipe.seed, cfg.align_anti_fraction, cfg.weights()),
                       work_dir / "universal_pairs")
    result = train(dataclasses.replace(
        recipe, pretrained_model=str(base_dir), dataset=str(pairs), resolution=world.SIZE,
        output_dir=str(work_dir / "run"), run_name="toy-universal-aesthetic", overwrite_output_dir=True,
        adapter_name="aesthetic", cache_dir=str(work_dir / "cache")))
    pipe = StableDiffusionPipeline.from_pretrained(str(base_dir), dtype=torch.float32)
    pipe.load_lora_weights(str(result.adapter_dir), adapter_name="aesthetic")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    save_pipeline(pipe, out_dir)
    history = getattr(result, "history", []) or []
    return {"adapter_dir": str(result.adapter_dir), "steps": getattr(result, "steps", None),
            "last_metrics": history[-1] if history else None}
