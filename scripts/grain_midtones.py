"""Diagnosis for a later grain round: the grain rule's quantiles read on mid-tone pixels only.

Grain is weighted by 4y(1-y): a scene of saturated objects on white (`smarties` among the diagnosis photos) or a dark
scene has no grain on most of its frame, so the residual's 20th and 35th percentiles sit where grain cannot be, and
the shipped rule finds no grain on `smarties` at all. Reading each image's quantiles only over the pixels whose
luminance lies in (lo, 1 - lo) puts them where grain lives. This prints, for lo = 0 (the even rise as it shipped
then, up to interpolated quantiles), 0.1 and 0.2, the share of pairs over that round's threshold (0.2399; the rule
has since subtracted a tone curve's slope and ships 0.2263) for the reference degradations
of the diagnosis photos (gradio's and both sets of `scripts/diagnosis_photos.sh`; never the held-out or unseen ones)
at 64-1024 px, the same for `smarties` alone, and the share of pluralign's own grain found on the calibration photos
at 32-1024 px. An image with under a tenth of its pixels in the mid-tones is read whole. Nothing in the rules reads
this; docs/rewards_journal.md says why not yet.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/grain_midtones.py        # about 3 minutes
"""

from __future__ import annotations

import numpy as np
from grain_even_rise import EVEN_RISE_THRESHOLD
from vignette_dark_corners import calibration_square, diagnosis_photos, jpeg, square

from pluralign.data.degradations import apply_float
from pluralign.rewards import reference_degradations as R
from pluralign.rewards.calibrate import CALIBRATION_PHOTOS, load_photo
from pluralign.rewards.rules import RULE_SPECS
from pluralign.rewards.verifiers import _HALF_NORMAL, GRAIN_QUANTILES, Batch, _immerkaer

EPS = RULE_SPECS["film_grain"][3]


def quantiles(x: np.ndarray, lo: float) -> np.ndarray:
    """2 x 3: the residual's quantiles (GRAIN_QUANTILES) per band, as sigmas, over the mid-tone pixels."""
    y = Batch(x[None]).y
    out = np.zeros((len(GRAIN_QUANTILES), 3))
    for j, k in enumerate((1, 2, 4)):
        r = np.abs(_immerkaer(y, step=k))[0]
        centre = y[0, k:y.shape[1] - k, k:y.shape[2] - k]  # the pixel each residual value is centred on
        mid = (centre > lo) & (centre < 1 - lo) if lo > 0 else np.ones_like(centre, dtype=bool)
        values = r[mid] if mid.mean() > 0.1 else r.ravel()
        for i, q in enumerate(GRAIN_QUANTILES):
            out[i, j] = np.quantile(values, q) / (_HALF_NORMAL[q] * 6.0)
    return out


def even_rise(a: np.ndarray, o: np.ndarray, lo: float) -> float:
    return float(np.log((quantiles(a, lo) + EPS) / (quantiles(o, lo) + EPS)).min(axis=0).max())



def main() -> int:
    threshold = EVEN_RISE_THRESHOLD
    print(f"share over the even-rise round's threshold {threshold:.4f}\n")
    print("| mid-tones (lo) | film_grain | on smarties | double_exposure | jpeg_artifacts | overexposed | JPEG q90 "
          "| pluralign's grain, calibration photos |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lo in (0.0, 0.1, 0.2):
        rng = np.random.default_rng(3)
        fires = {}
        for attr in ("film_grain", "double_exposure", "jpeg_artifacts", "overexposed", "jpeg90"):
            values, names = [], []
            for path in diagnosis_photos():
                for size in (64, 128, 256, 1024):
                    o = square(path, size)
                    if attr == "jpeg90":
                        values.append(even_rise(jpeg(o, 90), o, lo))
                        names.append(path.stem)
                        continue
                    for s in (0.3, 0.65, 1.0):
                        values.append(even_rise(np.clip(R.degrade(o, attr, s, rng), 0, 1).astype(np.float32), o, lo))
                        names.append(path.stem)
            v = np.array(values) > threshold
            fires[attr] = v.mean()
            if attr == "film_grain":
                fires["smarties"] = v[np.array(names) == "smarties"].mean()
        own = []
        for photo in CALIBRATION_PHOTOS:
            x = load_photo(photo)
            for size in (32, 64, 128, 256, 512, 1024):
                o = calibration_square(x, size)
                own += [even_rise(apply_float(o, [("film_grain", s)], seed=int(rng.integers(1_000_000))), o, lo)
                        for s in (0.3, 0.65, 1.0)]
        print(f"| {lo} | {fires['film_grain']:.2f} | {fires['smarties']:.2f} | {fires['double_exposure']:.2f} | "
              f"{fires['jpeg_artifacts']:.2f} | {fires['overexposed']:.2f} | {fires['jpeg90']:.2f} | "
              f"{np.mean(np.array(own) > threshold):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
