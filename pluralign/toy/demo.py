"""``pluralign demo``: reversed alignment, fixed and measured, on CPU in minutes.

The embedded default world ships two models (``pluralign/toy/checkpoints``): a *base* that follows
anti-aesthetic requests and an *aligned* one after "universal aesthetic" Diffusion-DPO, which
does not. The demo

1. evaluates the base and the aligned model on the toy suite (paired I_o / I_a, same seed);
2. builds intent-conditioned pairs (anti + mirror), optionally mixed with ordinary aesthetic pairs: for the pixel
   attributes from the world's degradations, for the semantic ones (decay, unfinished, bleak: scene
   content no pixel operation fakes) on-policy, sampled from the base model and picked best-of-K by the
   toy scorer (``pluralign data generate``);
3. trains an intent-conditioned Diffusion-DPO LoRA on the aligned model with ``pluralign.trainers``;
4. evaluates the adapter along the dial (weights 0, 0.5, 1) with ``pluralign.eval``;
5. optionally (``--with_baselines``) trains, with the same budget and data sources, plain
   aesthetic Diffusion-DPO and SFT on anti-aesthetic images only, and evaluates them the same way;
6. writes ``results.json``, ``report.md``, ``report.html`` and an offline W&B run, and prints a
   summary table with every target and whether it is met.

Every number comes from the evaluation loop; nothing in the evaluation is tuned to the model.
The adapter's training settings are a :class:`~pluralign.trainers.DPOTrainConfig` recipe,
``pluralign/toy/recipes/intent_dpo.yaml`` by default (``--config`` swaps it; any of its keys can be
overridden on the command line, e.g. ``--seed 1 --max_steps 600``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pluralign.config import option, parse, run_module, to_dict, writable_dir
from pluralign.data.pairs import COLUMNS as PAIR_COLUMNS
from pluralign.env import machine
from pluralign.eval import metrics as M
from pluralign.eval.generate import load_pipeline
from pluralign.eval.report import (
    Pairs,
    attribute_counts,
    html_images,
    html_page,
    html_result_plots,
    html_table,
    md_table,
    shown_rows,
)
from pluralign.eval.runner import EvalConfig, run_eval
from pluralign.eval.samplers import SAMPLER_NAMES
from pluralign.eval.suite import from_records
from pluralign.onpolicy.config import GenerateConfig, attribute_scales
from pluralign.onpolicy.generate import generate_dataset
from pluralign.onpolicy.select import CHOOSE_BY
from pluralign.trainers import DPOTrainConfig, train
from pluralign.trainers.schedules import check_schedule

from . import paths, world, world_pairs
from .align import save_pairs
from .scorer import ToyScorer
from .suite import toy_rows
from .world import ATTRIBUTES, PIXEL_ATTRIBUTES, SEMANTIC_ATTRIBUTES, SEVERITY, SIZE

# What the demo promises, checked on every run and reported with the measured values.
TARGETS = {
    "base_adherence_min": 0.85,
    "aligned_adherence_max": 0.35,
    "intent_adherence_min": 0.85,
    "leakage_max_points": 3.0,
    "content_fidelity_max_drop_points": 5.0,
    # per attribute: the same bounds, except that a semantic attribute (scene content, learnt from on-policy
    # samples of the base rather than exact renders) is held to 80% after the fix
    "semantic_intent_adherence_min": 0.80,
    "attribute_ci_half_width_max_points": 15.0,
}
# the category whose dial curve must rise: the one only on-policy pairs reach
DIAL_CATEGORY = "emotion_and_subject"


@dataclass
class DemoConfig:
    """Options of ``pluralign demo`` (YAML keys or ``--flags``)."""

    output: str = option("outputs/demo", "where results.json, the reports, the adapter and the W&B run go")
    n_prompts: int = option(288, "eval prompt pairs (balanced over the world's 12 attributes: 24 each)", min=1, max=10_000)
    suite_seed: int = option(1000, "seed of the eval suite (disjoint from training scenes)", min=0,
                            max=2**32 - 1)
    intent_items: int = option(288, "scenes turned into an anti + mirror pair each (pixel attributes, round-robin)",
                               min=1, max=100_000)
    semantic_prompts: int = option(16, "prompt pairs per semantic attribute (decay, unfinished, bleak) sampled from "
                                   "the base model for on-policy anti + mirror pairs (0: no semantic pairs); 16 with "
                                   "best of 8 beat 32 with best of 4 at the same sampling cost (docs/toy.md, round 9)",
                                   min=0, max=100_000)
    semantic_repeat: int = option(1, "times each on-policy row (semantic, and onpolicy_items') appears in the intent adapter's "
                                  "training rows: "
                                  "a larger share of the semantic attributes in every batch without sampling more "
                                  "(3 lost 9.7 points of validation adherence: docs/toy.md, round 8)",
                                  min=1, max=100)
    semantic_candidates: int = option(8, "K: candidates per on-policy prompt pair under P_a and under P_o (shared "
                                      "seeds); the toy scorer keeps the best", min=1, max=64)
    semantic_pairs_per_prompt: int = option(1, "anti + mirror pairs an accepted on-policy prompt pair may give (data "
                                            "generate's pairs_per_prompt: the next best candidates against the same "
                                            "rejected image)", min=1, max=64)
    semantic_content_pairs: bool = option(False, "give an accepted on-policy prompt pair one more anti row: its "
                                          "chosen image over the base's P_a sample that lost the object (data "
                                          "generate's content_pairs)")
    semantic_choose_by: str = option("content", "which on-policy P_a sample becomes the chosen image: attribute "
                                     "(the judge's highest score) | content (of those the judge accepts, the one "
                                     "whose object the checker names most surely; data generate's choose_by; "
                                     "adopted in docs/toy.md's round 37)",
                                     choices=CHOOSE_BY)
    onpolicy_guidance_scale: float = option(-1.0, "CFG scale the generator samples the on-policy pairs with (negative: "
                                            "the demo's own, guidance_scale); a teacher is sampled at the scale it "
                                            "draws the requests best at, whatever the models are evaluated with",
                                            min=-1, max=50)
    onpolicy_attribute_guidance: list[str] = option(
        factory=list, help="ATTRIBUTE=SCALE entries: the on-policy pairs of that attribute (semantic, or one of "
        "onpolicy_items) are sampled at SCALE instead of onpolicy_guidance_scale (data generate's attribute_guidance)")
    onpolicy_generator: str = option("base", "the model whose samples become the semantic attributes' on-policy "
                                     "pairs in round 1: base (a less-aligned teacher, as SDXL base is for an aligned "
                                     "SDXL) or aligned (the model's own samples, no teacher)", choices=("base", "aligned"))
    rounds: int = option(1, "rounds of on-policy pairs: round r > 1 samples fresh prompts from the aligned model with "
                         "round r-1's adapter, and a fresh adapter trains on every round's pairs so far",
                         min=1, max=10)
    over_severity: float = option(1.0, "also give the intent adapter, per intent item, an anti row in which the "
                                  "world's render beats the same degradation at this higher severity, bounding the "
                                  "request from above (toy.world_pairs.over_pairs; 0 disables). 1.0 raised the weakest "
                                  "attribute, adherence and content over training seeds 8 and 9 (docs/toy.md, round 23)",
                                  min=0, max=1.0)
    over_attributes: list[str] = option(
        factory=lambda: ["underexposed", "overexposed", "muted", "noisy", "low_contrast", "color_cast", "small_subject"],
        help="attributes that get over-degradation rows: those whose degradation, pushed further, erases the subject "
             "(off_center only moves it further out; blurry is rendered at full severity already)", choices=ATTRIBUTES)
    over_twice: list[str] = option(
        factory=list, help="pixel attributes the world renders at full severity already (blurry) that get an "
        "over-degradation row anyway (with over_severity > 0): the world's render degraded once more at full severity "
        "is rejected", choices=tuple(a for a in PIXEL_ATTRIBUTES if SEVERITY[a] >= 1.0))
    onpolicy_items: list[str] = option(
        factory=list, help="ATTRIBUTE=N entries: N prompt pairs of that pixel attribute also sampled from the "
        "on-policy generator, best of semantic_candidates like the semantic attributes' (the judge is the attribute's "
        "verifier rule), giving anti + mirror pairs of the model's own drawing beside the attribute's degradation pairs; "
        "the semantic_* options on repeats, pairs per prompt, content pairs and the pick apply to them too. Not adopted: "
        "off_center=16 did not raise off_center (docs/toy.md, round 38)")
    extra_items: list[str] = option(
        factory=list, help="ATTRIBUTE=N entries: N more scenes of that pixel attribute, each an anti + mirror pair, in "
        "the intent adapter's rows only (fresh scenes from a seed of their own, no over-degradation row): a larger "
        "share for an attribute the adapter learns last, without repeating rows")
    anti_fraction: float = option(1.0, "share of intent (anti + mirror) rows in the training mix; the rest are "
                                  "ordinary aesthetic pairs. 1.0 (none): the mirror rows and the preserve terms keep "
                                  "ordinary prompts where they were, and every step's rows teach the request; with the "
                                  "recipe's batch of 4 it beat 0.5 at batch 8 by 4.3 points of validation adherence "
                                  "(docs/toy.md, round 17)", min=0.01, max=1.0)
    data_seed: int = option(2000, "seed of the training scenes", min=0, max=2**32 - 1)
    weights: list[float] = option(factory=lambda: [0.0, 0.5, 1.0], help="adapter weights of the dial curve",
                                 min=0, max=4)
    with_baselines: bool = option(False, "also train plain aesthetic DPO and anti-aesthetic SFT with the same budget")
    num_inference_steps: int = option(0, "sampling steps (0 = the value recorded in the toy build config)", min=0,
                                     max=1000)
    sampler: str = option("default", "scheduler every stage samples with (default: the checkpoints' DDIM)",
                          choices=SAMPLER_NAMES)
    guidance_scale: float = option(-1.0, "CFG scale (negative = the value recorded in the toy build config)",
                                  min=-1, max=50)
    batch_size: int = option(24, "prompt pairs per pipeline call during eval", min=1, max=1024)
    bootstrap: int = option(1000, "bootstrap resamples for the 95% CIs", min=100, max=1_000_000)
    report_to: str = option("wandb", "tracker for the demo run (W&B runs offline unless WANDB_MODE says otherwise)",
                            choices=("wandb", "none"))

    def __post_init__(self):
        # checked here, before the first stage, not when the on-policy stage builds its GenerateConfig
        extra_item_counts(self.extra_items)
        sampled = (*SEMANTIC_ATTRIBUTES, *extra_item_counts(self.onpolicy_items, "onpolicy_items"))
        other = [a for a in attribute_scales(self.onpolicy_attribute_guidance, "onpolicy_attribute_guidance")
                 if a not in sampled]
        if other:
            raise ValueError(f"onpolicy_attribute_guidance: {', '.join(other)}: only the semantic attributes "
                             f"({', '.join(SEMANTIC_ATTRIBUTES)}) and those of onpolicy_items have on-policy pairs")


def extra_item_counts(entries: list[str], option_name: str = "extra_items") -> dict[str, int]:
    """``ATTRIBUTE=N`` entries of ``extra_items`` (or ``onpolicy_items``) as ``{attribute: N}``; ValueError naming
    the option and the entry that is not a pixel attribute with a count in [1, 100000], or repeats one."""
    counts: dict[str, int] = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        if name not in PIXEL_ATTRIBUTES or not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 100_000:
            raise ValueError(f"{option_name}: {entry!r} is not ATTRIBUTE=N with N in [1, 100000] and ATTRIBUTE one of "
                             f"the world's pixel attributes ({', '.join(PIXEL_ATTRIBUTES)})")
        if name in counts:
            raise ValueError(f"{option_name}: {name} is listed twice")
        counts[name] = int(value)
    return counts


# ---------------------------------------------------------------------------------------------
# pieces


def _sampling(cfg: DemoConfig) -> dict[str, Any]:
    recorded = json.loads(paths.build_config().read_text()).get("sampling", {}) if paths.build_config().is_file() else {}
    return {
        "num_inference_steps": cfg.num_inference_steps or int(recorded.get("num_inference_steps", 20)),
        "guidance_scale": cfg.guidance_scale if cfg.guidance_scale >= 0 else float(recorded.get("guidance_scale", 4.0)),
        "sampler": cfg.sampler,
    }


def _check_checkpoints() -> None:
    missing = [str(p) for p in (paths.base_dir(), paths.aligned_dir(), paths.checker_dir())
               if not (p / ("config.json" if p == paths.checker_dir() else "model_index.json")).is_file()]
    if missing:
        raise FileNotFoundError(f"toy checkpoints missing: {', '.join(missing)}. They ship with the repository; "
                                "rebuild them with `pluralign build-toy` (or set PLURALIGN_TOY_DIR).")


# the on-policy prompts' scenes: disjoint from the degradation pairs' (data_seed) and the suites', new each round
ONPOLICY_SEED_OFFSET = 500
# the on-policy prompts of pixel attributes (onpolicy_items): attribute i's scenes and generation seeds start at
# data_seed + (i + 1) * this, past every round's (ROUND_SEED_STRIDE) and every row's offset, so no two attributes, rounds
# or the semantic prompts share a seed
ONPOLICY_ITEMS_SEED_OFFSET = 1_000_000
# the extra items' scenes, one seed per pixel attribute: disjoint from the others above
EXTRA_ITEMS_SEED_OFFSET = 700
ROUND_SEED_STRIDE = 10_000


def onpolicy_prompts(cfg: DemoConfig, round_index: int = 0):
    """The on-policy prompt pairs as eval rows for ``data generate``: the semantic attributes' (round-robin over
    them), then each ``onpolicy_items`` attribute's from a seed of its own (so adding one leaves the others' scenes
    as they were). Every row carries its own generation seed."""
    stride = ROUND_SEED_STRIDE * round_index
    seed = cfg.data_seed + ONPOLICY_SEED_OFFSET + stride
    records = world.eval_suite(cfg.semantic_prompts * len(SEMANTIC_ATTRIBUTES), seed, SEMANTIC_ATTRIBUTES) \
        if cfg.semantic_prompts else []
    for attr, n in extra_item_counts(cfg.onpolicy_items, "onpolicy_items").items():
        records += world.eval_suite(n, cfg.data_seed + ONPOLICY_ITEMS_SEED_OFFSET * (PIXEL_ATTRIBUTES.index(attr) + 1)
                                    + stride, (attr,))
    return from_records(records, "toy on-policy prompts", seed=seed)


def generate_onpolicy(cfg: DemoConfig, pipe, scorer, sampling: dict, out: Path, round_index: int = 0,
                      generator: Path | None = None, adapter: Path | None = None) -> tuple[list[dict], dict]:
    """On-policy anti + mirror rows for the semantic attributes and those of ``onpolicy_items``: the generator (the loaded ``pipe``, found at
    ``generator``, with ``adapter`` applied at weight 1 when given) samples K candidates under P_a and P_o per
    prompt pair, the toy scorer (the checker's judge) picks the best P_a image that shows the
    request and keeps the subject, against the cleanest P_o image (``pluralign data generate``, resumable: a
    killed demo keeps the finished shards). Returns the rows and the run's summary."""
    import datasets

    if not cfg.semantic_prompts and not cfg.onpolicy_items:
        return [], {}
    t0 = time.perf_counter()
    gcfg = GenerateConfig(generator=str(generator or paths.base_dir()), generator_adapter=str(adapter) if adapter else None,
                          suite="toy", num_candidates=cfg.semantic_candidates, scorer="toy", min_chosen_score=0.0,
                          pairs_per_prompt=cfg.semantic_pairs_per_prompt, content_pairs=cfg.semantic_content_pairs,
                          choose_by=cfg.semantic_choose_by,
                          num_inference_steps=sampling["num_inference_steps"],
                          guidance_scale=cfg.onpolicy_guidance_scale if cfg.onpolicy_guidance_scale >= 0
                          else sampling["guidance_scale"],
                          attribute_guidance=list(cfg.onpolicy_attribute_guidance), sampler=sampling["sampler"],
                          batch_size=cfg.batch_size * 2, seed=cfg.data_seed + round_index,
                          output_dir=str(out / "data" / f"onpolicy_round{round_index + 1}"), overwrite=True)
    path = generate_dataset(gcfg, pipe=pipe, scorer=scorer, rows=onpolicy_prompts(cfg, round_index))
    ds = datasets.load_from_disk(str(path))
    rows = [{k: r[k] for k in PAIR_COLUMNS} for r in ds]
    log = json.loads((path / "generate_log.json").read_text(encoding="utf-8"))["summary"]
    return rows, {**log, "generator": gcfg.generator, "generator_adapter": gcfg.generator_adapter,
                  "guidance_scale": gcfg.guidance_scale, "attribute_guidance": gcfg.attribute_guidance,
                  "wall_seconds": time.perf_counter() - t0}


def training_rows(cfg: DemoConfig, kind: str, onpolicy: list[dict] | None = None) -> list[dict]:
    """The training rows of one method, all from the same scenes (same data sources, same budget), except that
    the ``extra_items`` and the over-degradation rows are the intent method's own.

    * ``intent``: anti + mirror pairs - from the world's degradations for the pixel attributes, the
      ``onpolicy`` rows (:func:`generate_onpolicy`, each ``semantic_repeat`` times) for the semantic
      ones - and, with ``over_severity``,
      the over-degradation rows of :func:`~pluralign.toy.world_pairs.over_pairs`, and the ``extra_items``
      (more scenes of the attributes named there), mixed with ordinary
      aesthetic pairs at ``anti_fraction``;
    * ``aesthetic``: what the field does - the same scenes, the clean render preferred under both
      the ordinary and the anti-aesthetic caption, plus the same ordinary aesthetic pairs;
    * ``sft``: the anti-aesthetic images with their anti-aesthetic captions only (the source
      paper's mitigation), trained with the plain denoising loss.
    """
    intent = world_pairs.intent_pairs(cfg.intent_items, cfg.data_seed, PIXEL_ATTRIBUTES) + list(onpolicy or []) * (
        cfg.semantic_repeat if kind == "intent" else 1)
    if kind == "intent":
        for attr, n in extra_item_counts(cfg.extra_items).items():
            seed = cfg.data_seed + EXTRA_ITEMS_SEED_OFFSET + PIXEL_ATTRIBUTES.index(attr)
            intent += world_pairs.intent_pairs(n, seed, (attr,))
    # over-degradation rows are part of the intent method's data; the baselines keep their mix
    over = world_pairs.over_pairs(cfg.intent_items, cfg.data_seed, cfg.over_severity, PIXEL_ATTRIBUTES,
                                  over_attributes=tuple(cfg.over_attributes), twice=tuple(cfg.over_twice)) \
        if cfg.over_severity and kind == "intent" else []
    n_general = round(len(intent + over) * (1 - cfg.anti_fraction) / cfg.anti_fraction)
    general = world_pairs.aesthetic_pairs(n_general, cfg.data_seed + 1000) if n_general else []
    if kind == "intent":
        return intent + over + general
    if kind == "aesthetic":
        flipped = []
        for r in intent:
            if r["kind"] == "anti":  # the preference ignores the request: clean wins anyway
                r = {**r, "chosen": r["rejected"], "rejected": r["chosen"], "kind": "general",
                     "source": "toy:universal_aesthetic"}
            else:
                r = {**r, "kind": "general", "source": "toy:universal_aesthetic"}
            flipped.append(r)
        return flipped + general
    if kind == "sft":
        return [r for r in intent if r["kind"] == "anti"]
    raise ValueError(f"unknown training kind {kind!r}")


# the adapter name (and progress-bar label) of each training kind: the baselines carry their report
# variant names; the intent adapter keeps "intent", the name the README loads it under
ADAPTER_NAMES = {"intent": "intent", "aesthetic": "dpo_aesthetic", "sft": "sft_anti"}


def training_config(train: DPOTrainConfig, kind: str, data_dir: Path, out: Path, report_to: str) -> DPOTrainConfig:
    """The recipe's settings for one method, on the aligned model and the method's own data.

    The baselines get the same budget (steps, batch, LoRA, learning rate) without the intent terms;
    SFT trains the plain denoising loss."""
    changes: dict[str, Any] = dict(
        pretrained_model=str(paths.aligned_dir()), dataset=str(data_dir), resolution=SIZE,
        output_dir=str(out / "runs" / kind), run_name=f"demo-{kind}", overwrite_output_dir=True,
        adapter_name=ADAPTER_NAMES[kind], cache_dir=str(out / "cache"), report_to=report_to)
    if kind != "intent":
        changes.update(preserve_weight=0.0, preserve_null_weight=0.0, guided_sft_scale=0.0)
    if kind == "sft":
        changes.update(method="sft", sft_weight=0.0)
    return dataclasses.replace(train, **changes)


def train_adapter(cfg: DemoConfig, train_cfg: DPOTrainConfig, kind: str, out: Path, report_to: str,
                  onpolicy: list[dict] | None = None) -> tuple[Path, dict]:
    """Train one adapter on the aligned model; returns its diffusers LoRA dir and a summary."""
    t0 = time.perf_counter()
    rows = training_rows(cfg, kind, onpolicy)
    data_dir = save_pairs(rows, out / "data" / kind)
    result = train(training_config(train_cfg, kind, data_dir, out, report_to))
    kinds = dict(Counter(r["kind"] for r in rows))
    return result.adapter_dir, {"rows": len(rows), "rows_by_kind": kinds, "steps": result.steps,
                                "final_metrics": result.metrics, "wall_seconds": time.perf_counter() - t0}


def denoiser_speed(pipe, batch: int, calls: int = 3) -> float:
    """Milliseconds per latent of a no-grad call of ``pipe``'s UNet on ``batch`` random latents (the eval's
    shape: a row's two prompts under guidance are four latents), the median of ``calls`` after a warm-up.

    The demo's stage times measure the machine as much as the code: on the 2-core machine the same sampling
    stage took 1.4 times as long two hours apart. This probe costs about a second and goes into results.json
    and the reports, so a run that took long says whether its machine was slow: divide a stage's seconds by it
    to compare runs."""
    import torch

    unet = pipe.unet
    g = torch.Generator().manual_seed(0)
    side = unet.config.sample_size
    x = torch.randn(batch, unet.config.in_channels, side, side, generator=g)
    cond = torch.randn(batch, pipe.tokenizer.model_max_length, unet.config.cross_attention_dim, generator=g)
    t = torch.full((batch,), 500)
    times = []
    with torch.no_grad():
        for i in range(calls + 1):
            t0 = time.perf_counter()
            unet(x, t, cond)
            if i:  # the first call warms up
                times.append(time.perf_counter() - t0)
    return round(sorted(times)[len(times) // 2] / batch * 1000, 3)


def _evaluate(pipe, rows, checker, judge, out: Path, cfg: DemoConfig, sampling: dict, adapter: Path | None,
              weights: list[float], wandb_run=None, adapter_name: str = "intent",
              base_images_from: str | None = None) -> dict:
    ecfg = EvalConfig(adapter=str(adapter) if adapter else None, adapter_name=adapter_name, weights=weights, suite="toy",
                      n_prompts=len(rows), suite_seed=cfg.suite_seed, batch_size=cfg.batch_size,
                      bootstrap=cfg.bootstrap, output=str(out), check_weight_zero=0.0 in weights,
                      weight_zero_rows=cfg.batch_size, base_images_from=base_images_from, **sampling)
    return run_eval(ecfg, pipe=pipe, rows=rows, content_checker=checker, wandb_run=wandb_run, attribute_judge=judge)


def _o_images(images_dir: Path, n: int):
    from PIL import Image

    return [Image.open(images_dir / f"{i:05d}_o.png").convert("RGB") for i in range(n)]


def _leakage_between(model_dir: Path, reference_dir: Path, rows, judge, bootstrap: int) -> dict:
    """Leakage of one model's ordinary-prompt images against another's (same seeds), every attribute measured
    as the eval measures it (rule, else the toy judge)."""
    meter = M.AttributeMeter(judge=judge)
    attrs = meter.measurable(a for r in rows for a in r.attributes)
    fired, baseline = M.leakage_fired(_o_images(model_dir, len(rows)), _o_images(reference_dir, len(rows)),
                                      attrs, meter=meter, rows=rows)
    return M.leakage_summary(fired, baseline, n_boot=bootstrap)


def _variant(v: dict) -> dict:
    keep = ("adherence", "leakage", "content_fidelity", "adherence_delta_vs_reference",
            "content_fidelity_delta_vs_reference")
    return {k: v.get(k) for k in keep if k in v}


def _score(v: dict) -> float | None:
    """adherence − leakage (as a rate): one number that rewards following requests and punishes
    changing ordinary prompts, so a method cannot win by degrading everything."""
    adh = (v.get("adherence") or {}).get("value")
    leak = (v.get("leakage") or {}).get("max_abs_points")
    if adh is None or leak is None:
        return None
    return adh - leak / 100.0


def attribute_misses(variants: dict[str, dict]) -> tuple[list[str], float | None]:
    """Every (attribute, model) that misses its per-attribute bound, as ``"color_cast: aligned 100%"``, and
    the widest per-attribute CI half-width (points) among base, aligned and intent-DPO."""
    by = {n: ((variants.get(n) or {}).get("adherence") or {}).get("by_attribute") or {}
          for n in ("base", "aligned", "intent_dpo")}
    misses, widest = [], None
    for attr in sorted(set().union(*by.values())):
        intent_min = TARGETS["semantic_intent_adherence_min"] if attr in SEMANTIC_ATTRIBUTES \
            else TARGETS["intent_adherence_min"]
        bounds = {"base": (TARGETS["base_adherence_min"], None), "aligned": (None, TARGETS["aligned_adherence_max"]),
                  "intent_dpo": (intent_min, None)}
        for name, (lo, hi) in bounds.items():
            entry = by[name].get(attr) or {}
            value = entry.get("value")
            if value is None:
                misses.append(f"{attr}: {name} unmeasured")
            elif (lo is not None and value < lo) or (hi is not None and value > hi):
                misses.append(f"{attr}: {name} {100 * value:.0f}%")
            if entry.get("ci95"):
                half = 50 * (entry["ci95"][1] - entry["ci95"][0])
                widest = half if widest is None else max(widest, half)
    return misses, widest


def check_targets(variants: dict[str, dict], dial: list[dict], categories: dict[str, list[dict]] | None = None
                  ) -> dict[str, dict]:
    """Each target of the demo with the measured value and whether it is met."""
    val = lambda name, key: ((variants.get(name) or {}).get(key) or {}).get("value")  # noqa: E731
    t: dict[str, dict] = {}
    base, aligned, intent = val("base", "adherence"), val("aligned", "adherence"), val("intent_dpo", "adherence")
    t["base adherence >= 85%"] = {"measured": base, "met": base is not None and base >= TARGETS["base_adherence_min"]}
    t["aligned adherence <= 35%"] = {"measured": aligned,
                                     "met": aligned is not None and aligned <= TARGETS["aligned_adherence_max"]}
    t["intent-DPO adherence >= 85%"] = {"measured": intent,
                                        "met": intent is not None and intent >= TARGETS["intent_adherence_min"]}
    by_attr = ((variants.get("intent_dpo") or {}).get("leakage") or {}).get("by_attribute") or {}
    worst = max((abs(v.get("points", 0.0)) for v in by_attr.values()), default=None)
    t["leakage <= 3 pts on every attribute"] = {"measured": worst,
                                                "met": worst is not None and worst <= TARGETS["leakage_max_points"]}
    c_int, c_al = val("intent_dpo", "content_fidelity"), val("aligned", "content_fidelity")
    drop = None if c_int is None or c_al is None else 100 * (c_al - c_int)
    content = t["content fidelity within 5 pts of aligned"] = {
        "measured": drop, "met": drop is not None and drop <= TARGETS["content_fidelity_max_drop_points"]}
    if drop is not None:  # "measured" is the drop in points; say which way and from what
        content["shown"] = f"{abs(drop):.1f} pts {'below' if drop >= 0 else 'above'} ({100 * c_int:.1f}% vs {100 * c_al:.1f}%)"
        # the intent eval's reference is the aligned model, so its paired delta is the gap on the same rows;
        # the target is judged on the point estimate, the interval says how far one suite can be trusted
        gap = (variants.get("intent_dpo") or {}).get("content_fidelity_delta_vs_reference") or {}
        if gap.get("ci95"):
            lo, hi = (-100 * gap["ci95"][1], -100 * gap["ci95"][0])
            content["drop_ci95_points"] = [lo, hi]
            content["shown"] += f"; drop 95% CI [{lo:.1f}, {hi:.1f}] pts, paired"
    curve = [p["adherence"] for p in sorted(dial, key=lambda p: p["weight"])]
    t["adherence rises with adapter weight"] = {
        "measured": curve, "met": len(curve) >= 2 and all(b > a for a, b in zip(curve, curve[1:]))}
    misses, widest = attribute_misses(variants)
    t["every attribute: base >= 85%, aligned <= 35%, intent-DPO >= 85% (semantic >= 80%)"] = {
        "measured": misses, "shown": "; ".join(misses) or "all met", "met": not misses}
    t["every attribute's 95% CI half-width <= 15 pts"] = {
        "measured": widest, "met": widest is not None and widest <= TARGETS["attribute_ci_half_width_max_points"]}
    if categories is not None:
        cat = [p["adherence"] for p in categories.get(DIAL_CATEGORY, [])]
        t[f"{DIAL_CATEGORY} adherence rises with adapter weight"] = {
            "measured": cat, "met": len(cat) >= 2 and None not in cat and all(b > a for a, b in zip(cat, cat[1:]))}
    baselines = [n for n in ("dpo_aesthetic", "sft_anti") if n in variants]
    if baselines:
        mine = _score(variants["intent_dpo"])
        theirs = {n: _score(variants[n]) for n in baselines}
        t["intent-DPO beats baselines on adherence - leakage"] = {
            "measured": {"intent_dpo": mine, **theirs},
            "met": mine is not None and all(s is not None and mine > s for s in theirs.values())}
    return t


# ---------------------------------------------------------------------------------------------
# reports


def _fmt_rate(d: dict | None, digits: int = 1) -> str:
    if not d or d.get("value") is None:
        return "–"
    lo, hi = d.get("ci95") or (None, None)
    ci = f" [{100 * lo:.0f}, {100 * hi:.0f}]" if lo is not None else ""
    return f"{100 * d['value']:.{digits}f}%{ci}"


Table = tuple[list[str], list[list[str]]]


def summary_tables(results: dict) -> list[Table]:
    """The three summary tables as (header, rows): models, the dial curve, the targets."""
    models = [[name, _fmt_rate(v.get("adherence")),
               "–" if (leak := (v.get("leakage") or {}).get("max_abs_points")) is None else f"{leak:.1f}",
               _fmt_rate(v.get("content_fidelity"))] for name, v in results["variants"].items()]
    dial = [[f"{p['weight']:g}", "–" if p.get("adherence") is None else f"{100 * p['adherence']:.1f}%",
             "–" if p.get("leakage_max_abs_points") is None else f"{p['leakage_max_abs_points']:.1f}"]
            for p in results["dial_curve"]]
    targets = []
    for name, t in results["targets"].items():
        m = t.get("shown", t["measured"])
        if isinstance(m, float):
            m = f"{m:.3f}"
        elif isinstance(m, list):
            m = " → ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in m)
        elif isinstance(m, dict):
            m = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
        targets.append([name, str(m), "yes" if t["met"] else "NO"])
    tables = [
        (["model", "adherence (anti prompts) [95% CI]", "leakage max abs pts", "content fidelity [95% CI]"], models),
        (["adapter weight", "adherence", "leakage max abs pts"], dial),
    ]
    curves = results.get("category_curves") or {}
    if curves:
        weights = sorted({p["weight"] for points in curves.values() for p in points})
        cells = {c: {p["weight"]: _fmt_rate({"value": p["adherence"], "ci95": p["ci95"]}) for p in points}
                 for c, points in curves.items()}
        tables.append((["category (rows)", *(f"weight {w:g} [95% CI]" for w in weights)],
                       [[f"{c} ({points[0]['n']})", *(cells[c].get(w, "–") for w in weights)]
                        for c, points in curves.items()]))
    tables.append((["target", "measured", "met"], targets))
    return tables


def _by_attribute(results: dict, metric: str) -> tuple[list[str], dict[str, list[str]]]:
    """The attributes any variant reports for ``metric``, and per attribute one cell per variant (percent
    with its 95% CI)."""
    by = {n: ((v.get(metric) or {}).get("by_attribute") or {}) for n, v in results["variants"].items()}
    attrs = sorted({a for d in by.values() for a in d})
    cells = {a: [_fmt_rate(d.get(a), 0) for d in by.values()] for a in attrs}
    return attrs, cells


def attribute_rows(results: dict) -> Table:
    """Adherence per attribute for every variant (rows measured / requested, what measured it), and the
    intent adapter's leakage."""
    attrs, cells = _by_attribute(results, "adherence")
    leak = ((results["variants"].get("intent_dpo") or {}).get("leakage") or {}).get("by_attribute") or {}
    ref = ((results["variants"].get("intent_dpo") or {}).get("adherence") or {}).get("by_attribute") or {}

    def n_of(a):
        e = ref.get(a) or {}
        return f"{e.get('n', 0)}/{e['requested']}" if "requested" in e else str(e.get("n", "–"))

    rows = [[a, n_of(a), (ref.get(a) or {}).get("measured_by") or "–", *cells[a],
             "–" if (pts := (leak.get(a) or {}).get("points")) is None else f"{pts:+.1f}"] for a in attrs]
    return ["attribute", "measured / requested", "measured by", *(f"{n} adherence [95% CI]" for n in results["variants"]),
            "intent_dpo leakage pts"], rows


def content_rows(results: dict) -> Table:
    """Content fidelity on I_a per attribute for every variant: which requests cost the subject."""
    attrs, cells = _by_attribute(results, "content_fidelity")
    return ["attribute", *(f"{n} content" for n in results["variants"])], [[a, *cells[a]] for a in attrs]


def summary_table(results: dict) -> str:
    """The summary tables in markdown, as the demo prints them."""
    return "\n\n".join(md_table(*t) for t in summary_tables(results))


def write_reports(results: dict, out: Path, eval_dirs: dict[str, Path]) -> None:
    md = ["# pluralign demo: reversed alignment, fixed and measured", "",
          f"{timing_line(results)} Suite: {results['suite']['n_rows']} toy prompt pairs "
          f"(P_o, P_a, same seed), {results['sampling']['num_inference_steps']} sampling steps, "
          f"guidance {results['sampling']['guidance_scale']}.", "", summary_table(results), "", "## Per attribute", "",
          md_table(*attribute_rows(results)), "", "## Content fidelity per attribute", "",
          "Share of anti-aesthetic images in which the content checker finds the requested shape and colour.", "",
          md_table(*content_rows(results)), "", "Detailed eval reports: " +
          ", ".join(f"[{k}]({p.relative_to(out)}/report.html)" for k, p in eval_dirs.items())]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")


# the demo's models have names: the captions say which one is which
PLOT_CAPTIONS = {
    "attributes": "Adherence per attribute for each model; whiskers: 95% CI.",
    "dial": "intent_dpo's weight vs adherence (error bars: 95% CI) and the largest leakage; weight 0 is the aligned "
            "model, dashed: the base model.",
    "category_curves": "intent_dpo's weight vs adherence on the rows that request each taxonomy category.",
}
REPORT_ROWS = 4  # prompt pairs per attribute in report.html, as in the eval reports (EvalConfig.html_rows)


def image_folders(eval_dirs: dict[str, Path]) -> dict[str, Path]:
    """The saved images of every variant the demo report shows, by the name it shows them under: the base model,
    the aligned model (the intent eval's adapter-free pass), the intent adapter at each dial weight and each
    baseline adapter (whose evals repeat the aligned model)."""
    folders: dict[str, Path] = {}
    for name, d in eval_dirs.items():
        for res in json.loads((d / "results.json").read_text(encoding="utf-8"))["variants"].values():
            if res.get("images") is None:
                continue
            label = ("base" if name == "base" else "aligned") if res.get("weight") is None else f"{name}@{res['weight']:g}"
            folders.setdefault(label, d / res["images"])
    return folders


def report_pairs(folders: dict[str, Path], shown: list[int]) -> Pairs:
    """The images of the ``shown`` suite rows only: every row of every variant would be thousands of files read."""
    from PIL import Image

    def load(folder: Path, i: int, which: str):
        return Image.open(folder / f"{i:05d}_{which}.png").convert("RGB")

    return {label: [(load(f, i, "o"), load(f, i, "a")) for i in shown] for label, f in folders.items()}


def _html(results: dict, out: Path, eval_dirs: dict[str, Path], rows: list) -> None:
    import html

    body = ["<h1>pluralign demo: reversed alignment, fixed and measured</h1>",
            f"<p class='meta'>{html.escape(timing_line(results))} {results['suite']['n_rows']} toy prompt pairs "
            f"(P_o, P_a, same seed); {results['sampling']['num_inference_steps']} sampling steps, guidance "
            f"{results['sampling']['guidance_scale']}.</p>"]
    titles = ["Models", "Dial", *(["Dial per category"] if results.get("category_curves") else []), "Targets"]
    for title, table in zip(titles, summary_tables(results)):
        body += [f"<h2>{title}</h2>", html_table(*table)]
    body += ["<h2>Per attribute</h2>", html_table(*attribute_rows(results)),
             "<h2>Content fidelity per attribute</h2>",
             "<p>Share of anti-aesthetic images in which the content checker finds the requested shape and colour.</p>",
             html_table(*content_rows(results))]
    body += ["<h2>Plots</h2>", html_result_plots(results, PLOT_CAPTIONS)]
    shown = shown_rows(rows, REPORT_ROWS)
    body += html_images(report_pairs(image_folders(eval_dirs), shown), [rows[i] for i in shown], REPORT_ROWS, shown,
                        attribute_counts(rows))
    links = ", ".join(f"<a href='{html.escape(d.relative_to(out).as_posix())}/report.html'>{html.escape(name)}</a>"
                      for name, d in eval_dirs.items())
    body += ["<h2>Detailed eval reports</h2>", f"<p>{links}</p>"]
    (out / "report.html").write_text(html_page("pluralign demo", body), encoding="utf-8")


# ---------------------------------------------------------------------------------------------


def run_demo(cfg: DemoConfig, train_cfg: DPOTrainConfig) -> dict:
    t0 = time.perf_counter()
    _check_checkpoints()
    out = writable_dir(cfg.output, "output")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(out.resolve()))

    sampling = _sampling(cfg)
    rows = toy_rows(cfg.n_prompts, cfg.suite_seed)
    judge = ToyScorer(str(paths.checker_dir())).ensure_loaded()  # measures the semantic attributes
    checker = judge.checker  # the same content checker, loaded once
    stage_seconds: dict[str, float] = {}
    stage_loads: dict[str, list] = {}
    step = _Steps(3 + 2 * cfg.rounds + (2 if cfg.with_baselines else 0), stage_seconds, stage_loads)

    step("evaluating the base model", "eval_base")
    base = load_pipeline(str(paths.base_dir()), progress=False)
    speed = {"start": denoiser_speed(base, 4 * cfg.batch_size)}
    base_eval = _evaluate(base, rows, checker, judge, out / "eval" / "base", cfg, sampling, None, [])

    onpolicy, onpolicy_logs, intent_dir = [], [], None
    for r in range(cfg.rounds):
        # round 1 samples the chosen generator; later rounds the aligned model with the last round's adapter
        gen_dir = paths.base_dir() if r == 0 and cfg.onpolicy_generator == "base" else paths.aligned_dir()
        suffix = "" if cfg.rounds == 1 else f"_round{r + 1}"
        step(f"on-policy pairs{' for the semantic attributes' if not cfg.onpolicy_items else ''}: sampling the "
             f"{gen_dir.name} model"
             f"{' with the round ' + str(r) + ' adapter' if intent_dir else ''}, best-of-K", f"onpolicy_pairs{suffix}")
        pipe = base if gen_dir == paths.base_dir() else load_pipeline(str(gen_dir), progress=False)
        new, log = generate_onpolicy(cfg, pipe, judge, sampling, out, r, gen_dir, intent_dir)
        onpolicy += new
        onpolicy_logs.append(log)
        del pipe
        step("training the intent-conditioned Diffusion-DPO adapter on the aligned model", f"train_intent{suffix}")
        intent_dir, intent_train = train_adapter(cfg, train_cfg, "intent", out, cfg.report_to, onpolicy)
    del base

    run = None
    if cfg.report_to == "wandb":
        import wandb

        run = wandb.init(project="pluralign", name="demo", job_type="demo",
                         config={**to_dict(cfg), "train": to_dict(train_cfg)},
                         dir=os.environ["WANDB_DIR"], reinit="finish_previous")
    step("evaluating the aligned model and the adapter dial", "eval_dial")
    aligned = load_pipeline(str(paths.aligned_dir()), progress=False)
    speed["before_eval_dial"] = denoiser_speed(aligned, 4 * cfg.batch_size)
    intent_eval = _evaluate(aligned, rows, checker, judge, out / "eval" / "intent_dpo", cfg, sampling, intent_dir,
                            list(cfg.weights), wandb_run=run)

    iv = intent_eval["variants"]
    top = max(cfg.weights)
    variants = {"base": _variant(base_eval["variants"]["base"]), "aligned": _variant(iv["base"]),
                "intent_dpo": _variant(iv[f"adapter@{top:g}"])}
    variants["aligned"]["leakage"] = _leakage_between(out / "eval" / "intent_dpo" / "images" / "base",
                                                      out / "eval" / "base" / "images" / "base", rows, judge,
                                                      cfg.bootstrap)
    training = {"intent_dpo": intent_train}
    eval_dirs = {"base": out / "eval" / "base", "intent_dpo": out / "eval" / "intent_dpo"}
    if cfg.with_baselines:
        for kind in ("aesthetic", "sft"):
            name = ADAPTER_NAMES[kind]
            step(f"baseline {name}: training and evaluating", f"baseline_{name}")
            adapter, summary = train_adapter(cfg, train_cfg, kind, out, "none", onpolicy)
            res = _evaluate(aligned, rows, checker, judge, out / "eval" / name, cfg, sampling, adapter, [top],
                            adapter_name=name)
            variants[name] = _variant(res["variants"][f"adapter@{top:g}"])
            training[name] = summary
            eval_dirs[name] = out / "eval" / name

    step("writing results and reports", "report")
    results = {
        "variants": variants,
        "dial_curve": intent_eval["dial_curve"],
        "category_curves": intent_eval["category_curves"],
        "suite": intent_eval["suite"],
        "sampling": sampling,
        "training": training,
        "onpolicy_pairs": onpolicy_logs[0] if cfg.rounds == 1 else onpolicy_logs,
        "config": to_dict(cfg),
        "train_config": to_dict(train_cfg),
        "targets": {},
        "stage_seconds": stage_seconds,
        "stage_load_average": {k: v for k, v in stage_loads.items() if k in stage_seconds},  # closed stages
        "machine": machine(),
        "denoiser_ms_per_latent": speed,  # the machine's speed at two points of the run (denoiser_speed)
        "wall_seconds": None,
    }
    results["targets"] = check_targets(variants, results["dial_curve"], results["category_curves"])
    results["wall_seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    write_reports(results, out, eval_dirs)
    _html(results, out, eval_dirs, rows)
    if run is not None:
        import wandb

        table = wandb.Table(columns=["model", "adherence", "leakage_max_abs_points", "content_fidelity"])
        for name, v in variants.items():
            table.add_data(name, (v.get("adherence") or {}).get("value"),
                           (v.get("leakage") or {}).get("max_abs_points"), (v.get("content_fidelity") or {}).get("value"))
        run.log({"demo/summary": table})
        run.summary.update({f"target/{k}": t["met"] for k, t in results["targets"].items()})
        run.finish()
    step.done()
    return results


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def timing_line(results: dict) -> str:
    """``Wall time 450 s: eval_base 33 s, ..., eval_dial 104 s (1-min load average 0.6 at start, 0.6–1.9 at stage
    edges; 2 cores, 2 torch threads; denoiser 1.20 ms per latent at the start, 1.25 ms per latent before eval
    dial).`` for the reports: the same run on a loaded or slower machine can take twice as long, and this says
    which stage paid and how fast the machine was."""
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in (results.get("stage_seconds") or {}).items())
    loads = [v for pair in (results.get("stage_load_average") or {}).values() for v in pair if v is not None]
    m = results.get("machine") or {}
    extra = []
    if loads:
        extra.append(f"1-min load average {loads[0]:.1f} at start, {min(loads):.1f}–{max(loads):.1f} at stage edges")
    if m:
        extra.append(f"{m.get('cores_available')} cores, {m.get('torch_threads')} torch threads")
    speed = results.get("denoiser_ms_per_latent") or {}
    if speed:
        extra.append("denoiser " + ", ".join(f"{v:.2f} ms per latent {k.replace('_', ' ').replace('start', 'at the start')}"
                                             for k, v in speed.items()))
    return f"Wall time {results['wall_seconds']:.0f} s" + (f": {stages}" if stages else "") + \
        (f" ({'; '.join(extra)})" if extra else "") + "."


class _Steps:
    """One line per demo stage with elapsed time, and each stage's wall seconds into ``seconds`` and the
    1-minute load average at its start and end into ``loads`` (for results.json and the reports: on a
    loaded machine they say which stage was slow and why). The long stages have their own progress
    bars with an ETA."""

    def __init__(self, total: int, seconds: dict[str, float], loads: dict[str, list]):
        self.total, self.i, self.t0 = total, 0, time.perf_counter()
        self.seconds, self.loads, self.stage, self.t_stage = seconds, loads, None, self.t0

    def close_stage(self) -> None:
        if self.stage is not None:
            self.seconds[self.stage] = round(time.perf_counter() - self.t_stage, 1)
            self.loads[self.stage].append(_load_average())
            self.stage = None

    def __call__(self, what: str, stage: str) -> None:
        self.close_stage()
        self.i += 1
        self.stage, self.t_stage = stage, time.perf_counter()
        self.loads[stage] = [_load_average()]
        print(f"[{self.i}/{self.total}] {what} (t={time.perf_counter() - self.t0:.0f}s)", flush=True)

    def done(self) -> None:
        self.close_stage()
        print(f"done in {time.perf_counter() - self.t0:.0f}s", flush=True)


def parse_demo(argv: list[str] | None, *more: type, prog: str = "pluralign demo") -> tuple:
    """``DemoConfig``, the adapter's ``DPOTrainConfig`` and any ``more`` config classes from the command
    line; the recipe is the shipped one unless ``--config`` names another."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", str(paths.recipe("intent_dpo")), *argv]
    configs = parse((DemoConfig, DPOTrainConfig, *more), argv, prog=prog, description=__doc__.split("\n\n")[0])
    t = configs[1]  # a schedule that does not fit the steps would otherwise fail at training, a minute or more in
    if not t.num_train_epochs:  # with epochs the steps depend on the rows, which the trainer checks once they exist
        check_schedule(t.lr_scheduler, t.lr_warmup_steps, t.max_steps, t.lr_decay_steps, t.lr_decay_share)
    return configs


def main(argv: list[str] | None = None) -> int:
    cfg, train_cfg = parse_demo(argv)
    results = run_demo(cfg, train_cfg)
    out = Path(cfg.output)
    print()
    print(summary_table(results))
    print(f"\nresults: {out / 'results.json'}  report: {out / 'report.html'}  wall time {results['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "pluralign demo"))
