"""Calibrate the paired decision rules on degraded real photographs and write ``thresholds.json``.

Validation set: scikit-image's bundled photographs, randomly cropped (50-100% of the short side,
aspect 3:4..4:3) and resized to a mix of sizes (32 to 1024 px on the short side, so the rules hold
for tiny-model outputs and full-size generations alike). For every verifiable attribute a
*positive* pair is ``(degrade(I, attribute's degradation, s), I)`` with ``s ~ U[sev_min, sev_max]`` (from
:data:`SEVERITY_MIN` for the attributes it names).
*Negative* pairs are ``(I', I)`` where ``I'`` is ``I`` untouched or after a benign change (JPEG
re-encode at quality 90 or 95, a +-2% brightness change, a down-and-up resize, a crop shifted by up
to 5%). Photos are
split into a calibration half and a held-out half; thresholds are fitted on the calibration
photos only, and accuracy (true-positive rate) and false-positive rate are reported on the
held-out photos.

    python -m pluralign.rewards.calibrate                # writes pluralign/rewards/thresholds.json
    python -m pluralign.rewards.calibrate --output my.json --n_pos 100
"""

from __future__ import annotations

import functools
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..config import option, parse, run_module, to_dict, writable_dir
from ..data import taxonomy
from ..data.degradations import degrade
from .rules import RULE_SPECS, THRESHOLDS_PATH, Rule, paired_statistics

CALIBRATION_PHOTOS = ("astronaut", "chelsea", "immunohistochemistry", "retina", "hubble_deep_field", "brick",
                      "grass", "coins", "moon")
HELDOUT_PHOTOS = ("coffee", "rocket", "camera", "motorcycle", "gravel", "clock")
BENIGN = ("identity", "jpeg90", "jpeg95", "brightness", "resize", "shift")
# Per attribute, a lowest severity below ``sev_min``: pluralign's colour cast at 0.3 is a gain ratio of 1.33-1.55 in
# linear light, stronger than the weakest white-balance errors a check asks for (1.29); from 0.2 it is 1.20-1.33.
SEVERITY_MIN = {"color_cast": 0.2}


@dataclass
class CalibrationConfig:
    output: Path = option(THRESHOLDS_PATH, "where to write the thresholds JSON")
    sizes: list[int] = option(None, "short-side sizes of the validation images", factory=lambda: [32, 64, 128, 256, 512, 1024])
    sev_min: float = option(0.3, "lowest severity of a positive pair", min=0.0, max=1.0)
    sev_max: float = option(1.0, "highest severity of a positive pair", min=0.0, max=1.0)
    n_pos: int = option(160, "positive pairs per attribute and split", min=1)
    n_neg: int = option(480, "negative (untouched/benign) pairs per split", min=1)
    target_fpr: float = option(0.02, "largest false-positive rate allowed on the calibration split", min=0.0, max=1.0)
    seed: int = option(0, "random seed of crops, sizes, severities and degradation seeds")


