"""Eval metrics on synthetic cases computed by hand."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pluralign.eval import metrics as M
from pluralign.eval.suite import EvalRow

NAN = np.nan


def test_row_adherence_counts_only_requested_attributes():
    # row 0 asks blurry+noisy (one shown), row 1 asks blurry (shown), row 2 asks noisy (not shown),
    # row 3 asks nothing verifiable.
    margins = {"blurry": np.array([0.3, 0.1, NAN, NAN]), "noisy": np.array([-0.2, NAN, -0.1, NAN])}
    np.testing.assert_allclose(M.row_adherence(margins), [0.5, 1.0, 0.0, NAN])
    s = M.adherence_summary(margins, n_boot=200)
    assert s["value"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["n"] == 3
    assert s["by_attribute"]["blurry"]["value"] == 1.0 and s["by_attribute"]["blurry"]["n"] == 2
    assert s["by_attribute"]["noisy"]["value"] == 0.0 and s["by_attribute"]["noisy"]["n"] == 2
    lo, hi = s["ci95"]
    assert 0.0 <= lo <= s["value"] <= hi <= 1.0


def test_margin_exactly_zero_is_not_adherence():
    assert M.row_adherence({"blurry": np.array([0.0, 1e-9])}).tolist() == [0.0, 1.0]


def test_leakage_points_are_rate_minus_self_baseline():
    fired = {"underexposed": np.array([1, 0, 0, 1, 0], bool), "muted": np.zeros(5, bool)}
    baseline = {"underexposed": np.zeros(5, bool), "muted": np.array([0, 0, 0, 0, 1], bool)}
    s = M.leakage_summary(fired, baseline, n_boot=200)
    assert s["by_attribute"]["underexposed"]["points"] == pytest.approx(40.0)
    assert s["by_attribute"]["underexposed"]["rate"] == pytest.approx(0.4)
    assert s["by_attribute"]["muted"]["points"] == pytest.approx(-20.0)
    assert s["max_abs_points"] == pytest.approx(40.0)
    lo, hi = s["by_attribute"]["underexposed"]["ci95"]
    assert lo <= 40.0 <= hi


def _image(value: float, size=32, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.clip(value + 0.15 * rng.standard_normal((size, size, 3)), 0, 1)
    return Image.fromarray((x * 255).astype(np.uint8))


def test_leakage_on_real_rules_fires_for_darkened_images_only():
    ref = [_image(0.6, seed=i) for i in range(4)]
    same = [im.copy() for im in ref]
    dark = [Image.fromarray((np.asarray(im) * 0.3).astype(np.uint8)) for im in ref]
    fired, base = M.leakage_fired(same, ref, ["underexposed", "overexposed"])
    s = M.leakage_summary(fired, base, n_boot=200)
    assert s["max_abs_points"] == 0.0  # an adapter with no effect leaks nothing
    fired, base = M.leakage_fired(dark, ref, ["underexposed", "overexposed"])
    s = M.leakage_summary(fired, base, n_boot=200)
    assert s["by_attribute"]["underexposed"]["points"] == pytest.approx(100.0)
    assert s["by_attribute"]["overexposed"]["points"] == pytest.approx(0.0)


def test_adherence_margins_pair_I_a_with_I_o_of_the_same_row():
    o = [_image(0.6, seed=i) for i in range(3)]
    a = [Image.fromarray((np.asarray(im) * 0.3).astype(np.uint8)) for im in o]
    a[2] = o[2].copy()  # row 2 ignored the request
    rows = [EvalRow("p", "p dark", ["underexposed"], i) for i in range(3)]
    s = M.adherence_summary(M.adherence_margins(list(zip(o, a)), rows), n_boot=200)
    assert s["value"] == pytest.approx(2 / 3)
    assert s["by_attribute"]["underexposed"]["n"] == 3


class _RedJudge:
    """A stand-in attribute judge: 'grief' is shown when the image's red channel dominates; a probability."""

    name = "red"
    decision_threshold = 0.5

    def measures(self, attribute):
        return attribute == "grief"

    def attribute_score(self, images, prompts_o, prompts_a, attributes, references=None):
        assert all(a == ["grief"] for a in attributes) and len(prompts_o) == len(prompts_a) == len(images)
        return np.array([float(np.asarray(im)[..., 0].mean() > np.asarray(im)[..., 2].mean() + 20) for im in images])


def _tinted(image, red: bool) -> Image.Image:
    x = np.asarray(image).astype(np.float32)
    if red:
        x[..., 0] = np.minimum(255, x[..., 0] + 80)
    return Image.fromarray(x.astype(np.uint8))


