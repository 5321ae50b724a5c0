"""``run_eval``: suite -> paired generation for the base and the adapter dial -> metrics -> reports.

With ``adapters``/``adapters_dir`` the dial is one adapter per taxonomy category
(:mod:`pluralign.eval.categories`): each swept with the others at 0 on its category's rows, plus
its cross-effects on every other category at the top weight.

``pluralign train`` (``eval_before_after``), the demo and ``pluralign eval`` all call :func:`run_eval`.
It writes under ``config.output``: ``results.json``, ``report.md``, ``report.html``, ``grid.png``,
the plots, and ``images/<variant>/<row>_<o|a>.png``; it returns the results dict.

Generation is the long part (hours on SDXL), so everything that can fail is checked before the
first image: every input path, that the base and every judge are on this machine (or can be
downloaded), that the adapter was trained for this base (its identity metadata) and that each of
its LoRA tensors lands on a module; judges and the pipeline are loaded up front. The output is
written in one piece (:mod:`pluralign.eval.output`): all of this run's files, or the previous
run's untouched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pluralign.config import option, to_dict
from pluralign.data.taxonomy import CATEGORIES
from pluralign.env import check_device, process_state
from pluralign.hub import require_model
from pluralign.rewards.intent_scorers import CombinedScorer, build_intent_scorer
from pluralign.rewards.registry import load_rewards
from pluralign.rewards.rules import load_rules
from pluralign.trainers.families import family_for_class
from pluralign.trainers.identity import AdapterMismatchError, base_identity, check_adapter_fits

from . import metrics as M
from .categories import (
    category_adapters,
    category_of,
    category_plan,
    only_category,
    parse_adapter_entries,
    rows_by_category,
)
from .generate import (
    BASE,
    Variant,
    adapter_weight_file,
    category_variant,
    generate_variants,
    load_adapter,
    load_adapters,
    load_pipeline,
    max_abs_difference,
    save_images,
    variants_for,
)
from .output import output_transaction
from .report import log_wandb, shown_rows, write_reports
from .results import build_results, category_curve, write_results
from .reuse import check_first_batch, first_batch_rows, generation_record, load_base_images
from .samplers import SAMPLER_NAMES, use_sampler
from .suite import EvalRow, load_suite, suite_source

log = logging.getLogger(__name__)


DEFAULT_WEIGHTS = [0.0, 0.5, 1.0]


@dataclass
class EvalConfig:
    """Options of ``pluralign eval`` (YAML keys and ``--flags``)."""

    base: str = option("", "base pipeline: hub id or local directory (ignored when a pipeline object is passed)")
    adapter: str | None = option(None, "diffusers LoRA directory (or .safetensors file) to evaluate; none = base "
                                  "model only")
    adapter_name: str = option("intent", "name the adapter is loaded under")
    adapters: list[str] = option(factory=list, help="per-category eval: one LoRA per taxonomy category as "
                                 "CATEGORY=PATH entries, e.g. clarity_and_focus=DIR,color_and_tone=DIR; each is swept "
                                 "over weights with the others at 0 and scored on its category's rows (instead of "
                                 "adapter)")
    adapters_dir: str | None = option(None, "per-category eval: the output_dir of a training run with adapter_mode: "
                                      "per_category (or its adapter/ folder); evaluates every adapter/<category>/ in it "
                                      "(an adapters entry replaces the one found for its category)")
    allow_other_base: bool = option(False, "evaluate an adapter on another checkpoint of the family it was trained "
                                    "for (its recorded base fingerprint differs); a family mismatch is always refused")
    weights: list[float] | None = option(None, help="adapter weights of the dial curve (default 0,0.5,1)",
                                 min=0, max=4)
    suite: str = option("toy", "toy | a .jsonl/.csv prompt file | hf:REPO or a local copy in the anti-aesthetic schema")
    n_prompts: int = option(32, "number of prompt pairs (0 = the whole suite)", min=0, max=100_000)
    suite_seed: int | None = option(None, "seed of the suite (toy scenes / default generation seeds)",
                                      min=0, max=2**32 - 1)
    judges: list[str] = option(factory=list, help="reward models/judges by registry name, e.g. clip,pickscore; "
                               "name=PATH loads a judge from a local directory or file, e.g. clip=/models/clip")
    attribute_judge: str = option("auto", "measures requested attributes no verifier rule measures (judge-only ones such "
                                  "as grief or decay): auto (the suite's own judge when it has one, e.g. the toy "
                                  "world's checker) | none | one scorer spec, e.g. judge:MODEL_OR_DIR or clip; "
                                  "without one they are reported as unmeasured")
    content_checker: str = option("auto", "content check: auto (the suite's own checker when it has one, e.g. the "
                                  "toy world's, else similarity) | suite | similarity | none",
                                  choices=("auto", "suite", "similarity", "none"))
    content_threshold: float = option(0.5, "similarity checker: structural similarity that counts as same content",
                                      min=0.0, max=1.0)
    num_inference_steps: int = option(20, "denoising steps per image", min=1, max=1000)
    sampler: str = option("default", "scheduler to sample with: default (the checkpoint's own) | ddim | dpmsolver++ | "
                          "euler | unipc, built from the checkpoint's scheduler config (SD1.x, SDXL; SD3 and Flux: "
                          "default only)", choices=SAMPLER_NAMES)
    guidance_scale: float = option(7.5, "classifier-free guidance scale (Flux: distilled guidance)", min=0,
                                  max=50)
    height: int | None = option(None, "image height (default: the pipeline's)", min=8, max=4096, multiple_of=16)
    width: int | None = option(None, "image width (default: the pipeline's)", min=8, max=4096, multiple_of=16)
    batch_size: int = option(8, "prompt pairs per pipeline call (2x images)", min=1, max=1024)
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps")
    dtype: str = option("float32", "pipeline dtype", choices=("float32", "float16", "bfloat16"))
    bootstrap: int = option(1000, "bootstrap resamples for the 95 percent CIs", min=100, max=1_000_000)
    seed: int = option(0, "seed of the bootstrap", min=0, max=2**32 - 1)
    output: str = option("outputs/eval", "output directory")
    save_images: bool = option(True, "write every generated image as PNG under output/images/")
    html_rows: int = option(4, "prompt pairs shown per requested attribute in the HTML/W&B images", min=1, max=1000)
    check_weight_zero: bool = option(True, "check that the adapter at weight 0 reproduces the base images")
    weight_zero_rows: int = option(0, "single adapter, weight 0 in weights: generate weight 0 on this many rows only "
                                   "and, when they equal the base's images, let the base's images stand for the rest "
                                   "(weight 0 is the base by construction); otherwise, or at 0, every row",
                                   min=0, max=1_000_000)
    base_images_from: str | None = option(None, "the output directory of an earlier eval whose base images stand in "
                                          "for this eval's base pass (several adapters on one base sample it once); "
                                          "only with the same base weights, rows, sampling and batching, which are "
                                          "checked: a difference is refused, naming it (pluralign.eval.reuse)")
    report_to: str = option("none", "tracker for tables and images", choices=("none", "wandb"))
    wandb_project: str = option("pluralign", "W&B project (when report_to: wandb)")

    def __post_init__(self):
        check_device(self.device)
        given = self.weights is not None  # told apart from the default: weights without an adapter are refused
        if not given:
            self.weights = list(DEFAULT_WEIGHTS)
        # also when the class is built directly, where no option bounds are checked (NaN fails every comparison)
        if not all(0 <= w <= 4 for w in self.weights):
            raise ValueError(f"weights: adapter weights must be finite and in [0, 4], got {self.weights}")
        if self.adapters or self.adapters_dir:
            if self.adapter:
                raise ValueError("adapter and adapters/adapters_dir: give one of them: adapter evaluates one adapter on "
                                 "the whole suite, adapters/adapters_dir one adapter per category on its category's rows")
            parse_adapter_entries(self.adapters)  # the form of each entry; the paths are checked when the run starts
            if not any(w > 0 for w in self.weights):
                raise ValueError(f"weights: a per-category eval needs a weight above 0, got {self.weights}: the top "
                                 "weight is where each adapter's cross-effects on the other categories are measured")
        elif self.adapter is None and given and self.weights:
            raise ValueError(f"weights {self.weights}: the weights dial an adapter, and none is given, so only the base "
                             "would be evaluated; pass --adapter DIR (or --adapters / --adapters_dir), or leave weights "
                             "out to evaluate the base alone")


# ---------------------------------------------------------------------------------------------
# pluggable parts


def load_judges(specs: list[str]) -> dict[str, Any]:
    """Reward models by registry spec (``clip`` or ``clip=/local/dir``), all checked and then loaded, so
    that a missing package or weight fails here, before any generation."""
    if not specs:
        return {}
    return load_rewards(list(specs), option="judges")


def _pipe_dir(pipe) -> str | None:
    """The local directory a pipeline object was loaded from, if it was loaded from one."""
    name = getattr(getattr(pipe, "config", None), "_name_or_path", None)
    return str(name) if name and Path(str(name)).is_dir() else None


def base_identity_of(base: str, pipe=None) -> dict | None:
    """The identity (family, fingerprint) of the base an adapter is about to be evaluated on.

    From ``base`` (hub id or directory) when no pipeline object is given, else from the directory
    the pipeline was loaded from. When neither tells (a pipeline built in memory), the family
    still comes from the pipeline's class, without a fingerprint; None when even that is unknown."""
    source = base if pipe is None else _pipe_dir(pipe)
    if source:
        try:
            return base_identity(source)
        except ValueError:  # not a pipeline directory pluralign knows: fall back on the class
            pass
    if pipe is None:
        return None
    try:
        family = family_for_class(type(pipe).__name__)
    except ValueError:
        return None
    name = getattr(getattr(pipe, "config", None), "_name_or_path", None) or "the pipeline passed in"
    return {"model": f"{name} ({type(pipe).__name__})", "revision": None, "family": family.name, "fingerprint": None}


