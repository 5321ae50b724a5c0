"""small_subject read as area alone (the rule until 2026-12-07) and as area and spread together, on pairs it was not tuned on.

The subject mask is colour distance from the border's median (`verifiers._saliency`). On a texture (gravel, grass,
brick) it covers scattered pixels everywhere. A double exposure blends the frame with a zoomed, mirrored copy, which
lowers the texture's local contrast: fewer pixels pass the distance, the mask's area falls, and where the
registration is not confident (a blend has no single transform) the whole-frame rule read that as a smaller subject.
A smaller subject also draws the mask in towards one place; a thinned texture stays spread over the frame. The
candidate (`rules.RULE_SPECS["small_subject"]`, statistic `joint_log_ratio` on `verifiers.subject_extent`) asks both.

Pairs: the reference degradations (`pluralign.rewards.reference_degradations`) of the calibration photos (textures
among them: brick, grass, the Hubble field) and of the diagnosis photos (gradio's and both sets of
`scripts/diagnosis_photos.sh`; never the held-out or unseen ones), at 64, 256 and 1024 px and severities 0.3, 0.65
and 1. Each pair goes through the rules' whole pipeline (`rules.paired_statistics`, registration included). For
each attribute it prints the share of pairs on which small_subject fires, read both ways at the threshold shipped
before the round (0.2736),
the share the registration was confident on, and the photos where the two readings differ.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/subject_extent.py            # about 4 minutes
"""

from __future__ import annotations

import dataclasses

import numpy as np
from vignette_dark_corners import calibration_square, diagnosis_photos, square

from pluralign.rewards import reference_degradations as R
from pluralign.rewards.calibrate import CALIBRATION_PHOTOS, load_photo
from pluralign.rewards.rules import (
    RULE_SPECS,
    Rule,
    _features,
    estimate_rotation_spectra,
    paired_statistics,
    register,
)

ATTRIBUTES = ("small_subject", "off_center", "double_exposure", "low_contrast", "underexposed", "overexposed",
              "obstructed", "muted", "flat_lighting", "blurry", "noisy", "film_grain", "light_leak", "vignette",
              "color_cast", "cropped")
SIZES, SEVERITIES = (64, 256, 1024), (0.3, 0.65, 1.0)
ROUND_THRESHOLD = 0.27359788981598143  # small_subject's threshold before the round (area alone); it ships 0.2580 now


def photos() -> dict[str, object]:
    out = {f"calibration:{p}": (lambda size, p=p: calibration_square(load_photo(p), size)) for p in CALIBRATION_PHOTOS}
    for path in diagnosis_photos():
        out[f"diagnosis:{path.stem}"] = lambda size, path=path: square(path, size)
    return out


def main() -> None:
    # the threshold the round compared both readings at: the one shipped before it (docs/rewards_journal.md)
    threshold = ROUND_THRESHOLD
    verifier, _, direction, eps = RULE_SPECS["small_subject"]
    both = Rule("small_subject", verifier, "joint_log_ratio", direction, eps, threshold)
    area = dataclasses.replace(both, statistic="log_ratio")
    rng = np.random.default_rng(5)
    sources = photos()
    print(f"small_subject fires at the threshold before the round, {threshold:.4f}: area alone -> area and spread")
    print(f"{'applied':16s} {'pairs':>5s} {'area':>6s} {'both':>6s} {'registered':>10s}  photos where they differ")
    for attr in ATTRIBUTES:
        names, a_img, o_img = [], [], []
        for name, load in sources.items():
            for size in SIZES:
                o = load(size)
                for s in SEVERITIES:
                    a_img.append(np.clip(R.degrade(o, attr, s, rng), 0, 1).astype(np.float32))
                    o_img.append(o)
                    names.append(name)
        stats = paired_statistics({"area": area, "both": both}, a_img, o_img)
        fire_area, fire_both = stats["area"] > threshold, stats["both"] > threshold
        fa, fo = _features(a_img, {"_grid", "_spectrum"}), _features(o_img, {"_grid", "_spectrum"})
        confident = register(fa["_grid"], fo["_grid"], estimate_rotation_spectra(fa["_spectrum"], fo["_spectrum"])).confident
        differ = sorted({n.split(":")[1] for n, x, y in zip(names, fire_area, fire_both) if x != y})
        print(f"{attr:16s} {len(names):5d} {fire_area.mean():6.2f} {fire_both.mean():6.2f} {confident.mean():10.2f}  "
              f"{', '.join(differ)}")


if __name__ == "__main__":
    main()