def load_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos (uint8 RGB or greyscale), or an image file (a name with a ``/`` or
    an image suffix), as float32 RGB in [0, 1]. Files let the rules be checked on photos nobody tuned them on."""
    if "/" in name or Path(name).suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}:
        path = Path(name)
        if path.is_dir():
            raise ValueError(f"photo {name}: a folder; give its image files, comma-separated (e.g. "
                             f"--photos \"$(ls {name}/*.jpg | paste -sd,)\")")
        if not path.is_file():
            raise FileNotFoundError(f"photo {name}: no such file; give an image file or one of scikit-image's "
                                    "bundled photos by name (e.g. coffee)")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except (OSError, Image.DecompressionBombError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise ValueError(f"photo {name}: not a readable image ({exc.__class__.__name__}); give a JPEG, PNG, TIFF, "
                             "WebP or BMP file") from None
    return _bundled_photo(name).copy()  # a copy: the caller may write to it, the cache must not change


@functools.lru_cache(maxsize=16)
def _bundled_photo(name: str) -> np.ndarray:
    """A scikit-image photo, decoded once per process: every ``pair_statistics`` call loads its photos, and the
    checks call it once per rule (decoding the six held-out photos was a sixth of a rule's held-out check)."""
    from skimage import data  # a dev-only dependency: needed to calibrate, not to apply the rules

    if name != "motorcycle" and not callable(getattr(data, name, None)):
        raise ValueError(f"photo {name!r}: not one of scikit-image's bundled photos and not an image file path")
    img = np.asarray(data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img.astype(np.float32) / 255.0


SIZE_RANGE = (16, 4096)  # short sides the rules are built for; smaller has no structure, larger only takes time


def check_run(sizes: list[int], sev_min: float, sev_max: float, output: Path | None) -> None:
    """Refuse what would fail or mislead only after minutes of work: sizes the rules are not built for, an
    empty severity range, and an ``output`` that cannot be written (its folder is created here)."""
    lo, hi = SIZE_RANGE
    bad = [s for s in sizes if not lo <= s <= hi]
    if not sizes or bad:
        raise ValueError(f"sizes: {bad or 'none given'}; give short sides from {lo} to {hi} px, e.g. --sizes 64,256")
    if sev_min > sev_max:
        raise ValueError(f"sev_min {sev_min} > sev_max {sev_max}; give sev_min <= sev_max")
    if output is not None:
        out = Path(output)
        if out.is_dir():
            raise ValueError(f"output {out} is a directory; give a file path for the JSON, e.g. {out / 'out.json'}")
        writable_dir(out.parent, "output")


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _crop_box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    short = min(h, w)
    side = rng.uniform(0.5, 1.0) * short
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(4 / 3)))
    ch, cw = min(h, int(side / np.sqrt(aspect))), min(w, int(side * np.sqrt(aspect)))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return top, left, ch, cw


def _resize_to(x: np.ndarray, short: int) -> np.ndarray:
    h, w = x.shape[:2]
    s = short / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return _arr(_pil(x).resize(size, Image.Resampling.LANCZOS if s < 1 else Image.Resampling.BICUBIC))


def sample_view(photo: np.ndarray, size: int, rng: np.random.Generator, box=None) -> tuple[np.ndarray, tuple]:
    """A random crop of ``photo`` resized to ``size`` on the short side (the crop box is returned)."""
    h, w = photo.shape[:2]
    top, left, ch, cw = box if box is not None else _crop_box(h, w, rng)
    return _resize_to(photo[top : top + ch, left : left + cw], size), (top, left, ch, cw)


