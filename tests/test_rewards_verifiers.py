"""Verifiers measure what they claim, and the shipped paired rules hold on held-out photos."""

import numpy as np
import pytest
from PIL import Image

from pluralign.rewards import calibrate as C
from pluralign.rewards.rules import RULE_SPECS, adherence_scores, adherence_table, adheres, load_rules
from pluralign.rewards.verifiers import VERIFIERS, measure, to_array


@pytest.fixture(scope="module")
def photo():
    return C._resize_to(C.load_photo("astronaut"), 128)


def test_every_verifier_is_finite_on_all_sizes_and_inputs(photo):
    for side in (32, 64, 256):
        x = C._resize_to(photo, side)
        pil = Image.fromarray((x * 255).round().astype(np.uint8))
        for name, fn in VERIFIERS.items():
            v = fn(x)
            assert np.isfinite(v), (name, side)
            assert abs(fn(pil) - v) < 0.05 * abs(v) + 0.02, (name, side)


def test_measure_matches_single_image_calls(photo):
    imgs = [photo, C._resize_to(photo, 64), photo[:, ::-1]]
    out = measure(imgs)
    for name, fn in VERIFIERS.items():
        np.testing.assert_allclose(out[name], [fn(im) for im in imgs], rtol=1e-4, atol=1e-6)


def test_known_values():
    grey = np.full((64, 64, 3), 0.5, np.float32)
    assert VERIFIERS["brightness"](grey) == pytest.approx(0.5, abs=1e-4)
    assert VERIFIERS["contrast"](grey) == pytest.approx(0.0, abs=1e-4)
    assert VERIFIERS["colorfulness"](grey) == pytest.approx(0.0, abs=1e-4)
    assert VERIFIERS["color_cast"](grey) == pytest.approx(0.0, abs=1e-4)
    rng = np.random.default_rng(0)
    noisy = np.clip(grey + rng.normal(0, 0.05, grey.shape[:2])[..., None], 0, 1).astype(np.float32)
    assert VERIFIERS["noise"](noisy) == pytest.approx(0.05, rel=0.15)  # the sigma of i.i.d. luminance noise
    white = np.ones((32, 32, 3), np.float32)
    assert VERIFIERS["highlight_clipping"](white) == 1.0
    assert VERIFIERS["shadow_clipping"](white) == 0.0
    # a centred square vs the same square in a corner
    canvas = np.zeros((64, 64, 3), np.float32)
    centre, corner = canvas.copy(), canvas.copy()
    centre[24:40, 24:40] = 1
    corner[0:16, 0:16] = 1
    assert VERIFIERS["subject_offcenter"](centre) < 0.05 < 0.5 < VERIFIERS["subject_offcenter"](corner)
    assert VERIFIERS["subject_size"](centre) == pytest.approx(16 * 16 / 64 / 64, rel=0.2)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="H x W x 3"):
        to_array(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_array(np.full((4, 4, 3), 200.0))
    with pytest.raises(KeyError, match="no verifier rule"):
        adheres(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), "grief")


def test_rules_agree_with_taxonomy():
    from pluralign.data.taxonomy import ATTRIBUTES

    for name, attr in ATTRIBUTES.items():
        if attr.verifier is not None:
            assert name in RULE_SPECS, name
            verifier, _, direction, _ = RULE_SPECS[name]
            assert (verifier, direction) == (attr.verifier, attr.direction) or name == "film_grain", name
        assert attr.judge_only == (name not in RULE_SPECS), name  # a rule and only a rule lifts "judge only"
    assert all(np.isfinite(r.threshold) for r in load_rules().values())


def test_every_dimension_maps_to_the_rules_that_measure_it_or_is_judge_only():
    from pluralign.data.taxonomy import ATTRIBUTES, DIMENSION_MEASURES, DIMENSIONS

    assert set(DIMENSION_MEASURES) == set(DIMENSIONS)
    for dim, members in DIMENSION_MEASURES.items():
        assert any(a.dimension == dim for a in ATTRIBUTES.values()), dim  # "background" too has an attribute
        for name in members:
            assert name in RULE_SPECS and ATTRIBUTES[name].dimension == dim, (dim, name)
    # the two the seed schema used to score wrongly: ugly colours are not chromatic aberration, rough
    # details are not film grain; no rule measures either, so a judge must
    assert DIMENSION_MEASURES["color_aesthetic"] == DIMENSION_MEASURES["detail_refinement"] == ()


def test_rows_asking_only_for_judge_only_attributes_register_nothing(photo, monkeypatch):
    """The eval asks the toy judge about decay or grief through the same scorer that runs the rules: with no
    rule to read, registering every pair was a third of the eval's metric time for nothing."""
    from pluralign.rewards import rules as R

    def fail(*args, **kwargs):
        raise AssertionError("registered a pair that no rule reads")

    monkeypatch.setattr(R, "register", fail)
    assert adherence_table([photo, photo], [photo, photo], [["grief"], ["decay", "bleak"]]) == {}
    assert np.isnan(adherence_scores([photo], [photo], [["grief"]])).all()
    with pytest.raises(AssertionError, match="registered"):  # a rule-measured attribute still registers
        adherence_table([photo], [photo], [["grief", "blurry"]])


def test_adherence_batched_layout(photo):
    from pluralign.data.degradations import degrade

    dark = degrade(photo, "underexposure", 0.8, seed=0)
    table = adherence_table([dark, photo], [photo, photo], [["underexposed", "grief"], "blurry"])
    assert set(table) == {"underexposed", "blurry"}
    assert table["underexposed"][0] > 0 and np.isnan(table["underexposed"][1])
    assert table["blurry"][1] < 0 and np.isnan(table["blurry"][0])
    scores = adherence_scores([dark, photo], [photo, photo], ["underexposed", "grief"])
    assert scores[0] > 0 and np.isnan(scores[1])
    assert adheres(dark, photo, "underexposed") and not adheres(photo, photo, "underexposed")


# The calibration keeps every rule at >= 95% accuracy on the calibration photos while it buys
# specificity; on the held-out photos each must keep the 90%. Attributes below that, with the
# measured accuracy and the reason (see docs/rewards.md):
HELDOUT_TARGET = 0.90
BELOW_TARGET: dict[str, tuple[float, str]] = {
    # the calibration also draws 32 px images: a severity-0.3 blur there (sigma ~0.4 px) is softer than the
    # 0.7x resize round trip that must not count; from 64 px up the independent check finds every blur
    "blurry": (0.838, "32 px blurs weaker than a resize round trip"),
}