def check_adapter_identity(config: EvalConfig, weight_file: Path, pipe=None) -> bool:
    """Refuse (:class:`~pluralign.trainers.identity.AdapterMismatchError`) an adapter whose recorded base
    is another family, or other weights unless ``allow_other_base``. Returns whether the base's
    identity was known; a third-party adapter without pluralign metadata passes (its LoRA keys
    are still checked when it is loaded)."""
    identity = base_identity_of(config.base, pipe)
    if identity is None:
        return False
    check_adapter_fits(weight_file, identity, allow_other_base=config.allow_other_base)
    return True


def load_attribute_judge(spec: str, suite: str, device: str = "auto"):
    """The attribute judge of ``spec`` (see ``EvalConfig.attribute_judge``), loaded; None for none. ``auto``
    takes the suite's own judge and, if it cannot be loaded, says so and measures without one."""
    if spec == "none":
        return None
    auto = spec == "auto"
    if auto:
        source = suite_source(suite)
        spec = source.attribute_judge if source is not None else None
        if not spec:
            return None
    scorer = build_intent_scorer(spec, device)
    if isinstance(scorer, CombinedScorer):
        raise ValueError(f"attribute_judge: {spec!r} names several scorers; give one (its score against its own "
                         "decision threshold decides adherence)")
    try:
        scorer.check_available()
    except FileNotFoundError as exc:
        if not auto:
            raise
        log.warning("suite %r: its attribute judge is not available (%s); judge-only attributes go unmeasured",
                    suite, exc)
        return None
    return scorer.ensure_loaded()


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
                     reference_rows: dict[str, np.ndarray] | None, meter: M.AttributeMeter) -> tuple[dict[str, Any], dict]:
    """Every metric of one variant; also returns its per-row adherence and content, which the
    reference variant's call hands to the others for paired (same row, same seed) deltas."""
    kw = {"n_boot": cfg.bootstrap, "seed": cfg.seed}
    margins = meter.margins(pairs, rows)
    out: dict[str, Any] = {"adherence": M.adherence_summary(margins, rows=rows, meter=meter, **kw)}
    hits = M.row_adherence(margins) if margins else np.full(len(rows), np.nan)
    is_reference = reference_pairs is None
    if not is_reference:
        if reference_rows is not None:
            out["adherence_delta_vs_reference"] = M.paired_delta_ci(hits, reference_rows["adherence"], **kw)
        fired, baseline = M.leakage_fired([o for o, _ in pairs], [o for o, _ in reference_pairs], leak_attributes,
                                          meter=meter, rows=rows)
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
             content_checker=None, wandb_run=None, rules=None, attribute_judge=None) -> dict[str, Any]:
    """Evaluate the base model and the adapter dial; write every artifact under ``config.output``.

    ``pipe``: an already-loaded diffusers pipeline (else ``config.base`` is loaded). ``rows``,
    ``judges`` (name -> object with ``score(images, prompts)``), ``content_checker`` (``.check``)
    ``rules`` (verifier rules) and ``attribute_judge`` (an intent scorer) override what the config would load. Only the main process
    computes metrics and writes reports; other processes return an empty dict.
    """
    overrides = {"rows": rows, "judges": judges, "content_checker": content_checker, "wandb_run": wandb_run,
                 "rules": rules, "attribute_judge": attribute_judge}
    # set up before anything else asks: launched as N CPU processes, accelerate must find N, not N copies of one
    if not process_state().is_main_process:
        return _run(config, pipe, None, **overrides)
    with output_transaction(config.output) as work_dir:
        return _run(config, pipe, work_dir, **overrides)


