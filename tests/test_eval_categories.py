"""The per-category dial of ``pluralign eval`` (``--adapters`` / ``--adapters_dir``).

Two category adapters are trained for two steps on the tiny SD pipeline (``adapter_mode:
per_category``), then evaluated on a six-row suite: three rows of clarity_and_focus, three of
lighting_and_exposure (one row requests both) and one of color_and_tone, which has no adapter.
The verifier thresholds are set to 0 so that the random tiny model's images give rates that are
neither all 0 nor all 1 and the matrix checks compare numbers that differ.
"""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from pluralign.cli import main as cli
from pluralign.eval import generate, runner
from pluralign.eval.fixtures import save_random_lora
from pluralign.eval.generate import generate_pairs, max_abs_difference
from pluralign.eval.runner import EvalConfig, run_eval
from pluralign.eval.suite import EvalRow
from pluralign.rewards.rules import adherence_table, load_rules
from pluralign.trainers.export import add_metadata
from pluralign.trainers.identity import base_identity, identity_metadata

CATS = ["clarity_and_focus", "lighting_and_exposure"]
ROWS = [EvalRow("a red circle on white", "a red circle on white, blurry", ["blurry"], 1),
        EvalRow("a blue square", "a blue square, very dark", ["underexposed"], 2),
        EvalRow("a green triangle", "a green triangle, noisy", ["noisy"], 3),
        EvalRow("a yellow star", "a yellow star, muted colours", ["muted"], 4),
        EvalRow("a red square", "a red square, blown out", ["overexposed"], 5),
        EvalRow("a blue circle", "a blue circle, blurry and dark", ["blurry", "underexposed"], 6)]
OF = {"clarity_and_focus": [0, 2, 5], "lighting_and_exposure": [1, 4, 5], "color_and_tone": [3]}
ATTRS = {"clarity_and_focus": ["blurry", "noisy"], "color_and_tone": ["muted"],
         "lighting_and_exposure": ["overexposed", "underexposed"]}
FAST = ["--num_inference_steps", "1", "--batch_size", "2", "--bootstrap", "100", "--content_checker", "none"]
RULES = {a: dataclasses.replace(r, threshold=0.0) for a, r in load_rules().items()}


@pytest.fixture(scope="module")
def run_dir(tiny_pipeline_dir, tmp_path_factory):
    """A per-category training run (two steps per adapter) on the tiny SD pipeline."""
    from pluralign.trainers import DPOTrainConfig, train

    tmp = tmp_path_factory.mktemp("percat")
    result = train(DPOTrainConfig(pretrained_model=str(tiny_pipeline_dir("sd")), dataset="builtin:shapes",
                                  output_dir=str(tmp / "run"), cache_dir=str(tmp / "cache"), max_steps=2,
                                  train_batch_size=2, learning_rate=5e-3, rank=4, alpha=4.0, report_to="none",
                                  export_kohya=False, lr_warmup_steps=0, adapter_mode="per_category", categories=CATS))
    assert set(result.adapter_dirs) == set(CATS)
    return result.output_dir


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "suite.jsonl"
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in ROWS))
    return path


def _pipe(model):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(model))


