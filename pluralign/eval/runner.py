"""``run_eval``: suite -> paired generation for the base and the adapter dial -> metrics -> reports.

``pluralign train`` (``eval_before_after``), the demo and ``pluralign eval`` all call :func:`run_eval`.
It writes under ``config.output``: ``results.json``, ``report.md``, ``report.html``, ``grid.png``,
the plots, and ``images/<variant>/<row>_<o|a>.png``; it returns the results dict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pluralign.config import option, to_dict, writable_dir
from pluralign.rewards.registry import get_reward
from pluralign.rewards.rules import load_rules

from . import metrics as M
from .generate import BASE, generate_variants, load_pipeline, max_abs_difference, save_images, variants_for
from .report import log_wandb, write_reports
from .results import build_results, write_results
from .suite import EvalRow, load_suite, suite_source

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Options of ``pluralign eval`` (YAML keys and ``--flags``)."""

    base: str = option("", "base pipeline: hub id or local directory (ignored when a pipeline object is passed)")
    adapter: str | None = option(None, "diffusers LoRA directory to evaluate; none = base model only")
    adapter_name: str = option("intent", "name the adapter is loaded under")
    weights: list[float] = option(factory=lambda: [0.0, 0.5, 1.0], help="adapter weights of the dial curve")
    suite: str = option("toy", "toy | a .jsonl/.csv prompt file | hf:REPO or a local copy in the anti-aesthetic schema")
    n_prompts: int = option(32, "number of prompt pairs (0 = the whole suite)", min=0)
    suite_seed: int | None = option(None, "seed of the suite (toy scenes / default generation seeds)")
    judges: list[str] = option(factory=list, help="reward models/judges by registry name, e.g. clip,pickscore")
    content_checker: str = option("auto", "content check: auto (the suite's own checker when it has one, e.g. the "
                                  "toy world's, else similarity) | suite | similarity | none",
                                  choices=("auto", "suite", "similarity", "none"))
    content_threshold: float = option(0.5, "similarity checker: structural similarity that counts as same content",
                                      min=0.0, max=1.0)
    num_inference_steps: int = option(20, "denoising steps per image", min=1)
    guidance_scale: float = option(7.5, "classifier-free guidance scale (Flux: distilled guidance)", min=0)
    height: int | None = option(None, "image height (default: the pipeline's)")
    width: int | None = option(None, "image width (default: the pipeline's)")
    batch_size: int = option(8, "prompt pairs per pipeline call (2x images)", min=1)
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps")
    dtype: str = option("float32", "pipeline dtype", choices=("float32", "float16", "bfloat16"))
    bootstrap: int = option(1000, "bootstrap resamples for the 95 percent CIs", min=100)
    seed: int = option(0, "seed of the bootstrap")
    output: str = option("outputs/eval", "output directory")
    save_images: bool = option(True, "write every generated image as PNG under output/images/")
    html_rows: int = option(8, "prompt pairs shown in the HTML/W&B image grid", min=1)
    check_weight_zero: bool = option(True, "check that the adapter at weight 0 reproduces the base images")
    report_to: str = option("none", "tracker for tables and images", choices=("none", "wandb"))
    wandb_project: str = option("pluralign", "W&B project (when report_to: wandb)")

    def __post_init__(self):
        if any(w < 0 for w in self.weights):
            raise ValueError(f"weights: adapter weights must be >= 0, got {self.weights}")


# ---------------------------------------------------------------------------------------------
# pluggable parts


def load_judges(names: list[str]) -> dict[str, Any]:
    """Reward models by registry name; a missing extra or weights fails here, before any generation."""
    if not names:
        return {}

    return {name: get_reward(name) for name in names}


def load_content_checker(kind: str, suite: str, threshold: float = 0.5):
    """The content checker for ``kind``: ``suite`` is the registered suite's own checker (the toy world's
    trained one); ``auto`` uses it when the suite has one that is built, else the model-free
    :class:`~pluralign.eval.metrics.SimilarityContent`."""
    if kind == "none":
        return None
    if kind == "similarity":
        return M.SimilarityContent(threshold)
    source = suite_source(suite)
    if source is None or source.content_checker is None:
        if kind == "suite":
            raise ValueError(f"content_checker suite: suite {suite!r} brings no content checker; use auto, "
                             "similarity or none")
        return M.SimilarityContent(threshold)
    try:
        return source.content_checker()
    except FileNotFoundError:
        if kind == "suite":
            raise
        log.warning("suite %r: its content checker is not built; using the similarity content check", suite)
        return M.SimilarityContent(threshold)


