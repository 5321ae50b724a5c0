import json

import numpy as np
import pytest
import yaml

from pluralign.toy import paths, world

SHIPPED = paths.base_dir().joinpath("model_index.json").exists()


def test_checker_loads_and_names_clean_renders():
    from pluralign.toy.checker import ContentChecker

    if not paths.checker_dir().joinpath("config.json").exists():
        pytest.skip("no shipped checker (run python -m pluralign.toy.build_checkpoints)")
    checker = ContentChecker.from_pretrained()
    rows = world.eval_suite(40, seed=77)
    scenes = world.sample_scenes(40, seed=77)
    images = [world.render(s) for s in scenes]
    assert checker.check(images, rows).mean() >= 0.95
    # a wrong label is caught
    wrong = [dict(r, colour="red" if r["colour"] != "red" else "blue") for r in rows]
    assert checker.check(images, wrong).mean() <= 0.05
    shapes, colours = checker.predict(images[:3])
    assert shapes == [s.shape for s in scenes[:3]] and colours == [s.colour for s in scenes[:3]]


def test_checker_rejects_mismatched_inputs(tmp_path):
    from pluralign.toy.checker import CheckerNet, ContentChecker

    c = ContentChecker(CheckerNet(len(world.SHAPES), len(world.COLOURS)), list(world.SHAPES), list(world.COLOURS))
    with pytest.raises(ValueError, match="2 images but 1 rows"):
        c.check([world.render(s) for s in world.sample_scenes(2)], [{"shape": "circle", "colour": "red"}])
    with pytest.raises(FileNotFoundError, match="no content checker"):
        ContentChecker.from_pretrained(tmp_path)
    c.save_pretrained(tmp_path / "ck")
    again = ContentChecker.from_pretrained(tmp_path / "ck")
    img = [world.render(world.sample_scenes(1)[0])]
    assert again.predict(img) == c.predict(img)


@pytest.mark.skipif(not SHIPPED, reason="no shipped base model (run python -m pluralign.toy.build_checkpoints)")
def test_shipped_base_loads_as_a_stock_pipeline_and_makes_32px_images():
    import torch
    from diffusers import StableDiffusionPipeline

    cfg = json.loads(paths.build_config().read_text())["sampling"]
    pipe = StableDiffusionPipeline.from_pretrained(str(paths.base_dir()))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a red circle on a white background"] * 2, num_inference_steps=cfg["num_inference_steps"],
               guidance_scale=cfg["guidance_scale"], generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 32, 32, 3)
    assert np.isfinite(out.images).all() and out.images.std() > 0.05


