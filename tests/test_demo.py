"""A shortened ``pluralign demo`` (few prompts, few steps) end to end, as CI runs it."""

import json
import subprocess
import sys

import pytest
import yaml

from pluralign.toy import paths, world

# Two optimizer steps of the intent recipe without its 20 warm-up steps, which a two-step run cannot hold; the
# recipe's annealed tail is a share of max_steps, so it shrinks to the last step by itself.
TWO_STEPS = ["--max_steps", "2", "--lr_warmup_steps", "0"]


def test_a_schedule_that_does_not_fit_the_steps_is_refused_before_any_stage():
    """The recipe's 20 warm-up steps leave no room in a two-step run; the demo says so at parse time, naming the
    option, instead of after its evaluation and on-policy stages."""
    from pluralign.toy.demo import parse_demo

    with pytest.raises(ValueError, match="lr_warmup_steps"):
        parse_demo(["--max_steps", "2"])
    _, train_cfg = parse_demo(TWO_STEPS)  # what the short tests below run: it fits
    assert train_cfg.max_steps == 2 and train_cfg.lr_decay_share == 0.2
    # the dial build checks the steps it will train (dial_max_steps), not the recipe's 1800, before any sampling
    from pluralign.toy.dial_adapters import build_dial_adapters

    with pytest.raises(ValueError, match="max_steps 10 - lr_warmup_steps 20"):
        build_dial_adapters(paths.toy_dir(), 10, 5000, 12)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    """The shipped toy checkpoints; a tiny-budget build when they are absent (fresh rebuild in progress)."""
    if (paths.aligned_dir() / "model_index.json").is_file() and (paths.checker_dir() / "config.json").is_file():
        return paths.toy_dir()
    from pluralign.toy.build_checkpoints import main

    out = tmp_path_factory.mktemp("toy")
    recipe = out / "align.yaml"
    recipe.write_text(yaml.safe_dump({**yaml.safe_load(paths.recipe("align").read_text()), "max_steps": 1, "lr_warmup_steps": 0,
                                      "train_batch_size": 2}))
    main(["--output", str(out), "--checker_scenes", "40", "--checker_steps", "3", "--n_scenes", "30",
          "--vae_steps", "2", "--vae_extra_renders", "4", "--unet_steps", "2", "--align_scenes", "9",
          "--align_recipe", str(recipe), "--suite_size", "9", "--num_inference_steps", "2", "--progress", "false"])
    return out



def _default_over_rows(intent_items: int) -> int:
    """Over-degradation rows the demo's default data gives the intent adapter for ``intent_items`` items."""
    from pluralign.toy.demo import DemoConfig, training_rows

    return sum(r["source"] == "toy:world_over" for r in training_rows(DemoConfig(intent_items=intent_items), "intent"))


