"""Paired decision rules: does ``I_a`` show attribute ``a`` relative to ``I_o`` (same seed)?

A single image cannot say whether it is "too dark": that depends on the scene. Comparing the
image generated for the anti-aesthetic prompt with the one generated for the original prompt
from the same seed removes the scene, so each rule thresholds a *paired statistic*:

* ``log_ratio``  ``direction * log((v_a + eps) / (v_o + eps))`` - scale-free changes (sharpness, noise, ...)
* ``difference`` ``direction * (v_a - v_o)`` - quantities with a natural zero (blockiness)
* ``abs_difference`` ``|v_a - v_o|`` of a signed measurement whose sign carries no meaning
* ``quadrant_agreement`` the change of a signed measurement taken on each quadrant of the frame, as far as
  all four quadrants agree on it in sign and size (chromatic aberration: red magnified vs shrunk relative
  to blue, about the frame's centre)
* ``spectral_smear`` the largest loss of spectral power over 12 direction sectors less the smallest (at most
  the largest), in the two finest octave bands, each loss capped at 3.5 nats: a smear along one
  direction (motion blur)
* ``isotropic_loss`` the loss of spectral power that every direction sector shows, beyond the coarsest
  band's: a blur that takes detail in every direction alike (a lens out of focus), not a smear
* ``radial_falloff`` the falloff with distance from the centre that every one of 8 angular sectors shows in log
  HSV value beyond one tone curve, weighted by the square of the share of that change it explains (vignette:
  a smooth radial darkening the same on every ray)
* ``band_drop`` the smaller log drop of the coarse and the fine contrast band (a fade lowers both)
* ``light_flattening`` how much of I_o's large-scale light (its log luminance blurred over 8% of the frame) I_a
  took away, beyond a curve of each cell's own values and a smooth field of the frame's shape, weighted by the
  square of the share of the change it explains (flat lighting: a gain that follows the scene's light)
* ``even_rise`` the largest, over three pass bands (a clump spans more pixels of a larger scan), of the smaller
  log rise of the fine residual's 20th and 35th percentiles (film grain: it covers the mid-tones evenly and raises
  both; a blend's edges in flat areas or a clip's amplified channel raise the residual on part of the frame, the
  35th percentile more than the 20th); film grain's statistic until 2026-12-07, now inside the next
* ``grain_added`` the even rise in each band whose top (98th) percentile fell by at most 0.05 (a band where it fell
  further reads at most minus the excess), the largest over the bands, less the log of the slope of I_a's cell
  luminances on I_o's beyond 0.1 where I_o's cells vary enough to fit one (film grain: it adds texture and takes
  none, so the strongest edges keep their residual, where a double exposure scales them down while its second
  frame's edges raise the low quantiles; an overexposure scales the scene's own texture evenly, and grain's
  zero-mean clumps do not tilt the cells' fit)
* ``laid_surface`` the share of the frame, on a 16 x 16 grid of cells, that turned dark and featureless where the
  cell's light moved and its texture fell beyond what that change explains (obstruction: an occluder lays a
  surface of its own; a fade, a flat light or an exposure scales the texture that is there)
* ``joint_log_ratio`` the smaller log change of a vector measurement's components (small subject: the mask's
  area and its spread over the frame both shrink; a blend that fades a texture thins the mask but leaves it
  spread over the frame)
* ``max_log_ratio`` the largest log change of a vector measurement's components (film grain's statistic until
  2026-12-07: the residual's 35th percentile in three pass bands, since a clump spans more pixels of a larger scan)
* ``joint_difference`` the smaller change of a vector measurement's components (overexposure: the light
  added, as mean HSV value and mean luminance both rise; a bright scene cannot rise by a large ratio, but
  blowing it out adds more than a small brightness edit can)
* ``log_chroma_shift`` the colour offset the grid cells share in log chromaticity of linear light, where a
  white-balance error (one gain per channel) is one offset whatever a cell's colour, less the cells' disagreement,
  and at most the grey-world offset in the same units (a cast in any hue, on saturated scenes too); where no cell
  can be compared, the offset that the frame's sRGB grey-world mean and most of its pixels agree on
  (:func:`cast_offset`, the statistic until 2026-12-06)
* ``colourful_chroma`` the smaller log drop, on the cells of a 32 x 32 grid that neither image clips at the white
  point, of the whole frame's share of the light that is colour (in linear light) and of the sRGB chroma of each
  frame's most colourful cells (muted: every colour holds less colour; a smaller or moved subject only colours
  less of the frame, a darker exposure lowers chroma but not the share, and an overexposure clips colour to white,
  which is the exposure's doing). The whole frame's share alone was the statistic until 2026-12-07
  (``unclipped_chroma``)
* ``rotation``     the rotation (degrees, either way) that best maps I_o's polar magnitude
  spectrum onto I_a's (Fourier-Mellin registration)
* ``zoom``         the log magnification that best maps I_o onto I_a (template matching over
  scales: a tight crop enlarged to the frame)
* ``edge_glow``    how much warmer and brighter one edge became than the opposite one (a light leak)
* ``centroid_shift`` how far the subject mask's centroid moved (frame fractions)

The rule fires when the statistic exceeds the attribute's threshold. Thresholds are calibrated
by ``python -m pluralign.rewards.calibrate`` and shipped in ``thresholds.json`` beside this file;
the file also records the calibration config and held-out accuracy/false-positive rates.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from .registration import Registration, register, shared_content
from .verifiers import (
    _LUMA,
    BATCH_VERIFIERS,
    BLUR_SECTORS,
    GLOW_GRID,
    GLOW_PLANES,
    GRAIN_CELLS,
    GRAIN_QUANTILES,
    GRAIN_TAPS,
    LIGHT_GRID,
    OCCLUSION_GRID,
    RADIAL_GRID,
    SPECTRUM_ANGLES,
    _opponent,
    band_spectrum,
    batched,
    cast_features,
    contrast_bands,
    dark_flat_cells,
    exposure_pair,
    glow_field,
    grain_light,
    grain_quantiles,
    grain_scales,
    lateral_ca,
    lateral_ca_quadrants,
    light_field,
    linear_to_srgb,
    radial_value_field,
    registration_grid,
    rotation_spectrum,
    srgb_to_linear,
    subject_centroid,
    subject_extent,
    to_array,
)

THRESHOLDS_PATH = Path(__file__).resolve().parent / "thresholds.json"
STATISTICS = ("log_ratio", "joint_difference", "joint_log_ratio", "even_rise", "grain_added", "max_log_ratio", "difference", "abs_difference", "quadrant_agreement", "spectral_smear", "isotropic_loss",
              "radial_falloff", "log_chroma_shift", "colourful_chroma",
              "rotation", "centroid_shift", "zoom", "edge_glow", "band_drop", "light_flattening", "laid_surface")
MAX_ROTATION = 45.0  # degrees searched either way; the magnitude spectrum repeats every 180

# What the paired statistics compare: the scalar verifiers plus vector and other-scale forms
# (names starting with "_"), name -> Batch -> N or N x k.
FEATURES = {
    **BATCH_VERIFIERS,
    "_cast": cast_features,
    "_exposure": exposure_pair,
    "_spectrum": rotation_spectrum,
    "_centroid": subject_centroid,
    # signed red-vs-blue magnification: the scalar verifier is its absolute value
    "_ca": lambda b: lateral_ca(b) @ np.array([1.0, -1.0]),
    "_ca_quadrants": lambda b: lateral_ca_quadrants(b) @ np.array([1.0, -1.0]),  # N x 4
    "_dark_flat_cells": dark_flat_cells,
    "_band_spectrum": band_spectrum,
    "_bands": contrast_bands,
    "_grid": registration_grid,
    "_glow": glow_field,
    "_radial": radial_value_field,
    "_light": light_field,
    "_grain_scales": grain_scales,
    "_grain_quantiles": grain_quantiles,
    "_grain_light": grain_light,
    "_subject_extent": subject_extent,
}
# Statistics defined on one feature whatever the rule's verifier (even_rise reads the grain residual's quantiles).
_BY_STATISTIC = {"log_chroma_shift": "_cast", "colourful_chroma": "_cast", "joint_difference": "_exposure", "rotation": "_spectrum", "centroid_shift": "_centroid",
                 "spectral_smear": "_band_spectrum", "isotropic_loss": "_band_spectrum", "zoom": "_grid",
                 "radial_falloff": "_radial", "quadrant_agreement": "_ca_quadrants",
                 "edge_glow": "_glow", "band_drop": "_bands", "light_flattening": "_light",
                 "even_rise": "_grain_quantiles", "grain_added": "_grain_light", "laid_surface": "_dark_flat_cells",
}
# A loss beyond this (nats of power, 3% left) is a bin driven to the noise floor: where a sector held little
# power to begin with, its loss stops short of the others' under an isotropic blur, and uncapped that
# reads as a smear.
SMEAR_CAP = 3.5
SMEAR_BANDS = slice(2, 4)  # 0.12-0.5 cycles/px of the <= 128 px luminance: where a smear of 2 px or more shows
# The signed or vector form of a scalar verifier, used by abs_difference, max_log_ratio and joint_log_ratio.
_FULL_FORM = {"grain": "_grain_scales", "subject_size": "_subject_extent"}


@dataclass(frozen=True)
class Rule:
    attribute: str
    verifier: str
    statistic: str
    direction: int
    eps: float = 0.0
    threshold: float = 0.0
    # (implying attribute, threshold): used instead when the row also requests an attribute whose
    # physics implies this one (taxonomy.IMPLIES), calibrated on images showing only the implying one
    given: tuple[tuple[str, float], ...] = ()

    def threshold_for(self, requested) -> float:
        """The threshold for a row that requests ``requested`` (all its attributes)."""
        return max([self.threshold, *(t for a, t in self.given if a in requested)])


# The statistic for each attribute; thresholds come from thresholds.json. Verifier names and
# directions agree with pluralign.data.taxonomy (a test checks this).
RULE_SPECS: dict[str, tuple[str, str, int, float]] = {
    "blurry": ("sharpness", "log_ratio", -1, 1e-3),
    "motion_blur": ("sharpness", "spectral_smear", -1, 0.0),
    "defocused": ("sharpness", "isotropic_loss", -1, 0.0),
    "noisy": ("noise", "log_ratio", +1, 2e-3),
    "film_grain": ("grain", "grain_added", +1, 0.011),
    "jpeg_artifacts": ("blockiness", "difference", +1, 0.0),
    "underexposed": ("brightness", "log_ratio", -1, 0.02),
    "overexposed": ("value", "joint_difference", +1, 0.0),
    "low_contrast": ("contrast", "band_drop", -1, 0.005),
    "flat_lighting": ("contrast", "light_flattening", -1, 0.0),
    "muted": ("saturation", "colourful_chroma", -1, 0.02),
    "color_cast": ("color_cast", "log_chroma_shift", +1, 0.0),
    "chromatic_aberration": ("chromatic_aberration", "quadrant_agreement", +1, 0.0),
    "vignette": ("vignetting", "radial_falloff", -1, 0.0),
    "small_subject": ("subject_size", "joint_log_ratio", -1, 0.02),
    "off_center": ("subject_offcenter", "centroid_shift", +1, 0.0),
    "tilted": ("tilt", "rotation", +1, 0.0),
    "obstructed": ("occlusion", "laid_surface", +1, 0.0),
    "cropped": ("zoom", "zoom", +1, 0.0),
    "light_leak": ("glow", "edge_glow", +1, 0.0),
}
# Rules whose measurement exists only for a pair (how I_a maps onto I_o), not for one image alone.
PAIRED_ONLY = ("zoom", "glow")


@lru_cache(maxsize=4)
def _read(path: Path) -> dict:
    # absent until the first calibration: the rules then have NaN thresholds and adherence_table says to calibrate
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def load_rules(path: str | Path | None = None) -> dict[str, Rule]:
    """The rules with the shipped thresholds (``thresholds.json``; ``path``: a candidate calibration to
    check before shipping it); NaN for an attribute not calibrated yet."""
    if path is not None:  # a file the user named: missing or empty, every rule would read NaN and never fire
        named = Path(path)
        if not named.is_file():
            raise FileNotFoundError(f"thresholds {named}: no such file; pass the JSON that `python -m "
                                    "pluralign.rewards.calibrate --output FILE` wrote")
        try:
            data = _read(named)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"thresholds {named}: not JSON ({exc}); pass the file that `python -m "
                             "pluralign.rewards.calibrate --output FILE` wrote") from None
        table = data.get("attributes") if isinstance(data, dict) else None
        missing = sorted(set(RULE_SPECS) - set(table)) if isinstance(table, dict) else None
        if missing is None or missing:
            what = "no \"attributes\" table" if missing is None else f"no threshold for {', '.join(missing)}"
            raise ValueError(f"thresholds {named}: {what}; pass the JSON that `python -m pluralign.rewards.calibrate "
                             "--output FILE` wrote with this version (every rule is calibrated in one run)")
    else:
        table = _read(THRESHOLDS_PATH).get("attributes", {})
    rules = {}
    for attr, (verifier, statistic, direction, eps) in RULE_SPECS.items():
        entry = table.get(attr, {})
        if entry.get("statistic", statistic) != statistic:  # a threshold is only meaningful for its own statistic
            raise (ValueError if path is not None else RuntimeError)(f"{attr}: the thresholds file {path or THRESHOLDS_PATH} was calibrated for the statistic "
                               f"{entry['statistic']!r}, but the rule now computes {statistic!r}; run `python -m "
                               "pluralign.rewards.calibrate` to recalibrate")
        thr = entry.get("threshold")
        given = tuple(sorted((a, float(t)) for a, t in entry.get("given", {}).items()))
        rules[attr] = Rule(attr, verifier, statistic, direction, eps, float(thr) if thr is not None else np.nan, given)
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
    if rule.statistic in ("abs_difference", "max_log_ratio", "joint_log_ratio"):
        return _FULL_FORM[rule.verifier]
    return rule.verifier


# What a confident registration says directly, per verifier: the statistic in the units of the
# whole-frame rule it replaces (subject area log-ratio, centroid shift in frame fractions, degrees).
_FROM_TRANSFORM = {
    "subject_size": lambda r, reg: r.direction * 2 * np.log(reg.scale),  # area scales with magnification squared
    "subject_offcenter": lambda r, reg: reg.centre_shift(),
    "tilt": lambda r, reg: np.abs(reg.angle),
    "zoom": lambda r, reg: r.direction * np.log(reg.scale),
}
# Verifiers anchored to the frame itself rather than to its content: compared on whole frames always
# (the 8-px JPEG grid starts at the top-left pixel; lateral chromatic aberration is radial about the
# frame centre).
_FRAME_ANCHORED = ("blockiness", "chromatic_aberration")


def paired_statistics(rules: dict[str, Rule], arrays_a: list[np.ndarray], arrays_o: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Each rule's paired statistic on every (I_a, I_o) pair, features computed once for all the rules.

    Every pair is registered first (:mod:`~pluralign.rewards.registration`). Where the transform
    explains I_a, the geometric rules read it (a shrink is a smaller subject, whatever a fade did to
    the subject mask), and where it also re-frames the scene, the photometric rules compare I_a with
    I_o warped onto the content they share (a crop into a red coat is not a red cast). Elsewhere every
    rule compares the whole frames.
    """
    needs = {_needs(r) for r in rules.values()} | {"_grid", "_spectrum"}
    fa, fo = _features(arrays_a, needs), _features(arrays_o, needs)
    reg = register(fa["_grid"], fo["_grid"], estimate_rotation_spectra(fa["_spectrum"], fo["_spectrum"]))
    out = {a: statistic_from_features(r, fa, fo, reg) for a, r in rules.items()}
    confident = reg.confident
    for a, r in rules.items():
        if r.verifier in _FROM_TRANSFORM:
            out[a] = np.where(confident, _FROM_TRANSFORM[r.verifier](r, reg), out[a])
    photometric = {a: r for a, r in rules.items() if r.verifier not in _FROM_TRANSFORM and r.verifier not in _FRAME_ANCHORED}
    shared_needs = {_needs(r) for r in photometric.values()}
    if photometric:
        for i in np.flatnonzero(confident & ~reg.is_identity()):
            shared = shared_content(arrays_a[i], arrays_o[i], reg.A[i], reg.t[i])
            if shared is None:
                continue
            ga, go = _features([shared[0]], shared_needs), _features([shared[1]], shared_needs)
            for a, r in photometric.items():
                out[a][i] = statistic_from_features(r, ga, go, None)[0]
    return out