def benign(photo: np.ndarray, view: np.ndarray, box: tuple, size: int, kind: str, rng,
           shift: float | None = None) -> np.ndarray:
    """A perturbation that must not count as any attribute: what re-saving, a small exposure nudge, a
    resize round trip or a slightly different crop do to a picture. ``shift``: the crop's offset as a
    fraction of its size (default: random, up to 5% each way)."""
    if kind == "identity":
        return view
    if kind in ("jpeg90", "jpeg95"):
        buf = io.BytesIO()
        _pil(view).save(buf, format="JPEG", quality=int(kind[4:]))
        return _arr(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    if kind == "brightness":
        return np.clip(view * (1.0 + rng.choice([-0.02, 0.02])), 0.0, 1.0).astype(np.float32)
    if kind == "resize":
        h, w = view.shape[:2]
        f = rng.uniform(0.7, 0.97)
        small = _pil(view).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
        return _arr(small.resize((w, h), Image.Resampling.BICUBIC))
    if kind == "shift":
        top, left, ch, cw = box
        H, W = photo.shape[:2]
        if shift is None:
            dy, dx = (rng.uniform(-0.05, 0.05, size=2) * np.array([ch, cw])).astype(int)
        else:
            dy, dx = (rng.choice([-1, 1], size=2) * np.round(shift * np.array([ch, cw]))).astype(int)
        top, left = int(np.clip(top + dy, 0, H - ch)), int(np.clip(left + dx, 0, W - cw))
        out = _resize_to(photo[top : top + ch, left : left + cw], size)
        # rounding can give the shifted crop a pixel more or less than the view: resize to match
        return out if out.shape == view.shape else _arr(_pil(out).resize(view.shape[1::-1], Image.Resampling.BICUBIC))
    raise ValueError(f"unknown benign perturbation {kind!r}; expected one of {BENIGN}")


def degradation_of(attribute: str) -> str:
    name = taxonomy.get(attribute).degradation
    if name is None:
        raise ValueError(f"attribute {attribute!r} has no degradation; it cannot be calibrated on images")
    return name


def degraded_view(view: np.ndarray, degradation: str, severity: float, seed: int) -> np.ndarray:
    """``view`` degraded, at its own size: a crop is enlarged back to the frame, as the trainers do with pairs."""
    img = degrade(view, degradation, severity, seed=seed)
    if img.shape != view.shape:
        img = _arr(_pil(img).resize(view.shape[1::-1], Image.Resampling.BICUBIC))
    return img


def pair_statistics(photos: tuple[str, ...], attributes, cfg: CalibrationConfig, seed: int, rules: dict[str, Rule],
                    *, progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Paired statistics on fresh validation pairs: ``pos[attr]`` of each attribute's rule on that attribute's
    positives, ``pos[(attr, rule)]`` of every other rule on the same positives (what the rule reads on images
    that show only ``attr``), ``neg[attr]`` of every rule on the shared negatives.

    Pairs are measured as they are made, a few at a time, and then dropped: a thousand 1024 px pairs
    would not fit in memory, their features do.
    """
    rng = np.random.default_rng(seed)
    loaded = {p: load_photo(p) for p in photos}
    bar = tqdm(total=len(attributes) * cfg.n_pos + cfg.n_neg, desc="validation pairs", disable=not progress)
    pos: dict[str, np.ndarray] = {}
    for attr in attributes:
        deg = degradation_of(attr)
        stats, imgs_a, imgs_o, tries = [], [], [], 0
        while sum(len(next(iter(st.values()))) for st in stats) + len(imgs_a) < cfg.n_pos and tries < cfg.n_pos * 5:
            tries += 1
            name = photos[int(rng.integers(len(photos)))]
            size = int(rng.choice(cfg.sizes))
            view, _ = sample_view(loaded[name], size, rng)
            sev = float(rng.uniform(min(cfg.sev_min, SEVERITY_MIN.get(attr, cfg.sev_min)), cfg.sev_max))
            deg_img = degraded_view(view, deg, sev, seed=int(rng.integers(2**31)))
            if float(np.abs(deg_img - view).max()) < 2 / 255:
                # the degradation is a no-op here: sub-pixel aberration on 32 px, desaturating a grey photo
                continue
            imgs_a.append(deg_img)
            imgs_o.append(view)
            bar.update(1)
            if len(imgs_a) == 16:
                stats.append(paired_statistics(rules, imgs_a, imgs_o))
                imgs_a, imgs_o = [], []
        if imgs_a:
            stats.append(paired_statistics(rules, imgs_a, imgs_o))
        for a in rules:
            key = attr if a == attr else (attr, a)
            pos[key] = np.concatenate([st[a] for st in stats]) if stats else np.zeros(0)
    negs: dict[str, list[np.ndarray]] = {a: [] for a in rules}
    imgs_a, imgs_o = [], []
    for i in range(cfg.n_neg):
        name = photos[int(rng.integers(len(photos)))]
        size = int(rng.choice(cfg.sizes))
        view, box = sample_view(loaded[name], size, rng)
        imgs_a.append(benign(loaded[name], view, box, size, BENIGN[i % len(BENIGN)], rng))
        imgs_o.append(view)
        bar.update(1)
        if len(imgs_a) == 16 or i == cfg.n_neg - 1:
            for a, st in paired_statistics(rules, imgs_a, imgs_o).items():
                negs[a].append(st)
            imgs_a, imgs_o = [], []
    bar.close()
    return pos, {a: np.concatenate(v) for a, v in negs.items()}


# The probe: a handful of fixed pairs every rule is read on, stored beside the thresholds. A threshold only means
# something for the statistic it was fitted to; when a statistic's code changes under the same name (a new way of
# reading the same feature), its values on these pairs change, and the test suite says to recalibrate. Two sizes:
# at 96 px no feature downscales, at 384 px every one does (their working copies stop at 128 and 256 px).
PROBE_PHOTO, PROBE_SIZES, PROBE_SEVERITY = "astronaut", (96, 384), 0.7
PROBE_BENIGN = ("jpeg90", "shift")


def probe_pairs() -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Names (``attribute@size``), I_a and I_o of the probe pairs: a centred square of :data:`PROBE_PHOTO` (0.8 of its
    short side, so a shifted crop has room) at each of :data:`PROBE_SIZES`, degraded by every rule's own degradation
    at :data:`PROBE_SEVERITY` (seed 0), and two benign edits of it (a JPEG re-save, a crop shifted by 3%)."""
    photo = load_photo(PROBE_PHOTO)
    h, w = photo.shape[:2]
    side = int(0.8 * min(h, w))
    box = ((h - side) // 2, (w - side) // 2, side, side)
    names, arrays_a, arrays_o = [], [], []
    for size in PROBE_SIZES:
        view, _ = sample_view(photo, size, np.random.default_rng(0), box)
        for attr in RULE_SPECS:
            names.append(f"{attr}@{size}")
            arrays_a.append(degraded_view(view, degradation_of(attr), PROBE_SEVERITY, seed=0))
        for kind in PROBE_BENIGN:
            names.append(f"{kind}@{size}")
            arrays_a.append(benign(photo, view, box, size, kind, np.random.default_rng(0), shift=0.03))
        arrays_o += [view] * (len(names) - len(arrays_o))
    return names, arrays_a, arrays_o


def probe_statistics(rules: dict[str, Rule]) -> tuple[list[str], dict[str, list[float]]]:
    """The probe pairs' names and every rule's paired statistic on each of them (:func:`probe_pairs`), as
    thresholds.json stores them."""
    names, arrays_a, arrays_o = probe_pairs()
    values = paired_statistics(rules, arrays_a, arrays_o)
    return names, {a: [float(v) for v in vs] for a, vs in values.items()}


# A rule may fire on this share of the images that show only another, not implied, attribute before the
# calibration trades accuracy for specificity (the held-out check allows 0.20; this leaves room for photos
# and degradation code the calibration never saw).
CROSS_ALLOWED = 0.10
# Specificity is bought with accuracy only down to this true-positive rate (or the best the FPR allows).
ACCURACY_FLOOR = 0.95


def fit_threshold(pos: np.ndarray, neg: np.ndarray, target_fpr: float, others: list[np.ndarray] = ()) -> float:
    """The threshold maximising TPR - FPR less every excess of a cross-firing rate over
    :data:`CROSS_ALLOWED`, subject to FPR <= target and TPR >= :data:`ACCURACY_FLOOR`, centred in its
    optimal interval.

    ``neg``: the rule's statistic on benign edits; ``others``: on the positives of each other attribute
    that does not imply this one. Within the accuracy the rule must keep, it gives up weak positives
    before it reads another attribute as its own.
    """
    vals = np.unique(np.concatenate([pos, neg, *others]))
    cands = np.concatenate([[vals[0] - 1e-6], (vals[1:] + vals[:-1]) / 2, [vals[-1] + 1e-6]])
    tpr = (pos[None, :] > cands[:, None]).mean(axis=1)
    fpr = (neg[None, :] > cands[:, None]).mean(axis=1)
    excess = sum((np.maximum((o[None, :] > cands[:, None]).mean(axis=1) - CROSS_ALLOWED, 0.0) for o in others if len(o)),
                 np.zeros(len(cands)))
    allowed = fpr <= target_fpr
    allowed &= tpr >= min(ACCURACY_FLOOR, tpr[allowed].max()) - 1e-12
    score = np.where(allowed, tpr - fpr - excess, -np.inf)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    lo, hi = cands[best[0]], cands[best[-1]]
    return float((lo + hi) / 2)


def evaluate(pos: dict[str, np.ndarray], neg: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict:
    return {
        a: {"accuracy": float((pos[a] > thresholds[a]).mean()), "fpr": float((neg[a] > thresholds[a]).mean()),
            "n_pos": int(len(pos[a])), "n_neg": int(len(neg[a]))}
        for a in thresholds
    }


def others_of(pos: dict, rule: str, attributes) -> list[np.ndarray]:
    """``rule``'s statistic on the positives of every other attribute whose physics does not imply it."""
    return [pos[(b, rule)] for b in attributes if b != rule and rule not in taxonomy.IMPLIES.get(b, ())]


def implied_thresholds(pos: dict, thresholds: dict[str, float], quantile: float = 0.95) -> dict[str, dict[str, float]]:
    """``{implied: {implying: threshold}}``: for a row that requests both, the implied attribute's rule must
    pass what the implying attribute alone makes it read on 95% of its calibration positives (never less
    than its own threshold), so underexposure cannot stand in for a requested low contrast."""
    out: dict[str, dict[str, float]] = {}
    for key, values in pos.items():
        if isinstance(key, tuple) and len(values) and key[1] in taxonomy.IMPLIES.get(key[0], ()):
            implying, implied = key
            out.setdefault(implied, {})[implying] = max(thresholds[implied], float(np.quantile(values, quantile)))
    return out


def calibrate(cfg: CalibrationConfig, *, progress: bool = True) -> dict:
    """Fit thresholds on the calibration photos, evaluate on the held-out photos; return the JSON payload."""
    attributes = list(RULE_SPECS)
    # every attribute a degradation can show, measured or not (a double exposure must not read as a crop)
    shown = attributes + [a for a in taxonomy.ATTRIBUTES if a not in RULE_SPECS and taxonomy.get(a).degradation]
    base = {a: Rule(a, v, st, d, e, np.nan) for a, (v, st, d, e) in RULE_SPECS.items()}
    pos, neg = pair_statistics(CALIBRATION_PHOTOS, shown, cfg, cfg.seed, base, progress=progress)
    thresholds = {a: fit_threshold(pos[a], neg[a], cfg.target_fpr, others_of(pos, a, shown)) for a in attributes}
    cal_metrics = evaluate(pos, neg, thresholds)
    hpos, hneg = pair_statistics(HELDOUT_PHOTOS, attributes, cfg, cfg.seed + 1, base, progress=progress)
    held_metrics = evaluate(hpos, hneg, thresholds)
    given = implied_thresholds(pos, thresholds)
    probe_names, probe = probe_statistics(base)
    cfg_dict = to_dict(cfg)
    cfg_dict.pop("output", None)
    return {
        "config": {**cfg_dict, "calibration_photos": list(CALIBRATION_PHOTOS), "heldout_photos": list(HELDOUT_PHOTOS),
                   "benign_perturbations": list(BENIGN),
                   "probe": {"photo": PROBE_PHOTO, "sizes": list(PROBE_SIZES), "severity": PROBE_SEVERITY,
                             "pairs": probe_names}},
        "attributes": {
            a: {"verifier": base[a].verifier, "statistic": base[a].statistic, "direction": base[a].direction,
                "eps": base[a].eps, "degradation": degradation_of(a), "threshold": thresholds[a],
                "calibration": cal_metrics[a], "heldout": held_metrics[a], **({"given": given[a]} if a in given else {}),
                "probe": probe[a]}
            for a in attributes
        },
    }


def markdown_table(payload: dict) -> str:
    """The held-out accuracy and false-positive rate of every rule, as docs/rewards.md shows them."""
    lines = ["| attribute | verifier | statistic | threshold | accuracy | FPR | n pos | n neg |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for a, row in payload["attributes"].items():
        m = row["heldout"]
        lines.append(f"| {a} | {row['verifier']} | {row['statistic']} | {row['threshold']:.4g} | "
                     f"{m['accuracy']:.3f} | {m['fpr']:.3f} | {m['n_pos']} | {m['n_neg']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    (cfg,) = parse((CalibrationConfig,), argv, prog="python -m pluralign.rewards.calibrate",
                   description="Calibrate verifier thresholds on degraded scikit-image photographs.")
    check_run(cfg.sizes, cfg.sev_min, cfg.sev_max, cfg.output)
    payload = calibrate(cfg)
    Path(cfg.output).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(payload))
    print(f"wrote {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "python -m pluralign.rewards.calibrate"))
