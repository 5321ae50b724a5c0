"""Generation with the adapter dial and ``pluralign eval`` end to end on the tiny SD pipeline."""

import json

import numpy as np
import pytest
import torch

from pluralign.eval.fixtures import save_random_lora
from pluralign.eval.generate import generate_variants, max_abs_difference, variants_for
from pluralign.eval.suite import EvalRow


@pytest.fixture(scope="module")
def sd_with_adapter(tiny_pipeline_dir, tmp_path_factory):
    base = tiny_pipeline_dir("sd")
    adapter = save_random_lora(base, tmp_path_factory.mktemp("lora"), scale=30.0)
    return base, adapter


@pytest.fixture(scope="module")
def pipe(sd_with_adapter):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(sd_with_adapter[0]))


ROWS = [EvalRow("a red circle on white", "a red circle on white, very dark", ["underexposed"], 11),
        EvalRow("a blue square", "a blue square, blurry", ["blurry"], 12),
        EvalRow("a green triangle", "a green triangle, muted colours", ["muted"], 13)]


def test_weight_zero_equals_base_and_weight_one_differs(pipe, sd_with_adapter):
    torch.manual_seed(0)
    out = generate_variants(pipe, ROWS, variants_for([0.0, 1.0], True), adapter_dir=sd_with_adapter[1],
                            adapter_name="dial", batch_size=2, num_inference_steps=2)
    assert list(out) == ["base", "adapter@0", "adapter@1"]
    assert max_abs_difference(out["base"], out["adapter@0"]) == 0
    assert max_abs_difference(out["base"], out["adapter@1"]) > 10
    # same seed for I_o and I_a: identical prompts would give identical images, so any difference is the prompt's
    again = generate_variants(pipe, [EvalRow("x", "x", [], 5)], variants_for([], False), num_inference_steps=2)
    o, a = again["base"][0]
    assert np.array_equal(np.asarray(o), np.asarray(a))
    # the base is regenerated with the adapter still loaded: disabling LoRA must give the same images
    rerun = generate_variants(pipe, ROWS, variants_for([], False), batch_size=3, num_inference_steps=2)
    assert max_abs_difference(out["base"], rerun["base"]) <= 1


def test_pluralign_eval_end_to_end_writes_every_output(sd_with_adapter, tmp_path):
    from pluralign.cli import main

    base, adapter = sd_with_adapter
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in ROWS))
    out = tmp_path / "eval"
    rc = main(["eval", "--base", str(base), "--adapter", str(adapter), "--weights", "0,0.5,1", "--suite", str(suite),
               "--judges", "verifier", "--num_inference_steps", "2", "--batch_size", "2", "--bootstrap", "200",
               "--output", str(out)])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"config", "suite", "variants", "dial_curve", "checks", "wall_seconds", "schema_version"}
    assert list(results["variants"]) == ["base", "adapter@0", "adapter@0.5", "adapter@1"]
    adapter1 = results["variants"]["adapter@1"]
    for key in ("adherence", "leakage", "content_fidelity", "judges", "reward_matrix", "adherence_delta_vs_reference",
                "content_fidelity_delta_vs_reference"):
        assert adapter1[key] is not None, key
    gap = adapter1["content_fidelity_delta_vs_reference"]
    assert gap["value"] == pytest.approx(adapter1["content_fidelity"]["value"]
                                         - results["variants"]["base"]["content_fidelity"]["value"])
    assert gap["ci95"][0] <= gap["value"] <= gap["ci95"][1]
    assert "content_fidelity_delta_vs_reference" not in results["variants"]["base"]
    assert set(adapter1["adherence"]) >= {"value", "ci95", "n", "by_attribute"}
    assert set(adapter1["adherence"]["by_attribute"]) == {"underexposed", "blurry", "muted"}
    assert set(adapter1["leakage"]) == {"by_attribute", "max_abs_points"}
    assert set(adapter1["judges"]["verifier"]) == {"success", "win_rate_vs_reference"}
    assert set(adapter1["reward_matrix"]["verifier"]) >= {"I_o|P_o", "I_o|P_a", "I_a|P_o", "I_a|P_a", "delta_r"}
    assert results["checks"]["weight0_equals_base"] == {"max_abs_diff": 0, "passed": True}
    # weight 0 reproduces the base, so every metric of both is the same
    assert results["variants"]["adapter@0"]["adherence"]["value"] == results["variants"]["base"]["adherence"]["value"]
    assert results["variants"]["adapter@0"]["leakage"]["max_abs_points"] == 0.0
    assert [p["weight"] for p in results["dial_curve"]] == [0.0, 0.5, 1.0]
    assert results["config"]["weights"] == [0.0, 0.5, 1.0]
    curves = results["category_curves"]  # the dial per taxonomy category, from each weight's by_category
    assert curves and all([p["weight"] for p in c] == [0.0, 0.5, 1.0] for c in curves.values())
    assert curves["clarity_and_focus"][-1]["adherence"] == adapter1["adherence"]["by_category"]["clarity_and_focus"]["value"]
    for name in ("report.md", "report.html", "grid.png", "adherence_by_attribute.png", "dial_curve.png",
                 "category_curves.png"):
        assert (out / name).stat().st_size > 0, name
    for folder in ("base", "adapter_w0", "adapter_w0.5", "adapter_w1"):
        assert sorted(p.name for p in (out / "images" / folder).iterdir()) == [
            "00000_a.png", "00000_o.png", "00001_a.png", "00001_o.png", "00002_a.png", "00002_o.png"]
    assert "| adapter@1 |" in (out / "report.md").read_text()


