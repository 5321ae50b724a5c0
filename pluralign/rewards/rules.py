"""Paired decision rules: does ``I_a`` show attribute ``a`` relative to ``I_o`` (same seed)?

A single image cannot say whether it is "too dark": that depends on the scene. Comparing the
image generated for the anti-aesthetic prompt with the one generated for the original prompt
from the same seed removes the scene, so each rule thresholds a *paired statistic*:

* ``log_ratio``  ``direction * log((v_a + eps) / (v_o + eps))`` - scale-free changes (sharpness, noise, ...)
* ``difference`` ``direction * (v_a - v_o)`` - quantities with a natural zero (blockiness, centroid offset)
* ``chroma_shift`` length of the change of the grey-world chroma vector (a cast in any hue)
* ``coarse_log_ratio`` ``log_ratio`` of the verifier measured on a 16-px block average (contrast:
  the large-scale light and shadow that flat lighting removes)
* ``abs_difference`` ``|v_a - v_o|`` of a signed measurement whose sign carries no meaning
  (chromatic aberration: red magnified vs shrunk relative to blue)
* ``directional_blur`` the largest loss of directional gradient energy (log, over 36 directions)
  less half the smallest: a smear along one direction (motion blur) scores high, the slight
  isotropic softening of a resize low
* ``max_difference`` the largest ``direction * (v_a - v_o)`` over the components of a vector
  measurement (obstruction: newly dark and featureless area at any of several darkness levels)
* ``rotation``     the rotation (degrees, either way) that best maps I_o's polar magnitude
  spectrum onto I_a's (Fourier-Mellin registration)
* ``centroid_shift`` how far the subject mask's centroid moved (frame fractions)

The rule fires when the statistic exceeds the attribute's threshold. Thresholds are calibrated
by ``python -m pluralign.rewards.calibrate`` and shipped in ``thresholds.json`` beside this file;
the file also records the calibration config and held-out accuracy/false-positive rates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .verifiers import (
    BATCH_VERIFIERS,
    SPECTRUM_ANGLES,
    batched,
    chroma_vector,
    coarse_contrast,
    dark_flat_fractions,
    gradient_tensor,
    lateral_ca,
    rotation_spectrum,
    subject_centroid,
    to_array,
)

THRESHOLDS_PATH = Path(__file__).resolve().parent / "thresholds.json"
STATISTICS = ("log_ratio", "coarse_log_ratio", "difference", "abs_difference", "max_difference", "directional_blur", "chroma_shift",
              "rotation", "centroid_shift")
MAX_ROTATION = 45.0  # degrees searched either way; the magnitude spectrum repeats every 180

# What the paired statistics compare: the scalar verifiers plus vector and other-scale forms
# (names starting with "_"), name -> Batch -> N or N x k.
FEATURES = {
    **BATCH_VERIFIERS,
    "_chroma": chroma_vector,
    "_spectrum": rotation_spectrum,
    "_centroid": subject_centroid,
    # signed red-vs-blue magnification: the scalar verifier is its absolute value
    "_ca": lambda b: lateral_ca(b) @ np.array([1.0, -1.0]),
    "_dark_flat": dark_flat_fractions,
    "_tensor": gradient_tensor,
    "_coarse_contrast": coarse_contrast,
}
_BY_STATISTIC = {"chroma_shift": "_chroma", "rotation": "_spectrum", "centroid_shift": "_centroid",
                 "directional_blur": "_tensor"}
_BLUR_ANGLES = np.radians(np.arange(0.0, 180.0, 5.0))
# The signed or vector form of a scalar verifier, used by abs_difference / max_difference.
_FULL_FORM = {"chromatic_aberration": "_ca", "occlusion": "_dark_flat"}
# The coarse-scale form of a scalar verifier, used by coarse_log_ratio.
_COARSE_FORM = {"contrast": "_coarse_contrast"}


@dataclass(frozen=True)
class Rule:
    attribute: str
    verifier: str
    statistic: str
    direction: int
    eps: float = 0.0
    threshold: float = 0.0


# The statistic for each attribute; thresholds come from thresholds.json. Verifier names and
# directions agree with pluralign.data.taxonomy (a test checks this).
RULE_SPECS: dict[str, tuple[str, str, int, float]] = {
    "blurry": ("sharpness", "log_ratio", -1, 1e-3),
    "motion_blur": ("sharpness", "directional_blur", -1, 1e-3),
    "defocused": ("sharpness", "log_ratio", -1, 1e-3),
    "noisy": ("noise", "log_ratio", +1, 2e-3),
    "film_grain": ("grain", "log_ratio", +1, 0.011),
    "jpeg_artifacts": ("blockiness", "difference", +1, 0.0),
    "underexposed": ("brightness", "log_ratio", -1, 0.02),
    "overexposed": ("brightness", "log_ratio", +1, 0.02),
    "low_contrast": ("contrast", "log_ratio", -1, 0.01),
    "flat_lighting": ("contrast", "coarse_log_ratio", -1, 0.005),
    "muted": ("saturation", "log_ratio", -1, 0.02),
    "color_cast": ("color_cast", "chroma_shift", +1, 0.0),
    "chromatic_aberration": ("chromatic_aberration", "abs_difference", +1, 0.0),
    "vignette": ("vignetting", "log_ratio", -1, 0.0),
    "small_subject": ("subject_size", "log_ratio", -1, 0.02),
    "off_center": ("subject_offcenter", "centroid_shift", +1, 0.0),
    "tilted": ("tilt", "rotation", +1, 0.0),
    "obstructed": ("occlusion", "max_difference", +1, 0.0),
}


@lru_cache(maxsize=1)
def _shipped() -> dict:
    # absent until the first calibration: the rules then have NaN thresholds and adherence_table says to calibrate
    if not THRESHOLDS_PATH.exists():
        return {}
    return json.loads(THRESHOLDS_PATH.read_text(encoding="utf-8"))


def load_rules() -> dict[str, Rule]:
    """The rules with the shipped thresholds (``thresholds.json``); NaN for an attribute not calibrated yet."""
    table = _shipped().get("attributes", {})
    rules = {}
    for attr, (verifier, statistic, direction, eps) in RULE_SPECS.items():
        thr = table.get(attr, {}).get("threshold")
        rules[attr] = Rule(attr, verifier, statistic, direction, eps, float(thr) if thr is not None else np.nan)
    return rules


def get_rule(attribute: str, rules: dict[str, Rule] | None = None) -> Rule:
    rules = load_rules() if rules is None else rules
    if attribute not in rules:
        raise KeyError(
            f"attribute {attribute!r} has no verifier rule; verifiable attributes: {sorted(rules)}"
            " (prompt-only attributes need a judge, not a verifier)"
        )
    return rules[attribute]


def _features(arrays: list[np.ndarray], needs: set[str]) -> dict[str, np.ndarray]:
    """The named :data:`FEATURES` of every image, batched like :func:`~pluralign.rewards.verifiers.measure`."""
    return batched(arrays, {name: FEATURES[name] for name in needs})


def _needs(rule: Rule) -> str:
    """The :data:`FEATURES` entry ``rule``'s statistic compares."""
    if rule.statistic in _BY_STATISTIC:
        return _BY_STATISTIC[rule.statistic]
    if rule.statistic in ("abs_difference", "max_difference"):
        return _FULL_FORM[rule.verifier]
    if rule.statistic == "coarse_log_ratio":
        return _COARSE_FORM[rule.verifier]
    return rule.verifier