def statistic_from_features(rule: Rule, fa: dict[str, np.ndarray], fo: dict[str, np.ndarray],
                            reg: Registration | None) -> np.ndarray:
    """``rule``'s paired statistic from the two images' features (and, for the zoom rule, the registration)."""
    key = _needs(rule)
    a, o = fa[key], fo[key]
    if rule.statistic == "log_ratio":
        return _log_change(rule, a, o)
    if rule.statistic == "difference":
        return rule.direction * (a - o)
    if rule.statistic == "abs_difference":
        return np.abs(a - o)
    if rule.statistic == "quadrant_agreement":
        return quadrant_agreement(a, o)
    if rule.statistic == "spectral_smear":
        return spectral_smear(a, o, rule.direction)
    if rule.statistic == "isotropic_loss":
        return isotropic_loss(a, o, rule.direction)
    if rule.statistic == "radial_falloff":
        return rule.direction * radial_falloff(a, o)
    if rule.statistic == "light_flattening":
        return rule.direction * light_flattening(a, o)
    if rule.statistic == "laid_surface":
        return rule.direction * laid_surface(a, o)
    if rule.statistic == "max_log_ratio":
        return _log_change(rule, a, o).max(axis=1)
    if rule.statistic == "even_rise":
        return _even_rise(rule, a, o)
    if rule.statistic == "grain_added":
        return grain_added(rule, a, o)
    if rule.statistic in ("joint_log_ratio", "band_drop"):  # band_drop: N x [coarse, fine]
        return _log_change(rule, a, o).min(axis=1)
    if rule.statistic == "joint_difference":
        return (rule.direction * (a - o)).min(axis=1)
    if rule.statistic == "log_chroma_shift":
        # without a registration, a and o are the window two registered frames share: lined up
        return log_cast_offset(a, o, reg.confident if reg is not None else np.ones(len(a), dtype=bool))
    if rule.statistic == "colourful_chroma":
        return rule.direction * colourful_chroma_change(a[:, 3:], o[:, 3:], rule.eps)
    if rule.statistic == "centroid_shift":
        return np.linalg.norm(a - o, axis=1)
    if rule.statistic == "rotation":
        return np.abs(estimate_rotation_spectra(a, o))
    if rule.statistic == "zoom":
        return _FROM_TRANSFORM["zoom"](rule, reg)
    if rule.statistic == "edge_glow":
        return edge_glow(a, o)
    raise ValueError(f"unknown statistic {rule.statistic!r}; expected one of {STATISTICS}")


