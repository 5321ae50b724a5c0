"""The colour-cast rule on saturated scenes: a diagnosis of its miss on the unseen photos without looking at them.

On the unseen photos (saturated colour) `color_cast` finds 0.84 of the reference casts, against 0.89-0.95 on the
diagnosis sets. This makes the case from the diagnosis photos (gradio's four and both sets of
`scripts/diagnosis_photos.sh`; never the unseen ones): each photo as it is and with its HSV saturation raised 1.8x
(clipped), at 64, 256 and 1024 px, the reference cast at severities 0.3, 0.65 and 1, and twelve other reference
degradations on the same photos. For each log floor given (`rules.CAST_FLOOR`: the share of a cell's luminance
added to each channel before the log), it prints the share of casts found and the share of other attributes'
images the rule fires on, at the shipped threshold and at the 98th percentile of the other attributes' pooled
values. The pairs are not registered (none of these degradations moves the frame), so the statistic is read as
on an aligned pair.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/cast_saturated_scenes.py --floors 0.1,0.03,0.01,0.003       # about 2 minutes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from vignette_dark_corners import DIAGNOSIS_DIR, diagnosis_photos, square  # the same photos, cropped the same way

import pluralign.rewards.rules as rules_module
from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import _features, load_rules, log_cast_offset

OTHERS = ("light_leak", "double_exposure", "muted", "overexposed", "noisy", "underexposed", "flat_lighting",
          "vignette", "low_contrast", "obstructed", "film_grain", "jpeg_artifacts")
PREPS = ("as they are", "saturated")


def saturate(x: np.ndarray, factor: float = 1.8) -> np.ndarray:
    """HSV saturation times ``factor`` with hue and value kept (each channel moves away from the brightest)."""
    v = x.max(axis=2, keepdims=True)
    return np.clip(v - factor * (v - x), 0, 1).astype(np.float32)


def cast_pairs(photos: list[Path]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = {}
    for prep in PREPS:
        for attr in ("color_cast",) + OTHERS:
            fa, fo = [], []
            for path in photos:
                for size in (64, 256, 1024):
                    o = square(path, size)
                    o = saturate(o) if prep == "saturated" else o
                    feat_o = _features([o], {"_cast"})["_cast"][0]
                    for sev in (0.3, 0.65, 1.0):
                        fa.append(_features([getattr(R, attr)(o, sev, rng)], {"_cast"})["_cast"][0])
                        fo.append(feat_o)
            out[(prep, attr)] = (np.array(fa), np.array(fo))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos_dir", default=DIAGNOSIS_DIR, type=Path)
    ap.add_argument("--floors", default=str(rules_module.CAST_FLOOR), help="comma-separated CAST_FLOOR values to read")
    a = ap.parse_args(argv)
    pairs = cast_pairs(diagnosis_photos(a.photos_dir))
    shipped = load_rules()["color_cast"].threshold
    print("| floor | threshold | casts found, as they are | saturated | other attributes it fires on (>= 0.03) |")
    print("|---:|---|---:|---:|---|")
    for floor in (float(f) for f in a.floors.split(",")):
        rules_module.CAST_FLOOR = floor
        vals = {k: log_cast_offset(fa, fo) for k, (fa, fo) in pairs.items()}
        others = {o: np.concatenate([vals[(p, o)] for p in PREPS]) for o in OTHERS}
        pooled = np.concatenate(list(others.values()))
        for name, t in (("shipped", shipped), ("98th pct of others", float(np.quantile(pooled, 0.98)))):
            fires = ", ".join(f"{o} {np.mean(v > t):.2f}" for o, v in others.items() if np.mean(v > t) >= 0.03)
            print(f"| {floor:g} | {name} {t:.4f} | {np.mean(vals[(PREPS[0], 'color_cast')] > t):.2f} | "
                  f"{np.mean(vals[(PREPS[1], 'color_cast')] > t):.2f} | {fires or 'none'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
