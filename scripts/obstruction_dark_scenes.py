"""The obstruction rule on dark scenes: a diagnosis of its misses on the unseen photos without looking at them.

The rule (`rules`, statistic of `obstructed`) read newly dark, featureless area until 2026-12-07. On a dark scene, a
fade or a blur scales the scene's faint texture under the "featureless" bar while its pixels stay dark, which read as
an occluder. The rule now reads a surface laid place by place (`laid_surface`, threshold 0.0028); the journal's
tables of the old statistic (cuts 0.03, 0.06, 0.09) came from a worktree of a commit before that round.
This makes that case from the diagnosis photos (gradio's four, installed with it, and both diagnosis sets of
`scripts/diagnosis_photos.sh`; never the unseen ones): each photo as it is and raised to the power 2.2, at 64 and
256 px, degraded by the reference code at severities 0.3, 0.65 and 1, every pair registered and read by
`adherence_table` as the eval does. It prints, per threshold (by default the shipped one), the share of pairs on
which the rule fires.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/obstruction_dark_scenes.py                        # the shipped rule, about 20 s
    PYTHONPATH=/path/to/worktree python scripts/obstruction_dark_scenes.py   # a candidate's code, same pairs

docs/rewards_journal.md ("The same bar, with growth that every lighter level shows") quotes its output for the shipped rule
and, through a worktree of the candidate's commit, for the candidate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from vignette_dark_corners import DIAGNOSIS_DIR, diagnosis_photos, square  # the same photos, cropped the same way

from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import adherence_table, load_rules

ATTRIBUTES = ("obstructed", "low_contrast", "flat_lighting", "underexposed", "blurry", "noisy", "jpeg_artifacts",
              "vignette")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos_dir", default=DIAGNOSIS_DIR, type=Path)
    ap.add_argument("--thresholds", default="shipped",
                    help="statistic values to count firing above, comma-separated; 'shipped' is the rule's own")
    a = ap.parse_args(argv)
    rules = load_rules()
    cuts = [rules["obstructed"].threshold if t == "shipped" else float(t) for t in a.thresholds.split(",")]
    rng = np.random.default_rng(5)
    stats: dict[tuple[float, str], list[float]] = {}
    for gamma in (1.0, 2.2):
        for attr in ATTRIBUTES + ("identity",):
            values = stats.setdefault((gamma, attr), [])
            for path in diagnosis_photos(a.photos_dir):
                for size in (64, 256):
                    o = (square(path, size) ** gamma).astype(np.float32)
                    for sev in ((0.3, 0.65, 1.0) if attr != "identity" else (0,)):
                        x = getattr(R, attr)(o, sev, rng) if attr != "identity" else np.clip(o * 0.98, 0, 1)
                        margin = adherence_table([x], [o], [["obstructed"]], rules)["obstructed"][0]
                        values.append(margin + rules["obstructed"].threshold)
    print("| photos | applied | " + " | ".join(f"fires above {c:g}" for c in cuts) + " |")
    print("|---|---|" + "---:|" * len(cuts))
    for (gamma, attr), values in stats.items():
        v = np.array(values)
        where = "as they are" if gamma == 1 else f"darkened (power {gamma:g})"
        print(f"| {where} | {attr} | " + " | ".join(f"{np.mean(v > c):.2f}" for c in cuts) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