def test_category_adherence_counts_each_row_on_its_own_category_attributes_only():
    # row 0: blurry (clarity) shown + grief (emotion) missed; row 1: grief shown; row 2: underexposed
    # (lighting) missed; row 3: an attribute outside the taxonomy (no category)
    margins = {"blurry": np.array([0.3, NAN, NAN, NAN]), "grief": np.array([-0.1, 0.2, NAN, NAN]),
               "underexposed": np.array([NAN, NAN, -0.5, NAN]), "my_rule": np.array([NAN, NAN, NAN, 1.0])}
    by = M.adherence_summary(margins, n_boot=200)["by_category"]
    assert set(by) == {"clarity_and_focus", "emotion_and_subject", "lighting_and_exposure"}
    assert (by["emotion_and_subject"]["value"], by["emotion_and_subject"]["n"]) == (0.5, 2)
    assert by["emotion_and_subject"]["attributes"] == ["grief"]
    assert (by["clarity_and_focus"]["value"], by["clarity_and_focus"]["n"]) == (1.0, 1)
    assert (by["lighting_and_exposure"]["value"], by["lighting_and_exposure"]["n"]) == (0.0, 1)


def test_judge_only_attribute_is_unmeasured_without_a_judge_and_never_a_rate():
    o = [_image(0.6, seed=i) for i in range(4)]
    a = [Image.fromarray((np.asarray(im) * 0.3).astype(np.uint8)) for im in o]
    rows = [EvalRow("p", "p dark", ["underexposed"], 0), EvalRow("p", "p sad", ["grief"], 1),
            EvalRow("p", "p sad dark", ["grief", "underexposed"], 2), EvalRow("p", "p sad", ["grief"], 3)]
    meter = M.AttributeMeter()
    s = M.adherence_summary(meter.margins(list(zip(o, a)), rows), rows=rows, meter=meter, n_boot=200)
    assert s["by_attribute"]["grief"] == {"value": None, "ci95": None, "n": 0, "requested": 3, "measured_by": None}
    assert s["by_attribute"]["underexposed"]["requested"] == s["by_attribute"]["underexposed"]["n"] == 2
    assert (s["rows"], s["rows_measured"], s["value"]) == (4, 2, 1.0)  # rows 1 and 3 are not counted either way


def test_attribute_judge_measures_what_no_rule_does_and_its_leakage():
    o = [_image(0.6, seed=i) for i in range(4)]
    a = [_tinted(im, red=i < 3) for i, im in enumerate(o)]  # row 3 ignored the request
    rows = [EvalRow("p", "p sad", ["grief"], i) for i in range(4)]
    meter = M.AttributeMeter(judge=_RedJudge())
    assert meter.source("grief") == "judge:red" and meter.source("underexposed") == "rule"
    assert meter.source("surreal") is None
    s = M.adherence_summary(meter.margins(list(zip(o, a)), rows), rows=rows, meter=meter, n_boot=200)
    assert s["by_attribute"]["grief"]["value"] == 0.75 and s["by_attribute"]["grief"]["measured_by"] == "judge:red"
    # leakage: the variant's ordinary images turned red on rows 0 and 1, against an untinted reference
    variant_o = [_tinted(im, red=i < 2) for i, im in enumerate(o)]
    fired, base = M.leakage_fired(variant_o, o, ["grief"], meter=meter, rows=rows)
    assert M.leakage_summary(fired, base, n_boot=200)["by_attribute"]["grief"]["points"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="suite rows"):
        M.leakage_fired(variant_o, o, ["grief"], meter=meter)


