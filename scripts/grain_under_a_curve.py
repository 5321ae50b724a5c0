"""The film-grain rule under a tone curve: why an overexposure of a saturated scene read as grain.

On the unseen photos (saturated colour) `film_grain` fires on 0.27 of the overexposures. This makes the case from the
diagnosis photos (gradio's four and both sets of `scripts/diagnosis_photos.sh`; never the unseen ones): each photo as
it is and with its HSV saturation raised 1.8x, at 64, 256 and 1024 px, reference degradations at severities 0.3, 0.65
and 1; and pluralign's own grain on the calibration photos at every calibration size. It prints the share of pairs
over the grain rule's shipped threshold for the grain residual's rise alone (`max_log_ratio`, the statistic until
2026-12-07) and for that rise less the tone curve's slope beyond 0.1 (`rules.grain_rise`). Unregistered pairs: none
of these degradations moves the frame.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/grain_under_a_curve.py          # about 2 minutes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from cast_saturated_scenes import saturate
from PIL import Image
from vignette_dark_corners import PHOTOS as GRADIO_PHOTOS
from vignette_dark_corners import square

from pluralign.data.degradations import apply_float
from pluralign.rewards import reference_degradations as R
from pluralign.rewards.calibrate import CALIBRATION_PHOTOS, load_photo
from pluralign.rewards.rules import RULE_SPECS, THRESHOLDS_PATH, Rule, _features, _log_change, grain_rise
from pluralign.rewards.verifiers import GRAIN_TAPS

ATTRIBUTES = ("film_grain", "overexposed", "double_exposure", "underexposed", "low_contrast", "jpeg_artifacts",
              "muted", "flat_lighting", "light_leak")


def shares(rule: Rule, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    f = _features([x for pair in pairs for x in pair], {"_grain_light"})["_grain_light"]
    fa, fo = f[0::2], f[1::2]
    alone = _log_change(rule, fa[:, :GRAIN_TAPS], fo[:, :GRAIN_TAPS]).max(axis=1)
    return float(np.mean(alone > rule.threshold)), float(np.mean(grain_rise(rule, fa, fo) > rule.threshold))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos_dir", default="/tmp/pluralign-diagnosis-photos", type=Path)
    a = ap.parse_args(argv)
    sets = sorted(a.photos_dir.glob("*.png")) + sorted((a.photos_dir / "set2").glob("*.png"))
    if not sets:
        raise SystemExit(f"no diagnosis photos in {a.photos_dir}; run scripts/diagnosis_photos.sh and "
                         f"scripts/diagnosis_photos.sh {a.photos_dir} 2 first")
    # the shipped threshold, read whatever statistic it was calibrated for (load_rules refuses a mismatch)
    shipped = json.loads(THRESHOLDS_PATH.read_text())["attributes"]["film_grain"]
    rule = Rule("film_grain", *RULE_SPECS["film_grain"], threshold=shipped["threshold"])
    rng = np.random.default_rng(0)
    print(f"threshold {rule.threshold:.4f} (calibrated for {shipped['statistic']})\n")
    print("| pairs | applied | n | grain residual's rise alone | less the tone curve's slope beyond 0.1 |")
    print("|---|---|---:|---:|---:|")
    photos = [load_photo(p) for p in CALIBRATION_PHOTOS]
    for size in (32, 64, 128, 256, 512, 1024):
        pairs = []
        for x in photos:
            s = min(x.shape[:2])
            o = np.asarray(Image.fromarray((x[:s, :s] * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                           dtype=np.float32) / 255
            pairs += [(apply_float(o, [("film_grain", sev)], seed=int(rng.integers(1_000_000))), o)
                      for sev in (0.3, 0.65, 1.0)]
        old, new = shares(rule, pairs)
        print(f"| pluralign's grain, calibration photos, {size} px | film_grain | {len(pairs)} | {old:.2f} | {new:.2f} |")
    for prep in ("as they are", "saturated"):
        for attr in ATTRIBUTES:
            pairs = []
            for path in GRADIO_PHOTOS + sets:
                for size in (64, 256, 1024):
                    o = square(path, size)
                    o = saturate(o) if prep == "saturated" else o
                    pairs += [(getattr(R, attr)(o, sev, rng), o) for sev in (0.3, 0.65, 1.0)]
            old, new = shares(rule, pairs)
            print(f"| reference code, diagnosis photos {prep} | {attr} | {len(pairs)} | {old:.2f} | {new:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
