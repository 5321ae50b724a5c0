"""The held-out verifier check (pluralign.rewards.holdout) and the rules it asked for: light leak and
implied attributes in multi-attribute rows (registration and the zoom rule: test_rewards_registration)."""

import json
import warnings

import numpy as np
import pytest

from pluralign.rewards import calibrate as C
from pluralign.rewards import holdout as H
from pluralign.rewards.reference_degradations import degrade as reference_degrade
from pluralign.rewards.reference_degradations import linear_to_srgb, srgb_to_linear
from pluralign.rewards.rules import (
    Rule,
    _features,
    _tone_residual,
    adherence_table,
    edge_glow,
    load_rules,
    quadrant_agreement,
)


@pytest.fixture(scope="module")
def view():
    return C.sample_view(C.load_photo("coffee"), 128, np.random.default_rng(0), box=(40, 100, 300, 360))


def test_edge_glow_sees_a_leak_at_one_edge_and_not_a_cast_over_the_frame(view):
    img, _ = view
    leak = reference_degrade(img, "light_leak", 0.6, np.random.default_rng(2))
    warm = np.clip(img + np.array([0.08, 0.0, -0.08], np.float32), 0, 1)  # the same warmth everywhere
    faded = 0.5 + 0.4 * (img - 0.5)  # a fade maps every cell by one line
    g = _features([leak, warm, faded, img, img, img], {"_glow"})["_glow"]
    glow = edge_glow(g[:3], g[3:])
    assert glow[0] > 0.1 and abs(glow[1]) < 0.03
    assert glow[2] < 0.03  # a fade dims the bright side as it lifts the dark one: light moved, none added


def _overexpose(x: np.ndarray, gain: float) -> np.ndarray:
    """Linear light times ``gain``, clipped at 1 (the independent reference code's sRGB transfer functions)."""
    return linear_to_srgb(np.minimum(srgb_to_linear(x) * gain, 1.0))


@pytest.mark.parametrize("gain", [4.0, 5.7])
def test_an_overexposed_smooth_sky_along_one_edge_is_not_a_leak(gain):
    # a smooth sky over textured ground with the same mean in every column: clipping moves the sky's cells
    # more than the ground's, which a tone curve fitted on cell means reads as light added along the top
    rng = np.random.default_rng(0)
    share = np.linspace(0.2, 0.8, 128)[None, :, None]
    ground = np.where(rng.random((128, 128, 1)) < share, 0.9, 0.1)
    sky = np.broadcast_to(0.1 + 0.8 * share, (128, 128, 1))
    img = (np.where(np.arange(128)[:, None, None] < 32, sky, ground) * np.array([0.8, 0.85, 1.0])).astype(np.float32)
    g = _features([_overexpose(img, gain), img], {"_glow"})["_glow"]
    threshold = load_rules()["light_leak"].threshold
    assert edge_glow(g[:1], g[1:])[0] < 0.25 * threshold
    on_means = _tone_residual(g[:1], g[1:])[0, :2].sum(axis=0)  # the fit on cell means, which vignette keeps
    per_pixel = _tone_residual(g[:1], g[1:], per_pixel=True)[0, :2].sum(axis=0)
    assert on_means[:2].mean() - on_means[-2:].mean() > threshold  # the top edge "gained light"
    assert abs(per_pixel[:2].mean() - per_pixel[-2:].mean()) < 0.25 * threshold


def test_a_blur_moves_the_whole_frames_aberration_fit_but_the_quadrants_disagree():
    # the rocket's colour edges: blurred, the whole frame's red-vs-blue magnification moves about as much as
    # under an aberration of 0.4%, but one quadrant's fit moves one way and another's the other
    img, _ = C.sample_view(C.load_photo("rocket"), 128, np.random.default_rng(0))
    blur = reference_degrade(img, "blurry", 0.5, np.random.default_rng(1))
    ca = reference_degrade(img, "chromatic_aberration", 0.3, np.random.default_rng(1))
    f = _features([blur, ca, img, img], {"_ca", "_ca_quadrants"})
    whole = np.abs(f["_ca"][:2] - f["_ca"][2:])
    quadrants = quadrant_agreement(f["_ca_quadrants"][:2], f["_ca_quadrants"][2:])
    assert whole[0] > 1.2 and whole[1] > 1.2  # the whole-frame rule (threshold 1.007) took both for aberrations
    change = f["_ca_quadrants"][0] - f["_ca_quadrants"][2]
    assert change.min() < 0 < change.max() and quadrants[0] == 0.0
    assert quadrants[1] > 1.2 and quadrants[1] <= whole[1] + 0.5  # an aberration: every quadrant sees it


