"""The flat-lighting statistic on pairs it was chosen on: what separates flat light from the attributes it was confused with.

`rules.light_flattening` reads how far I_a's light follows I_o's blurred light (Retinex's illumination) with a
negative gain, beyond a curve of each cell's own values and a smooth field of the frame's shape. This reads it on
two sets of pairs, both without the registration the rule's pipeline runs first (so geometric attributes' rows,
such as a shrunk subject, overstate what would fire there):

* the reference degradations (`pluralign.rewards.reference_degradations`) on the diagnosis photos: gradio's four and
  both sets of `scripts/diagnosis_photos.sh` (never the unseen ones), at 64, 256 and 1024 px and severities 0.3,
  0.65 and 1, with three benign edits;
* pluralign's own degradations (`pluralign.data.degradations`, the calibration's code) on the calibration photos.

For each attribute it prints the 5th percentile, the median and the largest flattening (the statistic's
magnitude, 1 = all the light), and the share of pairs above 0.01 and 0.03. Then it fits a threshold on the
calibration-photo pairs the way the calibration does (`calibrate.fit_threshold`, the identity as the benign edit)
and prints what fires at it on the reference pairs.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/flat_light_gain.py            # about 3 minutes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from vignette_dark_corners import DIAGNOSIS_DIR, calibration_square, diagnosis_photos, jpeg, square

from pluralign.data.degradations import apply_float
from pluralign.rewards import reference_degradations as R
from pluralign.rewards.calibrate import CALIBRATION_PHOTOS, fit_threshold, load_photo
from pluralign.rewards.rules import _features, light_flattening

REFERENCE = ("flat_lighting", "overexposed", "double_exposure", "noisy", "light_leak", "vignette", "low_contrast",
             "muted", "color_cast", "underexposed", "blurry", "film_grain", "obstructed", "small_subject")
OWN = ("flat_lighting", "overexposure", "vignette", "light_leak", "double_exposure", "low_contrast", "desaturate",
       "color_cast", "sensor_noise", "film_grain", "obstruction", "small_subject", "gaussian_blur", "underexposure")
BENIGN = ("identity", "shift", "jpeg90")
SIZES, SEVERITIES = (64, 256, 1024), (0.3, 0.65, 1.0)


def flattening(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    fa = _features([a for a, _ in pairs], {"_light"})["_light"]
    fo = _features([o for _, o in pairs], {"_light"})["_light"]
    return -light_flattening(fa, fo)


def benign(o: np.ndarray, kind: str) -> np.ndarray:
    if kind == "identity":
        return np.clip(o * 0.98, 0, 1)
    if kind == "shift":
        return np.roll(o, max(1, o.shape[1] // 50), axis=1)
    return jpeg(o, 90)


def reference_pairs(photos: list[Path]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    out = {}
    for attr in REFERENCE + BENIGN:
        pairs = []
        for path in photos:
            for size in SIZES:
                o = square(path, size)
                if attr in BENIGN:
                    pairs.append((benign(o, attr), o))
                else:
                    pairs += [(getattr(R, attr)(o, s, rng), o) for s in SEVERITIES]
        out[attr] = flattening(pairs)
    return out


def own_pairs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name in OWN:
        pairs = []
        for photo in CALIBRATION_PHOTOS:
            x = load_photo(photo)
            for size in SIZES:
                o = calibration_square(x, size)
                pairs += [(apply_float(o, [(name, sev)], seed=int(rng.integers(1_000_000))), o) for sev in SEVERITIES]
        out[name] = flattening(pairs)
    return out


def table(title: str, stats: dict[str, np.ndarray]) -> None:
    print(f"\n{title}\n\n| applied | pairs | 5th pct | median | largest | above 0.01 | above 0.03 |\n|---|---:|---:|---:|---:|---:|---:|")
    for attr, v in stats.items():
        v = v + 0.0  # no -0.000
        print(f"| {attr} | {len(v)} | {np.quantile(v, 0.05):.3f} | {np.median(v):.3f} | {v.max():.3f} | "
              f"{np.mean(v > 0.01):.2f} | {np.mean(v > 0.03):.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos_dir", default=DIAGNOSIS_DIR, type=Path)
    a = ap.parse_args(argv)
    ref, own = reference_pairs(diagnosis_photos(a.photos_dir)), own_pairs()
    table("Reference degradations on the diagnosis photos (flattening, 1 = all the light):", ref)
    table("pluralign's degradations on the calibration photos:", own)
    others = [v for k, v in own.items() if k != "flat_lighting"]
    t = fit_threshold(own["flat_lighting"], np.zeros(len(CALIBRATION_PHOTOS) * len(SIZES)), 0.02, others)
    fires = {k: float(np.mean(v > t)) for k, v in ref.items()}
    print(f"\nthreshold fitted on the calibration-photo pairs: {t:.4f} (accuracy there "
          f"{np.mean(own['flat_lighting'] > t):.3f}); fires on the reference pairs: "
          + ", ".join(f"{k} {v:.2f}" for k, v in fires.items() if v > 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
