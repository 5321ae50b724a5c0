"""The toy base and aligned models on the validation suites at several DDIM step counts and guidance scales.

Also measures other base and aligned pipelines on the same rows (``--base``, ``--aligned``), e.g. a distilled pair.

Sampling is most of the demo's time outside training, and its cost is proportional to the step count. This
measures what fewer steps cost the models the demo starts from, pooled over the validation suites (never the
reporting suite): adherence, content and adherence per attribute, for each model and step count, in one run.

    python scripts/sampling_steps.py --steps 20,15 --output /tmp/steps      # about 6 minutes on 2 cores
    python scripts/sampling_steps.py --steps 20 --guidance 6,3 --output /tmp/guidance

Prints one table and writes ``steps.json`` in the output directory. docs/toy.md records the runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pluralign.eval.generate import load_pipeline
from pluralign.toy import paths
from pluralign.toy.demo import DemoConfig, _evaluate, _sampling
from pluralign.toy.scorer import ToyScorer
from pluralign.toy.suite import toy_rows


def _pool(results: list[dict]) -> dict:
    """Row-weighted adherence, content and per-attribute adherence of the ``base`` variant over suites."""
    def weighted(pairs):
        n = sum(k for _, k in pairs)
        return sum(v * k for v, k in pairs) / n if n else float("nan")

    vs = [r["variants"]["base"] for r in results]
    attrs = sorted({a for v in vs for a in v["adherence"]["by_attribute"]})
    return {
        "adherence": weighted([(v["adherence"]["value"], v["adherence"]["n"]) for v in vs]),
        "content": weighted([(v["content_fidelity"]["value"], v["content_fidelity"]["n"]) for v in vs]),
        "by_attribute": {a: weighted([(v["adherence"]["by_attribute"][a]["value"], v["adherence"]["by_attribute"][a]["n"])
                                      for v in vs if a in v["adherence"]["by_attribute"]]) for a in attrs},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="20,15", help="comma-separated DDIM step counts")
    ap.add_argument("--guidance", default="", help="comma-separated guidance scales (default: the one the toy build "
                    "recorded)")
    ap.add_argument("--seeds", default="5000,6000,7000", help="validation suite seeds (never the reporting 1000)")
    ap.add_argument("--n_prompts", type=int, default=288, help="rows per suite")
    ap.add_argument("--base", default="", help="base pipeline directory (default: the shipped toy base)")
    ap.add_argument("--aligned", default="", help="aligned pipeline directory (default: the shipped toy aligned model; 'none' skips it)")
    ap.add_argument("--output", default="outputs/sampling_steps")
    a = ap.parse_args(argv)
    steps = [int(s) for s in a.steps.split(",")]
    guidances = [float(g) for g in a.guidance.split(",")] if a.guidance else [-1.0]  # -1: the recorded scale
    seeds = [int(s) for s in a.seeds.split(",")]
    if 1000 in seeds:
        raise SystemExit("--seeds: 1000 is the reporting suite; choose settings on validation suites only")
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    judge = ToyScorer(str(paths.checker_dir())).ensure_loaded()
    table: dict[str, dict[str, dict]] = {}
    models = [("base", a.base or paths.base_dir()), ("aligned", a.aligned or paths.aligned_dir())]
    for model, path in [(m, p) for m, p in models if str(p) != "none"]:
        pipe = load_pipeline(str(path), progress=False)
        for n in steps:
            for g in guidances:
                cfg = DemoConfig(output=str(out), n_prompts=a.n_prompts, num_inference_steps=n, guidance_scale=g,
                                 report_to="none")
                sampling = _sampling(cfg)
                key = f"{n} steps, guidance {sampling['guidance_scale']:g}"
                t0 = time.perf_counter()
                results = [_evaluate(pipe, toy_rows(a.n_prompts, seed), judge.checker, judge,
                                     out / f"{model}_{n}_{sampling['guidance_scale']:g}_{seed}", cfg, sampling, None, [])
                           for seed in seeds]
                table.setdefault(model, {})[key] = {**_pool(results), "seconds": round(time.perf_counter() - t0, 1)}
                r = table[model][key]
                print(f"{model:8s} {key}: adherence {r['adherence']:.3f}  content {r['content']:.3f}  "
                      f"({r['seconds']:.0f} s)", flush=True)
    (out / "steps.json").write_text(json.dumps({"seeds": seeds, "n_prompts": a.n_prompts, "table": table}, indent=1))
    attrs = sorted(next(iter(table["base"].values()))["by_attribute"])
    print("\n| model | sampling | adherence | content | " + " | ".join(attrs) + " | seconds |")
    print("|---|---|---|---|" + "---|" * (len(attrs) + 1))
    for model, rows in table.items():
        for n, r in rows.items():
            cells = " | ".join(f"{r['by_attribute'].get(x, float('nan')):.3f}" for x in attrs)
            print(f"| {model} | {n} | {r['adherence']:.3f} | {r['content']:.3f} | {cells} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
