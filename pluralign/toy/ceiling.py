"""How much content fidelity a perfect generator could reach: the checker on the world's own renders.

Content fidelity counts the anti-aesthetic images in which the content checker still finds the
requested shape and colour. A generator that drew exactly the world's degraded render for every
eval row would be limited by two things only: the checker (does it name the subject in that render?)
and the autoencoder (does the subject survive the latent round trip every generated image goes
through?). This module measures both on eval suites, per attribute, so a lost row can be put down
to the generator, not to the measurement::

    python -m pluralign.toy.ceiling --suite_seeds 1000,5000,6000,7000
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass

from pluralign.config import option, parse, run_module

from . import paths, world
from .base_model import reconstruct
from .checker import ContentChecker


@dataclass
class CeilingConfig:
    suite_seeds: list[int] = option(factory=lambda: [1000, 5000, 6000, 7000], help="eval suite seeds, comma-separated")
    n_prompts: int = option(72, "rows per suite (as in the demo)", min=1)
    model: str = option("", "pipeline dir whose VAE does the round trip (default: the shipped aligned model)")


def world_renders(rows: list[dict], seed: int, n: int):
    """The world's degraded render of each row of ``eval_suite(n, seed)`` (its requested attribute)."""
    scenes = world.sample_scenes(n, seed)
    return [world.degraded_image(sc, r["attributes"][0], seed=r["seed"]) for sc, r in zip(scenes, rows)]


def measure(cfg: CeilingConfig) -> dict:
    import numpy as np
    from diffusers import AutoencoderKL

    checker = ContentChecker.from_pretrained()
    vae = AutoencoderKL.from_pretrained(cfg.model or str(paths.aligned_dir()), subfolder="vae").eval()
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # rows, found raw, found after round trip
    for seed in cfg.suite_seeds:
        rows = world.eval_suite(cfg.n_prompts, seed)
        renders = world_renders(rows, seed, cfg.n_prompts)
        # the round trip every generated image has passed through: latent mean, then decode
        back = reconstruct(vae, np.stack([world.to_array(im) for im in renders]))
        raw, rec = checker.check(renders, rows), checker.check(list(back), rows)
        for r, a, b in zip(rows, raw, rec):
            c = counts[r["attributes"][0]]
            c[0], c[1], c[2] = c[0] + 1, c[1] + int(a), c[2] + int(b)
    n, raw, rec = (sum(c[i] for c in counts.values()) for i in range(3))
    return {"suite_seeds": list(cfg.suite_seeds), "n": n, "render": raw / n, "round_trip": rec / n,
            "by_attribute": {a: {"n": c[0], "render": c[1] / c[0], "round_trip": c[2] / c[0]}
                             for a, c in sorted(counts.items())}}


def main(argv: list[str] | None = None) -> int:
    (cfg,) = parse((CeilingConfig,), sys.argv[1:] if argv is None else argv, prog="python -m pluralign.toy.ceiling")
    out = measure(cfg)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_module(main, "python -m pluralign.toy.ceiling"))
