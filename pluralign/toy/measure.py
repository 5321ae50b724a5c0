"""Quick adherence and content measurements of a toy pipeline (used by the build to check its output).

The full evaluation loop (``pluralign.eval``) reports CIs, leakage and grids; this is the minimal
version the build needs to record what it produced: for each suite row, I_o from P_o and I_a
from P_a with the same seed, the paired verifier decision ``adheres(I_a, I_o, attribute)``, and
the content checker on both images.
"""

from __future__ import annotations

import numpy as np

from pluralign.rewards import rules

from . import world
from .base_model import generate


def measure_pipeline(pipe, rows: list[dict], num_inference_steps: int, guidance_scale: float, checker=None,
                     return_images: bool = False) -> dict:
    seeds = [r["seed"] for r in rows]
    images_o = generate(pipe, [r["prompt_o"] for r in rows], seeds, num_inference_steps, guidance_scale)
    images_a = generate(pipe, [r["prompt_a"] for r in rows], seeds, num_inference_steps, guidance_scale)
    attrs = [r["attributes"] for r in rows]
    scores = rules.adherence_scores(images_a, images_o, attrs)
    ok = scores > 0
    by_attr = {}
    for a in world.ATTRIBUTES:
        mask = np.array([a in r for r in attrs])
        if mask.any():
            by_attr[a] = round(float(ok[mask].mean()), 3)
    out = {"n": len(rows), "adherence": round(float(ok.mean()), 3), "by_attribute": by_attr}
    if checker is not None:
        out["content_o"] = round(float(checker.check(images_o, rows).mean()), 3)
        out["content_a"] = round(float(checker.check(images_a, rows).mean()), 3)
    if return_images:
        out["images_o"], out["images_a"] = images_o, images_a
    return out
