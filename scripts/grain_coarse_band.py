"""How much pluralign's own film grain moves the coarse contrast band, by image size.

The grain round of 2026-12-07 (docs/rewards_journal.md, "Grain less what a tone curve explains") subtracted the coarse
band's rise (16-px block means) from the grain residual's rise, so that a tone curve, which scales texture at every
scale, would not read as grain. It was rejected: the calibration's grain accuracy fell 0.950 -> 0.931. This prints
the coarse band's log rise under `pluralign.data.degradations.film_grain` on the calibration photos, per size: at
32-128 px a 16-px block holds few pixels, and grain moves the block means itself.

    python scripts/grain_coarse_band.py       # under a minute
"""

from __future__ import annotations

import numpy as np
from vignette_dark_corners import calibration_square

from pluralign.data.degradations import apply_float
from pluralign.rewards.calibrate import CALIBRATION_PHOTOS, load_photo
from pluralign.rewards.rules import _features

BAND_EPS = 0.005  # as the low-contrast rule's bands


def main() -> int:
    rng = np.random.default_rng(0)
    photos = [load_photo(p) for p in CALIBRATION_PHOTOS]
    print("| size | pairs | median | 90th percentile | largest | share above 0.1 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in (32, 64, 128, 256, 512, 1024):
        rises = []
        for x in photos:
            o = calibration_square(x, size)
            for sev in (0.3, 0.65, 1.0):
                a = apply_float(o, [("film_grain", sev)], seed=int(rng.integers(1_000_000)))
                fa, fo = _features([a, o], {"_bands"})["_bands"][:, 0]
                rises.append(np.log((fa + BAND_EPS) / (fo + BAND_EPS)))
        r = np.array(rises)
        print(f"| {size} | {len(r)} | {np.median(r):.3f} | {np.quantile(r, 0.9):.3f} | {r.max():.3f} | "
              f"{np.mean(r > 0.1):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
