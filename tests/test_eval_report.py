"""Reports: results.json, markdown, self-contained HTML with embedded PNGs, W&B logging."""

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from pluralign.eval.report import _yerr, attribute_groups, html_report, markdown_summary, write_reports
from pluralign.eval.results import adapter_category_curves, build_results, read_results, write_results
from pluralign.eval.suite import EvalRow


def _rate(v):
    return {"value": v, "ci95": [max(0, v - 0.1), min(1, v + 0.1)], "n": 3}


def _variant(weight, adherence, leak):
    return {
        "kind": "base" if weight is None else "adapter", "weight": weight,
        "adherence": {**_rate(adherence), "by_attribute": {"blurry": _rate(adherence), "muted": _rate(adherence / 2)},
                      "by_category": {"clarity_and_focus": _rate(adherence), "color_and_tone": _rate(adherence / 2)}},
        "leakage": None if weight is None else {
            "by_attribute": {"blurry": {"points": leak, "ci95": [0, leak], "rate": leak / 100, "baseline_rate": 0, "n": 3}},
            "max_abs_points": leak},
        "content_fidelity": _rate(0.9),
        "judges": {"clip": {"success": _rate(0.5)}},
        "reward_matrix": {"clip": {"I_o|P_o": 1.0, "I_o|P_a": 0.5, "I_a|P_o": 0.2, "I_a|P_a": 0.9, "delta_r": -0.8}},
    }


# rows 0-5: blurry, muted, both, blurry, muted, blurry
ATTRS = [["blurry"], ["muted"], ["blurry", "muted"], ["blurry"], ["muted"], ["blurry"]]


def _fixture():
    variants = {"base": _variant(None, 0.2, 0), "adapter@0": _variant(0.0, 0.2, 0.0),
                "adapter@1": _variant(1.0, 0.8, 3.0)}
    results = build_results(config={"suite": "toy"}, suite={"source": "toy", "n_rows": len(ATTRS)}, variants=variants,
                            reference="base", checks={"weight0_equals_base": {"max_abs_diff": 0, "passed": True}},
                            timing={"generate_seconds": 1.0}, wall_seconds=2.0)
    rng = np.random.default_rng(0)

    def img():
        return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))

    pairs = {v: [(img(), img()) for _ in ATTRS] for v in variants}
    rows = [EvalRow(f"a cat {i}", f"a {' '.join(a)} cat {i} <b>", a, 100 + i) for i, a in enumerate(ATTRS)]
    return results, pairs, rows


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.alts = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
            self.alts.append(dict(attrs)["alt"])


def _decode(src):
    assert src.startswith("data:image/png;base64,")
    raw = base64.b64decode(src.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(raw)).convert("RGB")


def _nearest(image, k):
    return np.asarray(image).repeat(k, axis=0).repeat(k, axis=1)


def test_results_json_roundtrip_and_dial_curve(tmp_path):
    results, _, _ = _fixture()
    results["wall_seconds"] = float("nan")  # NaN must become null, not invalid JSON
    path = write_results(results, tmp_path / "results.json")
    back = read_results(path)
    assert back["wall_seconds"] is None
    assert [p["weight"] for p in back["dial_curve"]] == [0.0, 1.0]
    assert back["dial_curve"][1]["adherence"] == 0.8 and back["dial_curve"][1]["leakage_max_abs_points"] == 3.0
    json.loads(path.read_text())  # strict JSON


def test_category_curves_follow_the_single_adapter_per_category():
    results, _, _ = _fixture()
    curves = results["category_curves"]
    assert list(curves) == ["clarity_and_focus", "color_and_tone"]
    assert [p["weight"] for p in curves["color_and_tone"]] == [0.0, 1.0]  # the base (no weight) is not a point
    top = curves["color_and_tone"][1]
    assert top == {"variant": "adapter@1", "weight": 1.0, "adherence": 0.4, "ci95": pytest.approx([0.3, 0.5]), "n": 3}
    # weight order whatever the variants' order; a per-category eval's category variants are not this curve
    variants = {"adapter@1": _variant(1.0, 0.8, 0), "adapter@0.5": _variant(0.5, 0.6, 0),
                "blurry@1": {**_variant(1.0, 0.1, 0), "category": "clarity_and_focus"}}
    assert [p["adherence"] for p in adapter_category_curves(variants)["clarity_and_focus"]] == [0.6, 0.8]
    per_category = build_results(config={}, suite={}, variants=variants, reference="base", checks={}, timing={},
                                 wall_seconds=0.0, category_dials={}, cross_effects={})
    assert "category_curves" not in per_category


def test_images_are_grouped_by_attribute_with_at_most_max_rows_each():
    _, _, rows = _fixture()
    assert attribute_groups(rows, 2) == [("blurry", [0, 2]), ("muted", [1, 2])]
    assert attribute_groups(rows, 9) == [("blurry", [0, 2, 3, 5]), ("muted", [1, 2, 4])]
    assert attribute_groups([EvalRow("p", "q", [], 0)], 1) == [("(no attribute requested)", [0])]


def test_error_bars_come_from_the_ci_and_are_never_negative():
    lo, hi = _yerr([0.5, 0.2, float("nan"), 0.3], [[0.4, 0.7], None, [0.1, 0.2], [0.31, 0.5]])
    assert lo == pytest.approx([0.1, 0.0, 0.0, 0.0]) and hi == pytest.approx([0.2, 0.0, 0.0, 0.2])