def statistic_from_features(rule: Rule, fa: dict[str, np.ndarray], fo: dict[str, np.ndarray]) -> np.ndarray:
    key = _needs(rule)
    a, o = fa[key], fo[key]
    if rule.statistic in ("log_ratio", "coarse_log_ratio"):
        return rule.direction * (np.log(np.maximum(a, 0) + rule.eps + 1e-12) - np.log(np.maximum(o, 0) + rule.eps + 1e-12))
    if rule.statistic == "difference":
        return rule.direction * (a - o)
    if rule.statistic == "abs_difference":
        return np.abs(a - o)
    if rule.statistic == "max_difference":
        return (rule.direction * (a - o)).max(axis=1)
    if rule.statistic == "directional_blur":
        return directional_blur(a, o, rule.direction, rule.eps)
    if rule.statistic in ("chroma_shift", "centroid_shift"):
        return np.linalg.norm(a - o, axis=1)
    if rule.statistic == "rotation":
        return np.abs(estimate_rotation_spectra(a, o))
    raise ValueError(f"unknown statistic {rule.statistic!r}; expected one of {STATISTICS}")


def directional_energy(tensor: np.ndarray) -> np.ndarray:
    """Gradient energy along 36 directions (5 degrees apart) from :func:`gradient_tensor` rows: N x 36."""
    c, s = np.cos(_BLUR_ANGLES), np.sin(_BLUR_ANGLES)
    return tensor[:, 0:1] * c**2 + 2 * tensor[:, 1:2] * c * s + tensor[:, 2:3] * s**2


def directional_blur(tensor_a: np.ndarray, tensor_o: np.ndarray, direction: int = -1, eps: float = 1e-3) -> np.ndarray:
    """Largest directional change ``direction * log((e_a + eps) / (e_o + eps))`` less half the smallest.

    Motion blur smears along one direction, so the change peaks there and stays small across it;
    a resize or a slightly different crop changes every direction a little. Discounting half the
    change common to all directions keeps the second from passing for the first, while a strong
    isotropic blur (which also drops the smallest) still counts through the other half.
    """
    d = direction * (np.log(directional_energy(tensor_a) + eps) - np.log(directional_energy(tensor_o) + eps))
    return d.max(axis=1) - 0.5 * d.min(axis=1)


