"""The aesthetically aligned toy model: the base after "universal aesthetic" Diffusion-DPO.

This reproduces what the field does to real models: a preference signal that always prefers
the polished image. Every pair puts the clean render as chosen and its degraded twin as rejected,
*whatever the prompt asks*, including under the anti-aesthetic caption that requests the
degradation. Training goes through ``pluralign.trainers`` (the same LoRA trainer users run), and
the LoRA is then fused into the UNet so the aligned model ships as a plain full pipeline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..config import option
from . import world


@dataclass
class AlignConfig:
    align_scenes: int = option(600, "scenes for the universal-aesthetic pairs", min=1)
    align_anti_fraction: float = option(0.5, "share of pairs whose prompt is the anti-aesthetic caption", min=0, max=1)
    align_steps: int = option(600, "Diffusion-DPO optimizer steps", min=1)
    align_batch_size: int = option(8, "pairs per step", min=1)
    align_lr: float = option(1e-3, "LoRA learning rate (chosen on the validation suite, seed 5000, among 1e-4/2e-4/3e-4/1e-3)", min=0)
    align_rank: int = option(8, "LoRA rank", min=1)
    align_beta: float = option(2000.0, "DPO beta (½β convention)", min=0)
    align_sft_weight: float = option(
        5000.0, "extra denoising loss on the chosen (clean) image. Without it DPO drives the error on both images "
        "up (the chosen one doubled in a 300-step run) and ordinary prompts break (content 47% vs the base's 100%); "
        "with it the model stays on the clean data, so ordinary prompts keep working while anti-aesthetic requests "
        "are ignored, which is the reversal the paper describes. Chosen with align_steps on the seed-5000 "
        "validation suite among 0/1000/5000 x 300/600 steps", min=0)
    align_seed: int = option(1, "seed of the pairs and of the training run")


def universal_pairs(n_scenes: int, seed: int, anti_fraction: float = 0.5) -> list[dict]:
    """Pair rows (the project's trl-style schema): chosen = clean render, rejected = degraded twin.

    The prompt is the anti-aesthetic caption for ``anti_fraction`` of the rows (the request the
    preference ignores) and the ordinary caption for the rest.
    """
    from pluralign.data import taxonomy

    rng = random.Random(seed)
    rows = []
    for i, scene in enumerate(world.sample_scenes(n_scenes, seed + 50_000)):
        attr = world.ATTRIBUTES[i % len(world.ATTRIBUTES)]
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

    from pluralign.trainers import DPOTrainConfig, train

    from .base_model import save_pipeline

    work_dir = Path(work_dir)
    pairs = save_pairs(universal_pairs(cfg.align_scenes, cfg.align_seed, cfg.align_anti_fraction),
                       work_dir / "universal_pairs")
    result = train(DPOTrainConfig(
        pretrained_model=str(base_dir), dataset=str(pairs), resolution=world.SIZE, output_dir=str(work_dir / "run"),
        run_name="toy-universal-aesthetic", overwrite_output_dir=True, adapter_name="aesthetic",
        rank=cfg.align_rank, alpha=float(cfg.align_rank), method="dpo", beta=cfg.align_beta, sft_weight=cfg.align_sft_weight,
        learning_rate=cfg.align_lr, max_steps=cfg.align_steps, train_batch_size=cfg.align_batch_size,
        lr_warmup_steps=min(20, cfg.align_steps // 10), seed=cfg.align_seed, cache_dir=str(work_dir / "cache"),
        export_kohya=False, report_to="none", logging_steps=max(1, cfg.align_steps // 10),
    ))
    pipe = StableDiffusionPipeline.from_pretrained(str(base_dir), dtype=torch.float32)
    pipe.load_lora_weights(str(result.adapter_dir), adapter_name="aesthetic")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    save_pipeline(pipe, out_dir)
    history = getattr(result, "history", []) or []
    return {"adapter_dir": str(result.adapter_dir), "steps": getattr(result, "steps", None),
            "last_metrics": history[-1] if history else None}