def test_a_dimension_request_is_shown_when_any_of_its_rules_fires_and_judge_only_ones_stay_unmeasured():
    o = [_image(0.6, seed=i) for i in range(4)]
    dark = [Image.fromarray((np.asarray(im) * 0.3).astype(np.uint8)) for im in o]
    blurred = [im.filter(ImageFilter.GaussianBlur(2)) for im in o]
    pairs = [(o[0], dark[0]), (o[1], blurred[1]), (o[2], o[2].copy()), (o[3], blurred[3])]
    rows = [EvalRow("p", "p dark", ["dimension:color_brightness"], 0), EvalRow("p", "p blurry", ["dimension:clarity"], 1),
            EvalRow("p", "p blurry", ["dimension:clarity"], 2),
            EvalRow("p", "p ugly", ["dimension:color_aesthetic", "dimension:clarity"], 3)]
    meter = M.AttributeMeter()
    assert meter.source("dimension:clarity") == "rules:blurry|motion_blur|defocused"
    assert meter.source("dimension:color_brightness") == "rules:underexposed"
    assert meter.source("dimension:color_aesthetic") is None  # judge only: no rule pretends to see "ugly colors"
    margins = meter.margins(pairs, rows)
    assert margins["dimension:color_brightness"][0] > 0 and np.isnan(margins["dimension:color_brightness"][1:]).all()
    clarity = margins["dimension:clarity"]
    assert np.isnan(clarity[0]) and clarity[1] > 0 and clarity[2] < 0 and clarity[3] > 0
    s = M.adherence_summary(margins, rows=rows, meter=meter, n_boot=200)
    assert s["by_attribute"]["dimension:color_aesthetic"] == {"value": None, "ci95": None, "n": 0, "requested": 1,
                                                             "measured_by": None}
    assert (s["by_attribute"]["dimension:clarity"]["value"], s["by_attribute"]["dimension:clarity"]["n"]) == (2 / 3, 3)
    # a darkened image does not pass for a blurred one: the dimension's margin is its own rules' largest
    assert M.AttributeMeter().margins([(o[0], dark[0])], [EvalRow("p", "p", ["dimension:clarity"], 0)])[
        "dimension:clarity"][0] < 0


def test_judge_summary_uses_the_four_way_matrix_by_hand():
    scores = {  # r(I_x, P_y)
        "oo": np.array([1.0, 2.0, 3.0, 4.0]),
        "oa": np.array([0.5, 0.5, 0.5, 0.5]),
        "ao": np.array([0.0, 1.0, 3.0, 2.0]),
        "aa": np.array([1.0, 0.0, 0.5, 2.0]),
    }
    s = M.judge_summary(scores, n_boot=200)
    # success: aa > oa in rows 0 and 3, tie in row 2 (counts 1/2), loss in row 1
    assert s["success"]["value"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert s["reward_matrix"] == {"I_o|P_o": 2.5, "I_o|P_a": 0.5, "I_a|P_o": 1.5, "I_a|P_a": 0.875}
    assert s["delta_r"]["value"] == pytest.approx(((0 - 1) + (1 - 2) + 0 + (2 - 4)) / 4)


def test_win_rate_counts_ties_as_half():
    s = M.win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, 0.0], n_boot=200)
    assert s["value"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def test_score_matrix_calls_the_reward_with_each_image_prompt_combination():
    calls = []

    def score(images, prompts):
        calls.append(list(prompts))
        return np.array([float(np.asarray(im).mean()) + len(p) for im, p in zip(images, prompts)])

    black, white = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), "white")
    rows = [EvalRow("po", "pa long", [], 0)]
    m = M.score_matrix(score, [(black, white)], rows)
    assert m["oo"][0] == 2 and m["oa"][0] == 7 and m["ao"][0] == 255 + 2 and m["aa"][0] == 255 + 7
    assert calls == [["po"], ["pa long"], ["po"], ["pa long"]]


def test_content_summary_and_toy_style_checker_get_row_fields():
    class Checker:
        def check(self, images, rows):
            return np.array([r["shape"] == "circle" for r in rows])

    rows = [EvalRow("a", "b", [], 0, {"shape": "circle"}), EvalRow("a", "b", [], 1, {"shape": "square"})]
    kept = M.check_content(Checker(), [None, None], rows)
    assert kept.tolist() == [True, False]
    s = M.content_summary(kept, [True, True], n_boot=200)
    assert s["value"] == 0.5 and s["ordinary"]["value"] == 1.0
    assert "by_attribute" not in s


def test_content_summary_by_attribute():
    kept = [True, False, False, True, True]
    attrs = [["dark"], ["dark"], ["blurry", "dark"], ["blurry"], ["muted"]]
    s = M.content_summary(kept, None, attributes=attrs, n_boot=200)
    assert s["value"] == 0.6 and "ordinary" not in s
    by = {a: (v["value"], v["n"]) for a, v in s["by_attribute"].items()}
    assert by == {"blurry": (0.5, 2), "dark": (1 / 3, 3), "muted": (1.0, 1)}
    with pytest.raises(ValueError, match="5 rows but 2 attribute lists"):
        M.content_summary(kept, None, attributes=attrs[:2])


def test_similarity_content_keeps_exposure_changes_and_rejects_other_scenes():
    o = _image(0.5, seed=1)
    darker = Image.fromarray((np.asarray(o) * 0.5).astype(np.uint8))
    other = _image(0.5, seed=2)
    kept = M.SimilarityContent(0.5).check_pairs([darker, other], [o, o])
    assert kept.tolist() == [True, False]