def estimate_rotation_spectra(spectra_a: np.ndarray, spectra_o: np.ndarray) -> np.ndarray:
    """Rotation in degrees (within +-45) that best aligns two :func:`rotation_spectrum` features.

    The circular cross-correlation over the angle axis (summed over radii) is computed with one
    FFT per pair; the peak is refined to a fraction of a degree with a parabola through its
    neighbours, so the statistic varies smoothly with the true angle.
    """
    n = spectra_a.shape[0]
    a = spectra_a.reshape(n, SPECTRUM_ANGLES, -1)
    o = spectra_o.reshape(n, SPECTRUM_ANGLES, -1)
    corr = np.fft.irfft(np.fft.rfft(a, axis=1) * np.conj(np.fft.rfft(o, axis=1)), n=SPECTRUM_ANGLES, axis=1).sum(axis=2)
    step = 180.0 / SPECTRUM_ANGLES
    shift = np.arange(SPECTRUM_ANGLES)
    shift = np.where(shift > SPECTRUM_ANGLES // 2, shift - SPECTRUM_ANGLES, shift)
    allowed = np.abs(shift) * step <= MAX_ROTATION
    best = np.argmax(np.where(allowed[None], corr, -np.inf), axis=1)
    rows = np.arange(n)
    c0 = corr[rows, best]
    cm = corr[rows, (best - 1) % SPECTRUM_ANGLES]
    cp = corr[rows, (best + 1) % SPECTRUM_ANGLES]
    curv = cm - 2 * c0 + cp
    frac = np.divide(0.5 * (cm - cp), curv, out=np.zeros(n), where=curv < 0)
    return (shift[best] + np.clip(frac, -0.5, 0.5)) * step


def _as_list(images) -> list[np.ndarray]:
    """A list of images, an ``N x H x W x 3`` array or one image (array or PIL) -> list of arrays."""
    if hasattr(images, "convert") or (isinstance(images, np.ndarray) and images.ndim != 4):
        return [to_array(images)]
    return [to_array(x) for x in images]


def _check_pairs(a: list, o: list) -> None:
    if len(a) != len(o):
        raise ValueError(f"got {len(a)} I_a images but {len(o)} I_o images; pairs must align one to one")


def _per_row(attributes, n: int) -> list[list[str]]:
    if isinstance(attributes, str):
        return [[attributes]] * n
    rows = list(attributes)
    if len(rows) != n:
        raise ValueError(f"got {len(rows)} attribute entries for {n} image pairs")
    return [[r] if isinstance(r, str) else list(r) for r in rows]


def adherence_table(images_a, images_o, attributes, rules: dict[str, Rule] | None = None) -> dict[str, np.ndarray]:
    """Per verifiable attribute, the margin (statistic - threshold) for every pair; NaN where not requested.

    ``attributes`` is one attribute name for all pairs or, per pair, a name or a list of names.
    Attributes without a rule (prompt-only ones such as ``grief``) are skipped.
    """
    rules = load_rules() if rules is None else rules
    a, o = _as_list(images_a), _as_list(images_o)
    _check_pairs(a, o)
    rows = _per_row(attributes, len(a))
    used = sorted({x for r in rows for x in r if x in rules})
    for attr in used:
        if np.isnan(rules[attr].threshold):
            raise RuntimeError(
                f"no calibrated threshold for {attr!r} in {THRESHOLDS_PATH}; run `python -m pluralign.rewards.calibrate`"
            )
    needs = {_needs(rules[x]) for x in used}
    fa, fo = _features(a, needs), _features(o, needs)
    out = {}
    for attr in used:
        margin = statistic_from_features(rules[attr], fa, fo) - rules[attr].threshold
        mask = np.array([attr in r for r in rows])
        out[attr] = np.where(mask, margin, np.nan)
    return out


def adherence_scores(images_a, images_o, attributes, rules: dict[str, Rule] | None = None) -> np.ndarray:
    """Per pair, the smallest margin over its verifiable attributes (> 0: I_a shows all of them).

    NaN for pairs whose attributes have no verifier rule.
    """
    table = adherence_table(images_a, images_o, attributes, rules)
    if not table:
        return np.full(len(_as_list(images_a)), np.nan)
    stacked = np.stack(list(table.values()), axis=1)
    missing = np.isnan(stacked)
    worst = np.where(missing, np.inf, stacked).min(axis=1)
    return np.where(missing.all(axis=1), np.nan, worst)


def adheres(image_a, image_o, attribute: str, rules: dict[str, Rule] | None = None) -> bool:
    """True when ``image_a`` shows ``attribute`` relative to ``image_o`` at the shipped threshold."""
    get_rule(attribute, rules)  # a prompt-only attribute has no rule: say so rather than answer False
    return bool(adherence_table([image_a], [image_o], [[attribute]], rules)[attribute][0] > 0)


__all__ = ["Rule", "RULE_SPECS", "load_rules", "get_rule", "adherence_table", "adherence_scores", "adheres"]