def _log_change(rule: Rule, a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """``direction * log((a + eps) / (o + eps))``, elementwise (negative measurements count as 0)."""
    return rule.direction * (np.log(np.maximum(a, 0) + rule.eps + 1e-12) - np.log(np.maximum(o, 0) + rule.eps + 1e-12))


def _band_even_rise(rule: Rule, a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """The rise every quantile shows in each band, of two ``N x quantile x band`` measurements: N x band."""
    return _log_change(rule, a, o).min(axis=1)


def _even_rise(rule: Rule, a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """The rise every quantile shows, the largest over the bands, of two ``N x quantile x band`` measurements."""
    return _band_even_rise(rule, a, o).max(axis=1)


# The tone curve's slope up to which the grain rule subtracts nothing (e^0.1 = 1.105): a +-2% brightness edit or a
# slight rise of contrast is not an exposure change. A fade's slope is under 1 and subtracts nothing at all.
GRAIN_SLOPE_SLACK = 0.1
# The spread of I_o's cell luminances under which no slope is fitted: on a nearly uniform scene the fit would be
# grain's own scatter of the cell means over nothing (a slope anywhere), and real grain would be taken off. At 0.02
# and 256 cells the slope's standard error under the strongest grain stays well inside the slack.
GRAIN_SLOPE_MIN_SPREAD = 0.02


# How far the residual's top quantile may fall, in log, before the grain rule stops reading a band as grain: grain
# never lowers it (its 5th percentile over the diagnosis photos' grains is a rise of 0.01-0.02), a double exposure
# lowers it by 0.2-0.6, and a JPEG q90 round trip or a +-2% brightness edit moves it by 0.05 at most.
GRAIN_TOP_SLACK = 0.05


def grain_added(rule: Rule, a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """The film-grain statistic from two :func:`grain_light` rows. In each of the bands at taps 1, 2 and 4 px: the
    rise that the grain residual's 20th and 35th percentiles both show (``even_rise``), where the band's top
    percentile (:data:`~pluralign.rewards.verifiers.GRAIN_TOP_QUANTILE`) fell by at most :data:`GRAIN_TOP_SLACK`;
    where it fell further, the band reads at most minus that excess. The largest of those over the bands, less the
    log of the slope of I_a's cell luminances on I_o's beyond :data:`GRAIN_SLOPE_SLACK`.

    Grain adds texture and takes none away: every quantile of the residual holds or rises, the strongest edges'
    included. A double exposure lays a second frame's edges over flat ground, which raises the low quantiles as
    grain does, by as much as it likes where the ground was smooth, and it scales the first frame's edges by one
    less the blend's weight, which lowers the top one (double exposures read as grain on 0.40 of the first unseen
    set's). A band that lost its strongest edges did not gain grain, however much its low quantiles rose.

    Grain also leaves the large-scale light where it was: its clumps are zero-mean, so they scatter the cell means
    but do not tilt their fit, at any size (where I_o's cells spread by at least :data:`GRAIN_SLOPE_MIN_SPREAD`; on a
    nearly uniform scene nothing is fitted). A tone curve steeper than 1 scales the texture the scene already has,
    evenly wherever nothing clips: an overexposure read as grain on 0.23 of the second unseen set's overexposures,
    and the cells' slope rises with it. (The slope alone on the residual's largest rise was tried on 2026-12-07,
    before the even rise, and rejected by one cell of gradio's JPEGs; see docs/rewards_journal.md.)
    """
    n_b = len(GRAIN_TAPS)
    n_q = len(GRAIN_QUANTILES) * n_b
    if a.shape != o.shape or a.shape[1] != n_q + n_b + GRAIN_CELLS * GRAIN_CELLS:
        raise ValueError(f"expected two grain_light features of {n_q} + {n_b} + {GRAIN_CELLS}^2 values, got {a.shape} "
                         f"and {o.shape}")
    shape_q = (-1, len(GRAIN_QUANTILES), n_b)
    even = _band_even_rise(rule, a[:, :n_q].reshape(shape_q), o[:, :n_q].reshape(shape_q))  # N x band
    lost = -_log_change(rule, a[:, n_q:n_q + n_b], o[:, n_q:n_q + n_b]) - GRAIN_TOP_SLACK  # N x band
    grain = np.where(lost > 0, np.minimum(even, -lost), even).max(axis=1)
    ya, yo = a[:, n_q + n_b:], o[:, n_q + n_b:]
    yo_c = yo - yo.mean(axis=1, keepdims=True)
    slope = (yo_c * (ya - ya.mean(axis=1, keepdims=True))).sum(axis=1) / np.maximum((yo_c * yo_c).sum(axis=1), 1e-12)
    tilt = np.maximum(np.log(np.maximum(slope, 1e-6)) - GRAIN_SLOPE_SLACK, 0.0)
    return grain - np.where(yo.std(axis=1) >= GRAIN_SLOPE_MIN_SPREAD, tilt, 0.0)


# sRGB level at which a channel may have been cut off at the sensor's white point (8-bit 248)
CLIP_LEVEL = 0.97
# colourful_chroma: a cell counts as colourful when its sRGB chroma is at least this much of the frame's 99th
# percentile (about its 10 most colourful cells of 1024)
COLOURFUL_SHARE = 0.7
COLOURFUL_TOP = 0.99


def chroma_share(grid: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The share of the light that is colour, ``sum(max - min) / sum(max)`` over the channels of each kept
    cell of a :func:`cast_features` sRGB grid (N x 3P), in linear light: N values in [0, 1], 0 where no cell
    is kept.

    Both sums scale with the light, so a change of exposure leaves the share as it was on every cell it does
    not clip, and dark cells weigh as little as the light they hold (a per-pixel ratio would be noise there).
    """
    lin = srgb_to_linear(grid.reshape(len(grid), 3, -1))
    hi, lo = lin.max(axis=1), lin.min(axis=1)
    return ((hi - lo) * keep).sum(axis=1) / ((hi * keep).sum(axis=1) + 1e-6)


def unclipped_cells(grid_a: np.ndarray, grid_o: np.ndarray) -> np.ndarray:
    """The cells of two :func:`cast_features` grids that neither image clips at the white point: N x P."""
    n = len(grid_a)
    return (grid_a.reshape(n, 3, -1).max(axis=1) < CLIP_LEVEL) & (grid_o.reshape(n, 3, -1).max(axis=1) < CLIP_LEVEL)


def unclipped_chroma_change(grid_a: np.ndarray, grid_o: np.ndarray, eps: float) -> np.ndarray:
    """``log`` of the change of :func:`chroma_share` from I_o to I_a on the grid cells neither image clips.

    A muted image holds less colour for its light. An overexposed one pushes its brightest channels past the
    white point, and a clipped pixel turns toward white: its colour is lost to the exposure, not to a request
    for muted colour, and in linear light the cells that stay below the white point keep their share. So
    only those are compared; with none left (a frame blown to white) the change is 0, nothing measured.
    """
    keep = unclipped_cells(grid_a, grid_o)
    return np.log(chroma_share(grid_a, keep) + eps) - np.log(chroma_share(grid_o, keep) + eps)


def colourful_chroma(grid: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The mean sRGB chroma, ``max - min`` of the channels, of each frame's most colourful kept cells of a
    :func:`cast_features` grid (N x 3P): those whose chroma is at least :data:`COLOURFUL_SHARE` of the frame's
    :data:`COLOURFUL_TOP` quantile of it. N values, 0 where no cell is kept.

    Relative to the frame's own most colourful cells, so the set is the coloured subject at any size down to about a
    dozen cells of the 1024 (below that the bar falls to the ground's chroma and the set is most of the frame). A
    blend toward grey, in sRGB (pluralign's desaturation and the reference one) or an HSV saturation scale, multiplies
    every cell's sRGB chroma by one factor, so the set stays the same and the mean falls by that factor; in linear
    light a saturated cell would keep most of its share of colour, since its smallest channel stays near black once
    decoded. Cells blended with a neutral ground (a subject's edges) fall below the bar.
    """
    rgb = grid.reshape(len(grid), 3, -1)
    chroma = rgb.max(axis=1) - rgb.min(axis=1)
    kept = np.where(keep, chroma, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a frame with no kept cell: no bar, no cell
        bar = COLOURFUL_SHARE * np.nanquantile(kept, COLOURFUL_TOP, axis=1)
    chosen = keep & (chroma >= bar[:, None])
    return (chroma * chosen).sum(axis=1) / np.maximum(chosen.sum(axis=1), 1)


def colourful_chroma_change(grid_a: np.ndarray, grid_o: np.ndarray, eps: float) -> np.ndarray:
    """The smaller log drop, as a change from I_o to I_a, of :func:`chroma_share` on the cells neither image
    clips (:func:`unclipped_chroma_change`) and of :func:`colourful_chroma` on the same cells.

    Muted colour is less colour in every colour there is, so both fall. A smaller, moved or partly hidden subject
    colours less of the frame: the whole frame's share falls, but the subject's own cells keep their chroma. On
    frames whose colour is the subject, a frame-wide share alone reads a subject drawn with a fifth less area as
    muted; asking both does not. A darker exposure lowers sRGB chroma but leaves the share. With no cell left, the
    change is 0, nothing measured.
    """
    keep = unclipped_cells(grid_a, grid_o)
    colourful = np.log(colourful_chroma(grid_a, keep) + eps) - np.log(colourful_chroma(grid_o, keep) + eps)
    return np.maximum(unclipped_chroma_change(grid_a, grid_o, eps), colourful)


def cast_offset(cast_a: np.ndarray, cast_o: np.ndarray, aligned: np.ndarray | None = None) -> np.ndarray:
    """The colour cast two :func:`cast_features` rows agree on: the smaller of the frame's grey-world offset
    (:func:`grey_world_offset`) and the offset most pixels share (:func:`pixel_offset`; ``aligned``: the
    pairs whose pixels are known to line up, see there).

    Each alone reads other changes as a cast. A dark brown occluder or a blended second exposure moves the
    frame's mean colour, but only a minority of pixels, or each pixel its own way; re-saving a small image
    shifts single pixels' chroma but not the mean. A cast moves the mean and every pixel alike.
    """
    return np.minimum(grey_world_offset(cast_a[:, :3], cast_o[:, :3]), pixel_offset(cast_a[:, 3:], cast_o[:, 3:], aligned))


def grey_world_offset(chroma_a: np.ndarray, chroma_o: np.ndarray) -> np.ndarray:
    """Length of the change of the grey-world chroma that a change of saturation does not explain, from two
    :func:`chroma_moments` features.

    I_o's mean chroma is first scaled by the ratio of the two chroma spreads (a desaturation, a fade
    towards grey or a veil of light scales every pixel's chroma about grey, the mean with the spread);
    what remains of I_a's mean is the offset a cast adds to every pixel.
    """
    f = (chroma_a[:, 2] + 1e-3) / (chroma_o[:, 2] + 1e-3)
    return np.linalg.norm(chroma_a[:, :2] - f[:, None] * chroma_o[:, :2], axis=1)


# The colour cast in log chromaticity (log_cast_offset). A grid cell averages its pixels, so one that holds a few
# clipped pixels sits below the white point yet changes colour with the exposure: cells are compared only below
# CAST_CLIP in every sRGB channel.
CAST_CLIP = 0.9
CAST_FLOOR = 0.01     # of the cell's luminance, added to each channel before the log: a channel near 0 is noise
CAST_DARK = 0.01      # linear luminance under which a cell's colour says nothing
CAST_LIFT = 0.3       # a cell whose log luminance moved this much unlike the frame's shows another surface
CAST_MIN_LIGHT = 0.1  # registered pairs: under this share of the light in comparable cells, no cell is compared
# the shipped grey-world offset (opponent chroma over luminance) in log-chromaticity units: the ratio of the two
# statistics' calibrated thresholds, fixed before this one was calibrated (docs/rewards.md)
CAST_FALLBACK_SCALE = 2.0


def log_chromaticity(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell of a :func:`cast_features` sRGB grid (N x 3P): the log chromaticity of its linear light, red-green
    and yellow-blue (N x 2 x P), its linear luminance (N x P) and its brightest sRGB channel (N x P).

    A white-balance error multiplies each channel by its own gain in linear light, which adds one offset to every
    cell's log chromaticity, whatever the cell's colour; in sRGB opponent chroma the same error moves a saturated
    cell and a grey one by different amounts. Each channel gets a hundredth of the cell's luminance before the log,
    so a channel near zero (a deep red's blue) does not turn noise into large log changes. A larger floor (a tenth,
    until 2026-12-07) also hid the cast: a channel under the floor hardly moves in log when its gain does, so a
    saturated scene read a weak cast as none.
    """
    x = grid.reshape(len(grid), 3, -1).astype(np.float64)
    lin = srgb_to_linear(x)
    y = np.einsum("k,nkp->np", _LUMA.astype(np.float64), lin)
    lg = np.log(lin + CAST_FLOOR * y[:, None, :] + 1e-6)
    chroma = np.stack([lg[:, 0] - lg[:, 1], 0.5 * (lg[:, 0] + lg[:, 1]) - lg[:, 2]], axis=1)
    return chroma, y, x.max(axis=1)


def _log_moments(c: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luminance-weighted mean (N x 2) and spread (N) of log chromaticities ``c`` (N x 2 x P) over the lit cells."""
    w = y * (y > CAST_DARK)
    w = w / (w.sum(axis=1, keepdims=True) + 1e-12)
    mean = np.einsum("np,nkp->nk", w, c)
    spread = np.sqrt(np.einsum("np,np->n", w, ((c - mean[..., None]) ** 2).sum(axis=1)))
    return mean, spread


def log_grey_world(ca: np.ndarray, ya: np.ndarray, co: np.ndarray, yo: np.ndarray) -> np.ndarray:
    """The change of the frame's luminance-weighted mean log chromaticity that a loss of saturation does not explain.

    I_o's mean is scaled by the ratio of the two spreads, at most 1: a cast moves every cell by one offset and
    keeps the spread, a desaturation or a veil of light shrinks cells and mean towards grey together."""
    ma, sa = _log_moments(ca, ya)
    mo, so = _log_moments(co, yo)
    f = np.minimum((sa + 1e-3) / (so + 1e-3), 1.0)
    return np.linalg.norm(ma - f[:, None] * mo, axis=1)


def _weighted_median(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per row, the median of ``v`` (N x P) under weights ``w`` (N x P); 0 for a row without weight."""
    order = np.argsort(v, axis=1)
    vs, ws = np.take_along_axis(v, order, axis=1), np.take_along_axis(w, order, axis=1)
    cw = np.cumsum(ws, axis=1)
    half = 0.5 * cw[:, -1:]
    k = np.minimum((cw < half).sum(axis=1), v.shape[1] - 1)
    return np.where(cw[:, -1] > 0, vs[np.arange(len(v)), k], 0.0)


def log_pixel_offset(ca: np.ndarray, ya: np.ndarray, ta: np.ndarray, co: np.ndarray, yo: np.ndarray, to: np.ndarray,
                     iterations: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The offset of log chromaticity the comparable cells share, less their disagreement, from
    :func:`log_chromaticity` of both images; with the share of the light in cells neither image clips or leaves
    dark, and the share of the cells that were compared.

    Comparable cells are lit, below the clip level in both images, and brightened or darkened like the frame (a
    cell that changed brightness its own way shows another surface: an occluder, a second scene). The offset is
    the cells' L1 centre (reweighted least squares), each cell weighted by its light. A cast moves every cell alike,
    so the cells agree with it; a blend or an overlay moves each its own way, and the weighted median distance of
    the cells from the offset, subtracted, takes that back.
    """
    valid = (ta < CAST_CLIP) & (to < CAST_CLIP) & (ya > CAST_DARK) & (yo > CAST_DARK)
    light = 0.5 * (ya + yo)
    measurable = (valid * light).sum(axis=1) / (light.sum(axis=1) + 1e-12)  # what clipping and darkness leave
    lift = np.log(ya + 1e-6) - np.log(yo + 1e-6)
    ref = _weighted_median(np.where(valid, lift, 0.0), valid.astype(np.float64))
    valid &= np.abs(lift - ref[:, None]) < CAST_LIFT
    w = valid * light
    d = ca - co  # N x 2 x P
    t = np.einsum("np,nkp->nk", w, d) / (w.sum(axis=1)[:, None] + 1e-12)
    for _ in range(iterations):
        r = np.linalg.norm(d - t[..., None], axis=1)
        wi = w / np.maximum(r, 0.01)
        t = np.einsum("np,nkp->nk", wi, d) / (wi.sum(axis=1)[:, None] + 1e-12)
    spread = _weighted_median(np.linalg.norm(d - t[..., None], axis=1), w)
    offset = np.maximum(np.linalg.norm(t, axis=1) - spread, 0.0)
    return offset, measurable, valid.mean(axis=1)


def log_cast_offset(cast_a: np.ndarray, cast_o: np.ndarray, aligned: np.ndarray | None = None) -> np.ndarray:
    """The colour cast of two :func:`cast_features` rows in log chromaticity: the smaller of
    :func:`log_grey_world` and :func:`log_pixel_offset` (each alone reads other changes as a cast, as in
    :func:`cast_offset`).

    ``aligned`` marks pairs the registration found to show the same content in the same place. Elsewhere cells at
    one position need not show one surface, and where under half of them are comparable, "most cells" cannot be
    told: the pixel term abstains and the grey world decides. On an aligned pair with under a tenth of the light in
    comparable cells (a frame clipped nearly everywhere, a white background with bright saturated objects) no cell
    can be compared, and the sRGB statistic of :func:`cast_offset` decides, scaled to these units by
    :data:`CAST_FALLBACK_SCALE`: its grey world reads a white background turning tinted, and its pixel term, which
    clips pixels rather than cells, still finds pixels to compare on a blown-out frame and vetoes the grey world there.
    """
    ca, ya, ta = log_chromaticity(cast_a[:, 3:])
    co, yo, to = log_chromaticity(cast_o[:, 3:])
    aligned = np.ones(len(cast_a), dtype=bool) if aligned is None else np.asarray(aligned, dtype=bool)
    pixel, light, cells = log_pixel_offset(ca, ya, ta, co, yo, to)
    pixel = np.where(~aligned & (cells < 0.5), np.inf, pixel)
    out = np.minimum(log_grey_world(ca, ya, co, yo), pixel)
    fallback = aligned & (light < CAST_MIN_LIGHT)
    if fallback.any():
        out = np.where(fallback, CAST_FALLBACK_SCALE * cast_offset(cast_a, cast_o, aligned), out)
    return out


def _chromaticity(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Opponent chroma (r-g, y-b) over luminance per grid pixel, N x 2 x P, and the luminance, N x P."""
    x = np.moveaxis(grid.reshape(len(grid), 3, -1), 1, -1)  # N x P x 3, as the verifiers take colour
    y = x @ _LUMA
    return np.stack(_opponent(x), axis=1) / (y[:, None] + 0.02), y


def pixel_offset(grid_a: np.ndarray, grid_o: np.ndarray, aligned: np.ndarray | None = None, iterations: int = 8) -> np.ndarray:
    """Length of the chromaticity offset most pixels share, beyond what a change of saturation explains.

    A desaturation, a fade or a veil of light scales every pixel's chromaticity about grey by one factor;
    a cast adds one offset to every pixel. So each pixel's change is fitted as ``s * c + t`` (its own
    chromaticity ``c`` in I_o, one scale ``s`` and one offset ``t`` for the frame) by iteratively reweighted
    least squares with L1 weights: a minority of pixels that changed for another reason (an occluder, a
    blended second scene) does not move the fit. Pixels of one hue but different saturation tell the two
    apart: a scale moves them in proportion to their chroma, an offset by the same amount. (Projecting
    out each pixel's own direction from grey, as the rule did before, also removed a cast along the
    scene's hue: a blue cast on a brown scene read as a desaturation.) Near-black and clipped pixels,
    whose colour says little, are left out, and so are pixels whose brightness changed unlike the frame's.
    Where fewer than half the pixels are left, "most pixels" cannot be told, and the offset is infinite
    (no veto on :func:`grey_world_offset`): two generations of one seed often differ in layout, and a
    heavily clipped overexposure keeps few pixels with a colour.

    ``aligned`` marks pairs the registration found to show the same content in the same place. There the
    pixels are comparable by construction, and a pair whose pixels mostly changed brightness each their own
    way is a blend or an overlay, not a relighting: the offset comes from the pixels that are left (it
    abstains only under a tenth), counting only what no change of saturation explains
    (:func:`_offset_across`), and the frame's mean alone never decides. A second exposure blended over the
    scene moves the mean colour by the difference of the two scenes' colours, but no offset is shared by
    the pixels.
    """
    ca, ya = _chromaticity(grid_a)
    co, yo = _chromaticity(grid_o)
    xa, xo = grid_a.reshape(len(grid_a), 3, -1), grid_o.reshape(len(grid_o), 3, -1)
    valid = ((xa < 0.98) & (xo < 0.98)).all(axis=1) & (ya > 0.03) & (yo > 0.03)
    # a pixel whose brightness changed unlike the frame's shows another surface (an occluder, a second
    # scene), not the same one under another light
    lift = np.log((ya + 0.02) / (yo + 0.02))
    valid &= np.abs(lift - np.median(lift, axis=1, keepdims=True)) < 0.15
    d = ca - co  # N x 2 x P
    share = valid.mean(axis=1)
    offset = np.where(share >= 0.5, _scale_and_offset(d, co, valid, iterations), np.inf)
    if aligned is not None:
        blend = np.asarray(aligned, dtype=bool) & (share >= 0.1) & (share < 0.5)
        if blend.any():
            offset[blend] = _offset_across(d[blend], co[blend], valid[blend], iterations)
    return offset


def _scale_and_offset(d: np.ndarray, c: np.ndarray, valid: np.ndarray, iterations: int) -> np.ndarray:
    """|t| of the L1 fit ``d_p = s * c_p + t`` over the valid pixels (``d``, ``c``: N x 2 x P): one saturation
    scale and one offset, the same surfaces under another light. Reweighted least squares; the 3 x 3 normal
    equations are written out (``[s, t_1, t_2]``)."""
    w = valid.astype(np.float64)
    n = len(d)
    theta = np.zeros((n, 3))
    cc = (c * c).sum(axis=1)  # N x P
    cd = (c * d).sum(axis=1)
    for _ in range(iterations):
        sw, sc, sd = w.sum(axis=1), np.einsum("np,nkp->nk", w, c), np.einsum("np,nkp->nk", w, d)
        m = np.zeros((n, 3, 3))
        m[:, 0, 0] = (w * cc).sum(axis=1)
        m[:, 0, 1:] = m[:, 1:, 0] = sc
        m[:, 1, 1] = m[:, 2, 2] = sw
        b = np.concatenate([(w * cd).sum(axis=1)[:, None], sd], axis=1)
        theta = np.linalg.solve(m + 1e-6 * np.eye(3), b[..., None])[..., 0]
        r = d - theta[:, 0, None, None] * c - theta[:, 1:, None]
        w = valid / np.maximum(np.linalg.norm(r, axis=1), 0.01)
    return np.linalg.norm(theta[:, 1:], axis=1)


def _offset_across(d: np.ndarray, c: np.ndarray, valid: np.ndarray, iterations: int) -> np.ndarray:
    """|t| of the L1 fit of the changes across each pixel's own direction from grey only (all of the change
    for near-grey pixels): what no change of saturation, uniform or not, can explain. Used where most pixels
    changed each their own way (a blend), so only unambiguous evidence of a cast counts."""
    norm = np.linalg.norm(c, axis=1, keepdims=True)
    u = c / np.maximum(norm, 1e-9)
    radial = norm[:, 0] > 0.05  # chroma strong enough to have a direction
    # per pixel, the projector onto the directions a change of saturation cannot move it along
    proj = np.eye(2)[None, :, :, None] - radial[:, None, None, :] * u[:, :, None, :] * u[:, None, :, :]
    w = valid.astype(np.float64)
    t = np.zeros((len(d), 2))
    for _ in range(iterations):
        m = np.einsum("np,nijp->nij", w, proj) + 1e-6 * np.eye(2)
        t = np.linalg.solve(m, np.einsum("np,nijp,njp->ni", w, proj, d)[..., None])[..., 0]
        r = np.einsum("nijp,njp->nip", proj, d - t[:, :, None])
        w = valid / np.maximum(np.linalg.norm(r, axis=1), 0.01)
    return np.linalg.norm(t, axis=1)


@contextmanager
def _empty_bins_quiet():
    """Silence numpy's warnings on NaN reductions: an empty spectrum bin is NaN on purpose (a small image
    has no frequency there), and the statistics drop it."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _band_losses(spectrum_a: np.ndarray, spectrum_o: np.ndarray, direction: int) -> np.ndarray:
    """N x sectors x bands: ``direction`` times the log power change of every bin of two :func:`band_spectrum` features."""
    d = direction * (spectrum_a - spectrum_o)
    return d.reshape(len(d), BLUR_SECTORS, -1)


def spectral_smear(spectrum_a: np.ndarray, spectrum_o: np.ndarray, direction: int = -1) -> np.ndarray:
    """How one-sided a loss of fine detail is: in the two finest octave bands, the largest sector's loss
    less the smallest's (and never more than the largest), each loss capped at :data:`SMEAR_CAP`; the
    larger of the two bands.

    A smear along one direction multiplies the spectrum by a sinc along it and leaves the frequencies
    across it alone; a Gaussian or a lens disk lowers every sector alike and scores about 0, and so does
    a change of exposure or contrast, which scales every bin. Empty bins (a small image) are left out;
    with no bin at all the statistic is 0.
    """
    loss = np.minimum(_band_losses(spectrum_a, spectrum_o, direction)[:, :, SMEAR_BANDS], SMEAR_CAP)
    with _empty_bins_quiet():
        top = np.nanmax(loss, axis=1)
        smear = np.minimum(top, top - np.nanmin(loss, axis=1))
        return np.nan_to_num(np.nanmax(smear, axis=1), nan=0.0)


def isotropic_loss(spectrum_a: np.ndarray, spectrum_o: np.ndarray, direction: int = -1) -> np.ndarray:
    """The loss of power every direction sector shows in a band beyond what the coarsest non-empty band
    lost (its median over sectors), the largest over the finer bands.

    A lens out of focus or a Gaussian takes detail in every direction; a smear keeps the frequencies
    across its direction, so its smallest sector loss is about 0. Measuring from the coarsest band
    leaves out what scales every band alike (exposure, contrast). Empty bins (a small image) are left
    out; with fewer than two non-empty bands the statistic is 0.
    """
    loss = _band_losses(spectrum_a, spectrum_o, direction)
    with _empty_bins_quiet():
        band = np.nanmin(loss, axis=1)  # N x bands: the loss every sector of the band shows
        median = np.nanmedian(loss, axis=1)  # N x bands
        filled = ~np.isnan(median)
        first = np.argmax(filled, axis=1)  # the coarsest band with a bin
        coarse = median[np.arange(len(loss)), first]
        finer = np.arange(loss.shape[2])[None, :] > first[:, None]
        out = np.nanmax(np.where(finer, band - coarse[:, None], np.nan), axis=1)
        return np.nan_to_num(out, nan=0.0)


def _tone_residual(glow_a: np.ndarray, glow_o: np.ndarray, *, per_pixel: bool = False) -> np.ndarray:
    """N x planes x g x g: what is left of I_a's :func:`glow_field` planes after regressing each on I_o's
    with one tone curve per plane, a quadratic in I_o's value.

    A fade, a desaturation or an exposure change maps every cell of a plane by one curve, whatever its
    place in the frame. The curve is quadratic because exposure bends it: the highlights clip, so a
    brightened scene's brightest cells gain less than an affine map predicts, and the residual would
    otherwise sit wherever the scene was brightest (an edge, the centre) and read as a leak or a vignette.

    ``per_pixel`` applies the quadratic to every pixel rather than to the cell means: its regressors are
    I_o's cell means and cell means of squares, whose combination is exactly what such a curve makes of a
    cell. Without it a bending curve leaves a residual wherever cells are smooth, since a smooth cell's mean
    follows the curve and a textured one's falls below it (Jensen's inequality): an overexposed photo with a
    clear sky along its top edge then shows that edge warmer and brighter than the rest.
    """
    g = GLOW_GRID
    planes = GLOW_PLANES
    if not glow_a.shape[1:] == glow_o.shape[1:] == (2 * planes * g * g,):
        raise ValueError(f"expected two glow_field features of {2 * planes * g * g} values per image, got "
                         f"{glow_a.shape} and {glow_o.shape}")
    a = glow_a.reshape(len(glow_a), -1, g * g)[:, :planes]
    o = glow_o.reshape(len(glow_o), -1, g * g)

    def standardised(v):  # a well-posed fit
        return (v - v.mean(axis=2, keepdims=True)) / (v.std(axis=2, keepdims=True) + 1e-6)

    z = standardised(o[:, :planes])
    x = np.stack([np.ones_like(z), z, standardised(o[:, planes:]) if per_pixel else z * z], axis=-1)  # N x planes x cells x 3
    coef = np.linalg.solve(np.einsum("npki,npkj->npij", x, x) + 1e-9 * np.eye(3), np.einsum("npki,npk->npi", x, a)[..., None])
    return (a - (x @ coef)[..., 0]).reshape(len(glow_a), -1, g, g)


RADIAL_SECTORS = 8  # angular sectors about the frame's centre, each with its own falloff


def _radial_design(g: int = RADIAL_GRID, sectors: int = RADIAL_SECTORS) -> np.ndarray:
    """cells x sectors: each cell's squared distance from the frame's centre (1 at a corner, in fractions of each
    side) in its own sector's column, 0 in the others."""
    cy, cx = np.meshgrid((np.arange(g) + 0.5) / g - 0.5, (np.arange(g) + 0.5) / g - 0.5, indexing="ij")
    rho = (cy**2 + cx**2) / 0.5
    sector = np.floor((np.arctan2(cy, cx) + np.pi) / (2 * np.pi) * sectors).astype(int) % sectors
    return (rho.ravel()[:, None] * (sector.ravel()[:, None] == np.arange(sectors)[None, :])).astype(np.float64)


def radial_falloff(field_a: np.ndarray, field_o: np.ndarray) -> np.ndarray:
    """How far I_a's log value fell with distance from the centre in the sector that fell least, beyond one
    tone curve, times the square of the share of the change beyond the curve that the falloff explains, from two
    :func:`radial_value_field` features (negative: a vignette).

    The fit, per pair over the 16 x 16 cells: I_a's cell means of ``u = log(value + 0.02)`` on a quadratic
    tone curve of I_o's (its cell means of ``u`` and ``u**2``, exact for a curve applied to every pixel) plus,
    for each of 8 angular sectors, a coefficient on the squared distance from the centre. A fade or an exposure
    change is all curve. A vignette is all falloff and the same in every sector, whether the corners were bright
    or already dark (the statistic before 2026-12-06 evening, `corner_falloff`, read the corners' change in value, which a
    multiplicative falloff hardly moves on dark corners). Taking the sector that fell least keeps out light that
    changed on one side. The share keeps out changes that follow the scene rather than the lens: flat lighting
    lifts a dark subject in the middle of a bright ground, which every sector reads as a falloff, but only in
    the subject's shape, so a radial term explains about 0.6 of it against 0.96 or more of a vignette's.
    """
    g = RADIAL_GRID
    if not field_a.shape[1:] == field_o.shape[1:] == (2 * g * g,):
        raise ValueError(f"expected two radial_value_field features of {2 * g * g} values per image, got "
                         f"{field_a.shape} and {field_o.shape}")
    y = field_a[:, : g * g]
    o = field_o.reshape(len(field_o), 2, g * g)

    def standardised(v):  # a well-posed fit
        return (v - v.mean(axis=1, keepdims=True)) / (v.std(axis=1, keepdims=True) + 1e-6)

    tone = np.stack([np.ones_like(y), standardised(o[:, 0]), standardised(o[:, 1])], axis=-1)  # N x cells x 3
    radial = np.broadcast_to(_radial_design(), (len(y), g * g, RADIAL_SECTORS))
    x = np.concatenate([tone, radial], axis=-1)

    def residual(x):
        coef = np.linalg.solve(np.einsum("nki,nkj->nij", x, x) + 1e-9 * np.eye(x.shape[-1]),
                               np.einsum("nki,nk->ni", x, y)[..., None])[..., 0]
        return coef, y - np.einsum("nki,ni->nk", x, coef)

    _, r_tone = residual(tone)
    coef, r_both = residual(x)
    before, after = np.square(r_tone).sum(axis=1), np.square(r_both).sum(axis=1)
    share = np.clip(1.0 - after / np.maximum(before, 1e-12), 0.0, 1.0)
    return coef[:, 3:].max(axis=1) * share**2


LIGHT_FLOOR = 0.002  # added to linear luminance and value before the log, so black cells stay finite
LIGHT_SIGMA = 0.08  # the scene's light: its log luminance blurred over this fraction of the frame (Retinex's scale)
LIGHT_KNOTS = (0.5, 0.75, 0.9)  # quantiles of I_o's value where the tone curve may bend (an overexposure's clip)
# The share of what the curve leaves that the scene's light must explain before a change counts as flattened light.
# Flat light explains 0.6-1.0 of it; an occluder, a double exposure or a leak correlates with any smooth field by
# chance, up to about 0.3.
LIGHT_SHARE = 0.4


@cache
def _light_design(g: int = LIGHT_GRID) -> tuple[np.ndarray, np.ndarray]:
    """The blur over the grid's rows (g x g, reflected at the edges) and the spatial terms (cells x 4: x, y and
    their squares, about the centre): a leak or a vignette is a smooth field of its own shape."""
    i = np.arange(g)
    sigma = LIGHT_SIGMA * g
    k = sum(np.exp(-0.5 * (d / sigma) ** 2) for d in (i[:, None] - i[None, :], i[:, None] + i[None, :] + 1,
                                                       2 * g - 1 - i[:, None] - i[None, :]))
    cy, cx = np.meshgrid((i + 0.5) / g - 0.5, (i + 0.5) / g - 0.5, indexing="ij")
    return k / k.sum(axis=1, keepdims=True), np.stack([cx.ravel(), cy.ravel(), cx.ravel() ** 2, cy.ravel() ** 2], 1)


def _light_planes(field: np.ndarray, encoded: bool) -> tuple[np.ndarray, ...]:
    """Luminance and value (log of linear light, or sRGB-encoded) and chromaticity (R and B over the luminance)
    of :func:`light_field` cells: four N x cells planes."""
    lin = field.reshape(len(field), 3, -1)
    lum = _LUMA.astype(np.float64) @ lin
    chroma = lin[:, [0, 2]] / (lum[:, None] + LIGHT_FLOOR)
    if encoded:
        enc = linear_to_srgb(lin)
        return _LUMA.astype(np.float64) @ enc, enc.max(axis=1), chroma[:, 0], chroma[:, 1]
    return np.log(lum + LIGHT_FLOOR), np.log(lin.max(axis=1) + LIGHT_FLOOR), chroma[:, 0], chroma[:, 1]


def _flattening(field_a: np.ndarray, field_o: np.ndarray, encoded: bool) -> np.ndarray:
    """:func:`light_flattening` on one plane: log linear light, or sRGB-encoded values when ``encoded``."""
    g = LIGHT_GRID
    y = _light_planes(field_a, encoded)[0]
    lum, val, cr, cb = _light_planes(field_o, encoded)
    knots = np.quantile(val, LIGHT_KNOTS, axis=1).T  # N x knots
    hinges = np.maximum(val[:, :, None] - knots[:, None, :], 0.0)
    blur, space = _light_design()
    scene = (blur @ lum.reshape(-1, g, g) @ blur.T).reshape(len(y), -1)
    scene = scene - scene.mean(axis=1, keepdims=True)
    curve = np.concatenate([np.stack([lum, lum**2, val, val**2, lum * val, cr, cb], axis=-1), hinges,
                            np.broadcast_to(space, (len(y), g * g, space.shape[1]))], axis=-1)
    curve = (curve - curve.mean(axis=1, keepdims=True)) / (curve.std(axis=1, keepdims=True) + 1e-9)
    base = np.concatenate([np.ones_like(y)[..., None], curve], axis=-1)
    full = np.concatenate([base, scene[..., None]], axis=-1)

    def fit(x):  # batched matrix products (BLAS), not einsum: many times faster at 2304 cells
        xt = np.swapaxes(x, 1, 2)
        coef = np.linalg.solve(xt @ x + 1e-9 * np.eye(x.shape[-1]), xt @ y[..., None])
        return coef[..., 0], y - (x @ coef)[..., 0]

    _, r_base = fit(base)
    coef, r_full = fit(full)
    before, after = np.square(r_base).sum(axis=1), np.square(r_full).sum(axis=1)
    share = np.clip(1.0 - after / np.maximum(before, 1e-12), 0.0, 1.0)
    return np.where(share >= LIGHT_SHARE, np.maximum(coef[:, -1], -1.0) * share**2, 0.0)


def light_flattening(field_a: np.ndarray, field_o: np.ndarray) -> np.ndarray:
    """How much of I_o's large-scale light I_a took away, beyond what a curve of each cell's own values explains,
    times the square of the share of that change it explains, from two :func:`light_field` features (negative:
    flatter light; -1 is all of it).

    The fit, per pair over the 48 x 48 cells: I_a's luminance on a curve of I_o's (quadratic in its luminance and
    value, bent at three quantiles of its value, linear in its chromaticity) plus a smooth field of the frame's
    own shape (x, y and their squares), and then on I_o's log luminance blurred over 8% of the frame (the scene's
    light, as in Retinex). A tone curve, an overexposure's clip, a desaturation and a white-balance error are all
    curve; a vignette or a leak from one edge is mostly the smooth field; noise and a double exposure follow
    neither. Flat light lowers the light where the scene was lit and raises it in the shade, so its change follows
    the blurred light, with a negative coefficient, and explains nearly all of what the curve leaves; a change
    whose share is under :data:`LIGHT_SHARE` reads 0, since anything correlates a little with a smooth field. The fit is
    made on the log of linear light, where Retinex's gain is exact, and on sRGB-encoded values, where light
    added in shadows is, and the flatter reading counts. A scene with no large-scale light left to flatten (a
    uniform wall) reads about 0.
    (The statistic until 2026-12-06, late, `coarse_drop`, read the drop of the coarse contrast band beyond the
    fine one, which an overexposure's clip, a double exposure and noise also show.)
    """
    n = 3 * LIGHT_GRID * LIGHT_GRID
    if not field_a.shape[1:] == field_o.shape[1:] == (n,):
        raise ValueError(f"expected two light_field features of {n} values per image, got {field_a.shape} and "
                         f"{field_o.shape}")
    return np.minimum(_flattening(field_a, field_o, False), _flattening(field_a, field_o, True))


# How far a place's mean light (sRGB luminance) must move for a surface to count as laid over it: an occluder
# (0.05-0.2) over anything lighter than about a quarter, or darker than a twentieth, moves it further; JPEG, a 2%
# shift or a resize move a cell's mean far less.
SURFACE_CHANGE = 0.05
# The share of a place's texture a laid surface may leave, beyond what the change of its light explains: a fade
# keeps its factor of it (0.2 at the strongest the checks apply), a change of light keeps it in proportion to the
# light; the inside of an occluder has none.
SURFACE_TEXTURE = 0.1


def laid_surface(cells_a: np.ndarray, cells_o: np.ndarray) -> np.ndarray:
    """The share of the frame where a dark, featureless surface was laid, from two :func:`dark_flat_cells`
    features: over the cells whose mean light moved by at least :data:`SURFACE_CHANGE` and whose texture fell
    below :data:`SURFACE_TEXTURE` of I_o's (times the fall of the light, where it fell), the mean of I_a's dark,
    featureless fraction; 0 elsewhere.

    The statistic until 2026-12-07 (``max_difference`` of the frame's dark, featureless fractions at five
    darkness levels) read the growth of the whole frame's dark, featureless area, which a fade of a dark scene (its
    faint texture goes under the featureless bar while its pixels stay dark) and a flat light on a dim one (lit
    places darken and their steps shrink with them) also show. A cell with no texture at all in I_o cannot lose
    any, so an occluder over a perfectly flat ground (a synthetic one; photographs have noise) counts only at its
    textured edges there.
    """
    g = OCCLUSION_GRID * OCCLUSION_GRID
    if cells_a.shape != cells_o.shape or cells_a.shape[1] != 3 * g:
        raise ValueError(f"expected two dark_flat_cells features of 3 x {g} cells, got {cells_a.shape} and "
                         f"{cells_o.shape}")
    (da, ya, sa), (_, yo, so) = (c.reshape(len(c), 3, g).transpose(1, 0, 2) for c in (cells_a, cells_o))
    changed = np.abs(ya - yo) >= SURFACE_CHANGE
    lost = sa < SURFACE_TEXTURE * so * np.minimum(ya / np.maximum(yo, 1e-6), 1.0)
    return np.where(changed & lost, da, 0.0).mean(axis=1)


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


def quadrant_agreement(q_a: np.ndarray, q_o: np.ndarray) -> np.ndarray:
    """The largest ``t`` such that the change ``q_a - q_o`` of every quadrant's measurement (N x 4) is at least
    ``t`` in one direction, the same for all four; 0 where the quadrants disagree in sign.

    Lateral chromatic aberration changes every quadrant's red-vs-blue magnification alike
    (:func:`~pluralign.rewards.verifiers.lateral_ca_quadrants`). A blur changes what the scene's colour
    edges add to each quadrant's fit, by different amounts and often in different directions, and over
    the whole frame those can add up to a fringe that is not there.
    """
    d = q_a - q_o
    return np.maximum(np.maximum(d.min(axis=1), -d.max(axis=1)), 0.0)


def edge_glow(glow_a: np.ndarray, glow_o: np.ndarray) -> np.ndarray:
    """How much warmer and brighter I_a became at one edge of the frame than at the opposite edge, from
    two :func:`glow_field` features: the largest over the four edges of the change of ``(R - B) + luma``
    in the outer quarter less that in the opposite quarter (and at most the gain at that edge, less any
    darkening of the opposite edge), after what one tone curve per plane, applied to every pixel, explains
    (:func:`_tone_residual`). A light leak fogs one edge; a colour cast, an exposure change, a fade or a vignette changes opposite
    edges alike, or maps every cell by one curve, and scores about 0.
    """
    g = GLOW_GRID
    # what one tone curve per plane explains is not a leak: regress I_a's cells on I_o's, keep the residual
    d = _tone_residual(glow_a, glow_o, per_pixel=True)[:, :2].sum(axis=1)
    raw = (glow_a - glow_o).reshape(len(glow_a), -1, g, g)[:, :2].sum(axis=1)
    q = max(1, g // 4)

    def edges(x):
        return x[:, :q].mean(axis=(1, 2)), x[:, -q:].mean(axis=(1, 2)), x[:, :, :q].mean(axis=(1, 2)), x[:, :, -q:].mean(axis=(1, 2))

    (top, bottom, left, right), gains = edges(d), edges(raw)
    # the lit edge itself must gain light, before and after the regression: a dark occluder at the
    # opposite edge is not a leak. Stray light only adds: where the opposite edge darkened, the light was
    # moved from one side to the other (flat light lifting the shadows and dimming the highlights), and
    # that darkening is taken off
    opposite = (1, 0, 3, 2)  # bottom, top, right, left
    sides = [np.minimum(np.minimum(e, e - opp), gains[i]) - np.maximum(-gains[opposite[i]], 0.0)
             for i, (e, opp) in enumerate(((top, bottom), (bottom, top), (left, right), (right, left)))]
    return np.max(np.stack(sides, axis=1), axis=1)


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

    Where a row also requests an attribute whose physics implies this one (``taxonomy.IMPLIES``:
    underexposure lowers contrast), the threshold is the one calibrated on images showing only the
    implying attribute (:attr:`Rule.given`), so the implied attribute counts only when it shows beyond
    what the other one explains.

    ``attributes`` is one attribute name for all pairs or, per pair, a name or a list of names.
    Attributes without a rule (prompt-only ones such as ``grief``) are skipped.
    """
    rules = load_rules() if rules is None else rules
    a, o = _as_list(images_a), _as_list(images_o)
    _check_pairs(a, o)
    rows = _per_row(attributes, len(a))
    used = sorted({x for r in rows for x in r if x in rules})
    if not used:  # only rule-less (judge-only) attributes: nothing to register or measure
        return {}
    for attr in used:
        if np.isnan(rules[attr].threshold):
            raise RuntimeError(
                f"no calibrated threshold for {attr!r} in {THRESHOLDS_PATH}; run `python -m pluralign.rewards.calibrate`"
            )
    stats = paired_statistics({x: rules[x] for x in used}, a, o)
    out = {}
    for attr in used:
        # a row that also requests an attribute implying this one is held to the stricter threshold
        thresholds = np.array([rules[attr].threshold_for(r) for r in rows])
        mask = np.array([attr in r for r in rows])
        out[attr] = np.where(mask, stats[attr] - thresholds, np.nan)
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