def _run(config: EvalConfig, pipe, out_dir: Path | None, *, rows, judges, content_checker, wandb_run,
         rules, attribute_judge) -> dict[str, Any]:
    """:func:`run_eval` inside its output transaction: ``out_dir`` is the temp directory to write
    into (None on processes other than the main one, which write nothing)."""
    t0 = time.perf_counter()
    # the cheap checks first, each naming what to fix: a wrong path, a model that is not here or an
    # adapter for another base, found after the base images, would have cost the whole generation
    weight_file = adapter_weight_file(config.adapter) if config.adapter else None
    dial = category_adapters(config.adapters, config.adapters_dir)  # per-category eval: {category: adapter}
    dial_files = {c: adapter_weight_file(path, f"adapters: {c}={path}") for c, path in dial.items()}
    if pipe is None:
        if not config.base:
            raise ValueError("no base model: set `base` (hub id or directory) or pass a pipeline")
        require_model(config.base, "base", local_option="--base DIR")
    identity_checked = False
    if weight_file is not None and pipe is None:  # from the base's files, before loading it
        identity_checked = check_adapter_identity(config, weight_file)
    if dial_files and pipe is None:
        identity_checked = _check_dial_identity(config, dial_files)
    rows = rows if rows is not None else load_suite(config.suite, config.n_prompts, config.suite_seed)
    if not rows:
        raise ValueError(f"suite {config.suite!r} has no rows")
    rows_of = rows_by_category(rows, list(dial), config.suite) if dial else {}
    judges = judges if judges is not None else load_judges(list(config.judges))
    checker = content_checker if content_checker is not None else \
        load_content_checker(config.content_checker, config.suite, config.content_threshold)
    if attribute_judge is None:
        attribute_judge = load_attribute_judge(config.attribute_judge, config.suite, config.device)
    loaded_here = pipe is None
    if loaded_here:
        pipe = load_pipeline(config.base, config.device, config.dtype)
    use_sampler(pipe, config.sampler)
    if weight_file is not None:
        if not identity_checked:
            check_adapter_identity(config, weight_file, pipe)
        load_adapter(pipe, config.adapter, config.adapter_name)  # its LoRA keys are checked before any image
    if dial:
        if not identity_checked:
            _check_dial_identity(config, dial_files, pipe)
        try:  # every adapter's LoRA keys, before any image
            load_adapters(pipe, {c: str(path) for c, path in dial.items()})
        except ValueError as exc:
            raise ValueError(f"adapters: {exc}") from exc

    if dial:
        variants, rows_for = category_plan(list(dial), config.weights, rows_of, len(rows))
        variants = [Variant(BASE)] + variants
    else:
        variants, rows_for = variants_for(config.weights, config.adapter is not None), None
    # the base as it was loaded: from config.base here (a hub id has a fingerprint only from config.base), else the
    # pipeline passed in
    try:
        identity = base_identity_of(config.base) if loaded_here else base_identity_of(config.base, pipe)
    except OSError:  # weights that cannot be read for a fingerprint: recorded without one, never reused
        identity = None
    generation = generation_record(config, rows, identity, process_state().num_processes, pipe)
    t_gen = time.perf_counter()
    gen_kwargs = dict(batch_size=config.batch_size, num_inference_steps=config.num_inference_steps,
                      guidance_scale=config.guidance_scale, height=config.height, width=config.width)
    reused = None
    if config.base_images_from:
        reused = load_base_images(config.base_images_from, generation)
        check_rows = first_batch_rows(generation, config.batch_size)
        fresh = generate_variants(pipe, rows, [Variant(BASE)], rows_for={BASE: check_rows}, **gen_kwargs)[BASE]
        check_first_batch(config.base_images_from, fresh, reused, check_rows)
    zero = next((v for v in variants if v.weight == 0.0), None) if not dial and config.check_weight_zero else None
    # weight 0 generated on the first `sample` rows only (0: on every row)
    sample = config.weight_zero_rows if zero is not None and 0 < config.weight_zero_rows < len(rows) else 0
    images = generate_variants(pipe, rows, [v for v in variants if reused is None or v.name != BASE],
                               adapter_dir=config.adapter, adapter_name=config.adapter_name,
                               adapters={c: str(path) for c, path in dial.items()} or None,
                               rows_for={zero.name: list(range(sample))} if sample else rows_for, **gen_kwargs)
    if reused is not None:
        images = {BASE: reused, **images}
    zero_rows = None
    if sample:
        if max_abs_difference(images[BASE][:sample], images[zero.name]) <= 1:
            zero_rows = sample  # the base's images stand for weight 0 on the other rows
            images[zero.name] = images[zero.name] + images[BASE][sample:]
        else:  # weight 0 is not the base: every row of it is generated and measured
            rest = generate_variants(pipe, rows, [zero], adapter_name=config.adapter_name,
                                     rows_for={zero.name: list(range(sample, len(rows)))}, **gen_kwargs)
            images[zero.name] = images[zero.name] + rest[zero.name]
    t_gen = time.perf_counter() - t_gen
    if out_dir is None:
        return {}

    if config.save_images:
        for v in variants:
            save_images(out_dir, v, images[v.name], (rows_for or {}).get(v.name))

    t_met = time.perf_counter()
    meter = M.AttributeMeter(rules if rules is not None else load_rules(), attribute_judge)
    leak_attributes = meter.measurable(a for r in rows for a in r.attributes)
    extra: dict[str, Any] = {}
    if dial:
        results_by_variant, checks, extra = _category_metrics(config, rows, images, dial, rows_of, rows_for, judges,
                                                              checker, meter, leak_attributes)
        shown = shown_rows(rows, config.html_rows)
        report_pairs = {v.name: [_pair_at(images[v.name], rows_for.get(v.name), i) for i in shown] for v in variants}
        report_rows, row_ids = [rows[i] for i in shown], shown
    else:
        results_by_variant, checks = _single_metrics(config, rows, images, variants, judges, checker, meter,
                                                     leak_attributes)
        if zero_rows is not None:
            checks["weight0_equals_base"]["rows_generated"] = zero_rows
        report_pairs, report_rows, row_ids = images, rows, None
    t_met = time.perf_counter() - t_met

    suite_info = {"source": config.suite, "n_rows": len(rows),
                  "attributes": sorted({a for r in rows for a in r.attributes}),
                  "verifiable_attributes": sorted(a for a in leak_attributes if meter.source(a) == "rule"),
                  "judged_attributes": sorted(a for a in leak_attributes if meter.source(a) != "rule"),
                  "unmeasured_attributes": sorted({a for r in rows for a in r.attributes} - set(leak_attributes)),
                  "attribute_judge": meter.judge_name}
    cfg = to_dict(config)
    results = build_results(config=cfg, suite=suite_info, variants=results_by_variant, reference=BASE, checks=checks,
                            timing={"generate_seconds": t_gen, "metrics_seconds": t_met},
                            wall_seconds=time.perf_counter() - t0, **extra)
    results["generation"] = {**generation, "base_images_from": config.base_images_from}
    t_rep = time.perf_counter()
    extra_kw = {"row_ids": row_ids} if row_ids is not None else {}  # per-category eval: the rows shown
    write_reports(results, report_pairs, report_rows, out_dir, config.html_rows, **extra_kw)
    if wandb_run is None and config.report_to == "wandb":
        import wandb

        wandb_run = wandb.init(project=config.wandb_project, config=cfg, job_type="eval", reinit="finish_previous")
        own_run = True
    else:
        own_run = False
    if wandb_run is not None:
        log_wandb(wandb_run, results, report_pairs, report_rows, config.html_rows, **extra_kw)
        if own_run:
            wandb_run.finish()
    results["timing"]["report_seconds"] = time.perf_counter() - t_rep
    results["wall_seconds"] = time.perf_counter() - t0
    write_results(results, out_dir / "results.json")
    return results


