"""The film-grain rule under a tone curve: why an overexposure of a saturated scene read as grain.

On the unseen photos (saturated colour) `film_grain` fires on 0.27 of the overexposures. This makes the case from the
diagnosis photos (gradio's four and both sets of `scripts/diagnosis_photos.sh`; never the unseen ones): each photo as
it is and with its HSV saturation raised 1.8x, at 64, 256 and 1024 px, reference degradations at severities 0.3, 0.65
and 1. For each attribute it prints the share of pairs over the grain rule's threshold (the shipped one) for the grain
residual's rise alone (the statistic until 2026-12-07, `max_log_ratio`) and for that rise less the coarse contrast
band's rise beyond 0.1 (`rules.grain_rise`). Unregistered pairs: none of these degradations moves the frame.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/grain_under_a_curve.py          # about 2 minutes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from cast_saturated_scenes import saturate
from vignette_dark_corners import PHOTOS as GRADIO_PHOTOS
from vignette_dark_corners import square

from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import RULE_SPECS, THRESHOLDS_PATH, Rule, _features, _log_change, grain_rise

ATTRIBUTES = ("film_grain", "overexposed", "double_exposure", "underexposed", "low_contrast", "jpeg_artifacts",
              "muted", "flat_lighting", "light_leak")


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
    print("| photos | applied | pairs | grain residual's rise alone | less the coarse band's rise beyond 0.1 |")
    print("|---|---|---:|---:|---:|")
    for prep in ("as they are", "saturated"):
        for attr in ATTRIBUTES:
            fa, fo = [], []
            for path in GRADIO_PHOTOS + sets:
                for size in (64, 256, 1024):
                    o = square(path, size)
                    o = saturate(o) if prep == "saturated" else o
                    feat_o = _features([o], {"_grain_bands"})["_grain_bands"][0]
                    for sev in (0.3, 0.65, 1.0):
                        fa.append(_features([getattr(R, attr)(o, sev, rng)], {"_grain_bands"})["_grain_bands"][0])
                        fo.append(feat_o)
            fa, fo = np.array(fa), np.array(fo)
            alone = _log_change(rule, fa[:, :3], fo[:, :3]).max(axis=1)
            print(f"| {prep} | {attr} | {len(fa)} | {np.mean(alone > rule.threshold):.2f} | "
                  f"{np.mean(grain_rise(rule, fa, fo) > rule.threshold):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