def test_quadrant_agreement_is_the_change_all_four_share():
    o = np.zeros((3, 4))
    a = np.array([[1.0, 2.0, 1.5, 3.0], [-1.0, -2.0, -0.5, -3.0], [1.0, -2.0, 1.5, 3.0]])
    assert quadrant_agreement(a, o).tolist() == [1.0, 0.5, 0.0]
    # frames too small for a quadrant to have an interior pixel measure nothing, quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny = [np.random.default_rng(side).random((side, side, 3), dtype=np.float32) for side in (3, 3, 4, 4)]
        f = _features(tiny, {"_ca_quadrants"})["_ca_quadrants"]
    assert f.shape == (4, 4) and np.all(f[:2] == 0.0)


def test_an_implied_attribute_is_held_to_its_given_threshold_in_a_row_that_requests_the_implying_one(view):
    img, _ = view
    dark = reference_degrade(img, "underexposed", 0.8, np.random.default_rng(3))
    rules = load_rules()
    plain = rules["low_contrast"]
    assert adherence_table([dark], [img], [["low_contrast"]], rules)["low_contrast"][0] > 0  # darkening lowers contrast
    strict = Rule(**{**plain.__dict__, "given": (("underexposed", 10.0),)})
    table = adherence_table([dark, dark], [img, img], [["low_contrast"], ["underexposed", "low_contrast"]],
                            {**rules, "low_contrast": strict})
    m = table["low_contrast"]
    assert m[0] > 0 and m[1] < 0  # asked for both, the darkening alone no longer passes for low contrast
    assert m[0] - m[1] == pytest.approx(10.0 - plain.threshold)


def test_summary_tables_and_misses_from_known_hits(monkeypatch):
    pairs = [{"applied": "blurry", "size": 64}, {"applied": "blurry", "size": 512}, {"applied": "underexposed", "size": 64},
             {"applied": "benign:identity", "size": 64}, {"applied": "benign:jpeg90", "size": 512}]
    hits = {"blurry": np.array([1, 0, 0, 0, 1], bool), "low_contrast": np.array([0, 0, 1, 0, 0], bool)}
    s = H.summarise(pairs, hits, [64, 512])
    b = s["rules"]["blurry"]
    assert b["accuracy"] == 0.5 and b["accuracy_by_size"] == {64: 1.0, 512: 0.0}
    assert b["fpr"] == 0.5 and b["fpr_by_edit"] == {"identity": 0.0, "jpeg90": 1.0}  # edits not made are left out
    assert s["confusion"]["low_contrast"] == {"blurry": 0.0, "underexposed": 1.0}
    monkeypatch.setattr(H.taxonomy, "IMPLIES", {})
    assert any("low_contrast: fires on 1.00 of underexposed" in m for m in H.misses(s))
    monkeypatch.setattr(H.taxonomy, "IMPLIES", {"underexposed": ("low_contrast",)})
    assert not any("underexposed" in m for m in H.misses(s))  # a pair physics implies is listed apart
    assert "blurry: accuracy at 512 px 0.00 < 0.8" in H.misses(s)
    assert "0.00*" not in H.markdown(s, [64, 512]) and "1.00*" in H.markdown(s, [64, 512])
    assert H.markdown(json.loads(json.dumps(s)), [64, 512]) == H.markdown(s, [64, 512])  # the --output file prints alike
    # without benign edits the false-positive rate is unmeasured, and says so, never a rate of 0
    none = H.summarise(pairs[:3], {k: v[:3] for k, v in hits.items()}, [64, 512])
    assert none["rules"]["blurry"]["fpr"] is None and none["rules"]["blurry"]["fpr_by_size"] == {}
    assert "blurry: false positives unmeasured (no benign edits)" in H.misses(none)
    assert "| blurry | 0.50 | 1.00 | 0.00 | – |" in H.markdown(none, [64, 512])