def _single_metrics(config: EvalConfig, rows, images, variants, judges, checker, meter,
                    leak_attributes) -> tuple[dict[str, dict], dict]:
    """The base and one adapter's dial, every variant on every row."""
    checks: dict[str, Any] = {}
    zero = [v for v in variants if v.weight == 0.0]
    if config.check_weight_zero and zero:
        diff = max_abs_difference(images[BASE], images[zero[0].name])
        checks["weight0_equals_base"] = {"max_abs_diff": diff, "passed": diff <= 1}
        if diff > 1:
            log.warning("the adapter at weight 0 differs from the base by up to %d/255 per pixel: set_adapters scales "
                        "only some LoRA layers (e.g. attention); layers it does not scale stay on", diff)

    judge_scores = {v.name: {j: M.score_matrix(model.score, images[v.name], rows) for j, model in judges.items()}
                    for v in variants}
    results_by_variant: dict[str, dict[str, Any]] = {}
    reference_rows = None
    for v in variants:
        is_ref = v.name == BASE
        metrics, per_row = _variant_metrics(
            v.name, images[v.name], rows, None if is_ref else images[BASE], judge_scores[v.name], judge_scores[BASE],
            checker, leak_attributes, config, reference_rows, meter)
        if is_ref:
            reference_rows = per_row
        results_by_variant[v.name] = {"kind": "base" if v.weight is None else "adapter", "weight": v.weight,
                                      "images": f"images/{v.dirname}" if config.save_images else None, **metrics}
    return results_by_variant, checks