# 40 positives a rule and 120 shared negatives: a rule at the 90% passes the 80% below with probability
# 0.98, and one at 10% false positives fails the 5% bound with probability 0.96 (binomial), at two thirds of the
# time 60 and 200 took. The full-size check is `python -m pluralign.rewards.holdout`; calibrate records it.
HELDOUT_CFG = C.CalibrationConfig(n_pos=40, n_neg=120, seed=123)
# Four groups of five rules, so the pytest workers share the held-out check's time.
HELDOUT_GROUPS = [sorted(RULE_SPECS)[i::4] for i in range(4)]


@pytest.mark.slow
@pytest.mark.parametrize("group", range(len(HELDOUT_GROUPS)))
def test_heldout_accuracy(group):
    rules = load_rules()
    for j, attr in enumerate(HELDOUT_GROUPS[group]):
        # each rule on its own positives only (the cross table is the held-out command's job; the one
        # negative the config needs is not looked at)
        pos, _ = C.pair_statistics(C.HELDOUT_PHOTOS, [attr], C.CalibrationConfig(n_pos=HELDOUT_CFG.n_pos, n_neg=1),
                                   123 + 10 * group + j, {attr: rules[attr]}, progress=False)
        acc = float((pos[attr] > rules[attr].threshold).mean())
        assert len(pos[attr]) == HELDOUT_CFG.n_pos, attr
        assert acc >= (0.7 if attr in BELOW_TARGET else 0.8), (attr, acc)


@pytest.mark.slow
def test_heldout_false_positives():
    rules = load_rules()
    _, neg = C.pair_statistics(C.HELDOUT_PHOTOS, [], HELDOUT_CFG, 123, rules, progress=False)
    for attr, rule in rules.items():
        fpr = float((neg[attr] > rule.threshold).mean())
        assert len(neg[attr]) == HELDOUT_CFG.n_neg
        assert fpr <= (0.075 if attr in BELOW_TARGET else 0.05), (attr, fpr)


def test_a_thresholds_file_calibrated_for_another_statistic_is_refused(tmp_path):
    """A named file (a candidate calibration) is input: a ValueError, one line at the command line."""
    import json

    from pluralign.rewards.rules import THRESHOLDS_PATH

    data = json.loads(THRESHOLDS_PATH.read_text())
    data["attributes"]["chromatic_aberration"]["statistic"] = "abs_difference"  # the rule's statistic until 2026-12
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="chromatic_aberration.*'abs_difference'.*'quadrant_agreement'.*calibrate"):
        load_rules(path)


def test_every_rule_reads_the_shipped_probe_as_it_did_when_calibrated():
    """A threshold fits one statistic's values. When a rule's code changes under the same statistic name, its values
    on the fixed probe pairs change too, and the shipped thresholds must be recalibrated before they are trusted.

    The tolerance is a hundredth of the rule's threshold: float rounding of another CPU, BLAS or image library moves
    a value by well under a thousandth of it, while a change of what the statistic computes moves it by more."""
    import json

    from pluralign.rewards.rules import THRESHOLDS_PATH

    data = json.loads(THRESHOLDS_PATH.read_text())
    probe = data["config"]["probe"]
    assert (probe["photo"], tuple(probe["sizes"]), probe["severity"]) == (C.PROBE_PHOTO, C.PROBE_SIZES, C.PROBE_SEVERITY), \
        "the probe's settings changed: run `python -m pluralign.rewards.calibrate` to record the new probe"
    rules = load_rules()
    names, now = C.probe_statistics(rules)
    assert probe["pairs"] == names, "the probe pairs changed: run `python -m pluralign.rewards.calibrate`"
    for attr, row in data["attributes"].items():
        tol = 1e-2 * abs(rules[attr].threshold)
        changed = [n for n, was, is_ in zip(names, row["probe"], now[attr], strict=True) if abs(is_ - was) > tol]
        assert not changed, (f"{attr}: the rule's statistic now reads other values on the probe pairs {changed} than "
                             "when thresholds.json was calibrated; run `python -m pluralign.rewards.calibrate`")


def test_probe_pairs_show_their_attribute():
    """The probe is only a fingerprint if it exercises each rule: at every probe size every rule fires on its own
    degradation's pair, and the benign edits do change the image. (Whether a rule stays quiet on benign edits is the
    held-out tests' question, asked on hundreds of pairs: film grain fires on the 96 px JPEG re-save here.)"""
    from pluralign.rewards.rules import paired_statistics

    names, arrays_a, arrays_o = C.probe_pairs()
    rules = load_rules()
    stats = paired_statistics(rules, arrays_a, arrays_o)  # what probe_statistics computes, on the same pairs
    for size in C.PROBE_SIZES:
        for b in C.PROBE_BENIGN:
            i = names.index(f"{b}@{size}")
            assert np.abs(arrays_a[i] - arrays_o[i]).max() > 0.01, (b, size)
        for attr, rule in rules.items():
            values = dict(zip(names, stats[attr], strict=True))
            assert values[f"{attr}@{size}"] > rule.threshold, (attr, size, values[f"{attr}@{size}"], rule.threshold)


def test_shipped_table_records_heldout_metrics():
    import json

    from pluralign.rewards.rules import THRESHOLDS_PATH

    data = json.loads(THRESHOLDS_PATH.read_text())
    assert data["config"]["sev_min"] == 0.3 and 32 in data["config"]["sizes"]
    for attr, row in data["attributes"].items():
        assert row["heldout"]["fpr"] <= 0.05, attr
        assert row["heldout"]["accuracy"] >= (BELOW_TARGET[attr][0] - 0.005 if attr in BELOW_TARGET else HELDOUT_TARGET), attr


# ----------------------------------------------------------------------------- the rebuilt measurements


def _grey_photo(side=128):
    """A greyscale crop (R = G = B), so a channel regression has gain exactly 1 on green."""
    x = C._resize_to(C.load_photo("camera"), side)
    return np.ascontiguousarray(x[:side, :side])


def test_noise_counts_colour_speckle_that_texture_hides_in_luminance(photo):
    from pluralign.rewards.verifiers import Batch, noise_sigmas

    rng = np.random.default_rng(1)
    grey = np.full((64, 64, 3), 0.5, np.float32)
    speckle = np.clip(grey + rng.normal(0, 0.04, grey.shape), 0, 1).astype(np.float32)  # independent per channel
    s = noise_sigmas(Batch(speckle[None]))[0]
    # luminance averages the three channels' noise; the opponent planes keep it
    assert s[0] == pytest.approx(0.04 * np.sqrt((np.array([0.2126, 0.7152, 0.0722]) ** 2).sum()), rel=0.15)
    assert s[1] == pytest.approx(0.04 * np.sqrt(2), rel=0.15)
    assert VERIFIERS["noise"](speckle) == pytest.approx(np.hypot(s[0], 0.5 * (s[1] + s[2])), rel=1e-5)
    # on a photo the same speckle raises the measure far above the clean value
    noisy = np.clip(photo + rng.normal(0, 0.02, photo.shape), 0, 1).astype(np.float32)
    assert VERIFIERS["noise"](noisy) > 2 * VERIFIERS["noise"](photo)


