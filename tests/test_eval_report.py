"""Reports: results.json, markdown, self-contained HTML with embedded PNGs, W&B logging."""

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
from PIL import Image

from pluralign.eval.report import markdown_summary, write_reports
from pluralign.eval.results import build_results, read_results, write_results
from pluralign.eval.suite import EvalRow


def _rate(v):
    return {"value": v, "ci95": [max(0, v - 0.1), min(1, v + 0.1)], "n": 3}


def _variant(weight, adherence, leak):
    return {
        "kind": "base" if weight is None else "adapter", "weight": weight,
        "adherence": {**_rate(adherence), "by_attribute": {"blurry": _rate(adherence), "muted": _rate(adherence / 2)}},
        "leakage": None if weight is None else {
            "by_attribute": {"blurry": {"points": leak, "ci95": [0, leak], "rate": leak / 100, "baseline_rate": 0, "n": 3}},
            "max_abs_points": leak},
        "content_fidelity": _rate(0.9),
        "judges": {"clip": {"success": _rate(0.5)}},
        "reward_matrix": {"clip": {"I_o|P_o": 1.0, "I_o|P_a": 0.5, "I_a|P_o": 0.2, "I_a|P_a": 0.9, "delta_r": -0.8}},
    }


def _fixture():
    variants = {"base": _variant(None, 0.2, 0), "adapter@0": _variant(0.0, 0.2, 0.0),
                "adapter@1": _variant(1.0, 0.8, 3.0)}
    results = build_results(config={"suite": "toy"}, suite={"source": "toy", "n_rows": 3}, variants=variants,
                            reference="base", checks={"weight0_equals_base": {"max_abs_diff": 0, "passed": True}},
                            timing={"generate_seconds": 1.0}, wall_seconds=2.0)
    rng = np.random.default_rng(0)

    def img():
        return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))

    pairs = {v: [(img(), img()) for _ in range(3)] for v in variants}
    rows = [EvalRow(f"a cat {i}", f"a blurry cat {i} <b>", ["blurry"], i) for i in range(3)]
    return results, pairs, rows


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_results_json_roundtrip_and_dial_curve(tmp_path):
    results, _, _ = _fixture()
    results["wall_seconds"] = float("nan")  # NaN must become null, not invalid JSON
    path = write_results(results, tmp_path / "results.json")
    back = read_results(path)
    assert back["wall_seconds"] is None
    assert [p["weight"] for p in back["dial_curve"]] == [0.0, 1.0]
    assert back["dial_curve"][1]["adherence"] == 0.8 and back["dial_curve"][1]["leakage_max_abs_points"] == 3.0
    json.loads(path.read_text())  # strict JSON


def test_html_is_self_contained_and_every_image_decodes_as_png(tmp_path):
    results, pairs, rows = _fixture()
    paths = write_reports(results, pairs, rows, tmp_path, max_rows=2)
    text = paths["report_html"].read_text()
    parser = _Images()
    parser.feed(text)
    # 2 plots + 2 rows x 3 variants x (I_o, I_a)
    assert len(parser.srcs) == 2 + 2 * 3 * 2
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        Image.open(io.BytesIO(raw)).verify()
    # the first grid image is exactly the base I_o of row 0
    grid_srcs = [s for s in parser.srcs[2:]]
    first = Image.open(io.BytesIO(base64.b64decode(grid_srcs[0].split(",", 1)[1]))).convert("RGB")
    assert np.array_equal(np.asarray(first), np.asarray(pairs["base"][0][0]))
    assert "<b>" not in text.split("Images")[1].split("</table>")[0].replace("<b>P_o</b>", "").replace("<b>P_a</b>", "")
    assert "http" not in text  # nothing loaded from the network
    for key in ("report_md", "grid", "plot_attributes", "plot_dial"):
        assert paths[key].stat().st_size > 0
    grid = Image.open(paths["grid"])
    assert grid.size == (2 + 6 * 34, 2 + 2 * 34)


def test_markdown_summary_has_one_row_per_variant_and_the_weight0_check():
    results, _, _ = _fixture()
    md = markdown_summary(results)
    table = [line for line in md.splitlines() if line.startswith("| adapter@") or line.startswith("| base")]
    assert len(table) == 3
    assert "| adapter@1 | 80.0% [70.0, 90.0] |" in md
    assert "clip success" in md and "reproduces the base: yes" in md
    assert "| blurry | 3 |" in md


def test_wandb_logging_works_without_network(tmp_path, monkeypatch):
    import wandb

    from pluralign.eval.report import log_wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    results, pairs, rows = _fixture()
    run = wandb.init(project="pluralign-test", dir=str(tmp_path))
    logged = {}
    real_log = run.log

    def spy(data, *a, **k):
        logged.update(data)
        return real_log(data, *a, **k)

    run.log = spy
    log_wandb(run, results, pairs, rows)
    run.finish()
    assert {"eval/summary", "eval/by_attribute", "eval/grid", "eval/dial_curve"} <= set(logged)
    assert logged["eval/adapter@1/adherence"] == 0.8
