"""The vignette rule on photos whose corners are already dark: a diagnosis of its miss on the unseen photos.

The rule of 2026-12-06 noon (`corner_falloff`) read how much darker the corners became than the centre beyond one
tone curve, relative to the frame's mean value. On a scene whose corners are already dark (a portrait on a dark
ground, a flower against shadow), the reference vignette's darkening there is small in absolute terms. The rule now
reads a falloff in log value that every angular sector shows (`rules.radial_falloff`). This makes that
case from diagnosis photos (gradio's four, installed with it; never the unseen ones): each photo's corners darkened
first by a smooth radial mask in linear light down to ``floor``, then the reference vignette at severities 0.3-1.0,
at 64, 256 and 1024 px.

    python scripts/vignette_dark_corners.py                 # the shipped rule, about 5 s
    python scripts/vignette_dark_corners.py --compare       # also a candidate statistic, about 30 s

``--compare`` also reads the same vignettes and other attributes' reference degradations (at severities 0.3 and 1,
on each photo as it is and with its corners at 0.3) with the shipped statistic and with the change of log value
between corner and centre cells, each thresholded where it fires on 2% of the other attributes' pairs (the shipped
one at its calibrated threshold). These pairs are not registered first, as the rule's pipeline does, so the
geometric attributes' rows overstate what either statistic would fire on there.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image

from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import _features, adherence_table, load_rules, radial_falloff

GRADIO = Path(importlib.util.find_spec("gradio").origin).parent  # the photos only, not the package
PHOTOS = [GRADIO / "media_assets/images/cheetah.jpg", GRADIO / "media_assets/images/tower.jpg",
          GRADIO / "media_assets/images/lion.jpg", GRADIO / "test_data/cheetah2.jpg"]


def square(path: Path, size: int) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.LANCZOS)
    return np.asarray(im, np.float32) / 255


DIAGNOSIS_DIR = Path("/tmp/pluralign-diagnosis-photos")  # where scripts/diagnosis_photos.sh puts its two sets


def diagnosis_photos(diagnosis_dir: Path = DIAGNOSIS_DIR) -> list[Path]:
    """gradio's four photos and both sets of `scripts/diagnosis_photos.sh` (never the unseen ones)."""
    sets = sorted(diagnosis_dir.glob("*.png")) + sorted((diagnosis_dir / "set2").glob("*.png"))
    if not sets:
        raise SystemExit(f"no diagnosis photos in {diagnosis_dir}; run scripts/diagnosis_photos.sh and "
                         f"scripts/diagnosis_photos.sh {diagnosis_dir} 2 first")
    return PHOTOS + sets


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """``x`` (float RGB) saved as an 8-bit JPEG at ``quality`` and read back."""
    buf = io.BytesIO()
    Image.fromarray((x * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255


def calibration_square(x: np.ndarray, size: int) -> np.ndarray:
    """A calibration photo (float RGB) cropped to its top-left square and resized to ``size`` (bilinear)."""
    s = min(x.shape[:2])
    im = Image.fromarray((x[:s, :s] * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255


def dark_corners(x: np.ndarray, floor: float) -> np.ndarray:
    """Corners down to ``floor`` of their light (linear), the inner 45% of the half-diagonal untouched."""
    H, W = x.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.sqrt(((yy - (H - 1) / 2) / (H / 2)) ** 2 + ((xx - (W - 1) / 2) / (W / 2)) ** 2) / np.sqrt(2)
    mask = floor + (1 - floor) * np.clip(1 - (r - 0.45) / 0.55, 0, 1) ** 2
    return R.linear_to_srgb(R.srgb_to_linear(x) * mask[..., None])


def log_corner_change(glow_a: np.ndarray, glow_o: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """The candidate: the change of log HSV value in the corner cells that darkened least, less that in the centre
    cells (negative: every corner darker), from two glow_field features. A vignette multiplies the corners' light,
    so the log change is the same on a dark corner as on a bright one; the shipped statistic reads absolute value."""
    g, q = 8, 2
    va = glow_a.reshape(len(glow_a), -1, g * g)[:, 2]
    vo = glow_o.reshape(len(glow_o), -1, g * g)[:, 2]
    d = (np.log(va + floor) - np.log(vo + floor)).reshape(-1, g, g)
    corners = np.stack([d[:, :q, :q], d[:, :q, -q:], d[:, -q:, :q], d[:, -q:, -q:]], axis=1).mean(axis=(2, 3))
    return corners.max(axis=1) - d[:, g // 2 - q:g // 2 + q, g // 2 - q:g // 2 + q].mean(axis=(1, 2))


OTHERS = ("underexposed", "overexposed", "low_contrast", "flat_lighting", "light_leak", "color_cast", "muted", "blurry",
          "noisy", "double_exposure", "obstructed", "small_subject", "off_center", "cropped", "tilted")


def compare(floors: list[float], threshold: float) -> None:
    rng = np.random.default_rng(1)

    def both(a, o):
        f = _features([a, o], {"_glow", "_radial"})
        return radial_falloff(f["_radial"][:1], f["_radial"][1:])[0], log_corner_change(f["_glow"][:1], f["_glow"][1:])[0]

    pos: dict[float, list] = {f: [] for f in floors}
    neg: dict[str, list] = {k: [] for k in OTHERS}
    for path in PHOTOS:
        for size in (64, 256, 1024):
            base = square(path, size)
            for floor in floors:
                o = base if floor >= 1 else dark_corners(base, floor)
                pos[floor] += [both(R.vignette(o, s, rng), o) for s in (0.3, 0.5, 0.7, 1.0)]
            for att in OTHERS:
                for o in (base, dark_corners(base, 0.3)):
                    neg[att] += [both(getattr(R, att)(o, s, rng), o) for s in (0.3, 1.0)]
    P = {k: np.array(v) for k, v in pos.items()}
    N = {k: np.array(v) for k, v in neg.items()}
    cut = [-threshold, float(np.quantile(np.concatenate(list(N.values()))[:, 1], 0.02))]
    heads = " | ".join(f"corners {'untouched' if f >= 1 else f'at {f:g}'}" for f in floors)
    print(f"\n| statistic | fires below | {heads} | other attributes it fires on (share) |")
    print("|---|---:|" + "---:|" * len(floors) + "---|")
    for j, name in enumerate(("shipped `radial_falloff`", "log value, corners less centre")):
        acc = " | ".join(f"{(P[f][:, j] < cut[j]).mean():.2f}" for f in floors)
        fired = ", ".join(f"{k} {(N[k][:, j] < cut[j]).mean():.2f}" for k in OTHERS if (N[k][:, j] < cut[j]).mean() > 0)
        print(f"| {name} | {cut[j]:.4f} | {acc} | {fired or 'none'} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--floors", default="1.0,0.3,0.1", help="corner light left before the vignette (1: untouched)")
    ap.add_argument("--compare", action="store_true", help="also compare a log-value statistic on the same pairs")
    a = ap.parse_args(argv)
    rules = load_rules()
    rng = np.random.default_rng(0)
    print("| corners before the vignette | accuracy | pairs |\n|---|---:|---:|")
    for floor in (float(f) for f in a.floors.split(",")):
        hits = []
        for path in PHOTOS:
            for size in (64, 256, 1024):
                o = square(path, size)
                if floor < 1:
                    o = dark_corners(o, floor)
                for s in (0.3, 0.5, 0.7, 1.0):
                    margin = adherence_table([R.vignette(o, s, rng)], [o], [["vignette"]], rules)["vignette"][0]
                    hits.append(margin > 0)
        print(f"| {'untouched' if floor >= 1 else f'down to {floor:g} of their light'} | {np.mean(hits):.2f} | {len(hits)} |")
    if a.compare:
        compare([float(f) for f in a.floors.split(",")], rules["vignette"].threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
