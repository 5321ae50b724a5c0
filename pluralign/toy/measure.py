"""Quick adherence and content measurements of a toy pipeline (used by the build to check its output).

The full evaluation loop (``pluralign.eval``) reports CIs, leakage and grids; this is the minimal
version the build needs to record what it produced: for each suite row, I_o from P_o and I_a
from P_a with the same seed, the paired verifier decision ``adheres(I_a, I_o, attribute)`` for pixel
attributes and the checker's judge for semantic ones (the toy scorer, as in the eval), and
the content checker on both images.
"""

from __future__ import annotations

import numpy as np

from pluralign.eval.metrics import AttributeMeter, attribute_hits, row_adherence
from pluralign.eval.suite import EvalRow

from .base_model import generate
from .scorer import ToyScorer


def measure_pipeline(pipe, rows: list[dict], num_inference_steps: int, guidance_scale: float, checker=None,
                     return_images: bool = False) -> dict:
    seeds = [r["seed"] for r in rows]
    images_o = generate(pipe, [r["prompt_o"] for r in rows], seeds, num_inference_steps, guidance_scale)
    images_a = generate(pipe, [r["prompt_a"] for r in rows], seeds, num_inference_steps, guidance_scale)
    judge = None
    if checker is not None and checker.attributes:
        judge = ToyScorer()
        judge.checker = checker
    meter = AttributeMeter(judge=judge)
    eval_rows = [EvalRow(r["prompt_o"], r["prompt_a"], list(r["attributes"]), r["seed"]) for r in rows]
    margins = meter.margins(list(zip(images_o, images_a)), eval_rows)
    hits = row_adherence(margins)
    out = {"n": len(rows), "n_measured": int((~np.isnan(hits)).sum()),
           "adherence": round(float(np.nanmean(hits)), 3) if (~np.isnan(hits)).any() else None,
           "by_attribute": {a: round(float(np.nanmean(attribute_hits(m))), 3) for a, m in margins.items()},
           "unmeasured": sorted({a for r in rows for a in r["attributes"]} - set(margins))}
    if checker is not None:
        out["content_o"] = round(float(checker.check(images_o, rows).mean()), 3)
        out["content_a"] = round(float(checker.check(images_a, rows).mean()), 3)
    if return_images:
        out["images_o"], out["images_a"] = images_o, images_a
    return out
