"""Sweep the demo's adapter settings: validate one setting on suites disjoint from the reporting suite.

The demo reports on ``eval_suite(n, seed=1000)``. Its settings are chosen here, on other suite
seeds (5000, 6000, 7000 by default: 216 rows, 24 per attribute), so the reported numbers are not
fitted to the rows they are reported on. One call trains an adapter exactly as ``pluralign demo``
does (or takes a trained one with ``--adapter``), evaluates the aligned model with it at weight 1
on every validation suite, and writes ``validation.json`` with the pooled and per-suite numbers.
``--log FILE`` also appends one JSON line, so a sweep's runs collect in one file.

    python -m pluralign.toy.sweep --output runs/val/g3 --guided_sft_scale 3 --log runs/val/sweep.jsonl
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pluralign.config import ConfigError, option, run_module, to_dict, writable_dir
from pluralign.eval.generate import load_pipeline
from pluralign.trainers import DPOTrainConfig

from . import paths
from .demo import (
    DemoConfig,
    _check_checkpoints,
    _evaluate,
    _sampling,
    generate_onpolicy,
    parse_demo,
    train_adapter,
)
from .scorer import ToyScorer
from .suite import toy_rows


@dataclass
class ValidationConfig:
    """Options of the validation run (every ``pluralign demo`` option and recipe key is accepted as well)."""

    validation_seeds: list[int] = option(factory=lambda: [5000, 6000, 7000],
                                         help="suite seeds to validate on, comma-separated; never the demo's reporting suite_seed")
    adapter: str = option("", "a trained diffusers LoRA dir to evaluate instead of training one")
    log: str = option("", "JSON-lines file to append this run's summary to")
    base_images_from: str = option("", "an earlier validation run's output: each suite's aligned-model images come "
                                   "from its eval_SEED folder instead of being sampled again (checked to be the same "
                                   "model, rows and sampling; pluralign.eval.reuse)")


def _weighted(values_and_counts: list[tuple[float, int]]) -> float:
    return sum(v * n for v, n in values_and_counts) / sum(n for _, n in values_and_counts)


def pooled(per_suite: list[dict]) -> dict:
    """Row-weighted means over suites of adherence, content and their per-attribute values; leakage is the worst suite."""

    def mean(key: str, variant: str) -> float:
        # each suite weighted by the rows the metric was measured on (rows without a rule do not count)
        return _weighted([(s[variant][key], s[variant][f"{key}_n"]) for s in per_suite])

    def by(key: str) -> dict[str, float]:
        attrs = sorted({a for s in per_suite for a in s["adapter"][key]})
        out = {}
        for a in attrs:
            out[a] = _weighted([(s["adapter"][key][a], s["adapter"][f"{key}_n"][a])
                                for s in per_suite if a in s["adapter"][key]])
        return out

    return {
        "n": sum(s["n"] for s in per_suite),
        "aligned": {"adherence": mean("adherence", "aligned"), "content": mean("content", "aligned")},
        "adapter": {"adherence": mean("adherence", "adapter"), "content": mean("content", "adapter"),
                    "leakage_max_abs_points": max(s["adapter"]["leakage_max_abs_points"] for s in per_suite),
                    "adherence_by_attribute": by("adherence_by_attribute"),
                    "content_by_attribute": by("content_by_attribute")},
    }


def _suite_summary(res: dict, n: int) -> dict:
    al, ad = res["variants"]["base"], res["variants"]["adapter@1"]
    per_attr = lambda v, m: {a: d["value"] for a, d in v[m]["by_attribute"].items()}  # noqa: E731
    per_n = lambda v, m: {a: d["n"] for a, d in v[m]["by_attribute"].items()}  # noqa: E731
    return {
        "n": n,
        "aligned": {"adherence": al["adherence"]["value"], "adherence_n": al["adherence"]["n"],
                    "content": al["content_fidelity"]["value"], "content_n": al["content_fidelity"]["n"]},
        "adapter": {"adherence": ad["adherence"]["value"], "adherence_n": ad["adherence"]["n"],
                    "content": ad["content_fidelity"]["value"], "content_n": ad["content_fidelity"]["n"],
                    "leakage_max_abs_points": ad["leakage"]["max_abs_points"],
                    "adherence_by_attribute": per_attr(ad, "adherence"),
                    "adherence_by_attribute_n": per_n(ad, "adherence"),
                    "content_by_attribute": per_attr(ad, "content_fidelity"),
                    "content_by_attribute_n": per_n(ad, "content_fidelity")},
    }


def run_validation(cfg: DemoConfig, train_cfg: DPOTrainConfig, vcfg: ValidationConfig) -> dict:
    if cfg.suite_seed in vcfg.validation_seeds:
        raise ConfigError(f"validation_seeds {vcfg.validation_seeds} include the reporting suite_seed {cfg.suite_seed}: "
                          "settings chosen on the rows they are reported on are fitted to them. Pick other seeds.")
    if not vcfg.validation_seeds:
        raise ConfigError("validation_seeds is empty: give at least one suite seed (e.g. --validation_seeds 5000)")
    if vcfg.adapter and not (Path(vcfg.adapter) / "pytorch_lora_weights.safetensors").is_file():
        raise ConfigError(f"--adapter {vcfg.adapter}: no pytorch_lora_weights.safetensors there; give the adapter dir "
                          "a demo or validation run wrote (runs/intent/adapter) or leave --adapter empty to train one")
    if vcfg.base_images_from:  # the folders it names, before minutes of training (their settings: at each eval)
        earlier = [Path(vcfg.base_images_from) / f"eval_{seed}" / "results.json" for seed in vcfg.validation_seeds]
        missing = [str(p) for p in earlier if not p.is_file()]
        if missing:
            raise ConfigError(f"--base_images_from {vcfg.base_images_from}: no earlier eval at {', '.join(missing)}; "
                              "give the output of a validation run on the same validation_seeds")
    _check_checkpoints()

    t0 = time.perf_counter()
    out = writable_dir(cfg.output, "output")
    judge, sampling = ToyScorer(str(paths.checker_dir())).ensure_loaded(), _sampling(cfg)
    if vcfg.adapter:
        adapter, train_s = Path(vcfg.adapter), 0.0
    else:  # the demo's training data: degradation pairs, and on-policy pairs for the semantic attributes
        gen_dir = paths.base_dir() if cfg.onpolicy_generator == "base" else paths.aligned_dir()
        onpolicy, _ = generate_onpolicy(cfg, load_pipeline(str(gen_dir), progress=False), judge, sampling, out, 0, gen_dir)
        adapter, summary = train_adapter(cfg, train_cfg, "intent", out, "none", onpolicy)
        train_s = summary["wall_seconds"]
    pipe, checker = load_pipeline(str(paths.aligned_dir()), progress=False), judge.checker
    suites = {}
    for seed in vcfg.validation_seeds:
        rows = toy_rows(cfg.n_prompts, seed)
        res = _evaluate(pipe, rows, checker, judge, out / f"eval_{seed}", cfg, sampling, adapter, [1.0],
                        base_images_from=str(Path(vcfg.base_images_from) / f"eval_{seed}") if vcfg.base_images_from
                        else None)
        suites[str(seed)] = _suite_summary(res, len(rows))
        s = suites[str(seed)]["adapter"]
        print(f"suite {seed}: adherence {s['adherence']:.3f}  content {s['content']:.3f}  "
              f"leakage {s['leakage_max_abs_points']:.1f} pts", flush=True)
    result = {"config": to_dict(cfg), "train_config": to_dict(train_cfg), "validation": to_dict(vcfg),
              "adapter": str(adapter),
              "pooled": pooled(list(suites.values())), "suites": suites,
              "train_seconds": train_s, "wall_seconds": time.perf_counter() - t0}
    (out / "validation.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    if vcfg.log:
        Path(vcfg.log).parent.mkdir(parents=True, exist_ok=True)
        with open(vcfg.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    # the demo's own default output is outputs/demo; a validation run must not write over it
    argv = ["--output", "outputs/validate", *(argv if argv is not None else sys.argv[1:])]
    cfg, train_cfg, vcfg = parse_demo(argv, ValidationConfig, prog="python -m pluralign.toy.sweep")
    res = run_validation(cfg, train_cfg, vcfg)
    p = res["pooled"]
    print(f"pooled over {p['n']} rows: adherence {p['adapter']['adherence']:.3f} (aligned {p['aligned']['adherence']:.3f})  "
          f"content {p['adapter']['content']:.3f} (aligned {p['aligned']['content']:.3f})  "
          f"leakage max {p['adapter']['leakage_max_abs_points']:.1f} pts  -> {Path(cfg.output) / 'validation.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_module(main, "python -m pluralign.toy.sweep"))
