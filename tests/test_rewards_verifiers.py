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
    assert all(np.isfinite(r.threshold) for r in load_rules().values())


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


# Attributes whose held-out accuracy in the shipped calibration is below the 95% target; see docs/rewards.md.
BELOW_TARGET = {"noisy", "film_grain", "jpeg_artifacts", "chromatic_aberration", "tilted", "obstructed"}


@pytest.mark.slow
def test_heldout_accuracy_and_false_positives():
    cfg = C.CalibrationConfig(n_pos=60, n_neg=200, seed=123)
    rules = load_rules()
    pairs = C.build_pairs(C.HELDOUT_PHOTOS, list(RULE_SPECS), cfg, seed=123, progress=False)
    pos, neg = C.statistics(pairs, rules)
    for attr, rule in rules.items():
        acc = float((pos[attr] > rule.threshold).mean())
        fpr = float((neg[attr] > rule.threshold).mean())
        assert fpr <= (0.075 if attr in BELOW_TARGET else 0.05), (attr, fpr)
        # 60 positives: a rule at 95% accuracy scores >= 90% here with probability > 0.95
        assert acc >= (0.8 if attr in BELOW_TARGET else 0.9), (attr, acc)


def test_shipped_table_records_heldout_metrics():
    import json

    from pluralign.rewards.rules import THRESHOLDS_PATH

    data = json.loads(THRESHOLDS_PATH.read_text())
    assert data["config"]["sev_min"] == 0.3 and 32 in data["config"]["sizes"]
    for attr, row in data["attributes"].items():
        assert row["heldout"]["fpr"] <= 0.05, attr
        assert row["heldout"]["accuracy"] >= (0.85 if attr in BELOW_TARGET else 0.95), attr