@pytest.fixture(scope="module")
def evaluated(tiny_pipeline_dir, run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "eval"
    pipe = _pipe(tiny_pipeline_dir("sd"))
    # one row per pipeline call: a sweep below the top weight runs on a subset of the rows, and a batch of other
    # rows changes the arithmetic by up to 1/255, which would hide what the image comparisons below look for
    config = EvalConfig(adapters_dir=str(run_dir), weights=[0.0, 0.5, 1.0], suite="six rows", num_inference_steps=1,
                        batch_size=1, bootstrap=200, content_checker="none", output=str(out))
    results = run_eval(config, pipe=pipe, rows=ROWS, judges={}, rules=RULES)
    return results, out, pipe


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _pairs(out, folder, indices):
    return [(Image.open(out / "images" / folder / f"{i:05d}_o.png").convert("RGB"),
             Image.open(out / "images" / folder / f"{i:05d}_a.png").convert("RGB")) for i in indices]


def test_each_sweep_is_scored_on_its_own_rows_and_starts_at_the_base(evaluated, run_dir):
    results, out, _ = evaluated
    assert list(results["variants"]) == ["base"] + [f"{c}@{w}" for c in CATS for w in ("0", "0.5", "1")]
    assert results["dial_curve"] == []  # the single adapter's curve; here one per category instead
    assert list(results["category_dials"]) == CATS
    for c in CATS:
        dial = results["category_dials"][c]
        assert dial["n_rows"] == len(OF[c]) and dial["adapter"] == str(run_dir / "adapter" / c)
        assert dial["attributes"] == ATTRS[c] and dial["base"]["n"] == len(OF[c])
        assert [p["weight"] for p in dial["curve"]] == [0.0, 0.5, 1.0]
        for p in dial["curve"]:
            v = results["variants"][p["variant"]]
            assert v["category"] == c and v["n_rows"] == len(OF[c]) and p["n"] == len(OF[c])
            assert set(v["adherence"]["by_attribute"]) == set(ATTRS[c])  # row 5's other attribute is not scored here
            assert set(v["leakage"]["by_attribute"]) == set(ATTRS[c])
        # below the top weight only the category's rows are generated; at the top weight every row (cross-effects)
        for w, rows in (("0", OF[c]), ("0.5", OF[c]), ("1", range(len(ROWS)))):
            files = sorted(p.name for p in (out / "images" / f"{c}_w{w}").iterdir())
            assert files == sorted(f"{i:05d}_{k}.png" for i in rows for k in "ao")
            if w == "0":  # every adapter at 0 reproduces the base, image for image
                for f in files:
                    assert np.array_equal(_png(out / "images" / f"{c}_w0" / f), _png(out / "images" / "base" / f)), f
        assert max_abs_difference(_pairs(out, f"{c}_w1", OF[c]), _pairs(out, "base", OF[c])) > 0  # the adapter acts
    zero = results["checks"]["weight0_equals_base"]
    assert zero["passed"] and zero["max_abs_diff"] == 0 and set(zero["by_category"]) == set(CATS)


def test_the_other_adapters_stay_at_zero_during_a_sweep(evaluated):
    """A sweep's images equal those of the pipeline with that category's adapter alone active; with the
    other adapter turned up as well they would not."""
    results, out, pipe = evaluated  # the eval's pipeline: both adapters are still loaded on it
    rows = [ROWS[i] for i in OF[CATS[0]]]
    for c in CATS:
        pipe.set_adapters([c], [1.0])
        alone = generate_pairs(pipe, [ROWS[i] for i in OF[c]], batch_size=1, num_inference_steps=1)
        assert max_abs_difference(alone, _pairs(out, f"{c}_w1", OF[c])) == 0
    pipe.set_adapters(CATS, [1.0, 1.0])
    both = generate_pairs(pipe, rows, batch_size=1, num_inference_steps=1)
    assert max_abs_difference(both, _pairs(out, f"{CATS[0]}_w1", OF[CATS[0]])) > 0


def test_cross_effect_matrix_shape_diagonal_and_cells(evaluated):
    results, out, _ = evaluated
    cross = results["cross_effects"]
    assert cross["top_weight"] == 1.0 and cross["adapters"] == CATS
    assert cross["categories"] == list(ATTRS) and cross["attributes"] == [a for v in ATTRS.values() for a in v]
    assert cross["weight0_reference"] == {"clarity_and_focus": "clarity_and_focus@0", "color_and_tone": "base",
                                          "lighting_and_exposure": "lighting_and_exposure@0"}
    for c in CATS:
        assert list(cross["by_category"][c]) == list(ATTRS)
        assert list(cross["by_attribute"][c]) == cross["attributes"]
        top = results["variants"][f"{c}@1"]
        # the diagonal is the curve's top point, to the last digit, CI and n included
        assert cross["by_category"][c][c]["adherence"] == {k: top["adherence"][k] for k in ("value", "ci95", "n")}
        assert results["category_dials"][c]["curve"][-1]["adherence"] == top["adherence"]["value"]
        for a in ATTRS[c]:
            per_attr = top["adherence"]["by_attribute"][a]
            assert cross["by_attribute"][c][a]["adherence"] == {k: per_attr[k] for k in ("value", "ci95", "n")}
            assert per_attr["measured_by"] == "rule" and per_attr["requested"] == per_attr["n"]
        for k, attrs in ATTRS.items():  # each cell from the saved images: c at 1 on k's rows, k's attributes only
            rows = OF[k]
            margins = adherence_table([a for _, a in _pairs(out, f"{c}_w1", rows)],
                                      [o for o, _ in _pairs(out, f"{c}_w1", rows)],
                                      [[a for a in ROWS[i].attributes if a in attrs] for i in rows], RULES)
            hits = np.stack([(np.nan_to_num(margins[a], nan=-1) > 0) for a in margins], 1).sum(1)
            counts = np.stack([~np.isnan(margins[a]) for a in margins], 1).sum(1)
            cell = cross["by_category"][c][k]
            assert cell["adherence"]["n"] == len(rows)
            assert cell["adherence"]["value"] == pytest.approx(float(np.mean(hits / counts)))
            zero_folder = f"{k}_w0" if k in CATS else "base"
            zmargins = adherence_table([a for _, a in _pairs(out, zero_folder, rows)],
                                       [o for o, _ in _pairs(out, zero_folder, rows)],
                                       [[a for a in ROWS[i].attributes if a in attrs] for i in rows], RULES)
            zhits = np.stack([(np.nan_to_num(zmargins[a], nan=-1) > 0) for a in zmargins], 1).sum(1)
            assert cell["adherence_delta_vs_weight0"]["value"] == pytest.approx(float(np.mean((hits - zhits) / counts)))
            leaks = [abs(cross["by_attribute"][c][a]["leakage"]["points"]) for a in attrs]
            assert cell["leakage_max_abs_points"] == max(leaks)
        for a in cross["attributes"]:
            assert cross["by_attribute"][c][a]["leakage"]["n"] == len(ROWS)  # every row's ordinary image
    values = {cross["by_category"][c][k]["adherence"]["value"] for c in CATS for k in ATTRS}
    assert len(values) > 1  # the checks above compared numbers that differ, not zeros


def test_reports_give_a_dial_per_category_and_the_matrix(evaluated):
    results, out, _ = evaluated
    md = (out / "report.md").read_text()
    for text in ("## Dial per category", "### clarity_and_focus", "### lighting_and_exposure", "## Cross-effects",
                 "| adapter @ 1 | clarity_and_focus | color_and_tone | lighting_and_exposure |",
                 "| adapter @ 1 | blurry | noisy | muted | overexposed | underexposed |",
                 "| clarity_and_focus@0.5 | clarity_and_focus (3) |", "Every category adapter at weight 0 reproduces"):
        assert text in md, text
    assert "## Per attribute" not in md
    html = (out / "report.html").read_text()
    assert "<h2>Cross-effects</h2>" in html and "<h3>lighting_and_exposure</h3>" in html and "dial per category" in html
    assert (out / "category_dials.png").stat().st_size > 0 and not (out / "dial_curve.png").exists()
    assert json.loads((out / "results.json").read_text())["cross_effects"]["adapters"] == CATS


def test_adapters_entries_on_the_command_line(evaluated, tiny_pipeline_dir, run_dir, suite, tmp_path):
    """``--adapters CATEGORY=DIR`` through the CLI: one category, one weight (no weight 0: the cross-effects'
    changes are then taken against the base, and say so)."""
    out = tmp_path / "eval"
    c = CATS[1]
    rc = cli(["eval", "--base", str(tiny_pipeline_dir("sd")), "--adapters", f"{c}={run_dir / 'adapter' / c}",
              "--weights", "1", "--suite", str(suite), "--output", str(out), *FAST])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["variants"]) == ["base", f"{c}@1"] and "weight0_equals_base" not in results["checks"]
    assert results["config"]["adapters"] == [f"{c}={run_dir / 'adapter' / c}"]
    assert results["category_dials"][c]["n_rows"] == 3 and list(results["cross_effects"]["by_category"]) == [c]
    assert set(results["cross_effects"]["weight0_reference"].values()) == {"base"}


