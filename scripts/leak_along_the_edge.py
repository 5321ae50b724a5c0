"""Diagnosis: does a light leak light its whole edge, where a double exposure's second frame lights a part of it?

The first unseen set reads 0.33 of its double exposures as light leaks, which no diagnosis set reproduced. This
script reads that set (so since 2026-12-07 it is no longer blind for the leak rule; set 3 of
`scripts/unseen_photos.sh` is). The leak rule (`edge_glow`) averages the outer quarter along each edge. A leak is a
screen blend whose strength depends only on the distance from one edge, so every place along that edge gains light
unless it is already white; a double exposure's mirrored, zoomed copy lights the edge only where its subject lands.

Variants, each a `light_leak` side read from the 8 cells along the edge instead of their mean:
* ``even1`` / ``even2``: the smallest / second smallest cell, for both the regressed change and the raw gain;
* ``rawmin``: the regressed change's mean as shipped, the raw gain's smallest cell among those with at least 0.05
  of headroom (1 - luma) in I_o.
It prints the share over the shipped threshold for the reference double exposures, leaks and overexposures of the
unseen set 1 (3 repeats of each photo, size and severity, with the share per photo) and of the diagnosis photos, and
pluralign's own leaks on the diagnosis photos, at 64, 256 and 1024 px, severities 0.3, 0.65 and 1.

    scripts/unseen_photos.sh; scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2
    python scripts/leak_along_the_edge.py [--thresholds FILE]      # about 3 minutes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from vignette_dark_corners import diagnosis_photos, square

from pluralign.data import degradations as D
from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import GLOW_GRID, _features, _tone_residual, load_rules, paired_statistics

UNSEEN = Path("/tmp/pluralign-unseen-photos")
SET1 = [UNSEEN / "china.jpg", UNSEEN / "flower.jpg", UNSEEN / "grace_hopper.jpg"]


def sides(ga: np.ndarray, go: np.ndarray, variant: str) -> np.ndarray:
    """The leak statistic of two glow fields, with each edge's quarter read along the edge as ``variant`` says."""
    g = GLOW_GRID
    q = max(1, g // 4)
    d = _tone_residual(ga, go, per_pixel=True)[:, :2].sum(axis=1)
    raw = (ga - go).reshape(len(ga), -1, g, g)[:, :2].sum(axis=1)

    def along(x):  # N x 4 x g: the outer quarter's mean at each place along the top, bottom, left and right edges
        return np.stack([x[:, :q].mean(axis=1), x[:, -q:].mean(axis=1), x[:, :, :q].mean(axis=2),
                         x[:, :, -q:].mean(axis=2)], axis=1)

    dd, rr = along(d), along(raw)
    e, gain = dd.mean(axis=2), rr.mean(axis=2)
    if variant == "shipped":
        e_low, gain_low = e, gain
    elif variant in ("even1", "even2"):
        k = int(variant[-1]) - 1
        e_low, gain_low = np.sort(dd, axis=2)[:, :, k], np.sort(rr, axis=2)[:, :, k]
    elif variant == "rawmin":
        room = 1.0 - along(go.reshape(len(go), -1, g, g)[:, 1])  # headroom of I_o's luma along each edge
        ok = room >= 0.05
        e_low = e
        gain_low = np.where(ok.any(axis=2), np.where(ok, rr, np.inf).min(axis=2), gain)
    else:
        raise ValueError(variant)
    opposite = (1, 0, 3, 2)
    out = [np.minimum(np.minimum(e_low[:, i], e[:, i] - e[:, opposite[i]]), gain_low[:, i])
           - np.maximum(-gain[:, opposite[i]], 0.0) for i in range(4)]
    return np.max(np.stack(out, axis=1), axis=1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--thresholds", default=None, help="a thresholds JSON (default: the shipped one)")
    args = ap.parse_args()
    rule = load_rules(args.thresholds)["light_leak"]
    thr = rule.threshold
    rng = np.random.default_rng(3)
    groups = {"set 1, double exposures": (SET1, "double_exposure"), "diagnosis, double exposures": (None, "double_exposure"),
              "set 1, leaks": (SET1, "light_leak"), "diagnosis, leaks": (None, "light_leak"),
              "diagnosis, pluralign's leaks": (None, "pluralign"), "diagnosis, overexposures": (None, "overexposed"),
              "set 1, overexposures": (SET1, "overexposed")}
    variants = ("shipped", "even1", "even2", "rawmin")
    print(f"share over {thr:.4f}\n| pairs | n | " + " | ".join(variants) + " |\n|---|---:|" + "---:|" * len(variants))
    for name, (photos, kind) in groups.items():
        photos = photos or diagnosis_photos()
        a_img, o_img, names = [], [], []
        for path in photos:
            for size in (64, 256, 1024):
                o = square(path, size)
                for s in (0.3, 0.65, 1.0):
                    for _ in range(3 if photos is SET1 else 1):
                        a = D.light_leak(o, s, rng) if kind == "pluralign" else R.degrade(o, kind, s, rng)
                        a_img.append(np.clip(a, 0, 1).astype(np.float32))
                        o_img.append(o)
                        names.append(Path(path).name)
        shipped = paired_statistics({"l": rule}, a_img, o_img)["l"]
        fa, fo = _features(a_img, {"_glow"})["_glow"], _features(o_img, {"_glow"})["_glow"]
        reads = {v: shipped if v == "shipped" else sides(fa, fo, v) for v in variants}
        print(f"| {name} | {len(a_img)} | " + " | ".join(f"{np.mean(reads[v] > thr):.2f}" for v in variants) + " |")
        if photos is SET1:
            names = np.array(names)
            for p in sorted(set(names)):
                m = names == p
                print(f"| ... {p} | {m.sum()} | " + " | ".join(f"{np.mean(reads[v][m] > thr):.2f}" for v in variants)
                      + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
