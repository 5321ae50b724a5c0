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
from .base_model import generate, save_pipeline


@dataclass
class AlignConfig:
    """The alignment stage of ``pluralign build-toy``: which pairs, and the training recipe."""

    align_scenes: int = option(1500, "scenes for the universal-aesthetic pairs (100 per attribute turn: 12 "
                               "attributes, color_cast taking three turns and small_subject two)", min=1)
    align_anti_fraction: float = option(0.5, "share of pairs whose prompt is the anti-aesthetic caption", min=0, max=1)
    align_weights: list[str] = option(
        factory=lambda: ["color_cast=3", "small_subject=2"],
        help="ATTRIBUTE=N entries: that attribute's scenes come N times as often in the attribute round-robin (an "
        "attribute the preference reverses only partly gets more of its pairs; the default is the shipped "
        "alignment's, docs/toy.md ninth re-alignment round); an empty value (\"\"): every attribute once")
    align_recipe: str = option(str(paths.recipe("align")), "DPOTrainConfig recipe of the alignment run (its seed "
                               "also seeds the pairs)")
    align_onpolicy: list[str] = option(
        factory=list, help="attributes whose anti-caption pairs take as rejected image the base model's own sample "
        "of that caption instead of the world's degraded render (on-policy pairs: the preference pushes away from "
        "what the model draws when asked, not from a render it may never draw); empty: every pair off-policy")
    align_request_kind: str = option(
        "general", "the kind the trainer sees on anti-caption pairs: general (like every other pair), or anti, so "
        "the trainer's terms for requests reach them (guided_sft_scale fits the guided prediction there, the "
        "branch guidance amplifies a request through). The preference is the same either way: the clean render "
        "wins", choices=["general", "anti"])

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

    def onpolicy(self) -> list[str]:
        """``align_onpolicy``, checked: ValueError naming an entry that is not a world attribute."""
        bad = [a for a in self.align_onpolicy if a not in world.ATTRIBUTES]
        if bad:
            raise ValueError(f"align_onpolicy: {', '.join(bad)} not among the world's attributes "
                             f"({', '.join(world.ATTRIBUTES)})")
        return list(self.align_onpolicy)


def attribute_cycle(weights: dict[str, int] | None = None) -> list[str]:
    """The round-robin of attributes the pairs follow: each world attribute, ``weights[a]`` times in a row."""
    return [a for a in world.ATTRIBUTES for _ in range((weights or {}).get(a, 1))]


def universal_pairs(n_scenes: int, seed: int, anti_fraction: float = 0.5,
                    weights: dict[str, int] | None = None, request_kind: str = "general") -> list[dict]:
    """Pair rows (the project's trl-style schema): chosen = clean render, rejected = degraded twin.

    The prompt is the anti-aesthetic caption for ``anti_fraction`` of the rows (the request the
    preference ignores) and the ordinary caption for the rest. Scenes take the attributes in turn,
    ``weights[a]`` times for attribute ``a`` (:func:`attribute_cycle`). Anti-caption rows get the kind
    ``request_kind`` (``AlignConfig.align_request_kind``); ordinary-caption rows are ``general``.
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
            "chosen": clean, "rejected": bad, "kind": request_kind if anti else "general", "attributes": [attr],
            "category": taxonomy.ATTRIBUTES[attr].category, "source": "toy:universal_aesthetic",
            "severity": world.SEVERITY[attr], "pair_id": f"universal-{seed}-{i}",
            "anti": anti,  # whether the prompt asks for the attribute (not saved; the kind is request_kind's)
        })
    return rows


def onpolicy_rejected(rows: list[dict], pipe, attributes: list[str], sampling: dict, seed: int) -> int:
    """Replace, in place, the rejected image of every anti-caption row of ``attributes`` by ``pipe``'s sample of
    its prompt (one fixed seed per row); returns how many rows changed.

    The world's render of an attribute is one way to draw it; the model asked for it may draw it another way (the
    base answers a colour-cast request with its own green). A preference against the render then pushes the model
    somewhere it was not, and it can come out on the far side (the aligned model's pink). Against the model's own
    sample, the preference pushes away from what it does."""
    idx = [i for i, r in enumerate(rows) if r["attributes"][0] in attributes and r["anti"]]
    if not idx:
        return 0
    images = generate(pipe, [rows[i]["prompt"] for i in idx], [seed + i for i in idx],
                      sampling["num_inference_steps"], sampling["guidance_scale"])
    for i, img in zip(idx, images):
        rows[i]["rejected"] = img
        rows[i]["source"] = "toy:universal_aesthetic:onpolicy"
    return len(idx)


def save_pairs(rows: list[dict], path: str | Path) -> Path:
    import datasets

    path = Path(path)
    features = datasets.Features({
        "prompt": datasets.Value("string"), "chosen": datasets.Image(), "rejected": datasets.Image(),
        "kind": datasets.Value("string"), "attributes": datasets.Sequence(datasets.Value("string")),
        "category": datasets.Value("string"), "source": datasets.Value("string"),
        "severity": datasets.Value("float32"), "pair_id": datasets.Value("string"),
    })
    # the schema's columns only (a row may carry bookkeeping such as universal_pairs' ``anti``); a missing one fails
    ds = datasets.Dataset.from_list([{k: r[k] for k in features} for r in rows], features=features)
    ds.save_to_disk(str(path))
    return path


def align(base_dir: str | Path, out_dir: str | Path, work_dir: str | Path, cfg: AlignConfig,
          sampling: dict | None = None) -> dict:
    """Universal-aesthetic Diffusion-DPO on the base; the fused pipeline is saved to ``out_dir``. ``sampling``
    (num_inference_steps, guidance_scale) is how the on-policy rejected images are drawn (``align_onpolicy``)."""
    import torch
    from diffusers import StableDiffusionPipeline

    work_dir = Path(work_dir)
    recipe = cfg.train_config()
    rows = universal_pairs(cfg.align_scenes, recipe.seed, cfg.align_anti_fraction, cfg.weights(),
                           cfg.align_request_kind)
    n_onpolicy, onpolicy = 0, cfg.onpolicy()
    if onpolicy:
        if sampling is None:
            raise ValueError("align_onpolicy needs the sampling settings the base is sampled with")
        base = StableDiffusionPipeline.from_pretrained(str(base_dir), dtype=torch.float32)
        base.set_progress_bar_config(disable=True)
        n_onpolicy = onpolicy_rejected(rows, base, onpolicy, sampling, recipe.seed + 70_000)
        del base
    pairs = save_pairs(rows, work_dir / "universal_pairs")
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
            "onpolicy_rejected": n_onpolicy, "last_metrics": history[-1] if history else None}