def test_grain_reads_sigma_of_white_noise_and_rises_with_film_grain(photo):
    from pluralign.data.degradations import degrade

    rng = np.random.default_rng(2)
    grey = np.full((96, 96, 3), 0.5, np.float32)
    noisy = np.clip(grey + rng.normal(0, 0.03, grey.shape[:2])[..., None], 0, 1).astype(np.float32)
    assert VERIFIERS["grain"](noisy) == pytest.approx(0.03, rel=0.1)
    values = [VERIFIERS["grain"](degrade(photo, "film_grain", s, seed=0)) for s in (0.0, 0.3, 0.6, 1.0)]
    assert values == sorted(values) and values[1] > 1.5 * values[0]


def test_blockiness_sees_the_8px_grid_only_where_it_is():
    rng = np.random.default_rng(3)
    blocks = np.kron(rng.random((8, 8)), np.ones((8, 8))).astype(np.float32)  # constant 8x8 tiles
    img = np.repeat(blocks[..., None], 3, axis=-1)
    on_grid = VERIFIERS["blockiness"](img)
    off_grid = VERIFIERS["blockiness"](np.ascontiguousarray(np.roll(img, 4, axis=(0, 1))))
    assert on_grid > 2.0  # aligned blocks are flat, straddling blocks carry every step
    assert off_grid < -2.0  # the same tiles shifted by half a block: the aligned tiling straddles them
    smooth = np.repeat(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], 64, axis=0).repeat(3, axis=2)
    assert abs(VERIFIERS["blockiness"](smooth)) < 0.05  # a ramp has no grid


def test_blockiness_rises_with_jpeg_quality_loss(photo):
    from pluralign.data.degradations import degrade

    clean = VERIFIERS["blockiness"](photo)
    q95 = VERIFIERS["blockiness"](C.benign(photo, photo, None, 128, "jpeg95", None))
    q60 = VERIFIERS["blockiness"](degrade(photo, "jpeg_blocking", 0.35, seed=0))
    assert abs(clean) < 0.1 and q95 < 0.1 < q60


def test_lateral_ca_recovers_the_magnification_and_ignores_colour_gain():
    from pluralign.data.degradations import degrade
    from pluralign.rewards.verifiers import Batch, lateral_ca

    x = _grey_photo(128)
    k = lateral_ca(Batch(np.stack([x, degrade(x, "chromatic_aberration", 0.5, seed=0)])))
    assert np.abs(k[0]).max() < 0.05  # R = G = B: no misregistration
    # the degradation magnifies red and shrinks blue by 1.5% x severity = 0.75%
    assert k[1, 0] == pytest.approx(0.75, rel=0.3) and k[1, 1] == pytest.approx(-0.75, rel=0.3)
    tinted = np.clip(x * np.array([1.0, 0.8, 0.6], np.float32), 0, 1)  # a cast, not a misregistration
    assert np.abs(lateral_ca(Batch(tinted[None]))[0]).max() < 0.05


@pytest.mark.parametrize("angle", [-20.0, -8.0, 12.0])
def test_rotation_estimate_recovers_the_angle_and_ignores_a_shifted_crop(angle):
    from pluralign.rewards.rules import estimate_rotation_spectra
    from pluralign.rewards.verifiers import Batch, rotation_spectrum

    photo = C.load_photo("coffee")
    view, box = C.sample_view(photo, 128, np.random.default_rng(0), box=(40, 100, 300, 360))
    rotated = np.asarray(Image.fromarray((view * 255).astype(np.uint8)).rotate(angle, Image.Resampling.BILINEAR),
                         np.float32) / 255
    shifted = C.benign(photo, view, box, 128, "shift", np.random.default_rng(5))
    spec = rotation_spectrum(Batch(np.stack([view, rotated, shifted])))
    est = estimate_rotation_spectra(spec[1:], spec[[0, 0]])
    assert abs(abs(est[0]) - abs(angle)) < 1.0
    assert abs(est[1]) < 1.0


def test_an_occluder_on_a_dim_flat_scene_is_found_though_the_scene_was_dark_and_featureless_already():
    from pluralign.data.degradations import degrade
    from pluralign.rewards.rules import adheres
    from pluralign.rewards.verifiers import Batch, _occlusion

    rng = np.random.default_rng(4)
    dim = np.clip(0.26 + 0.01 * rng.standard_normal((96, 96, 1)), 0, 1).repeat(3, axis=2).astype(np.float32)
    blocked = degrade(dim, "obstruction", 0.6, seed=1)
    f = _occlusion(Batch(np.stack([dim, blocked])))
    assert f[0] > 0.95 and f[1] - f[0] < 0.05  # the whole dim scene already counts as dark and featureless ...
    # ... but the occluder lays a darker surface with none of the scene's faint texture, place by place
    assert adheres(blocked, dim, "obstructed") and not adheres(dim, dim, "obstructed")


def test_an_occluder_lays_a_surface_that_a_fade_a_flat_light_or_an_exposure_does_not():
    from pluralign.data.degradations import degrade
    from pluralign.rewards import reference_degradations as R
    from pluralign.rewards.rules import _features, laid_surface, load_rules

    threshold = load_rules()["obstructed"].threshold
    x = C._resize_to(C.load_photo("astronaut"), 128)
    dim = (x**2.2).astype(np.float32)  # a dark scene: where the whole-frame growth read fades and flat light
    rng = np.random.default_rng(0)
    for scene in (x, dim):
        occluders = [R.obstructed(scene, 1.0, rng), degrade(scene, "obstruction", 0.8, seed=1)]
        others = {"fade": R.low_contrast(scene, 1.0, rng), "flat light": R.flat_lighting(scene, 1.0, rng),
                  "underexposure": R.underexposed(scene, 1.0, rng), "vignette": R.vignette(scene, 1.0, rng),
                  "blur": R.blurry(scene, 1.0, rng), "noise": R.noisy(scene, 1.0, rng),
                  "double exposure": R.double_exposure(scene, 1.0, rng), "identity": scene}
        imgs = [*occluders, *others.values()]
        f = _features([*imgs, scene], {"_dark_flat_cells"})["_dark_flat_cells"]
        stat = laid_surface(f[:-1], np.repeat(f[-1:], len(imgs), axis=0))
        assert (stat[:2] > 0.1).all(), stat[:2]
        for name, v in zip(others, stat[2:]):
            assert v < threshold, (name, v)


