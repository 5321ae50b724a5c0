"""How far three measures of colour drop when a photo is desaturated: what a muted rule can be built from.

For the calibration's colour photos (scikit-image) desaturated by pluralign's own degradation (a blend toward the luminance in sRGB) at a
few severities, on the 32 x 32 grid of cells the muted rule reads (cells neither image clips), the log drop of:

- ``whole``: the frame's share of the light that is colour, sum(max - min) / sum(max) in linear light (the muted
  statistic until 2026-12-07, ``unclipped_chroma``, and one half of ``colourful_chroma`` since);
- ``colourful, linear``: the same share over each frame's most colourful cells (share at least 0.7 of the frame's 99th
  percentile; the other half of the rejected candidate ``joint_chroma``);
- ``colourful, sRGB``: the mean sRGB chroma, max - min, over each frame's most colourful cells by that chroma (the
  other half of ``colourful_chroma``).

A blend toward grey scales every cell's sRGB chroma by exactly the blend, so the last drops by -log(1 - severity); in
linear light a saturated cell's smallest channel stays near black once decoded, and its share drops much less.

    python scripts/muted_components.py
"""

from __future__ import annotations

import numpy as np
import skimage.data as sd

from pluralign.data.degradations import desaturate
from pluralign.rewards.rules import CLIP_LEVEL, _features, chroma_share
from pluralign.rewards.verifiers import srgb_to_linear

# the calibration's colour photos (pluralign.rewards.calibrate): the held-out ones stay for the check
PHOTOS = ("astronaut", "chelsea", "immunohistochemistry", "retina", "hubble_deep_field")
SHARE, TOP, EPS = 0.7, 0.99, 0.02


def _top_cells(value: np.ndarray, keep: np.ndarray) -> np.ndarray:
    v = np.where(keep, value, np.nan)
    bar = SHARE * np.nanquantile(v, TOP, axis=1)
    return keep & (np.nan_to_num(v, nan=-1.0) >= bar[:, None])


def drops(grid_a: np.ndarray, grid_o: np.ndarray) -> dict[str, np.ndarray]:
    n = len(grid_a)
    keep = (grid_a.reshape(n, 3, -1).max(1) < CLIP_LEVEL) & (grid_o.reshape(n, 3, -1).max(1) < CLIP_LEVEL)

    def linear_top(g):
        lin = srgb_to_linear(g.reshape(n, 3, -1))
        hi, lo = lin.max(1), lin.min(1)
        return chroma_share(g, _top_cells((hi - lo) / (hi + 1e-6), keep))

    def srgb_top(g):
        rgb = g.reshape(n, 3, -1)
        c = rgb.max(1) - rgb.min(1)
        sel = _top_cells(c, keep)
        return (c * sel).sum(1) / np.maximum(sel.sum(1), 1)

    def drop(f):
        return np.log(f(grid_o) + EPS) - np.log(f(grid_a) + EPS)

    return {"whole": drop(lambda g: chroma_share(g, keep)), "colourful, linear": drop(linear_top),
            "colourful, sRGB": drop(srgb_top)}


def main() -> int:
    rng = np.random.default_rng(0)
    originals = [getattr(sd, p)().astype(np.float32) / 255.0 for p in PHOTOS]
    print(f"| severity | measure | {' | '.join(PHOTOS)} |\n|---:|---|{'---:|' * len(PHOTOS)}")
    for severity in (0.3, 0.5):
        degraded = [desaturate(x, severity, rng) for x in originals]
        grid_a = _features(degraded, {"_cast"})["_cast"][:, 3:]
        grid_o = _features(originals, {"_cast"})["_cast"][:, 3:]
        for name, value in drops(grid_a, grid_o).items():
            print(f"| {severity} | {name} | {' | '.join(f'{v:.3f}' for v in value)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
