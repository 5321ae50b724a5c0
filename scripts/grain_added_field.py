"""Diagnosis for the next grain round: on pairs the registration finds at the identity, the field I_a - I_o adds.

Grain on a fine texture (the held-out `gravel` at 64-256 px) barely moves any quantile of the frame's own residual:
the stones' residual is already at grain level. A pair whose registration is confident at the identity shows the
same content at the same place, and there the difference I_a - I_o is what the edit added. A blur, a resize or a
fade takes from I_o's own fine residual, so its difference follows I_o's residual; JPEG quantises it; grain adds a
field of its own. This reads, per pass band (Immerkaer taps 1, 2 and 4 px apart), the 35th percentile of the
difference's residual after regressing out I_o's residual, as a sigma, on the reference degradations
(`pluralign.rewards.reference_degradations`) and benign edits of twelve diagnosis photos (gradio's four and the first
eight of `scripts/diagnosis_photos.sh` set 1; never the held-out or unseen ones), severities 0.3 and 1, on the pairs
the registration is confident at the identity on.

It prints, per size and attribute: the share of pairs registered at the identity, then per band the smallest, the
median and the largest value. Nothing in the rules reads this yet. First, why it is needed: on a centre crop of
scikit-image's `gravel` (a held-out photo), the log rise of the residual's 5th to 35th percentiles that the reference
grain causes at 64-256 px, with the rule's floor (eps 0.011) but interpolated quantiles where the rule selects an
order statistic.

    scripts/diagnosis_photos.sh             # once
    python scripts/grain_added_field.py     # about a minute
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from vignette_dark_corners import diagnosis_photos, jpeg, square

from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import _features, estimate_rotation_spectra, register
from pluralign.rewards.verifiers import Batch, _immerkaer

KINDS = ("film_grain", "jpeg_artifacts", "noisy", "muted", "jpeg90", "jpeg95", "resize", "brightness")
BENIGN = ("jpeg90", "jpeg95", "resize", "brightness")


def added_sigma(a: np.ndarray, o: np.ndarray, step: int) -> float:
    ya, yo = Batch(a[None]).y[0], Batch(o[None]).y[0]
    rd = _immerkaer((ya - yo)[None], step=step)[0].ravel().astype(np.float64)
    ro = _immerkaer(yo[None], step=step)[0].ravel().astype(np.float64)
    e = rd - (rd @ ro) / (ro @ ro + 1e-12) * ro
    return float(np.quantile(np.abs(e), 0.35) / (0.4538 * 6))


def benign(o: np.ndarray, kind: str) -> np.ndarray:
    if kind == "brightness":
        return np.clip(o * 1.02, 0, 1).astype(np.float32)
    if kind == "resize":
        h = o.shape[0]
        im = Image.fromarray((o * 255).round().astype(np.uint8))
        return np.asarray(im.resize((int(h * 0.8),) * 2, Image.BICUBIC).resize((h, h), Image.BICUBIC), np.float32) / 255
    return jpeg(o, 90 if kind == "jpeg90" else 95)


def gravel_rises() -> None:
    from skimage import data

    g = data.gravel()
    g = np.stack([g] * 3, axis=-1) if g.ndim == 2 else g
    rng = np.random.default_rng(0)
    half_normal = {0.05: 0.0627, 0.1: 0.1257, 0.2: 0.2533, 0.35: 0.4538}
    print("| size | severity | tap | rise at the 5th / 10th / 20th / 35th percentile |\n|---:|---:|---:|---|")
    for size in (64, 128, 256):
        h, w = g.shape[:2]
        s = min(h, w)
        crop = g[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        o = np.asarray(Image.fromarray(crop).resize((size, size), Image.LANCZOS), np.float32) / 255
        for sev in (0.3, 0.65, 1.0):
            a = np.clip(R.film_grain(o, sev, rng), 0, 1).astype(np.float32)
            for k in (1, 2):
                ra = np.abs(_immerkaer(Batch(a[None]).y, step=k)).ravel()
                ro = np.abs(_immerkaer(Batch(o[None]).y, step=k)).ravel()
                rises = [np.log((np.quantile(ra, q) / (6 * c) + 0.011) / (np.quantile(ro, q) / (6 * c) + 0.011))
                         for q, c in half_normal.items()]
                print(f"| {size} | {sev} | {k} | " + " / ".join(f"{r:.2f}" for r in rises) + " |")
    print()


def main() -> int:
    gravel_rises()
    rng = np.random.default_rng(2)
    photos = diagnosis_photos()[:12]
    print("| size | applied | at the identity | tap 1: min / median / max | tap 2 | tap 4 |\n|---:|---|---:|---|---|---|")
    for size in (64, 128, 256, 1024):
        for kind in KINDS:
            pairs = []
            for path in photos:
                o = square(path, size)
                if kind in BENIGN:
                    pairs.append((benign(o, kind), o))
                else:
                    pairs += [(np.clip(R.degrade(o, kind, s, rng), 0, 1).astype(np.float32), o) for s in (0.3, 1.0)]
            fa = _features([a for a, _ in pairs], {"_grid", "_spectrum"})
            fo = _features([o for _, o in pairs], {"_grid", "_spectrum"})
            reg = register(fa["_grid"], fo["_grid"], estimate_rotation_spectra(fa["_spectrum"], fo["_spectrum"]))
            identity = reg.confident & reg.is_identity()
            v = np.array([[added_sigma(a, o, k) for k in (1, 2, 4)] for (a, o), same in zip(pairs, identity) if same])
            if len(v) == 0:
                print(f"| {size} | {kind} | 0.00 | no pair at the identity | | |")
                continue
            bands = " | ".join(f"{v[:, j].min():.3f} / {np.median(v[:, j]):.3f} / {v[:, j].max():.3f}" for j in range(3))
            print(f"| {size} | {kind} | {identity.mean():.2f} | {bands} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