def test_measure_does_not_depend_on_the_chunk_size(photo):
    imgs = [photo, photo[::-1].copy(), C._resize_to(photo, 64), photo[:, ::-1].copy(), photo * 0.5]
    a, b = measure(imgs, chunk=1), measure(imgs, chunk=4)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_the_spectral_blur_statistics_tell_a_smear_from_a_lens_blur(photo):
    from pluralign.data.degradations import degrade
    from pluralign.rewards.rules import isotropic_loss, spectral_smear
    from pluralign.rewards.verifiers import Batch, band_spectrum

    x = photo
    pad = np.pad(x, ((0, 0), (2, 2), (0, 0)), mode="edge")
    smear = np.ascontiguousarray(sum(pad[:, i : i + x.shape[1]] for i in range(5)) / 5)  # 5 px along x
    lens = degrade(x, "defocus_blur", 0.6, seed=0)
    darker = x * 0.6  # scales every bin alike: neither a smear nor a blur
    s = band_spectrum(Batch(np.stack([x, smear, lens, darker])))
    loss = -(s[1] - s[0]).reshape(-1, 4)  # sectors x bands; sector 0 holds the frequencies along x
    assert loss[0, 3] > 2.0 and loss[6, 3] < 0.3  # the smear takes the x frequencies, the y ones survive
    smear_stat = spectral_smear(s[1:], s[[0, 0, 0]])
    iso_stat = isotropic_loss(s[1:], s[[0, 0, 0]])
    assert smear_stat[0] > 2.0 and smear_stat[1] < 1.5 and abs(smear_stat[2]) < 0.05
    assert iso_stat[1] > 1.0 and iso_stat[0] < 0.3 and abs(iso_stat[2]) < 0.05
    assert adheres(degrade(x, "motion_blur", 0.5, seed=3), x, "motion_blur") and not adheres(lens, x, "motion_blur")
    assert adheres(lens, x, "defocused") and not adheres(smear, x, "defocused")


@pytest.mark.parametrize("side", [16, 32, 64])
def test_the_spectral_blur_statistics_read_no_blur_into_a_tone_change_of_a_small_image(side):
    from pluralign.rewards.rules import isotropic_loss, spectral_smear
    from pluralign.rewards.verifiers import Batch, band_spectrum

    # up to 64 px the coarsest band has empty bins: they must drop out, not read as a loss of 0
    x = C._resize_to(C.load_photo("chelsea"), side)
    faded = np.clip((x - 0.5) * 0.4 + 0.5, 0, 1).astype(np.float32)
    s = band_spectrum(Batch(np.stack([x, x * 0.3, faded])))
    assert np.isnan(s[0]).any()  # empty bins up to a side of 64 (none from 80)
    for stat in (isotropic_loss(s[1:], s[[0, 0]]), spectral_smear(s[1:], s[[0, 0]])):
        assert np.isfinite(stat).all() and np.abs(stat).max() < 0.05


def test_a_white_balance_gain_moves_every_cells_log_chromaticity_alike():
    from pluralign.rewards.reference_degradations import linear_to_srgb
    from pluralign.rewards.rules import _chromaticity, log_chromaticity
    from pluralign.rewards.verifiers import srgb_to_linear

    rng = np.random.default_rng(0)
    grid = rng.uniform(0.05, 0.85, size=(1, 3, 256))  # cells of every colour and saturation, none clipped
    cast = linear_to_srgb(srgb_to_linear(grid) * np.array([1.3, 1.0, 0.75])[None, :, None])  # one gain per channel

    def spread_over_shift(d):  # how unevenly the cells moved, relative to how far they moved on average
        mean = d.mean(axis=2, keepdims=True)
        return np.linalg.norm(d - mean, axis=1).mean() / np.linalg.norm(mean)

    log_d = log_chromaticity(cast.reshape(1, -1))[0] - log_chromaticity(grid.reshape(1, -1))[0]
    srgb_d = _chromaticity(cast.reshape(1, -1))[0] - _chromaticity(grid.reshape(1, -1))[0]
    assert spread_over_shift(log_d) < 0.25  # one offset, but for the floor that keeps dark channels out of the log
    assert spread_over_shift(srgb_d) > 1.5 * spread_over_shift(log_d)  # sRGB chroma: each cell by its own amount