# ------------------------------------------------------------------ bad input: named, before any image


def _no_model_load(monkeypatch):
    monkeypatch.setattr(runner, "load_pipeline", lambda *a, **k: pytest.fail("loaded the base pipeline"))
    monkeypatch.setattr(generate, "generate_pairs", lambda *a, **k: pytest.fail("generated an image"))


@pytest.mark.parametrize("args, message", [
    (lambda d, r: ["--adapters", "clarity_and_focus=" + str(d / "nope")],
     lambda d, r: f"adapters: clarity_and_focus={d / 'nope'}: no such file or directory; pass the adapter folder"),
    (lambda d, r: ["--adapters", f"colour_and_tone={r}"],
     lambda d, r: "adapters: 'colour_and_tone' is not a taxonomy category (did you mean 'color_and_tone'?)"),
    (lambda d, r: ["--adapters", str(r)],
     lambda d, r: f"adapters: '{r}' is not CATEGORY=PATH; write e.g. --adapters clarity_and_focus="),
    (lambda d, r: ["--adapters", f"clarity_and_focus={r},clarity_and_focus={r}"],
     lambda d, r: "adapters: category clarity_and_focus is given twice"),
    (lambda d, r: ["--adapter", str(r / "adapter" / CATS[0]), "--adapters_dir", str(r)],
     lambda d, r: "adapter and adapters/adapters_dir: give one of them"),
    (lambda d, r: ["--adapters_dir", str(d / "nope")],
     lambda d, r: f"adapters_dir {d / 'nope'}: no such directory; pass the output_dir of a training run with "
                  "adapter_mode: per_category"),
    (lambda d, r: ["--adapters_dir", str(r), "--weights", "0"],
     lambda d, r: "weights: a per-category eval needs a weight above 0"),
    (lambda d, r: ["--weights", "0.5,1"],  # without an adapter the base alone would be evaluated, without a word
     lambda d, r: "weights [0.5, 1.0]: the weights dial an adapter, and none is given"),
    (lambda d, r: ["--weights", "0,0.5,1"],  # the default's values, given: refused all the same
     lambda d, r: "weights [0.0, 0.5, 1.0]: the weights dial an adapter, and none is given"),
])
def test_bad_options_are_named_before_any_work(run_dir, suite, tmp_path, capsys, monkeypatch, args, message):
    _no_model_load(monkeypatch)
    out = tmp_path / "eval"
    rc = cli(["eval", "--base", str(tmp_path), "--suite", str(suite), "--output", str(out), *FAST,
              *args(tmp_path, run_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and message(tmp_path, run_dir) in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_run_dir_that_is_not_per_category_is_named(tiny_pipeline_dir, run_dir, suite, tmp_path, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    single = tmp_path / "single"
    save_random_lora(tiny_pipeline_dir("sd"), single / "adapter")
    partial = tmp_path / "partial"  # a category that trained (its run dir) but exported no adapter
    (partial / "adapter").mkdir(parents=True)
    (partial / "adapter" / CATS[0]).symlink_to(run_dir / "adapter" / CATS[0], target_is_directory=True)
    (partial / "runs" / CATS[1]).mkdir(parents=True)
    base = ["eval", "--base", str(tiny_pipeline_dir("sd")), "--suite", str(suite), *FAST]
    assert cli(base + ["--adapters_dir", str(single), "--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert f"is a single adapter (adapter_mode: single), not one per category; evaluate it with --adapter " \
           f"{single / 'adapter'}" in err
    assert cli(base + ["--adapters_dir", str(partial), "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"category {CATS[1]} has a run ({partial / 'runs' / CATS[1]}) but no exported adapter" in err
    # a suite without rows of a category: its curve would measure nothing
    only = tmp_path / "clarity.jsonl"
    only.write_text(json.dumps(ROWS[0].to_dict()) + "\n")
    assert cli(["eval", "--base", str(tiny_pipeline_dir("sd")), "--suite", str(only), *FAST, "--adapters_dir",
                str(run_dir), "--output", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"has no row requesting an attribute of {CATS[1]}" in err and f"leave the {CATS[1]} adapter out" in err
    assert not any((tmp_path / n).exists() for n in "abc")


def test_a_mismatched_category_adapter_fails_before_any_image(tiny_pipeline_dir, run_dir, suite, tmp_path, capsys,
                                                              monkeypatch):
    sd, sdxl = tiny_pipeline_dir("sd"), tiny_pipeline_dir("sdxl")
    # trained for the sd family, evaluated on sdxl: refused from the files, before the pipeline loads
    _no_model_load(monkeypatch)
    rc = cli(["eval", "--base", str(sdxl), "--adapters_dir", str(run_dir), "--suite", str(suite),
              "--output", str(tmp_path / "a"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and f"adapters: {CATS[0]}: adapter {run_dir / 'adapter' / CATS[0]}" in err
    assert f"was trained for the sd family ({sd}), but the base {sdxl} is sdxl" in err
    # the same with the identity of another checkpoint on the second adapter only
    other = save_random_lora(sd, tmp_path / "other")
    add_metadata(other / "pytorch_lora_weights.safetensors",
                 identity_metadata({**base_identity(str(sd)), "model": "org/a-fine-tune", "fingerprint": "0" * 24}, "x"))
    rc = cli(["eval", "--base", str(sd), "--adapters", f"{CATS[0]}={run_dir / 'adapter' / CATS[0]},{CATS[1]}={other}",
              "--suite", str(suite), "--output", str(tmp_path / "b"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and f"adapters: {CATS[1]}: adapter {other / 'pytorch_lora_weights.safetensors'} was trained on " \
                       "org/a-fine-tune" in err and "allow_other_base: true" in err
    # a third-party SD LoRA (no identity) among the adapters on an SDXL pipeline: its keys fail, naming it, and
    # the adapters loaded before it are removed from the caller's pipeline again
    monkeypatch.undo()
    monkeypatch.setattr(generate, "generate_pairs", lambda *a, **k: pytest.fail("generated an image"))
    lora = save_random_lora(sd, tmp_path / "third-party")
    ok = tmp_path / "sdxl-lora"
    save_random_lora(sdxl, ok)
    pipe = _pipe(sdxl)
    config = EvalConfig(adapters=[f"{CATS[0]}={ok}", f"{CATS[1]}={lora}"], weights=[1.0], content_checker="none",
                        bootstrap=100, output=str(tmp_path / "c"))
    with pytest.raises(ValueError) as exc:
        run_eval(config, pipe=pipe, rows=ROWS, judges={})
    assert str(exc.value).startswith(f"adapters: {CATS[1]}: adapter {lora / 'pytorch_lora_weights.safetensors'}: only ")
    assert "LoRA tensors match modules of this StableDiffusionXLPipeline" in str(exc.value)
    assert not pipe.get_list_adapters() and not (tmp_path / "c").exists()