def test_html_is_self_contained_and_shows_each_attributes_rows_upscaled_without_smoothing(tmp_path):
    results, pairs, rows = _fixture()
    paths = write_reports(results, pairs, rows, tmp_path, max_rows=2)
    text = paths["report_html"].read_text()
    parser = _Images()
    parser.feed(text)
    plots = ["adherence per attribute", "dial curve", "dial per category"]
    assert parser.alts[:3] == plots
    for src in parser.srcs[:3]:
        _decode(src)
    # per attribute 2 rows (row 2 requests both, so it shows under both) x 3 variants x (I_o, I_a)
    shown = [0, 2, 1, 2]
    cells = list(zip(parser.alts[3:], parser.srcs[3:]))
    assert len(cells) == len(shown) * 3 * 2
    for n, (alt, src) in enumerate(cells):
        row, variant, k = shown[n // 6], list(pairs)[n % 6 // 2], n % 2
        assert alt == f"{variant} row {row} {('I_o', 'I_a')[k]}"
        assert np.array_equal(np.asarray(_decode(src)), _nearest(pairs[variant][row][k], 4))  # 32 px -> 128 px
    assert text.index("<h3 id='images-blurry'>blurry</h3>") < text.index("<h3 id='images-muted'>muted</h3>")
    assert "2 of 4 prompt pairs that request it" in text and "2 of 3 prompt pairs that request it" in text
    assert "A dash" not in text  # every variant has every row
    # each prompt row follows its image row, escaped
    pair_rows = text.split("<tr class='pair'>")[1:]
    for n, part in enumerate(pair_rows):
        prompt = part.split("</tr>", 1)[1]
        assert prompt.startswith("<tr class='prompt'>")
        assert f"<span>a cat {shown[n]}</span>" in prompt and f"cat {shown[n]} &lt;b&gt;</span>" in prompt
        assert f"seed {100 + shown[n]}" in prompt
    assert "<b>" not in text and "http" not in text and "<link" not in text and "<script" not in text
    assert "<h2>Dial per category</h2>" in text and "clarity_and_focus (3)" in text
    for key in ("report_md", "grid", "plot_attributes", "plot_dial", "plot_category_curves"):
        assert paths[key].stat().st_size > 0
    grid = Image.open(paths["grid"]).convert("RGB")
    assert grid.size == (2 + 6 * 130, 2 + 4 * 130)
    assert np.array_equal(np.asarray(grid)[2:130, 2:130], _nearest(pairs["base"][0][0], 4))


def test_per_category_images_leave_missing_variants_blank_and_name_suite_rows():
    results, pairs, rows = _fixture()
    results["category_dials"] = {}  # a selection of suite rows, one variant not generated on two of them
    results["variants"]["base"]["adherence"]["by_attribute"]["blurry"]["requested"] = 40  # rows in the whole suite
    picked = [2, 3, 5]
    pairs = {v: [pairs[v][i] for i in picked] for v in pairs}
    pairs["adapter@0"] = [pairs["adapter@0"][0], None, None]
    text = html_report(results, pairs, [rows[i] for i in picked], max_rows=4, row_ids=[12, 13, 15])
    assert "suite row 13" in text and "adapter@0 row 13" not in text and "adapter@1 row 13 I_a" in text
    assert "adapter@0 row 12 I_o" in text and "A dash: the variant was not generated" in text
    assert "3 of 40 prompt pairs that request it." in text and "Prompt pairs shown: 1." in text  # muted: no count
    first_blurry = text.split("<tr class='pair'>")[2].split("</tr>")[0]  # row 13: base, blank, adapter@1
    assert first_blurry.count("<td class='missing'>–</td>") == 2 and first_blurry.count("<img") == 4


def test_markdown_summary_has_one_row_per_variant_and_the_weight0_check():
    results, _, _ = _fixture()
    md = markdown_summary(results)
    table = [line for line in md.splitlines() if line.startswith("| adapter@") or line.startswith("| base")]
    assert len(table) == 3
    assert "| adapter@1 | 80.0% [70.0, 90.0] |" in md
    assert "clip success" in md and "reproduces the base: yes" in md
    assert "| blurry | 3 |" in md
    assert "| category (rows) | weight 0 [95% CI] | weight 1 [95% CI] |" in md
    assert "| color_and_tone (3) | 10.0% [0.0, 20.0] | 40.0% [30.0, 50.0] |" in md


def test_wandb_logging_works_without_network(tmp_path, monkeypatch):
    import wandb

    from pluralign.eval.report import log_wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    results, pairs, rows = _fixture()
    pairs["adapter@0"][1] = None  # a variant not generated on a row: empty cells, not an error
    run = wandb.init(project="pluralign-test", dir=str(tmp_path))
    logged = {}
    real_log = run.log

    def spy(data, *a, **k):
        logged.update(data)
        return real_log(data, *a, **k)

    run.log = spy
    log_wandb(run, results, pairs, rows, max_rows=2)
    run.finish()
    assert {"eval/summary", "eval/by_attribute", "eval/grid", "eval/dial_curve", "eval/images", "eval/by_category",
            "eval/category_curves"} <= set(logged)
    assert logged["eval/adapter@1/adherence"] == 0.8
    table = logged["eval/images"]
    assert table.columns == ["attribute", "row", "prompt_o", "prompt_a", "seed", "base I_o", "base I_a",
                             "adapter@0 I_o", "adapter@0 I_a", "adapter@1 I_o", "adapter@1 I_a"]
    assert [r[:2] for r in table.data] == [["blurry", 0], ["blurry", 2], ["muted", 1], ["muted", 2]]
    muted = table.data[2]
    assert muted[2:5] == ["a cat 1", "a muted cat 1 <b>", 101]
    assert muted[7] is None and muted[8] is None
    shown = np.asarray(muted[10].image.convert("RGB"))  # adapter@1 I_a of row 1, as the HTML shows it
    assert np.array_equal(shown, _nearest(pairs["adapter@1"][1][1], 4))