# ---------------------------------------------------------------------------------------------
# metrics for one variant


def _variant_metrics(name: str, pairs, rows: list[EvalRow], reference_pairs, judge_scores: dict[str, dict],
                     reference_scores: dict[str, dict], checker, leak_attributes: list[str], cfg: EvalConfig,
                     reference_rows: dict[str, np.ndarray] | None, rules=None) -> tuple[dict[str, Any], dict]:
    """Every metric of one variant; also returns its per-row adherence and content, which the
    reference variant's call hands to the others for paired (same row, same seed) deltas."""
    kw = {"n_boot": cfg.bootstrap, "seed": cfg.seed}
    margins = M.adherence_margins(pairs, rows, rules)
    out: dict[str, Any] = {"adherence": M.adherence_summary(margins, **kw)}
    hits = M.row_adherence(margins) if margins else np.full(len(rows), np.nan)
    is_reference = reference_pairs is None
    if not is_reference:
        if reference_rows is not None:
            out["adherence_delta_vs_reference"] = M.paired_delta_ci(hits, reference_rows["adherence"], **kw)
        fired, baseline = M.leakage_fired([o for o, _ in pairs], [o for o, _ in reference_pairs], leak_attributes, rules)
        out["leakage"] = M.leakage_summary(fired, baseline, **kw)
    else:
        out["leakage"] = None
    out["content_fidelity"], kept = None, None
    if checker is not None:
        if hasattr(checker, "check_pairs"):  # compares images: I_a with I_o, I_o with the reference's I_o
            kept_a = checker.check_pairs([a for _, a in pairs], [o for o, _ in pairs])
            kept_o = None if is_reference else checker.check_pairs([o for o, _ in pairs],
                                                                   [o for o, _ in reference_pairs])
        else:  # checks each image against its row's description
            kept_a = M.check_content(checker, [a for _, a in pairs], rows)
            kept_o = M.check_content(checker, [o for o, _ in pairs], rows)
        kept = np.asarray(kept_a, dtype=np.float64)
        out["content_fidelity"] = {**M.content_summary(kept, kept_o, attributes=[list(r.attributes) for r in rows],
                                                       **kw), "checker": type(checker).__name__}
        if reference_rows is not None and reference_rows["content"] is not None:
            # the gap to the reference on the same rows: a target such as "within 5 points of the
            # reference" is judged on this difference, so its uncertainty is the paired one
            out["content_fidelity_delta_vs_reference"] = M.paired_delta_ci(kept, reference_rows["content"], **kw)
    judges, matrix = {}, {}
    for j, scores in judge_scores.items():
        summary = M.judge_summary(scores, **kw)
        judges[j] = {"success": summary["success"]}
        if not is_reference:
            judges[j]["win_rate_vs_reference"] = M.win_rate(scores["oo"], reference_scores[j]["oo"], **kw)
        matrix[j] = {**summary["reward_matrix"], "delta_r": summary["delta_r"]["value"],
                     "delta_r_ci95": summary["delta_r"]["ci95"]}
    out["judges"] = judges
    out["reward_matrix"] = matrix
    return out, {"adherence": hits, "content": kept}


# ---------------------------------------------------------------------------------------------


