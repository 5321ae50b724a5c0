"""Diagnosis: why the tilt rule fires on small subjects (set 3: 0.42; the held-out draws 0.18).

A shrunk subject is read as a tilt only where the registration is not confident: the rule then falls back on the
spectrum's rotation estimate, which compares two spectra at different scales and returns any angle up to 45
degrees. The registration fails in two ways, both printed per photo and size:

* ``area``: the subject shrunk to under a third of the side shares under four 8 x 8 blocks of the 48 x 48 grid,
  and the agreement is 0 by construction (``--small_blocks``, a prototype that ships nowhere, reads 4 x 4 blocks
  there);
* ``texture``: on a dense texture the true shrink agreed at 0.5-0.8 only while the registration sampled the grid
  and I_o sharp, so that they aliased (anti-aliased since docs/rewards_journal.md, "The same registration at
  the shipped thresholds"; ``--registration 491fd54`` restores the sampling before it).

    scripts/diagnosis_photos.sh; scripts/unseen_photos.sh /tmp/pluralign-unseen-photos 3     # once
    python scripts/tilt_on_small_subjects.py [--registration 491fd54] [--small_blocks]          # about 10 s each
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from vignette_dark_corners import diagnosis_photos

import pluralign.rewards.registration as REG
import pluralign.rewards.rules as RULES
from pluralign.rewards import calibrate as C
from pluralign.rewards import verifiers as V
from pluralign.rewards.holdout import _view, load_photo
from pluralign.rewards.reference_degradations import degrade
from pluralign.rewards.rules import _features, estimate_rotation_spectra, load_rules

SET3 = Path("/tmp/pluralign-unseen-photos/set3")
SHIPPED_AGREEMENT = REG.agreement


def _shared_area(A: np.ndarray, t: np.ndarray) -> np.ndarray:
    n = REG.REGISTRATION_SIDE
    u = (np.arange(n) + 0.5) / n
    q = A @ np.stack(np.meshgrid(u, u, indexing="ij"), axis=0).reshape(2, -1) + t[:, :, None]
    return np.all((q > 0) & (q < 1), axis=1).sum(axis=1)


def _small_blocks(sa, so, A, t):
    out = SHIPPED_AGREEMENT(sa, so, A, t)
    small = np.flatnonzero(_shared_area(A, t) < 4 * REG._BLOCK**2)
    if len(small):
        REG._BLOCK = 4
        try:
            out[small] = SHIPPED_AGREEMENT(sa[small], so[small], A[small], t[small])
        finally:
            REG._BLOCK = 8
    return out


def _sharp_grid(b: V.Batch) -> np.ndarray:
    """The registration grid as 491fd54 sampled it: bilinear, without anti-aliasing."""
    def f():
        g = V.resample_bilinear(b.y128, REG.REGISTRATION_SIDE, REG.REGISTRATION_SIDE).reshape(len(b.x), -1)
        g = g - g.mean(axis=1, keepdims=True)
        return g / (g.std(axis=1, keepdims=True) + 1e-6)
    return b._get("registration_grid", f)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--registration", choices=("current", "491fd54"), default="current",
                   help="491fd54: the grid and I_o sampled sharp, and the overlapping match tried only when the match "
                        "inside is not confident, as before the anti-aliasing round")
    p.add_argument("--small_blocks", action="store_true", help="prototype: 4 x 4 blocks under four 8 x 8 blocks' area")
    args = p.parse_args()
    if args.registration == "491fd54":
        REG._ANTIALIAS, REG._OVERLAP_UNLESS = 0.0, REG.CONFIDENT_AGREEMENT
        RULES.FEATURES["_grid"] = _sharp_grid
    if args.small_blocks:
        REG.agreement = _small_blocks
    v = f"registration {args.registration}" + (", small blocks" if args.small_blocks else "")
    threshold = load_rules()["tilted"].threshold
    sets = {"diagnosis": diagnosis_photos(), "set 3": sorted(SET3.glob("*.jpg"))}
    print(f"{v}; tilt threshold {threshold:.2f} degrees; 6 pairs per photo and size, severity 0.3-1\n")
    print("| photos | applied | px | rule fires | not confident | not confident, under four blocks' area | agreement (median) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for set_name, paths in sets.items():
        photos = [load_photo(str(q)) for q in paths]
        for applied in ("small_subject", "tilted"):
            rng = np.random.default_rng(0)
            for size in (64, 128, 256, 512, 1024):
                imgs_a, imgs_o = [], []
                for photo in photos:
                    for _ in range(6):
                        view, _ = _view(photo, size, rng)
                        imgs_a.append(np.clip(degrade(view, applied, float(rng.uniform(0.3, 1.0)), rng), 0, 1).astype(np.float32))
                        imgs_o.append(view)
                fa, fo = _features(imgs_a, {"_grid", "_spectrum"}), _features(imgs_o, {"_grid", "_spectrum"})
                spectral = estimate_rotation_spectra(fa["_spectrum"], fo["_spectrum"])
                reg = REG.register(fa["_grid"], fo["_grid"], spectral)
                tilt = np.where(reg.confident, np.abs(reg.angle), np.abs(spectral))
                small = _shared_area(reg.A, reg.t) < 4 * 64
                print(f"| {set_name} | {applied} | {size} | {(tilt > threshold).mean():.2f} | {(~reg.confident).mean():.2f} | "
                      f"{(~reg.confident & small).mean():.2f} | {np.median(reg.agreement):.2f} |")
    view, _ = C.sample_view(C.load_photo("coffee"), 128, np.random.default_rng(0), box=(40, 100, 300, 360))
    h, w = view.shape[:2]
    print("\nscikit-image's coffee (the registration tests' view), shrunk and moved on a grey canvas:")
    for scale, shift in ((0.85, 0.25), (0.32, 0.0)):
        small_img = np.stack([np.asarray(_resize(view[..., c], round(w * scale), round(h * scale))) for c in range(3)], -1)
        canvas = np.full_like(view, 0.5)
        top, left = round((h - small_img.shape[0]) / 2 + shift * h), round((w - small_img.shape[1]) / 2 + shift * w)
        vis = canvas[top : top + small_img.shape[0], left : left + small_img.shape[1]]
        vis[...] = small_img[: vis.shape[0], : vis.shape[1]]
        fa, fo = _features([canvas], {"_grid", "_spectrum"}), _features([view], {"_grid", "_spectrum"})
        reg = REG.register(fa["_grid"], fo["_grid"], estimate_rotation_spectra(fa["_spectrum"], fo["_spectrum"]))
        print(f"  shrunk to {scale}, moved {shift}: registered scale {reg.scale[0]:.3f}, agreement {reg.agreement[0]:.2f}")
    return 0


def _resize(plane: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(plane), mode="F").resize((w, h), Image.BICUBIC)).clip(0, 1)


if __name__ == "__main__":
    raise SystemExit(main())