@pytest.mark.slow
def test_tiny_budget_build_runs_end_to_end(tmp_path):
    from diffusers import StableDiffusionPipeline

    from pluralign.toy.build_checkpoints import main

    out = tmp_path / "toy"
    recipe = tmp_path / "align.yaml"  # the shipped alignment recipe, on a one-step budget
    recipe.write_text(yaml.safe_dump({**yaml.safe_load(paths.recipe("align").read_text()), "max_steps": 1, "lr_warmup_steps": 0,
                                      "train_batch_size": 2}))
    rc = main(["--output", str(out), "--checker_scenes", "40", "--checker_steps", "3", "--checker_eval_scenes", "24",
               "--n_scenes", "30", "--vae_steps", "2", "--fidelity_scenes", "8", "--vae_extra_renders", "4", "--unet_steps", "2", "--align_scenes", "9",
               "--align_recipe", str(recipe), "--suite_size", "9", "--num_inference_steps", "2", "--progress", "false",
               "--dial_max_steps", "1", "--dial_validation_size", "12",
               "--dial_overrides", "--intent_items 9 --semantic_prompts 1 --semantic_candidates 1 --train_batch_size 2 "
               "--lr_warmup_steps 0"])
    assert rc == 0
    record = json.loads((out / "build_config.json").read_text())
    assert set(record["wall_seconds"]) >= {"checker", "judge", "base", "align", "measure", "dial"}
    # the dial stage: one adapter per category present in the demo's data, each measured on its own rows
    dial = record["dial"]
    assert dial["max_steps"] == 1 and dial["recipe_overrides"][:2] == ["--intent_items", "9"]
    # the data options the rows were built with, defaults included
    assert dial["data"]["intent_items"] == 9 and dial["data"]["semantic_prompts"] == 1 and dial["data"]["extra_items"] == []
    assert set(dial["adapters"]) >= {"clarity_and_focus", "lighting_and_exposure", "color_and_tone"}
    assert sorted(p.name for p in (out / "dial").iterdir()) == dial["adapters"]
    for name in dial["adapters"]:
        assert (out / "dial" / name / "pytorch_lora_weights.safetensors").is_file()
        m = dial["measured"][name]
        assert m["rows"] > 0 and 0 <= m["adherence_weight0"] <= 1 and 0 <= m["adherence_weight1"] <= 1
    assert record["command"].startswith("python -m pluralign.toy.build_checkpoints --output ") and "--vae_extra_renders 4" in record["command"]
    assert record["measured"]["base"]["n"] == 9 and "adherence" in record["measured"]["aligned"]
    assert record["checker"]["n"] == record["config"]["checker"]["eval_scenes"] == 24
    assert (out / "checker" / "judge.safetensors").is_file() and record["config"]["judge"]["light_views"]
    assert record["judge"]["command"] == record["command"] and set(record["judge"]["judge_under_light"])
    assert record["config"]["base"]["fidelity_scenes"] == 8 and len(record["base"]["vae_fidelity"]["by_attribute"]) > 0
    assert record["config"]["base"]["unet_steps"] == 2 and record["config"]["base"]["vae_extra_renders"] == 4
    assert record["config"]["align"]["train"]["max_steps"] == 1 and record["config"]["align"]["train"]["beta"] == 2000
    for name in ("base", "aligned"):
        pipe = StableDiffusionPipeline.from_pretrained(str(out / name))
        assert pipe.tokenizer.model_max_length == 32
    # the aligned UNet differs from the base: the LoRA was fused in
    a = StableDiffusionPipeline.from_pretrained(str(out / "base")).unet.state_dict()
    b = StableDiffusionPipeline.from_pretrained(str(out / "aligned")).unet.state_dict()
    assert any(not np.allclose(a[k].numpy(), b[k].numpy()) for k in a)
    assert record["base_lineage"] == [record["command"]]
    assert record["measured"]["command"] == record["command"] and record["measured"]["sampling"] == record["sampling"]

    # measuring again at another guidance records the new sampling and its own command, not the models'
    assert main(["--output", str(out), "--stages", "measure", "--suite_size", "9", "--num_inference_steps", "2",
                 "--guidance_scale", "4.5", "--progress", "false"]) == 0
    again = json.loads((out / "build_config.json").read_text())
    assert again["command"] == record["command"] and again["sampling"]["guidance_scale"] == 4.5
    assert "--guidance_scale 4.5" in again["measured"]["command"] and again["measured"]["sampling"]["guidance_scale"] == 4.5

    # a base continued from this one inherits its lineage: the chain of commands that rebuilds it
    more = tmp_path / "more"
    assert main(["--output", str(more), "--stages", "base", "--init_from", str(out / "base"), "--n_scenes", "30",
                 "--vae_steps", "1", "--fidelity_scenes", "8", "--vae_extra_renders", "4", "--unet_steps", "1", "--progress", "false"]) == 0
    continued = json.loads((more / "build_config.json").read_text())
    assert continued["base_lineage"] == [record["command"], continued["command"]]
    assert continued["config"]["base"]["init_from"] == str(out / "base")

    # the judge alone: the content network's file is not rewritten, and the models' command stays
    content_written = (out / "checker" / "model.safetensors").stat().st_mtime_ns
    assert main(["--output", str(out), "--stages", "judge", "--checker_scenes", "40", "--checker_steps", "2",
                 "--checker_eval_scenes", "12", "--progress", "false"]) == 0
    judged = json.loads((out / "build_config.json").read_text())
    assert (out / "checker" / "model.safetensors").stat().st_mtime_ns == content_written
    assert judged["command"] == record["command"] and "--stages judge" in judged["judge"]["command"]
    # the content network alone keeps the judge beside it
    assert main(["--output", str(out), "--stages", "checker", "--checker_scenes", "40", "--checker_steps", "2",
                 "--checker_eval_scenes", "12", "--progress", "false"]) == 0
    from pluralign.toy.checker import ContentChecker

    assert ContentChecker.from_pretrained(out / "checker").judge is not None