def test_accuracy_by_photo_shows_where_a_rule_misses():
    pairs = [{"applied": "blurry", "size": 64, "photo": "a"}, {"applied": "blurry", "size": 512, "photo": "b"},
             {"applied": "blurry", "size": 512, "photo": "b"}, {"applied": "benign:identity", "size": 64, "photo": "a"}]
    hits = {"blurry": np.array([1, 0, 1, 0], bool), "noisy": np.array([0, 0, 0, 0], bool)}
    s = H.summarise(pairs, hits, [64, 512])
    assert s["rules"]["blurry"]["accuracy_by_photo"] == {"a": 1.0, "b": 0.5}
    assert s["rules"]["noisy"]["accuracy_by_photo"] == {}  # no noisy pairs were made
    assert H.weak_photos(s) == ["blurry: b 0.50"]


def test_the_held_out_run_measures_every_rule_on_every_applied_attribute_and_benign_edit():
    cfg = H.HoldoutConfig(sizes=[64], n_per_size=1)
    s = H.run(cfg, progress=False)
    assert set(s["rules"]) == set(load_rules())
    assert set(s["applied"]) >= set(load_rules())
    for e in s["rules"].values():
        assert e["n_neg"] == len(H.BENIGN_EDITS) and e["fpr_by_edit"]["identity"] == 0.0
    assert all(set(row) == set(s["applied"]) for row in s["confusion"].values())


def test_photos_from_files_are_degraded_like_the_bundled_ones_and_a_missing_one_is_named(tmp_path):
    """Rules can be checked on photos no rule was ever looked at on: image files in place of scikit-image names."""
    from PIL import Image

    coffee = C.load_photo("coffee")
    Image.fromarray((coffee * 255).round().astype(np.uint8)).save(tmp_path / "mine.png")
    assert np.array_equal(C.load_photo(str(tmp_path / "mine.png")), coffee)
    s = H.run(H.HoldoutConfig(sizes=[64], n_per_size=1, photos=[str(tmp_path / "mine.png")]), progress=False)
    assert s["config"]["photos"] == [str(tmp_path / "mine.png")]
    assert set(s["rules"]) == set(load_rules())
    with pytest.raises(FileNotFoundError, match="nothere.jpg: no such file"):
        C.load_photo(str(tmp_path / "nothere.jpg"))
    with pytest.raises(ValueError, match="'not_a_photo'"):
        C.load_photo("not_a_photo")
    (tmp_path / "other").mkdir()
    Image.fromarray((coffee * 255).round().astype(np.uint8)).save(tmp_path / "other" / "mine.png")
    with pytest.raises(ValueError, match=r"two photos share a name \(\['mine'\]\)"):
        H.run(H.HoldoutConfig(sizes=[64], n_per_size=1,
                              photos=[str(tmp_path / "mine.png"), str(tmp_path / "other" / "mine.png")]), progress=False)


def test_what_would_fail_or_mislead_after_minutes_is_refused_before_any_pair_is_made(tmp_path):
    """A named thresholds file that is missing or empty would leave every rule unable to fire (0.00 everywhere);
    a size of 0 or a folder as --output would fail only when the run is done."""
    base = dict(sizes=[64], n_per_size=1, photos=["coffee"])
    for bad, message in [
        ({"thresholds": tmp_path / "nothere.json"}, "nothere.json: no such file"),
        ({"sizes": [0]}, r"sizes: \[0\]; give short sides from 16 to 4096"),
        ({"sizes": [100_000]}, r"sizes: \[100000\]"),
        ({"sev_min": 0.9, "sev_max": 0.1}, "sev_min 0.9 > sev_max 0.1"),
        ({"output": tmp_path}, "is a directory; give a file path"),
        ({"photos": [""]}, "photos: an empty name"),
        ({"photos": [str(tmp_path / "notes.png")]}, "notes.png: not a readable image"),
        ({"photos": [str(tmp_path)]}, "a folder; give its image files"),
    ]:
        (tmp_path / "notes.png").write_text("not an image")
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            H.run(H.HoldoutConfig(**{**base, **bad}), progress=False)
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match='no "attributes" table'):
        load_rules(tmp_path / "empty.json")
    H.run(H.HoldoutConfig(**base, output=tmp_path / "new" / "out.json"), progress=False)
    assert (tmp_path / "new").is_dir()  # the output's folder is made up front