@pytest.mark.slow
def test_short_demo_with_baselines_writes_results_reports_and_offline_wandb(toy_dir, tmp_path):
    out = tmp_path / "demo"
    env = {**__import__("os").environ, "PLURALIGN_TOY_DIR": str(toy_dir), "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pluralign.cli", "demo", "--output", str(out), "--n_prompts", "12", "--intent_items", "6",
         "--semantic_prompts", "1", "--semantic_candidates", "2", *TWO_STEPS, "--num_inference_steps", "2",
         "--bootstrap", "100", "--with_baselines", "true"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| target | measured | met |" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["variants"]) == {"base", "aligned", "intent_dpo", "dpo_aesthetic", "sft_anti"}
    for name in ("base", "aligned", "intent_dpo"):
        v = results["variants"][name]
        assert len(v["adherence"]["ci95"]) == 2
        # 12 rows round-robin over the world's attributes: each requested once, every one measured
        by_attr = v["adherence"]["by_attribute"]
        assert set(by_attr) == set(world.ATTRIBUTES) and all(d["requested"] == d["n"] == 1 for d in by_attr.values())
        assert {by_attr[a]["measured_by"] for a in world.SEMANTIC_ATTRIBUTES} == {"judge:toy"}
        assert 0.0 <= v["content_fidelity"]["value"] <= 1.0
        by = v["content_fidelity"]["by_attribute"]
        assert set(by) == set(by_attr) and all(d["n"] == 1 for d in by.values())
    for name in ("aligned", "intent_dpo"):
        assert "max_abs_points" in results["variants"][name]["leakage"]
    gap = results["variants"]["intent_dpo"]["content_fidelity_delta_vs_reference"]  # paired, vs the aligned model
    assert gap["n"] == 12 and gap["value"] == pytest.approx(results["variants"]["intent_dpo"]["content_fidelity"]["value"]
                                                           - results["variants"]["aligned"]["content_fidelity"]["value"])
    assert results["targets"]["content fidelity within 5 pts of aligned"]["shown"].endswith("pts, paired")
    assert [p["weight"] for p in results["dial_curve"]] == [0.0, 0.5, 1.0]
    curve = results["category_curves"]["emotion_and_subject"]  # the semantic rows, along the same dial
    assert [p["weight"] for p in curve] == [0.0, 0.5, 1.0] and all(p["n"] == 3 for p in curve)
    assert "emotion_and_subject adherence rises with adapter weight" in results["targets"]
    assert results["wall_seconds"] > 0
    stages = results["stage_seconds"]
    assert list(stages) == ["eval_base", "onpolicy_pairs", "train_intent", "eval_dial", "baseline_dpo_aesthetic",
                            "baseline_sft_anti"]
    # each stage is rounded to 0.1 s, so their sum may pass the unrounded wall time by up to 0.05 s a stage
    assert all(s > 0 for s in stages.values()) and sum(stages.values()) <= results["wall_seconds"] + 0.05 * len(stages)
    # what the times depend on travels with them: the load at each stage's start and end, cores and threads
    assert list(results["stage_load_average"]) == list(stages)
    assert all(len(v) == 2 and all(x is None or x >= 0 for x in v) for v in results["stage_load_average"].values())
    assert results["machine"]["torch_threads"] >= 1 and results["machine"]["cores_available"] >= 1
    # and the machine's speed, probed on the denoiser before the first and the last stage
    speed = results["denoiser_ms_per_latent"]
    assert list(speed) == ["start", "before_eval_dial"] and all(0 < v < 1000 for v in speed.values())
    report = (out / "report.md").read_text()
    assert f"eval_base {stages['eval_base']:.0f} s" in report and "torch threads" in report
    assert f"denoiser {speed['start']:.2f} ms per latent at the start" in report
    assert results["training"]["intent_dpo"]["steps"] == 2
    # on-policy pairs: one prompt per semantic attribute, 2 candidates each way from the base model
    onpolicy = results["onpolicy_pairs"]
    assert onpolicy["prompt_pairs"] == 3 and onpolicy["rows"] == 2 * onpolicy["accepted"]
    rows = results["training"]["intent_dpo"]["rows_by_kind"]
    n_anti = 6 + onpolicy["accepted"]
    # the default over-degradation rows are anti rows without a mirror
    n_over = _default_over_rows(6)
    assert n_over > 0 and rows["mirror"] == n_anti and rows["anti"] == n_anti + n_over
    assert not rows.get("general")  # anti_fraction 1.0: no ordinary pairs
    # the baselines, side by side: the same scenes and budget; aesthetic DPO sees the intent rows with the clean image
    # preferred (not the over rows, which are intent DPO's own), SFT only the anti rows
    t = results["training"]
    for name in ("dpo_aesthetic", "sft_anti"):
        v = results["variants"][name]
        assert v["adherence"]["n"] == 12 and "max_abs_points" in v["leakage"]
        assert 0.0 <= v["content_fidelity"]["value"] <= 1.0
        assert t[name]["steps"] == 2
        assert (out / "runs" / {"dpo_aesthetic": "aesthetic", "sft_anti": "sft"}[name] / "adapter").is_dir()
    assert t["dpo_aesthetic"]["rows"] == 2 * n_anti and t["intent_dpo"]["rows"] == 2 * n_anti + n_over
    assert t["sft_anti"]["rows_by_kind"] == {"anti": n_anti}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    md = (out / "report.md").read_text()
    assert md.startswith("# pluralign demo") and "## Content fidelity per attribute" in md
    assert "| dpo_aesthetic |" in md and "| sft_anti |" in md and "beats baselines" in md
    assert "| attribute | base content | aligned content | intent_dpo content |" in md
    assert list(tmp_path.glob("wandb/offline-run-*")), "no offline W&B run written"


def test_training_rows_use_the_same_scenes_for_every_method():
    from pluralign.toy.demo import DemoConfig, training_rows

    cfg = DemoConfig(intent_items=4, anti_fraction=0.5, over_severity=0.0)
    intent, aesthetic, sft = (training_rows(cfg, k) for k in ("intent", "aesthetic", "sft"))
    assert len(intent) == len(aesthetic) == 16 and len(sft) == 4
    anti = [r for r in intent if r["kind"] == "anti"]
    flipped = [r for r in aesthetic if r["source"] == "toy:universal_aesthetic"]
    # the aesthetic baseline sees the same anti-aesthetic prompts, but with the clean image winning
    assert [r["prompt"] for r in anti] == [r["prompt"] for r in flipped[0::2]]
    assert all(a["chosen"].tobytes() == f["rejected"].tobytes() for a, f in zip(anti, flipped[0::2]))
    assert [r["prompt"] for r in sft] == [r["prompt"] for r in anti]
    assert all(r["kind"] == "anti" for r in sft)

    # over-degradation rows go to the intent adapter only, and the ordinary pairs grow with them
    with_over = training_rows(DemoConfig(intent_items=4, anti_fraction=0.5, over_severity=1.0,
                                         over_attributes=list(world.ATTRIBUTES)), "intent")
    over = [r for r in with_over if r["source"] == "toy:world_over"]
    assert len(over) == 3 and len(with_over) == 2 * (8 + 3)  # items 0-3: blurry (severity 1.0) gets none
    assert len(training_rows(DemoConfig(intent_items=4, anti_fraction=0.5, over_severity=1.0), "aesthetic")) == 16
    # the demo's default anti_fraction 1.0: no ordinary pairs at all
    assert len(training_rows(DemoConfig(intent_items=4, over_severity=1.0), "aesthetic")) == 8
    # semantic_repeat repeats the on-policy rows for the intent adapter only; the ordinary pairs keep the ratio
    onpolicy = [{**r, "source": "onpolicy"} for r in intent[:2]]
    twice = training_rows(DemoConfig(intent_items=4, anti_fraction=0.5, semantic_repeat=2, over_severity=0.0), "intent",
                          onpolicy)
    assert sum(r["source"] == "onpolicy" for r in twice) == 4 and len(twice) == 2 * (8 + 4)
    assert sum(r["source"] == "onpolicy" for r in training_rows(DemoConfig(intent_items=4, semantic_repeat=2),
                                                                "sft", onpolicy)) == 1
    # the demo's default: over rows for the intent adapter (docs/toy.md, round 23)
    assert _default_over_rows(4) > 0
    # by default off_center gets no over row (further out does not erase the subject): items 0-8 give 7
    default = training_rows(DemoConfig(intent_items=9, over_severity=1.0), "intent")
    assert sorted(r["attributes"][0] for r in default if r["source"] == "toy:world_over") == sorted(
        a for a in world.PIXEL_ATTRIBUTES if a not in ("blurry", "off_center"))


@pytest.mark.slow
def test_validation_run_pools_suites_and_refuses_the_reporting_seed(toy_dir, tmp_path, monkeypatch):
    from pluralign.config import ConfigError
    from pluralign.toy.sweep import main

    monkeypatch.setenv("PLURALIGN_TOY_DIR", str(toy_dir))
    small = ["--n_prompts", "9", "--intent_items", "6", "--semantic_prompts", "1", "--semantic_candidates", "1",
             *TWO_STEPS, "--num_inference_steps", "2", "--bootstrap", "100"]
    with pytest.raises(ConfigError, match="reporting suite_seed 1000"):
        main(["--output", str(tmp_path / "bad"), "--validation_seeds", "5000,1000", *small])
    assert not (tmp_path / "bad").exists(), "a refused run must not start work"

    log = tmp_path / "sweep.jsonl"
    assert main(["--output", str(tmp_path / "v"), "--validation_seeds", "5000,6000", "--log", str(log), *small]) == 0
    res = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert set(res["suites"]) == {"5000", "6000"} and res["pooled"]["n"] == 18
    a, b = res["suites"]["5000"]["adapter"], res["suites"]["6000"]["adapter"]
    assert res["pooled"]["adapter"]["adherence"] == pytest.approx((a["adherence"] + b["adherence"]) / 2)
    assert res["pooled"]["adapter"]["leakage_max_abs_points"] == max(a["leakage_max_abs_points"],
                                                                       b["leakage_max_abs_points"])
    assert set(res["pooled"]["adapter"]["content_by_attribute"]) == set(a["content_by_attribute"])
    assert res["train_config"]["max_steps"] == 2 and res["validation"]["validation_seeds"] == [5000, 6000]
    assert (tmp_path / "v" / "runs" / "intent" / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    assert [json.loads(line)["pooled"]["n"] for line in log.read_text().splitlines()] == [18]

    # re-evaluating a trained adapter without training, the aligned model's images taken from the first run: the same
    # numbers (same seeds, same sampling)
    assert main(["--output", str(tmp_path / "v2"), "--validation_seeds", "5000,6000", "--adapter",
                 str(tmp_path / "v" / "runs" / "intent" / "adapter"), "--base_images_from", str(tmp_path / "v"),
                 *small]) == 0
    res2 = json.loads((tmp_path / "v2" / "validation.json").read_text())
    assert res2["train_seconds"] == 0 and res2["pooled"] == res["pooled"]
    generation = json.loads((tmp_path / "v2" / "eval_6000" / "results.json").read_text())["generation"]
    assert generation["base_images_from"] == str(tmp_path / "v" / "eval_6000")


def test_pooled_weights_suites_by_rows_and_takes_the_worst_leakage():
    from pluralign.toy.sweep import pooled

    def suite(n, adh, content, leak, by):
        return {"n": n, "aligned": {"adherence": 0.2, "adherence_n": n, "content": 1.0, "content_n": n},
                "adapter": {"adherence": adh, "adherence_n": n, "content": content, "content_n": n,
                            "leakage_max_abs_points": leak,
                            "adherence_by_attribute": by, "adherence_by_attribute_n": {a: n // 2 for a in by},
                            "content_by_attribute": by, "content_by_attribute_n": {a: n // 2 for a in by}}}

    p = pooled([suite(10, 1.0, 0.5, 0.0, {"blurry": 1.0, "muted": 0.0}), suite(30, 0.5, 1.0, 2.8, {"blurry": 0.0})])
    assert p["n"] == 40
    assert p["adapter"]["adherence"] == pytest.approx((10 * 1.0 + 30 * 0.5) / 40)
    assert p["adapter"]["content"] == pytest.approx((10 * 0.5 + 30 * 1.0) / 40)
    assert p["adapter"]["leakage_max_abs_points"] == 2.8
    # blurry: 5 rows at 1.0 and 15 at 0.0; muted only in the first suite
    assert p["adapter"]["adherence_by_attribute"] == {"blurry": pytest.approx(0.25), "muted": 0.0}
    assert p["aligned"] == {"adherence": pytest.approx(0.2), "content": pytest.approx(1.0)}

    # a suite where the rule measured fewer rows than it has counts by the rows measured
    a, b = suite(10, 1.0, 1.0, 0.0, {"blurry": 1.0}), suite(10, 0.0, 1.0, 0.0, {"blurry": 0.0})
    a["adapter"]["adherence_n"] = 2
    assert pooled([a, b])["adapter"]["adherence"] == pytest.approx(2 / 12)


def test_targets_judge_each_promise_and_show_the_content_drop_with_its_direction():
    from pluralign.toy.demo import check_targets, summary_tables

    def v(adh, content, leak=None):
        by = {"muted": {"value": adh, "ci95": [adh - 0.1, min(1.0, adh + 0.1)]}}
        out = {"adherence": {"value": adh, "by_attribute": by}, "content_fidelity": {"value": content}}
        if leak is not None:
            out["leakage"] = {"max_abs_points": leak, "by_attribute": {"muted": {"points": leak}}}
        return out

    dial = [{"weight": 0.0, "adherence": 0.236}, {"weight": 0.5, "adherence": 0.569}, {"weight": 1.0, "adherence": 0.875}]
    variants = {"base": v(0.931, 0.931), "aligned": v(0.236, 1.0), "intent_dpo": v(0.875, 68 / 72, 0.0)}
    t = check_targets(variants, dial)
    assert "emotion_and_subject adherence rises with adapter weight" not in t  # no category curves given
    content = t["content fidelity within 5 pts of aligned"]
    assert content["measured"] == pytest.approx(100 * 4 / 72) and not content["met"]  # one row over 5 points
    assert content["shown"] == "5.6 pts below (94.4% vs 100.0%)"
    assert all(t[k]["met"] for k in t if k != "content fidelity within 5 pts of aligned")
    rows = {r[0]: r[1:] for r in summary_tables({"variants": variants, "dial_curve": dial, "targets": t})[-1][1]}
    assert rows["content fidelity within 5 pts of aligned"] == ["5.6 pts below (94.4% vs 100.0%)", "NO"]

    # with the paired gap from the eval (adapter minus aligned on the same rows) the row shows its interval
    variants["intent_dpo"]["content_fidelity_delta_vs_reference"] = {"value": -4 / 72, "ci95": [-0.111, -0.014]}
    content = check_targets(variants, dial)["content fidelity within 5 pts of aligned"]
    assert content["drop_ci95_points"] == pytest.approx([1.4, 11.1]) and not content["met"]
    assert content["shown"] == "5.6 pts below (94.4% vs 100.0%); drop 95% CI [1.4, 11.1] pts, paired"

    variants["intent_dpo"] = v(0.875, 1.0, 4.0)  # better content than aligned; leakage over 3 points
    variants["aligned"] = v(0.236, 0.958)
    t = check_targets(variants, dial[::-1])  # the dial is judged in weight order, whatever the input order
    assert t["content fidelity within 5 pts of aligned"]["shown"].startswith("4.2 pts above")
    assert t["content fidelity within 5 pts of aligned"]["met"] and t["adherence rises with adapter weight"]["met"]
    assert not t["leakage <= 3 pts on every attribute"]["met"]


def test_every_attribute_is_held_to_its_own_bounds_and_the_semantic_dial_must_rise():
    from pluralign.toy.demo import check_targets, summary_tables

    def variant(by):
        return {"adherence": {"value": 0.5, "by_attribute": {a: {"value": x, "ci95": [x - w, x + w]}
                                                             for a, (x, w) in by.items()}}}

    ok = {"base": variant({"blurry": (1.0, 0.05), "decay": (0.9, 0.1)}),
          "aligned": variant({"blurry": (0.1, 0.1), "decay": (0.3, 0.12)}),
          "intent_dpo": variant({"blurry": (0.9, 0.1), "decay": (0.82, 0.14)})}  # semantic: 80% is enough
    dial = [{"weight": 0.0, "adherence": 0.2}, {"weight": 1.0, "adherence": 0.9}]
    rising = {"emotion_and_subject": [{"weight": 0.0, "adherence": 0.3, "ci95": [0.1, 0.5], "n": 16},
                                      {"weight": 1.0, "adherence": 0.8, "ci95": [0.6, 0.95], "n": 16}]}
    t = check_targets(ok, dial, rising)
    per_attr = "every attribute: base >= 85%, aligned <= 35%, intent-DPO >= 85% (semantic >= 80%)"
    assert t[per_attr] == {"measured": [], "shown": "all met", "met": True}
    assert t["every attribute's 95% CI half-width <= 15 pts"]["met"]
    assert t["every attribute's 95% CI half-width <= 15 pts"]["measured"] == pytest.approx(14.0)
    assert t["emotion_and_subject adherence rises with adapter weight"]["met"]

    bad = {**ok, "aligned": variant({"blurry": (1.0, 0.2), "decay": (0.3, 0.1)}),
           "intent_dpo": variant({"blurry": (0.84, 0.1)})}  # pixel needs 85%; decay not measured at all
    flat = {"emotion_and_subject": [{**p, "adherence": 0.5} for p in rising["emotion_and_subject"]]}
    t = check_targets(bad, dial, flat)
    assert t[per_attr]["measured"] == ["blurry: aligned 100%", "blurry: intent_dpo 84%", "decay: intent_dpo unmeasured"]
    assert not t[per_attr]["met"] and not t["every attribute's 95% CI half-width <= 15 pts"]["met"]
    assert not t["emotion_and_subject adherence rises with adapter weight"]["met"]
    # the report shows each category's dial with its CI, and names every miss
    tables = summary_tables({"variants": bad, "dial_curve": dial, "category_curves": flat, "targets": t})
    header, body = tables[2]
    assert header == ["category (rows)", "weight 0 [95% CI]", "weight 1 [95% CI]"]
    assert body == [["emotion_and_subject (16)", "50.0% [10, 50]", "50.0% [60, 95]"]]
    shown = {r[0]: r[1] for r in tables[-1][1]}
    assert shown[per_attr] == "blurry: aligned 100%; blurry: intent_dpo 84%; decay: intent_dpo unmeasured"


@pytest.mark.slow
def test_rounds_sample_the_aligned_model_with_the_last_rounds_adapter(toy_dir, tmp_path, monkeypatch):
    """Self-generated rounds: round 1 samples the aligned model itself (no teacher), round 2 the aligned model
    with round 1's adapter, each round's data in its own folder and its stages timed separately, at the on-policy
    guidance scale."""
    from pluralign.toy.demo import main

    monkeypatch.setenv("PLURALIGN_TOY_DIR", str(toy_dir))
    out = tmp_path / "demo"
    assert main(["--output", str(out), "--n_prompts", "12", "--intent_items", "6", "--semantic_prompts", "1",
                 "--semantic_candidates", "2", *TWO_STEPS, "--num_inference_steps", "2", "--bootstrap", "100",
                 "--onpolicy_generator", "aligned", "--rounds", "2", "--onpolicy_guidance_scale", "2.5",
                 "--onpolicy_attribute_guidance", "bleak=1.5", "--report_to", "none"]) == 0
    results = json.loads((out / "results.json").read_text())
    first, second = results["onpolicy_pairs"]
    # the generator samples at its own scale; every model the demo reports is sampled at the world's
    assert first["guidance_scale"] == second["guidance_scale"] == 2.5 != results["sampling"]["guidance_scale"]
    assert first["generator"] == second["generator"] == str(paths.aligned_dir())
    assert first["generator_adapter"] is None and second["generator_adapter"] == str(out / "runs" / "intent" / "adapter")
    assert first["prompt_pairs"] == second["prompt_pairs"] == 3
    assert first["attribute_guidance"] == ["bleak=1.5"]  # bleak's pairs at their own scale, the others at 2.5
    log = json.loads((out / "data" / "onpolicy_round1" / "generate_log.json").read_text())
    assert {d["attributes"][0]: d["guidance_scale"] for d in log["decisions"]} == {
        "decay": 2.5, "unfinished": 2.5, "bleak": 1.5}
    card = (out / "data" / "onpolicy_round1" / "README.md").read_text()
    assert "guidance 2.5 (bleak=1.5 for the pairs requesting them" in card
    assert (out / "data" / "onpolicy_round1" / "README.md").is_file() and (out / "data" / "onpolicy_round2").is_dir()
    assert list(results["stage_seconds"]) == ["eval_base", "onpolicy_pairs_round1", "train_intent_round1",
                                             "onpolicy_pairs_round2", "train_intent_round2", "eval_dial"]


def test_demo_html_shows_every_model_by_attribute_from_the_saved_eval_images(tmp_path):
    """report.html reads the shown rows' images back from each eval's folder: base (the base eval), aligned (the
    intent eval's base), the adapter at each weight and each baseline, under the names the report gives them."""
    import base64
    import io
    import re

    import numpy as np
    from PIL import Image

    from pluralign.eval.suite import EvalRow
    from pluralign.toy.demo import _html, check_targets, image_folders

    rows = [EvalRow(f"a red circle {i}", f"a {a} red circle {i} <i>", [a], 10 + i)
            for i, a in enumerate(["blurry", "muted"] * 4)]
    evals = {"base": {"base": None}, "intent_dpo": {"base": None, "adapter@0": 0.0, "adapter@1": 1.0},
             "dpo_aesthetic": {"base": None, "adapter@1": 1.0}}
    colour = {}  # (folder, row, o|a) -> the flat colour saved there, all different
    eval_dirs = {}
    for name, variants in evals.items():
        d = eval_dirs[name] = tmp_path / "eval" / name
        saved = {}
        for v, w in variants.items():
            folder = "images/base" if w is None else f"images/adapter_w{w:g}"
            saved[v] = {"weight": w, "images": folder}
            (d / folder).mkdir(parents=True)
            for i in range(len(rows)):
                for which in "oa":
                    c = (len(colour) % 250, len(colour) // 250, 7)
                    colour[d / folder, i, which] = c
                    Image.new("RGB", (32, 32), c).save(d / folder / f"{i:05d}_{which}.png")
        (d / "results.json").write_text(json.dumps({"variants": saved}))

    folders = image_folders(eval_dirs)
    assert folders == {"base": eval_dirs["base"] / "images/base", "aligned": eval_dirs["intent_dpo"] / "images/base",
                       "intent_dpo@0": eval_dirs["intent_dpo"] / "images/adapter_w0",
                       "intent_dpo@1": eval_dirs["intent_dpo"] / "images/adapter_w1",
                       "dpo_aesthetic@1": eval_dirs["dpo_aesthetic"] / "images/adapter_w1"}

    def rate(x):
        return {"value": x, "ci95": [x - 0.05, x + 0.05], "n": 4}

    def model(x):
        return {"adherence": {**rate(x), "by_attribute": {"blurry": rate(x), "muted": rate(x)}},
                "content_fidelity": {**rate(0.9), "by_attribute": {"blurry": rate(0.9)}},
                "leakage": {"max_abs_points": 1.0, "by_attribute": {"blurry": {"points": 1.0}}}}

    variants = {"base": model(0.9), "aligned": model(0.2), "intent_dpo": model(0.9)}
    dial = [{"variant": "adapter@0", "weight": 0.0, "adherence": 0.2, "ci95": [0.1, 0.3], "leakage_max_abs_points": 0.0},
            {"variant": "adapter@1", "weight": 1.0, "adherence": 0.9, "ci95": [0.8, 1.0], "leakage_max_abs_points": 1.0}]
    curves = {"clarity_and_focus": [{"weight": 0.0, "adherence": 0.2, "ci95": [0.1, 0.3], "n": 4},
                                    {"weight": 1.0, "adherence": 0.9, "ci95": [0.8, 1.0], "n": 4}]}
    results = {"variants": variants, "dial_curve": dial, "category_curves": curves, "wall_seconds": 3.0,
               "suite": {"n_rows": len(rows)}, "sampling": {"num_inference_steps": 2, "guidance_scale": 4.0},
               "targets": check_targets(variants, dial, curves)}
    _html(results, tmp_path, eval_dirs, rows)
    html = (tmp_path / "report.html").read_text()

    assert re.findall(r"<h2>([^<]*)</h2>", html) == ["Models", "Dial", "Dial per category", "Targets", "Per attribute",
                                                     "Content fidelity per attribute", "Plots", "Images",
                                                     "Detailed eval reports"]
    assert re.findall(r"<h3 id='[^']*'>([^<]*)</h3>", html) == ["blurry", "muted"]
    assert html.count("4 of 4 prompt pairs that request it.") == 2
    cells = re.findall(r"<img alt='([^']*) row (\d+) (I_[oa])' src='data:image/png;base64,([^']*)'>", html)
    assert len(cells) == 8 * 5 * 2  # 4 rows per attribute, 5 models, I_o and I_a
    assert [int(r) for _, r, k, _ in cells[::10]] == [0, 2, 4, 6, 1, 3, 5, 7]
    for label, row, which, data in cells:
        shown = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        assert shown.size == (128, 128)  # 32 px enlarged 4x
        assert np.all(np.asarray(shown) == colour[folders[label], int(row), which[-1]])
    assert "a blurry red circle 0 &lt;i&gt;" in html and "<i>" not in html
    assert html.count("<figure>") == 3 and "href='eval/intent_dpo/report.html'" in html


def test_extra_items_add_fresh_scenes_of_one_attribute_to_the_intent_adapter_only():
    """More rows for an attribute the adapter learns last come from new scenes, not repeats of the old ones, and
    only the intent adapter gets them."""
    from pluralign.toy.demo import DemoConfig, training_rows

    base = training_rows(DemoConfig(intent_items=9, over_severity=0.0), "intent")
    extra = training_rows(DemoConfig(intent_items=9, over_severity=0.0, extra_items=["off_center=3"]), "intent")
    added = extra[len(base):]
    assert len(added) == 6 and [r["pair_id"] for r in extra[:len(base)]] == [r["pair_id"] for r in base]
    assert [r["kind"] for r in added] == ["anti", "mirror"] * 3
    assert all(r["attributes"] == ["off_center"] for r in added)
    assert len({r["pair_id"] for r in extra}) == 9 + 3
    old_scenes = {r["chosen"].tobytes() for r in base}
    assert not any(r["chosen"].tobytes() in old_scenes for r in added)
    for kind in ("aesthetic", "sft"):
        assert len(training_rows(DemoConfig(intent_items=9, over_severity=0.0, extra_items=["off_center=3"]), kind)) \
            == len(training_rows(DemoConfig(intent_items=9, over_severity=0.0), kind))


@pytest.mark.parametrize("entry, needle", [("bleak=4", "'bleak=4' is not ATTRIBUTE=N"),
                                           ("off_center=0", "'off_center=0' is not ATTRIBUTE=N"),
                                           ("off_center", "'off_center' is not ATTRIBUTE=N")])
def test_extra_items_name_the_bad_entry(entry, needle):
    from pluralign.toy.demo import DemoConfig

    with pytest.raises(ValueError, match=needle):
        DemoConfig(extra_items=[entry])
    with pytest.raises(ValueError, match="off_center is listed twice"):
        DemoConfig(extra_items=["off_center=2", "off_center=3"])


def test_onpolicy_items_add_prompts_of_a_pixel_attribute_and_leave_the_semantic_ones():
    """A pixel attribute's on-policy prompts come from a seed of their own: the semantic prompts (and their generation
    seeds) stay as they were, and the new scenes are none of theirs."""
    from pluralign.toy.demo import DemoConfig, onpolicy_prompts

    base = onpolicy_prompts(DemoConfig(semantic_prompts=2))
    more = onpolicy_prompts(DemoConfig(semantic_prompts=2, onpolicy_items=["off_center=3", "blurry=2"]))
    assert [(r.prompt_o, r.prompt_a, r.seed) for r in more[:6]] == [(r.prompt_o, r.prompt_a, r.seed) for r in base]
    assert [list(r.attributes) for r in more[6:]] == [["off_center"]] * 3 + [["blurry"]] * 2
    assert len({r.seed for r in more}) == 11 and not {r.prompt_o for r in more[6:]} & {r.prompt_o for r in base}
    # attributes next to each other in the world's list, many prompts each: no two rows share a generation seed
    many = onpolicy_prompts(DemoConfig(semantic_prompts=40, onpolicy_items=["blurry=50", "underexposed=50"]), 2)
    assert len({r.seed for r in many}) == len(many) == 220
    only = onpolicy_prompts(DemoConfig(semantic_prompts=0, onpolicy_items=["off_center=3"]))
    assert [r.prompt_o for r in only] == [r.prompt_o for r in more[6:9]]
    with pytest.raises(ValueError, match="onpolicy_items: 'bleak=4' is not ATTRIBUTE=N"):
        DemoConfig(onpolicy_items=["bleak=4"])
    # a pixel attribute sampled on-policy may have its own guidance, as a semantic one may
    assert DemoConfig(onpolicy_items=["off_center=3"], onpolicy_attribute_guidance=["off_center=3"])
    with pytest.raises(ValueError, match="off_center: only the semantic attributes .* and those of onpolicy_items"):
        DemoConfig(onpolicy_attribute_guidance=["off_center=3"])


def test_onpolicy_attribute_guidance_is_checked_before_any_stage(tmp_path, capsys):
    """A malformed entry, or one for an attribute without on-policy pairs, stops the demo with a line that names
    the option, before anything runs."""
    from pluralign import cli

    for value, needle in [("grief=3", "onpolicy_attribute_guidance: grief: only the semantic attributes"),
                          ("bleak=loud", "onpolicy_attribute_guidance: 'bleak=loud' is not NAME=SCALE")]:
        assert cli.main(["demo", "--output", str(tmp_path / "demo"), "--onpolicy_attribute_guidance", value]) == 2
        err = capsys.readouterr().err
        assert "pluralign demo: error:" in err and needle in err, err
    assert not (tmp_path / "demo").exists()