# ---------------------------------------------------------------------------------------------
# the per-category dial


def _check_dial_identity(config: EvalConfig, files: dict[str, Path], pipe=None) -> bool:
    """:func:`check_adapter_identity` for every adapter of a per-category dial set; the error names the category."""
    known = False
    for category, weight_file in files.items():
        try:
            known = check_adapter_identity(config, weight_file, pipe)
        except AdapterMismatchError as exc:
            raise AdapterMismatchError(f"adapters: {category}: {exc}") from None
    return known


def _pair_at(pairs, indices: list[int] | None, row: int):
    """The pair of suite row ``row`` in a variant's images (generated on ``indices``, or on every row); None if absent."""
    if indices is None:
        return pairs[row]
    return pairs[indices.index(row)] if row in indices else None


def _subset(values, positions: list[int]):
    return [values[p] for p in positions]


def _category_metrics(config: EvalConfig, rows: list[EvalRow], images, dial: dict[str, Path],
                      rows_of: dict[str, list[int]], rows_for: dict[str, list[int]], judges, checker, meter,
                      leak_attributes: list[str]) -> tuple[dict[str, dict], dict, dict]:
    """Metrics of a per-category eval: the base on every row; each ``<category>@W`` on its category's rows
    (attributes narrowed to the category, paired with the base on the same rows), which give one dial
    curve per category; and each adapter's cross-effects at its top weight on every row."""
    kw = {"n_boot": config.bootstrap, "seed": config.seed}
    weights, top = list(config.weights), max(config.weights)
    base_scores = {j: M.score_matrix(model.score, images[BASE], rows) for j, model in judges.items()}
    base_metrics, _ = _variant_metrics(BASE, images[BASE], rows, None, base_scores, base_scores, checker,
                                       leak_attributes, config, None, meter)
    variants: dict[str, dict[str, Any]] = {BASE: {"kind": "base", "weight": None,
                                                  "images": f"images/{BASE}" if config.save_images else None,
                                                  **base_metrics}}
    dials: dict[str, Any] = {}
    zero_checks: dict[str, Any] = {}
    for c in dial:
        idx = rows_of[c]
        crows = [only_category(rows[i], c) for i in idx]
        leak_c = meter.measurable(a for r in crows for a in r.attributes)
        base_pairs = _subset(images[BASE], idx)
        base_c_scores = {j: {k: np.asarray(v)[idx] for k, v in sc.items()} for j, sc in base_scores.items()}
        base_c, base_c_rows = _variant_metrics(f"base ({c})", base_pairs, crows, None, base_c_scores, base_c_scores,
                                               checker, leak_c, config, None, meter)
        for w in weights:
            v = category_variant(c, w)
            at = {row: k for k, row in enumerate(rows_for[v.name])}  # suite row -> position in the variant's images
            pairs = _subset(images[v.name], [at[i] for i in idx])
            scores = {j: M.score_matrix(model.score, pairs, crows) for j, model in judges.items()}
            metrics, _ = _variant_metrics(v.name, pairs, crows, base_pairs, scores, base_c_scores, checker, leak_c,
                                          config, base_c_rows, meter)
            variants[v.name] = {"kind": "adapter", "category": c, "weight": w, "n_rows": len(idx),
                                "images": f"images/{v.dirname}" if config.save_images else None, **metrics}
            if w == 0.0 and config.check_weight_zero:
                diff = max_abs_difference(base_pairs, pairs)
                zero_checks[c] = {"max_abs_diff": diff, "passed": diff <= 1}
                if diff > 1:
                    log.warning("%s at weight 0 (every category adapter at 0) differs from the base by up to %d/255 "
                                "per pixel: set_adapters scales only some LoRA layers (e.g. attention); layers it does "
                                "not scale stay on", c, diff)
        dials[c] = {"adapter": str(dial[c]), "n_rows": len(idx),
                    "attributes": sorted({a for r in crows for a in r.attributes}), "verifiable_attributes": leak_c,
                    "base": {k: base_c["adherence"][k] for k in ("value", "ci95", "n")},
                    "curve": category_curve(variants, c)}

    # cross-effects: each adapter at its top weight, on every row, against weight 0 (every adapter of the set at 0:
    # the same pipeline state whichever category's sweep it belongs to) where it was generated, else the base
    columns = {k: [a for a in leak_attributes if category_of(a) == k] for k in CATEGORIES}
    columns = {k: attrs for k, attrs in columns.items() if attrs}
    base_margins = meter.margins(images[BASE], rows)
    zero_margins = {a: np.asarray(m, dtype=np.float64).copy() for a, m in base_margins.items()}
    zero_reference = {k: BASE for k in columns}
    if 0.0 in weights:
        for k in dial:
            v0 = category_variant(k, 0.0)
            got = rows_for[v0.name]
            margins0 = meter.margins(images[v0.name], [rows[i] for i in got])
            for a, m in margins0.items():
                if category_of(a) == k:
                    zero_margins[a][got] = m
            if k in zero_reference:
                zero_reference[k] = v0.name
    base_o = [o for o, _ in images[BASE]]
    by_attribute, by_category = {}, {}
    for c in dial:
        vt = category_variant(c, top)
        margins = meter.margins(images[vt.name], rows)
        fired, baseline = M.leakage_fired([o for o, _ in images[vt.name]], base_o, leak_attributes, meter=meter,
                                          rows=rows)
        leakage = M.leakage_summary(fired, baseline, **kw)["by_attribute"]
        by_attribute[c], by_category[c] = M.cross_effects(margins, zero_margins, leakage, columns, **kw)
    cross = {"top_weight": top, "adapters": list(dial), "categories": list(columns),
             "attributes": [a for attrs in columns.values() for a in attrs],
             "attribute_category": {a: k for k, attrs in columns.items() for a in attrs},
             "weight0_reference": zero_reference, "by_category": by_category, "by_attribute": by_attribute}

    checks: dict[str, Any] = {}
    if zero_checks:
        worst = max(z["max_abs_diff"] for z in zero_checks.values())
        checks["weight0_equals_base"] = {"max_abs_diff": worst, "passed": worst <= 1, "by_category": zero_checks}
    return variants, checks, {"category_dials": dials, "cross_effects": cross}