def test_the_cast_rule_needs_most_cells_to_move_not_only_the_mean():
    from pluralign.rewards.reference_degradations import degrade as reference_degrade
    from pluralign.rewards.rules import _features, log_cast_offset, log_chromaticity, log_grey_world, log_pixel_offset

    rule = load_rules()["color_cast"]
    x = C._resize_to(C.load_photo("chelsea"), 128)  # an orange cat: a dark occluder pulls the mean off orange
    occluded = reference_degrade(x, "obstructed", 0.8, np.random.default_rng(0))
    cast = reference_degrade(x, "color_cast", 0.5, np.random.default_rng(0))
    muted = x.max(axis=2, keepdims=True) - 0.3 * (x.max(axis=2, keepdims=True) - x)  # saturation x 0.3
    f = _features([occluded, cast, muted, x], {"_cast"})["_cast"]
    o = f[[3, 3, 3]]
    ca, ya, ta = log_chromaticity(f[:3, 3:])
    co, yo, to = log_chromaticity(o[:, 3:])
    grey, (pixels, light, _) = log_grey_world(ca, ya, co, yo), log_pixel_offset(ca, ya, ta, co, yo, to)
    assert pixels[0] < 0.02 < grey[0]  # the occluder moves the mean, not the cells it leaves alone
    assert min(grey[1], pixels[1]) > rule.threshold  # a cast moves both
    assert grey[2] < rule.threshold / 4  # a desaturation shrinks the cells towards grey: little offset beyond that
    assert (light > 0.5).all()  # nothing here is clipped enough to fall back on the whole frame
    np.testing.assert_allclose(log_cast_offset(f[:3], o), np.minimum(grey, pixels))
    # another layout (a different generation of the seed, here the frame rolled by half): the cells at one place
    # show different things, so on a pair the registration did not line up the pixel term abstains
    rolled = np.roll(cast, x.shape[1] // 2, axis=1)
    fr = _features([rolled], {"_cast"})["_cast"]
    cr, yr, tr = log_chromaticity(fr[:, 3:])
    assert log_cast_offset(fr, o[:1], np.array([False]))[0] == log_grey_world(cr, yr, co[:1], yo[:1])[0]
    assert adheres(cast, x, "color_cast") and not adheres(occluded, x, "color_cast") and not adheres(muted, x, "color_cast")


def test_a_cast_along_the_scenes_own_hue_is_not_read_as_a_desaturation():
    from pluralign.rewards.reference_degradations import degrade as reference_degrade
    from pluralign.rewards.rules import _features, _log_moments, log_cast_offset, log_chromaticity, log_grey_world

    rule = load_rules()["color_cast"]
    x, _ = C.sample_view(C.load_photo("coffee"), 128, np.random.default_rng(1))  # brown: one hue, many saturations
    casts = [reference_degrade(x, "color_cast", s, np.random.default_rng(3)) for s in (0.6, 0.9)]  # orange casts
    f = _features([*casts, x], {"_cast"})["_cast"]
    ca, ya, _ = log_chromaticity(f[:2, 3:])
    co, yo, _ = log_chromaticity(f[[2, 2], 3:])
    # an orange cast moves each brown cell along its own direction from grey, as a change of saturation would, but
    # it keeps the spread of the cells' log chromaticities, so the grey world does not take it for a desaturation
    np.testing.assert_allclose(_log_moments(ca, ya)[1], _log_moments(co, yo)[1], rtol=0.05)
    assert (log_grey_world(ca, ya, co, yo) > rule.threshold).all()
    # the cells' disagreement (dark ones, where the floor keeps the log from noise) is taken off the pixel term:
    # the weaker cast reads under the threshold (docs/rewards.md), the stronger one over it
    assert log_cast_offset(f[1:2], f[2:])[0] > rule.threshold
    assert adheres(casts[1], x, "color_cast")


def test_a_cast_on_a_clipped_white_frame_is_read_from_the_whole_frame():
    from pluralign.rewards.reference_degradations import degrade as reference_degrade
    from pluralign.rewards.rules import (
        CAST_FALLBACK_SCALE,
        CAST_MIN_LIGHT,
        _features,
        cast_offset,
        log_cast_offset,
        log_chromaticity,
        log_pixel_offset,
    )

    # saturated sweets on a white background blown to 1.0: almost no cell is below the clip level in both images
    x = np.ones((128, 128, 3), np.float32)
    yy, xx = np.mgrid[:128, :128]
    for k, colour in enumerate([(1.0, 0.2, 0.1), (0.1, 0.6, 1.0), (1.0, 0.9, 0.0), (0.2, 1.0, 0.3)]):
        x[(yy - 32 - 64 * (k // 2)) ** 2 + (xx - 32 - 64 * (k % 2)) ** 2 < 81] = colour
    cast = reference_degrade(x, "color_cast", 0.8, np.random.default_rng(0))
    f = _features([cast, x], {"_cast"})["_cast"]
    ca, ya, ta = log_chromaticity(f[:1, 3:])
    co, yo, to = log_chromaticity(f[1:, 3:])
    assert log_pixel_offset(ca, ya, ta, co, yo, to)[1][0] < CAST_MIN_LIGHT
    whole_frame = CAST_FALLBACK_SCALE * cast_offset(f[:1], f[1:], np.array([True]))[0]
    assert log_cast_offset(f[:1], f[1:], np.array([True]))[0] == pytest.approx(whole_frame)
    assert not adheres(x, x, "color_cast")


def test_a_vignette_is_a_falloff_every_sector_shows_on_bright_and_dark_corners_alike(photo):
    from pluralign.rewards.reference_degradations import degrade as reference_degrade
    from pluralign.rewards.reference_degradations import linear_to_srgb, srgb_to_linear
    from pluralign.rewards.rules import _features, radial_falloff

    x = photo
    h, w = x.shape[:2]
    cy, cx = np.meshgrid((np.arange(h) + 0.5) / h - 0.5, (np.arange(w) + 0.5) / w - 0.5, indexing="ij")
    r = np.sqrt(cy**2 + cx**2) / np.sqrt(0.5)
    # corners already at a tenth of their light: a vignette there moves little value, but as much log value
    dark = linear_to_srgb(srgb_to_linear(x) * (0.1 + 0.9 * np.clip(1 - (r - 0.45) / 0.55, 0, 1) ** 2)[..., None])
    dark = dark.astype(np.float32)
    vignetted = reference_degrade(x, "vignette", 0.6, np.random.default_rng(0))
    weak_on_dark = reference_degrade(dark, "vignette", 0.3, np.random.default_rng(0))
    one_side = x * np.linspace(1.0, 0.55, w, dtype=np.float32)[None, :, None]  # darker towards the right side
    fade = (0.25 + 0.5 * x).astype(np.float32)  # one tone curve everywhere
    # light taken from around a wide, flat subject (flat lighting on a dark subject in a bright ground): every
    # sector darkens outward, but in the subject's shape, which a radial falloff explains little of
    light = np.exp(-0.5 * (1 - np.exp(-((cx / 0.35) ** 2 + (cy / 0.12) ** 2))))
    around = (x * light[..., None]).astype(np.float32)
    f = _features([vignetted, one_side, fade, around, x, weak_on_dark, dark], {"_radial"})["_radial"]
    falloff = radial_falloff(f[[0, 1, 2, 3, 5]], f[[4, 4, 4, 4, 6]])
    assert falloff[0] < -0.2 and falloff[4] < -0.1  # bright corners and dark ones
    assert falloff[1] > 0.1  # the left side did not darken outward
    assert abs(falloff[2]) < 1e-3
    assert falloff[3] > -0.05
    assert adheres(vignetted, x, "vignette") and adheres(weak_on_dark, dark, "vignette")
    assert not any(adheres(im, x, "vignette") for im in (one_side, fade, around))


def test_coarse_contrast_sees_flat_lighting_on_texture():
    from pluralign.data.degradations import degrade
    from pluralign.rewards.verifiers import Batch, coarse_contrast

    grass = C._resize_to(C.load_photo("grass"), 128)  # texture everywhere, little large-scale shading
    flat = degrade(grass, "flat_lighting", 0.4, seed=0)
    fine = [VERIFIERS["contrast"](im) for im in (grass, flat)]
    coarse = coarse_contrast(Batch(np.stack([grass, flat])))
    # full-resolution contrast hardly moves: the previous rule (log ratio, eps 0.01, threshold 0.1408) missed this
    assert np.log((fine[0] + 0.01) / (fine[1] + 0.01)) < 0.1408
    assert np.log(coarse[0] / coarse[1]) > 0.15  # while the large-scale light and shadow went
    assert adheres(flat, grass, "flat_lighting") and not adheres(grass, grass, "flat_lighting")


def test_flat_lighting_reads_a_gain_that_follows_the_scenes_light_and_nothing_a_curve_or_a_patch_makes():
    from pluralign.data.degradations import degrade
    from pluralign.rewards import reference_degradations as R
    from pluralign.rewards.rules import _features, light_flattening

    x = C._resize_to(C.load_photo("astronaut"), 128)
    rng = np.random.default_rng(0)
    retinex = [R.flat_lighting(x, s, rng) for s in (0.0, 1.0)]  # 60% and 100% of the light's variation removed
    edits = {
        "hsv desaturation": R.muted(x, 1.0, rng),  # keeps the value, lifts the luminance of saturated pixels
        "luma desaturation": degrade(x, "desaturate", 1.0, seed=0),
        "white balance": R.color_cast(x, 1.0, rng),
        "overexposure": R.overexposed(x, 1.0, rng),  # a tone curve with a clip
        "fade": R.low_contrast(x, 1.0, rng),
        "vignette": R.vignette(x, 1.0, rng),
        "noise": R.noisy(x, 1.0, rng),
        "double exposure": R.double_exposure(x, 1.0, rng),
        "occluder": R.obstructed(x, 1.0, rng),
        "identity": x,
    }
    imgs = [*retinex, degrade(x, "flat_lighting", 0.6, seed=0), *edits.values()]
    f = _features([*imgs, x], {"_light"})["_light"]
    stat = light_flattening(f[:-1], np.repeat(f[-1:], len(imgs), axis=0))
    # Retinex's gain is the model; on this scene it reads less than the share removed, since a gain leaves
    # the black background black, where the fit expects it lifted most
    assert stat[0] < -0.3 and stat[1] < -0.3
    assert stat[2] < -0.3  # pluralign's own flattening (light added in sRGB) reads too
    # a curve of each pixel's own values, a smooth field of the frame's shape, or a change that follows
    # neither reads 0
    for name, s in zip(edits, stat[3:]):
        assert abs(s) < 0.01, (name, s)


def test_batched_keeps_input_order_and_vector_widths(photo):
    from pluralign.rewards.verifiers import Batch, batched, chroma_vector

    imgs = [photo, C._resize_to(photo, 64), photo[::-1].copy(), C._resize_to(photo, 64)[:, ::-1].copy()]
    out = batched(imgs, {"chroma": chroma_vector, "brightness": lambda b: b.y_stats[:, 0]}, chunk=1)
    assert out["chroma"].shape == (4, 2) and out["brightness"].shape == (4,)
    for i, x in enumerate(imgs):
        np.testing.assert_array_equal(out["chroma"][i], chroma_vector(Batch(x[None]))[0])
    assert {k: v.shape for k, v in batched([], {"chroma": chroma_vector}).items()} == {"chroma": (0,)}


def test_rewards_imports_run_one_way():
    """verifiers measures and imports no pluralign module; every pluralign import in the package is top-level."""
    import ast
    from pathlib import Path

    import pluralign.rewards

    for path in Path(pluralign.rewards.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        top = set(tree.body)
        for node in ast.walk(tree):
            internal = (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pluralign"))
                        or isinstance(node, ast.Import) and any(a.name.startswith("pluralign") for a in node.names))
            if internal:
                assert node in top, f"{path.name}:{node.lineno} imports a pluralign module inside a function"
                assert path.stem != "verifiers", f"verifiers.py:{node.lineno} imports from pluralign"


def test_overexposure_of_a_pale_scene_counts_and_a_small_brightening_of_it_does_not(photo):
    from pluralign.data.degradations import degrade

    pale = (0.75 + 0.25 * photo).astype(np.float32)  # a snow scene, a product on white: little headroom left
    brighter = np.clip(pale * 1.02, 0, 1).astype(np.float32)  # the benign +2% edit of the held-out check
    blown = degrade(pale, "overexposure", 0.5, seed=0)
    table = adherence_table([brighter, blown], [pale, pale], "overexposed")
    assert table["overexposed"][0] < 0 < table["overexposed"][1]


def test_the_shipped_implied_thresholds_match_the_taxonomy():
    # a calibration older than an edit of taxonomy.IMPLIES would hold rows to a stale stricter threshold
    import json

    from pluralign.data import taxonomy
    from pluralign.rewards.rules import THRESHOLDS_PATH

    table = json.loads(THRESHOLDS_PATH.read_text())["attributes"]
    shown = [a for a in taxonomy.ATTRIBUTES if taxonomy.get(a).degradation]
    for attr, entry in table.items():
        expected = {b for b in shown if b != attr and attr in taxonomy.IMPLIES.get(b, ())}
        assert set(entry.get("given", {})) == expected, attr


def _colour_grid(seed=0, n=1):
    """N random sRGB colours on the 32 x 32 grid of cast_features (N x 3P), every channel below 0.9."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.9, size=(n, 3 * 32 * 32))


def _linear(c):
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _encode(lin):
    lin = np.clip(lin, 0, 1)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def test_muted_reads_lost_colour_not_colour_clipped_to_white_by_an_overexposure():
    from pluralign.rewards.rules import unclipped_chroma_change

    grid = _colour_grid()

    def hsv_saturation(g):
        rgb = g.reshape(3, -1)
        return float(np.mean((rgb.max(0) - rgb.min(0)) / rgb.max(0)))

    over = _encode(_linear(grid) * 4.0)  # +2 EV in linear light: the brighter part of the frame clips
    clipped = float((over.reshape(3, -1).max(axis=0) >= 0.97).mean())
    assert 0.3 < clipped < 0.95
    assert np.log(hsv_saturation(over) / hsv_saturation(grid)) < -0.15  # what the whole frame's saturation sees
    assert abs(unclipped_chroma_change(over, grid, 0.02)[0]) < 0.01
    darker = _encode(_linear(grid) * 0.25)  # -2 EV: nothing clips, every cell keeps its share
    assert abs(unclipped_chroma_change(darker, grid, 0.02)[0]) < 1e-6
    y = grid.reshape(3, -1).T @ np.array([0.2126, 0.7152, 0.0722])
    muted = (0.5 * grid.reshape(3, -1) + 0.5 * y[None]).reshape(1, -1)  # halfway to grey
    assert unclipped_chroma_change(muted, grid, 0.02)[0] < -0.3
    assert unclipped_chroma_change(np.ones_like(grid), grid, 0.02)[0] == 0.0  # blown to white: nothing measured


def test_muted_reads_less_colour_in_the_colours_not_a_smaller_coloured_subject():
    """A saturated subject on a neutral ground drawn with a fifth less area colours less of the frame; the
    frame-wide share reads that as muted, the joint statistic does not. Halving its sRGB chroma is muted on both;
    a darker exposure, which lowers sRGB chroma but not the share of colour, on neither."""
    from pluralign.rewards.rules import colourful_chroma_change, unclipped_chroma_change

    def scene(radius: float, chroma: float) -> np.ndarray:
        yy, xx = np.mgrid[0:32, 0:32]
        inside = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= radius ** 2
        ground = np.full((32, 32, 3), 0.94)
        red = 0.94 * np.array([1.0, 1.0 - chroma, 1.0 - chroma])  # sRGB (max - min) / max = chroma
        lin = np.where(inside[..., None], _linear(red), _linear(ground))
        return _encode(lin).transpose(2, 0, 1).reshape(1, -1)

    o = scene(6.0, 0.8)
    smaller = scene(6.0 * np.sqrt(0.8), 0.8)
    muted = scene(6.0, 0.4)
    assert unclipped_chroma_change(smaller, o, 0.02)[0] < -0.15  # the frame-wide share alone: "muted"
    assert colourful_chroma_change(smaller, o, 0.02)[0] > -0.05
    assert colourful_chroma_change(muted, o, 0.02)[0] < -0.2
    assert colourful_chroma_change(o, o, 0.02)[0] == 0.0
    darker = _encode(_linear(o) * 0.25)  # -2 EV: the sRGB chroma falls, the share of colour stays
    assert abs(colourful_chroma_change(darker, o, 0.02)[0]) < 0.01
    assert colourful_chroma_change(np.ones_like(o), o, 0.02)[0] == 0.0  # blown to white: nothing measured


def test_muted_on_the_toy_worlds_renders_reads_its_own_render_and_not_a_smaller_subject():
    """Through the whole paired pipeline (registration included), on the toy world's 32 px renders, where the truth
    is known: the muted render is muted, the smaller-subject and off-centre renders are not."""
    from pluralign.rewards.rules import RULE_SPECS, Rule, paired_statistics
    from pluralign.toy import world

    rule = Rule("muted", *RULE_SPECS["muted"], threshold=0.0)
    scenes = world.sample_scenes(12, 4242)
    clean = [world.to_array(world.variant(s, None)[0]) for s in scenes]
    stat = {attr: paired_statistics({"muted": rule}, [world.to_array(world.variant(s, attr, seed=4242 + i)[0])
                                                      for i, s in enumerate(scenes)], clean)["muted"]
            for attr in ("muted", "small_subject", "off_center")}
    assert stat["muted"].min() > 0.3
    assert stat["small_subject"].max() < 0.1
    # the world's off-centre render also shrinks the subject and pushes it to an edge; one scene of the twelve reads 0.24
    assert np.median(stat["off_center"]) < 0.02 and (stat["off_center"] > 0.15).sum() <= 1


def _texture(size: int, seed: int) -> np.ndarray:
    """Gravel-like: coloured clumps of a few pixels everywhere, no subject and no background."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.1, 0.9, (size // 4, size // 4, 3)).astype(np.float32)
    return np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                      dtype=np.float32) / 255


def test_subject_extent_is_area_and_spread_in_the_same_units():
    from pluralign.rewards.verifiers import Batch, subject_extent

    canvas = np.zeros((64, 64, 3), np.float32)
    whole, square = canvas.copy(), canvas.copy()
    whole[4:60, 4:60] = 1  # inside the border ring, which sets the background
    square[24:40, 24:40] = 1
    (area_w, spread_w), (area_s, spread_s) = subject_extent(Batch(np.stack([whole, square])))
    assert area_w == pytest.approx((56 / 64) ** 2, rel=0.05)
    assert spread_w == pytest.approx((56 / 64) ** 2, rel=0.05)  # an even mask over the side s: s^2
    assert spread_s == pytest.approx((16 / 64) ** 2, rel=0.1)
    assert area_s == pytest.approx((16 / 64) ** 2, rel=0.1)


def test_a_blend_that_thins_a_texture_is_not_a_smaller_subject_but_a_shrunk_texture_is():
    from pluralign.rewards.rules import _features, estimate_rotation_spectra, paired_statistics, register

    rules = load_rules()
    rule = rules["small_subject"]
    o = _texture(128, 0)
    # a double exposure: half the frame's light from a mirrored copy; the clumps' contrast falls, the mask thins
    blend = (0.5 * o + 0.5 * o[:, ::-1]).astype(np.float32)
    fa, fo = _features([blend], {"subject_size", "_grid", "_spectrum"}), _features([o], {"subject_size", "_grid", "_spectrum"})
    # a blend has no single transform: the whole-frame reading decides, which is what this test is about
    assert not register(fa["_grid"], fo["_grid"], estimate_rotation_spectra(fa["_spectrum"], fo["_spectrum"])).confident[0]
    area_drop = -np.log((fa["subject_size"][0] + rule.eps) / (fo["subject_size"][0] + rule.eps))
    assert area_drop > rule.threshold  # the area alone (the rule until 2026-12-07) read a smaller subject
    assert paired_statistics({"small_subject": rule}, [blend], [o])["small_subject"][0] < rule.threshold
    # the same texture shrunk to 0.4 of the side on a flat canvas of its mean colour
    shrunk = np.broadcast_to(o.mean(axis=(0, 1)), o.shape).copy()
    small = np.asarray(Image.fromarray((o * 255).astype(np.uint8)).resize((51, 51), Image.LANCZOS), np.float32) / 255
    shrunk[38:89, 38:89] = small
    assert paired_statistics({"small_subject": rule}, [shrunk], [o])["small_subject"][0] > rule.threshold


def test_grain_raises_the_residual_evenly_and_edges_carried_into_a_flat_ground_do_not():
    from pluralign.rewards.rules import RULE_SPECS, Rule, statistic_from_features
    from pluralign.rewards.verifiers import Batch, grain_quantiles

    verifier, statistic, direction, eps = RULE_SPECS["film_grain"]
    assert statistic == "grain_added"  # the even rise, where nothing was lost, less what a tone curve explains (below)
    rule = Rule("film_grain", verifier, "even_rise", direction, eps, 0.0)
    before = Rule("film_grain", verifier, "max_log_ratio", direction, eps, 0.0)  # the statistic until 2026-12-07
    rng = np.random.default_rng(0)
    # a subject on a plain ground: texture in the left 40% of the frame, flat mid-grey in the rest
    o = np.full((128, 128, 3), 0.5, np.float32)
    o[:, :52] = _texture(128, 1)[:, :52]
    grain = ndimage_blur(rng.standard_normal((128, 128)).astype(np.float32), 0.8)
    grainy = np.clip(o + 0.06 * grain[..., None] / grain.std(), 0, 1).astype(np.float32)
    # a double exposure whose second frame carries texture into half of the ground: 30% of the frame stays flat,
    # between the 20th and the 35th percentile
    second = np.full_like(o, 0.5)
    second[:, 52:90] = _texture(128, 2)[:, 52:90]
    blend = (0.6 * o + 0.4 * second).astype(np.float32)
    feats = {k: grain_quantiles(Batch(np.stack([x]))) for k, x in (("o", o), ("grain", grainy), ("blend", blend))}
    scales = {k: v[:, 1] for k, v in feats.items()}  # the 35th percentile alone: what the rule read until 2026-12-07

    def read(r, which, f):
        return float(statistic_from_features(r, {"_grain_quantiles": f[which], "_grain_scales": f[which]},
                                             {"_grain_quantiles": f["o"], "_grain_scales": f["o"]}, None)[0])

    grain_rise, blend_rise = read(rule, "grain", feats), read(rule, "blend", feats)
    assert grain_rise > 1.0  # grain on the flat ground raises both quantiles
    assert read(before, "blend", scales) > 0.5  # the 35th percentile alone reads the blend's edges as grain
    assert blend_rise < 0.5 * read(before, "blend", scales)
    assert grain_rise > 4 * blend_rise


def test_a_double_exposure_over_a_smooth_ground_loses_its_strongest_edges_and_is_not_read_as_grain():
    from pluralign.rewards.rules import RULE_SPECS, Rule, statistic_from_features
    from pluralign.rewards.verifiers import Batch, grain_light

    verifier, statistic, direction, eps = RULE_SPECS["film_grain"]
    rule = Rule("film_grain", verifier, statistic, direction, eps, 0.0)
    even = Rule("film_grain", verifier, "even_rise", direction, eps, 0.0)
    rng = np.random.default_rng(0)
    # a portrait against a smooth ground: texture on the left 40%, a faint sensor noise elsewhere
    o = np.clip(0.5 + 0.004 * rng.standard_normal((128, 128, 1)), 0, 1).repeat(3, 2).astype(np.float32)
    o[:, :52] = _texture(128, 1)[:, :52]
    second = np.clip(0.5 + 0.004 * rng.standard_normal((128, 128, 1)), 0, 1).repeat(3, 2).astype(np.float32)
    second[:, 52:] = _texture(128, 2)[:, 52:]  # the second frame, mirrored: its subject over all of the ground
    blend = (0.6 * o + 0.4 * second).astype(np.float32)
    grain = ndimage_blur(rng.standard_normal((128, 128)).astype(np.float32), 0.8)
    grainy = np.clip(o + 0.05 * grain[..., None] / grain.std(), 0, 1).astype(np.float32)
    f = {k: grain_light(Batch(np.stack([x]))) for k, x in (("o", o), ("blend", blend), ("grain", grainy))}

    def read(r, which):
        key = "_grain_light" if r is rule else "_grain_quantiles"
        fa = f[which] if r is rule else f[which][:, :6].reshape(1, 2, 3)
        fo = f["o"] if r is rule else f["o"][:, :6].reshape(1, 2, 3)
        return float(statistic_from_features(r, {key: fa}, {key: fo}, None)[0])

    assert read(even, "blend") > 0.5  # the second frame's edges over the ground raise both low quantiles, as grain
    # but the first frame's edges lost residual in every band (the 98th percentile's log change -0.10, -0.17, -0.34 at
    # taps 1, 2 and 4: each beyond the slack), so no band reads as grain
    assert read(rule, "blend") < 0.0
    assert read(rule, "grain") == read(even, "grain") > 1.0  # grain takes nothing: every band kept its top


def test_an_overexposure_scales_the_scenes_texture_and_is_not_read_as_grain():
    from pluralign.rewards import reference_degradations as R
    from pluralign.rewards.rules import RULE_SPECS, Rule, load_rules, paired_statistics

    verifier, statistic, direction, eps = RULE_SPECS["film_grain"]
    even = Rule("film_grain", verifier, "even_rise", direction, eps, 0.0)
    rule = load_rules()["film_grain"]
    x = C._resize_to(C.load_photo("gravel"), 256)  # fine texture everywhere: a steeper curve raises its residual
    camera = C._resize_to(C.load_photo("camera"), 256)
    rng = np.random.default_rng(0)
    over = [R.overexposed(x, s, rng) for s in (0.0, 0.3)]  # +1 and +1.45 EV
    grain = [R.film_grain(x, 1.0, rng), R.film_grain(camera, 1.0, rng)]
    origs = [x, x, x, camera]
    st = paired_statistics({"even": even, "rule": rule}, [*over, *grain], origs)
    assert (st["even"][:2] > 0.24).all()  # the even rise alone read both as grain (its threshold was 0.2399)
    assert (st["rule"][:2] < 0.6 * st["even"][:2]).all() and (st["rule"][:2] < rule.threshold).all()
    assert np.array_equal(st["rule"][2:], st["even"][2:])  # grain leaves the light's slope alone: nothing is taken


def test_grain_on_a_nearly_uniform_scene_is_found_where_no_tone_curve_can_be_fitted():
    from pluralign.rewards import reference_degradations as R
    from pluralign.rewards.rules import RULE_SPECS, Rule, load_rules, paired_statistics

    # a grey card with a faint gradient: grain scatters the cell means far more than the scene spreads them, so a
    # fitted slope would be the grain's own and take real grain off (down to 0.49 of a rise of 1.3 on these cards)
    rule, rng = load_rules()["film_grain"], np.random.default_rng(0)
    verifier, _, direction, eps = RULE_SPECS["film_grain"]
    even = Rule("film_grain", verifier, "even_rise", direction, eps, 0.0)
    ramp = np.linspace(0.0, 1e-3, 256)[None, :, None]
    cards = [np.clip(0.5 + ramp + 0.003 * rng.standard_normal((256, 256, 1)), 0, 1).repeat(3, 2).astype(np.float32)
             for _ in range(20)]
    grainy = [R.film_grain(o, 0.0, rng) for o in cards]  # the weakest grain the checks apply
    st = paired_statistics({"g": rule, "even": even}, grainy, cards)
    assert np.array_equal(st["g"], st["even"])  # nothing taken off
    assert (st["g"] > rule.threshold).all()


def ndimage_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma)


def test_grain_quantiles_select_exactly_what_a_full_sort_does():
    from pluralign.rewards.verifiers import Batch, _immerkaer, grain_quantiles, grain_top

    rng = np.random.default_rng(1)
    for shape in ((2, 64, 48, 3), (2, 9, 10, 3)):
        x = rng.random(shape, dtype=np.float32)
        got, top = grain_quantiles(Batch(x)), grain_top(Batch(x))
        for j, k in enumerate((1, 2, 4)):
            r = np.sort(np.abs(_immerkaer(Batch(x).y, step=k)).reshape(shape[0], -1), axis=1)
            for i, (q, half_normal) in enumerate(((0.2, 0.2533), (0.35, 0.4538), (0.98, 2.3263))):
                kth = min(r.shape[1] - 1, int(q * r.shape[1]))
                np.testing.assert_array_equal(got[:, i, j] if i < 2 else top[:, j], r[:, kth] / (half_normal * 6.0))


def test_an_image_smaller_than_the_widest_residual_filter_is_read_not_refused():
    # taps 4 px apart need 9 px: a 5 x 5 pair once failed inside numpy with a broadcast error
    rng = np.random.default_rng(0)
    o = rng.random((5, 5, 3), dtype=np.float32)
    table = adherence_table([o], [o], [["film_grain", "noisy"]])
    assert all(np.isfinite(v).all() for v in table.values())