def test_high_frequency_l1_sees_grain_not_exposure():
    import torch

    from pluralign.toy.base_model import high_frequency_l1

    x = torch.zeros(1, 1, 4, 4)
    assert high_frequency_l1(x, x) == 0
    assert high_frequency_l1(x + 0.3, x) == 0  # a uniform exposure shift has the same neighbour differences
    spike = x.clone()
    spike[0, 0, 1, 1] = 1.0
    # the spike changes 2 of 12 horizontal and 2 of 12 vertical differences by 1 each
    assert torch.isclose(high_frequency_l1(spike, x), torch.tensor(2 / 12 + 2 / 12))


def test_extra_renders_show_their_attribute_and_are_deterministic():
    from pluralign.rewards import verifiers
    from pluralign.toy.base_model import extra_renders

    a, b = extra_renders("noisy", 6, seed=0), extra_renders("noisy", 6, seed=0)
    assert a.images.shape == (6, world.SIZE, world.SIZE, 3) and np.array_equal(a.images, b.images)
    assert a.attributes == ["noisy"] * 6 and a.captions == [""] * 6
    clean = [world.to_array(world.render(s)) for s in world.sample_scenes(6, 99)]
    noise = verifiers.VERIFIERS["noise"]
    assert all(noise(x) > noise(c) + 0.02 for x, c in zip(a.images, clean))  # each carries visible grain
    assert extra_renders("noisy", 0, seed=0).images.shape == (0, world.SIZE, world.SIZE, 3)


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints (run python -m pluralign.toy.build_checkpoints)")
def test_content_ceiling_measures_renders_and_their_round_trip():
    """A faithful render keeps its subject through the checker and the autoencoder; a destroyed one does not."""
    from diffusers import AutoencoderKL

    from pluralign.toy import ceiling
    from pluralign.toy.base_model import reconstruct
    from pluralign.toy.checker import ContentChecker

    out = ceiling.measure(ceiling.CeilingConfig(suite_seeds=[1000], n_prompts=18))
    assert out["n"] == 18 and set(out["by_attribute"]) == set(world.ATTRIBUTES)
    assert out["render"] >= 0.95 and out["round_trip"] >= 0.95
    vae = AutoencoderKL.from_pretrained(str(paths.aligned_dir()), subfolder="vae").eval()
    rows = world.eval_suite(4, 1000)
    renders = ceiling.world_renders(rows, 1000, 4)
    images = np.stack([world.to_array(r) for r in renders])
    back = reconstruct(vae, images)
    assert back.shape == images.shape
    assert np.abs(back[0] - images[0]).mean() < 0.05
    grey = np.full_like(images, 128 / 255)  # no subject at all
    assert ContentChecker.from_pretrained().check(list(reconstruct(vae, grey)), rows).mean() <= 0.25


def test_checker_attribute_head_round_trips_and_feeds_the_toy_scorer(tmp_path, caplog):
    import torch

    from pluralign.toy.checker import CheckerNet, ContentChecker
    from pluralign.toy.scorer import ToyScorer

    torch.manual_seed(0)
    net = CheckerNet(len(world.SHAPES), len(world.COLOURS), n_attributes=len(world.SEMANTIC_ATTRIBUTES))
    c = ContentChecker(net, list(world.SHAPES), list(world.COLOURS), attributes=list(world.SEMANTIC_ATTRIBUTES))
    scenes = world.sample_scenes(3)
    images = [world.render_semantic(s, "decay") for s in scenes]
    probs = c.attribute_probs(images)
    assert list(probs) == list(world.SEMANTIC_ATTRIBUTES) and all(p.shape == (3,) for p in probs.values())
    c.save_pretrained(tmp_path / "ck")
    again = ContentChecker.from_pretrained(tmp_path / "ck")
    assert again.attributes == c.attributes
    np.testing.assert_array_equal(again.attribute_probs(images)["decay"], probs["decay"])
    # the toy scorer judges semantic attributes with the head (P - 0.5) and pixel ones with the rules;
    # a row asking for both gets the smaller margin
    scorer = ToyScorer(str(tmp_path / "ck"))
    assert scorer.measures("decay") and scorer.measures("blurry") and not scorer.measures("grief")
    prompts = [world.caption(s) for s in scenes]
    with caplog.at_level("WARNING", logger="pluralign.toy.checker"):
        decay = scorer.attribute_score(images, prompts, prompts, "decay")
    # the content network's own head judges here, and says it is the weaker judge and how to add the network
    assert "no judge network" in caplog.text and f"--output {tmp_path} --stages judge" in caplog.text
    np.testing.assert_allclose(decay, probs["decay"] - 0.5)
    blurry = scorer.attribute_score(images, prompts, prompts, "blurry")
    both = scorer.attribute_score(images, prompts, prompts, [["blurry", "decay"]] * 3)
    np.testing.assert_allclose(both, np.minimum(decay, blurry))
    # a checker from before the head cannot judge them, and says how to get one that can
    old = ContentChecker(CheckerNet(len(world.SHAPES), len(world.COLOURS)), list(world.SHAPES), list(world.COLOURS))
    with pytest.raises(ValueError, match="no judge of the semantic attributes.*--stages judge"):
        old.attribute_probs(images)