def test_eval_config_errors_name_the_key(tmp_path):
    from pluralign.config import ConfigError, parse
    from pluralign.eval.runner import EvalConfig

    with pytest.raises(ConfigError, match="content_checker"):
        parse((EvalConfig,), ["--content_checker", "magic"])
    with pytest.raises(ConfigError, match="weights"):
        parse((EvalConfig,), ["--weights", "0,-1"])
    (cfg,) = parse((EvalConfig,), ["--adapter", "runs/a/adapter", "--weights", "0,0.25,1", "--judges", "clip,blip"])
    assert cfg.weights == [0.0, 0.25, 1.0] and cfg.judges == ["clip", "blip"]


def test_pluralign_eval_help_renders(capsys):
    from pluralign.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--adapter" in out and "--weights" in out and "--judges" in out


def test_loading_another_adapter_under_the_same_name_replaces_it(tiny_pipeline_dir, tmp_path):
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from pluralign.eval.fixtures import save_random_lora
    from pluralign.eval.generate import load_adapter

    base = tiny_pipeline_dir("sd")
    one, two = save_random_lora(base, tmp_path / "one", seed=1), save_random_lora(base, tmp_path / "two", seed=2)
    pipe = StableDiffusionPipeline.from_pretrained(str(base))
    pipe.set_progress_bar_config(disable=True)

    def image():
        g = torch.Generator().manual_seed(0)
        return pipe("a red circle", num_inference_steps=2, generator=g, output_type="np").images[0]

    load_adapter(pipe, one, "intent")
    first = image()
    load_adapter(pipe, one, "intent")  # same source: kept
    np.testing.assert_array_equal(first, image())
    load_adapter(pipe, two, "intent")  # another source under the same name: replaced, not silently reused
    assert np.abs(first - image()).max() > 1e-4


def test_attribute_judge_auto_none_and_spec(tmp_path):
    from pluralign.eval.runner import load_attribute_judge
    from pluralign.toy.scorer import ToyScorer

    judge = load_attribute_judge("auto", "toy")  # the toy suite brings its checker as judge
    assert isinstance(judge, ToyScorer) and judge.checker is not None
    assert load_attribute_judge("none", "toy") is None
    assert load_attribute_judge("auto", str(tmp_path / "rows.jsonl")) is None  # a prompt file brings none
    with pytest.raises(ValueError, match="several scorers"):
        load_attribute_judge("verifiers,toy", "toy")
    # a named judge that is not on this machine fails before any image, naming what is missing
    with pytest.raises(FileNotFoundError, match="content checker is missing"):
        load_attribute_judge(f"toy:{tmp_path / 'nowhere'}", "toy")


@pytest.mark.parametrize("matches", [True, False])
def test_weight_zero_rows_reuse_the_base_only_when_the_generated_rows_match(sd_with_adapter, tmp_path, monkeypatch,
                                                                           matches):
    from pluralign.eval import generate as G
    from pluralign.eval import runner as R

    generated = []
    real = G.generate_pairs

    def counting(pipe, rows, desc="", **kw):
        generated.append((desc, len(rows)))
        return real(pipe, rows, desc=desc, **kw)

    monkeypatch.setattr(G, "generate_pairs", counting)
    if not matches:  # as if set_adapters left some LoRA layer on at weight 0
        monkeypatch.setattr(R, "max_abs_difference", lambda a, b: 7)
    base, adapter = sd_with_adapter
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in ROWS))
    cfg = R.EvalConfig(base=str(base), adapter=str(adapter), weights=[0.0, 1.0], num_inference_steps=2, batch_size=2,
                       bootstrap=100, judges=[], suite=str(suite), weight_zero_rows=1, output=str(tmp_path / "eval"))
    results = R.run_eval(cfg, rows=ROWS)
    zero_rows = [n for desc, n in generated if desc == "generate adapter@0"]
    check = results["checks"]["weight0_equals_base"]
    if matches:  # one row generated at weight 0; the base stands for the other two
        assert zero_rows == [1] and check == {"max_abs_diff": 0, "passed": True, "rows_generated": 1}
        assert results["variants"]["adapter@0"]["adherence"] == results["variants"]["base"]["adherence"]
    else:  # every row generated and checked
        assert zero_rows == [1, 2] and check["passed"] is False and "rows_generated" not in check
    assert len(list((tmp_path / "eval" / "images" / "adapter_w0").glob("*_a.png"))) == len(ROWS)
