"""film_grain read as the rise of the residual's 35th percentile (until 2026-12-07) and as the rise both its 20th and 35th percentiles show (the even rise).

Grain covers the mid-tones evenly and raises every low quantile of the fine residual alike. Two attributes raise the
35th percentile on part of the frame only. A double exposure carries the second frame's edges into flat areas: on a
portrait against a plain ground or a flower against a blurred one, those areas are a large share of the frame. An
overexposure of a saturated scene clips one channel and leaves the others' texture amplified. The round's candidate
(statistic `even_rise` on `verifiers.grain_quantiles`) takes, in each pass band, the smaller rise of the 20th and the
35th percentile. The rule shipped `even_rise_beyond_curve` after the later grain round (the even rise less a
tone curve's slope, threshold 0.2263) and `grain_added` since late 2026-12-07 (the same, counting only the bands whose
top percentile did not fall); this script reads the two statistics of its own round at that round's
threshold, :data:`EVEN_RISE_THRESHOLD`, so it prints what docs/rewards_journal.md quotes.

Pairs, each through the rules' whole pipeline (`rules.paired_statistics`, registration included), read at the
shipped threshold:

* pluralign's own film grain (the calibration's code) on the calibration photos at 32-1024 px: what the calibration
  will ask the candidate to keep;
* the reference degradations (`pluralign.rewards.reference_degradations`) on the diagnosis photos (gradio's and
  both sets of `scripts/diagnosis_photos.sh`; never the held-out or unseen ones) at 64, 128, 256 and 1024 px, as
  they are, with the saturation raised 1.8x (`cast_saturated_scenes.saturate`, where overexposures read as grain),
  and with a shallow depth of field (everything outside a central disc of a third of the frame blurred), where a
  double exposure carries the sharp centre's edges into a flat ground.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/grain_even_rise.py            # about 6 minutes
"""

from __future__ import annotations

import dataclasses

import numpy as np
from cast_saturated_scenes import saturate
from scipy import ndimage
from vignette_dark_corners import calibration_square, diagnosis_photos, jpeg, square

from pluralign.data.degradations import apply_float
from pluralign.rewards import reference_degradations as R
from pluralign.rewards.calibrate import CALIBRATION_PHOTOS, load_photo
from pluralign.rewards.rules import RULE_SPECS, Rule, paired_statistics

REFERENCE = ("film_grain", "double_exposure", "overexposed", "jpeg_artifacts", "noisy", "light_leak", "low_contrast",
             "blurry", "jpeg90")
SIZES, SEVERITIES = (64, 128, 256, 1024), (0.3, 0.65, 1.0)


def shallow_focus(x: np.ndarray) -> np.ndarray:
    """Everything outside a central disc of radius a third of the short side blurred (sigma 2% of it)."""
    h, w = x.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    inside = np.hypot(yy - h / 2, xx - w / 2) < min(h, w) / 3
    blurred = ndimage.gaussian_filter(x, (0.02 * min(h, w), 0.02 * min(h, w), 0))
    return np.where(inside[..., None], x, blurred).astype(np.float32)



# The threshold the even-rise round shipped with (the round before it had the same); the later grain round lowered it.
EVEN_RISE_THRESHOLD = 0.2399


def rules() -> dict[str, Rule]:
    """The film_grain rule before the round (the 35th percentile alone) and after it (even rise). The round left
    the threshold where it was, so both read at :data:`EVEN_RISE_THRESHOLD`."""
    verifier, _, direction, eps = RULE_SPECS["film_grain"]
    even = Rule("film_grain", verifier, "even_rise", direction, eps, EVEN_RISE_THRESHOLD)
    return {"before": dataclasses.replace(even, statistic="max_log_ratio"), "even": even}


def fires(pairs: list[tuple[np.ndarray, np.ndarray]], rs: dict[str, Rule]) -> dict[str, float]:
    st = paired_statistics(rs, [a for a, _ in pairs], [o for _, o in pairs])
    return {k: float(np.mean(v > rs[k].threshold)) for k, v in st.items()}


def main() -> int:
    rs = rules()
    rng = np.random.default_rng(3)
    print(f"film_grain fires at the threshold {rs['even'].threshold:.4f} (the same before and after the round): "
          "35th percentile alone (until 2026-12-07) -> even rise\n")
    print("| pairs | applied | 35th percentile alone | even rise |\n|---|---|---:|---:|")
    for size in (32, 64, 128, 256, 512, 1024):
        pairs = []
        for photo in CALIBRATION_PHOTOS:
            o = calibration_square(load_photo(photo), size)
            pairs += [(apply_float(o, [("film_grain", s)], seed=int(rng.integers(1_000_000))), o) for s in SEVERITIES]
        f = fires(pairs, rs)
        print(f"| pluralign's grain, calibration photos, {size} px | film_grain | {f['before']:.2f} | {f['even']:.2f} |")
    photos = diagnosis_photos()
    for variant, edit in (("as they are", None), ("saturated 1.8x", saturate), ("shallow focus", shallow_focus)):
        for attr in REFERENCE:
            pairs = []
            for path in photos:
                for size in SIZES:
                    o = square(path, size)
                    o = o if edit is None else np.clip(edit(o), 0, 1).astype(np.float32)
                    if attr == "jpeg90":
                        pairs.append((jpeg(o, 90), o))
                    else:
                        pairs += [(np.clip(R.degrade(o, attr, s, rng), 0, 1).astype(np.float32), o) for s in SEVERITIES]
            f = fires(pairs, rs)
            print(f"| reference code, diagnosis photos {variant} | {attr} | {f['before']:.2f} | {f['even']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