def test_latent_size_8_builds_an_8x8_pipeline_that_samples_world_sized_images(tmp_path):
    import torch

    from pluralign.toy import base_model
    from pluralign.toy.base_model import (
        BaseModelConfig,
        _continued,
        assemble,
        clip_tokenizer,
        make_text_encoder,
        make_unet,
        make_vae,
        save_pipeline,
    )

    vae = make_vae(48, 0, latent_size=8)
    x = torch.zeros(1, 3, world.SIZE, world.SIZE)
    assert tuple(vae.encode(x).latent_dist.mean.shape) == (1, 48, 8, 8)
    tok = clip_tokenizer(32)
    pipe = assemble(vae, make_text_encoder(tok, 16, 1, 0), tok, make_unet(48, (8, 8, 8), 16, 0, latent_size=8))
    pipe.set_progress_bar_config(disable=True)
    images = base_model.generate(pipe, ["a red circle"], [0], num_inference_steps=1, guidance_scale=2.0)
    assert images[0].size == (world.SIZE, world.SIZE)
    # continuing it under the other latent size fails before any training, naming the option to set
    save_pipeline(pipe, tmp_path / "base")
    with pytest.raises(ValueError, match="--latent_size 8"):
        _continued(BaseModelConfig(init_from=str(tmp_path / "base"), latent_channels=48), "unet")


def test_random_light_changes_each_channel_affinely_and_moves_nothing():
    """The judge's light views change light and tint only: each channel of each image is a*x + b of the original."""
    import torch

    from pluralign.toy.checker import random_light

    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 32, 32, generator=g) * 0.8 + 0.1
    y = random_light(x, torch.Generator().manual_seed(4))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    for img_x, img_y in zip(x, y):
        for cx, cy in zip(img_x.flatten(1), img_y.flatten(1)):
            a, b = np.polyfit(cx.numpy(), cy.numpy(), 1)
            np.testing.assert_allclose(cy.numpy(), a * cx.numpy() + b, atol=1e-5)
            assert 0.6 * 0.45 * 0.65 - 1e-6 <= a <= 1.0 + 1e-6  # gain times dimming times the haze's remainder
    assert not torch.allclose(x, y)