def run_eval(config: EvalConfig, pipe=None, *, rows: list[EvalRow] | None = None, judges: dict[str, Any] | None = None,
             content_checker=None, wandb_run=None, rules=None) -> dict[str, Any]:
    """Evaluate the base model and the adapter dial; write every artifact under ``config.output``.

    ``pipe``: an already-loaded diffusers pipeline (else ``config.base`` is loaded). ``rows``,
    ``judges`` (name -> object with ``score(images, prompts)``), ``content_checker`` (``.check``)
    and ``rules`` (verifier rules) override what the config would load. Only the main process
    computes metrics and writes reports; other processes return an empty dict.
    """
    from accelerate import PartialState

    t0 = time.perf_counter()
    state = PartialState()
    out_dir = writable_dir(config.output, "output") if state.is_main_process else Path(config.output)
    rows = rows if rows is not None else load_suite(config.suite, config.n_prompts, config.suite_seed)
    if not rows:
        raise ValueError(f"suite {config.suite!r} has no rows")
    judges = judges if judges is not None else load_judges(list(config.judges))
    checker = content_checker if content_checker is not None else \
        load_content_checker(config.content_checker, config.suite, config.content_threshold)
    if pipe is None:
        if not config.base:
            raise ValueError("no base model: set `base` (hub id or directory) or pass a pipeline")
        pipe = load_pipeline(config.base, config.device, config.dtype)

    variants = variants_for(config.weights, config.adapter is not None)
    t_gen = time.perf_counter()
    images = generate_variants(pipe, rows, variants, adapter_dir=config.adapter, adapter_name=config.adapter_name,
                               batch_size=config.batch_size, num_inference_steps=config.num_inference_steps,
                               guidance_scale=config.guidance_scale, height=config.height, width=config.width)
    t_gen = time.perf_counter() - t_gen
    if not state.is_main_process:
        return {}

    if config.save_images:
        for v in variants:
            save_images(out_dir, v, images[v.name])

    checks: dict[str, Any] = {}
    zero = [v for v in variants if v.weight == 0.0]
    if config.check_weight_zero and zero:
        diff = max_abs_difference(images[BASE], images[zero[0].name])
        checks["weight0_equals_base"] = {"max_abs_diff": diff, "passed": diff <= 1}
        if diff > 1:
            log.warning("the adapter at weight 0 differs from the base by up to %d/255 per pixel: set_adapters scales "
                        "only some LoRA layers (e.g. attention); layers it does not scale stay on", diff)

    t_met = time.perf_counter()
    judge_scores = {v.name: {j: M.score_matrix(model.score, images[v.name], rows) for j, model in judges.items()}
                    for v in variants}
    active_rules = rules if rules is not None else load_rules()
    leak_attributes = sorted({a for r in rows for a in r.attributes if a in active_rules})
    results_by_variant: dict[str, dict[str, Any]] = {}
    reference_rows = None
    for v in variants:
        is_ref = v.name == BASE
        metrics, per_row = _variant_metrics(
            v.name, images[v.name], rows, None if is_ref else images[BASE], judge_scores[v.name], judge_scores[BASE],
            checker, leak_attributes, config, reference_rows, active_rules)
        if is_ref:
            reference_rows = per_row
        results_by_variant[v.name] = {"kind": "base" if v.weight is None else "adapter", "weight": v.weight,
                                      "images": f"images/{v.dirname}" if config.save_images else None, **metrics}
    t_met = time.perf_counter() - t_met

    suite_info = {"source": config.suite, "n_rows": len(rows),
                  "attributes": sorted({a for r in rows for a in r.attributes}),
                  "verifiable_attributes": leak_attributes}
    cfg = to_dict(config)
    results = build_results(config=cfg, suite=suite_info, variants=results_by_variant, reference=BASE, checks=checks,
                            timing={"generate_seconds": t_gen, "metrics_seconds": t_met},
                            wall_seconds=time.perf_counter() - t0)
    write_results(results, out_dir / "results.json")  # written before the reports so a report failure loses nothing
    t_rep = time.perf_counter()
    write_reports(results, images, rows, out_dir, config.html_rows)
    if wandb_run is None and config.report_to == "wandb":
        import wandb

        wandb_run = wandb.init(project=config.wandb_project, config=cfg, job_type="eval", reinit="finish_previous")
        own_run = True
    else:
        own_run = False
    if wandb_run is not None:
        log_wandb(wandb_run, results, images, rows, config.html_rows)
        if own_run:
            wandb_run.finish()
    results["timing"]["report_seconds"] = time.perf_counter() - t_rep
    results["wall_seconds"] = time.perf_counter() - t0
    write_results(results, out_dir / "results.json")
    return results