def test_a_judge_network_judges_while_the_content_weights_stay_untouched(tmp_path):
    import hashlib

    import torch

    from pluralign.toy.checker import LIGHT_CHANGES, CheckerNet, ContentChecker, save_judge, train_judge

    torch.manual_seed(0)
    net = CheckerNet(len(world.SHAPES), len(world.COLOURS), n_attributes=len(world.SEMANTIC_ATTRIBUTES))
    content = ContentChecker(net, list(world.SHAPES), list(world.COLOURS), attributes=list(world.SEMANTIC_ATTRIBUTES))
    folder = content.save_pretrained(tmp_path / "ck")
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    images = [world.render_semantic(s, "bleak") for s in world.sample_scenes(4)]
    own = content.attribute_probs(images)["bleak"]

    record = train_judge(content, n_scenes=40, steps=3, batch_size=8, progress=False, eval_scenes=6)
    assert set(record["judge_under_light"]) == set(LIGHT_CHANGES)
    assert set(record["judge"]) == set(world.SEMANTIC_ATTRIBUTES)
    judged = content.attribute_probs(images)["bleak"]
    assert not np.allclose(judged, own)  # the judge answers, not the content network's head
    written = (folder / "model.safetensors").stat().st_mtime_ns
    save_judge(content, folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # not even rewritten with the same bytes
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == digest
    again = ContentChecker.from_pretrained(folder)
    assert again.judge is not None and again.config["judge"]["light_views"] is True
    np.testing.assert_allclose(again.attribute_probs(images)["bleak"], judged, rtol=1e-6)
    assert again.predict(images) == content.predict(images)  # names come from the content network as before
    # save_pretrained writes the judge and names it in the config together, and drops both together
    moved = again.save_pretrained(tmp_path / "moved")
    np.testing.assert_allclose(ContentChecker.from_pretrained(moved).attribute_probs(images)["bleak"], judged, rtol=1e-6)
    again.judge = None
    dropped = again.save_pretrained(tmp_path / "moved")
    assert not (dropped / "judge.safetensors").exists() and ContentChecker.from_pretrained(dropped).judge is None
    # a content network without a head of its own, judged by the network beside it
    bare = ContentChecker(CheckerNet(len(world.SHAPES), len(world.COLOURS)), list(world.SHAPES), list(world.COLOURS),
                          attributes=list(world.SEMANTIC_ATTRIBUTES), judge=content.judge,
                          config={"judge": content.config["judge"]})
    loaded = ContentChecker.from_pretrained(bare.save_pretrained(tmp_path / "bare"))
    assert loaded.net.attribute_head is None
    np.testing.assert_allclose(loaded.attribute_probs(images)["bleak"], judged, rtol=1e-6)
    (folder / "judge.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=f"judge.safetensors is missing.*--output {tmp_path} --stages judge"):
        ContentChecker.from_pretrained(folder)
    with pytest.raises(ValueError, match="no judge network to write"):
        save_judge(ContentChecker(net, list(world.SHAPES), list(world.COLOURS)), folder)


def test_the_shipped_judge_reads_a_storm_under_any_light():
    """On renders, where the truth is known, the shipped judge finds bleak, decay and unfinished whatever the light
    (the checker's own head found bleak on 0-3% of olive or brown storms), and not on clean or pixel-degraded
    renders under the same light."""
    from pluralign.toy.checker import LIGHT_CHANGES, ContentChecker, change_light

    if not paths.checker_dir().joinpath("judge.safetensors").exists():
        pytest.skip("no shipped judge (run python -m pluralign.toy.build_checkpoints --stages judge)")
    checker = ContentChecker.from_pretrained()
    assert checker.judge is not None
    scenes = world.sample_scenes(24, seed=31)
    negatives = np.stack([world.to_array(world.render(s)) for s in scenes]
                         + [world.to_array(world.degraded_image(s, a, seed=i)) for i, s in enumerate(scenes[:6])
                            for a in world.PIXEL_ATTRIBUTES])
    for change in ("olive", "brown", "dim_0.5"):
        fired = checker.attribute_probs(list(change_light(negatives, *LIGHT_CHANGES[change])))
        for attr in world.SEMANTIC_ATTRIBUTES:
            shown = np.stack([world.to_array(world.render_semantic(s, attr, seed=i)) for i, s in enumerate(scenes)])
            assert (checker.attribute_probs(list(change_light(shown, *LIGHT_CHANGES[change])))[attr] > 0.5).mean() >= 0.9
            assert (fired[attr] > 0.5).mean() <= 0.02, (change, attr)


def test_the_build_record_holds_the_shipped_judges_measurement():
    """build_config.json records what `python -m pluralign.toy.checker` measures of the shipped judge."""
    if not paths.checker_dir().joinpath("judge.safetensors").exists():
        pytest.skip("no shipped judge")
    record = json.loads(paths.build_config().read_text())
    assert record["judge"]["command"].endswith("--stages judge --threads 2") and record["config"]["judge"]["light_views"]
    for change, heads in record["judge"]["judge_under_light"].items():
        for attr, rates in heads.items():
            assert rates["recall"] >= 0.99 and rates["false_positive"] <= 0.01, (change, attr)
