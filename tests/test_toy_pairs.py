import numpy as np
import pytest

from pluralign.toy import world, world_pairs


def test_intent_pairs_are_anti_and_mirror_of_the_same_two_images():
    n = len(world.ATTRIBUTES)
    rows = world_pairs.intent_pairs(n, seed=5)
    assert len(rows) == 2 * n
    for anti, mirror in zip(rows[::2], rows[1::2]):
        assert (anti["kind"], mirror["kind"]) == ("anti", "mirror")
        assert anti["pair_id"] == mirror["pair_id"]
        assert np.array_equal(np.asarray(anti["chosen"]), np.asarray(mirror["rejected"]))
        assert np.array_equal(np.asarray(anti["rejected"]), np.asarray(mirror["chosen"]))
        assert anti["prompt"].startswith(mirror["prompt"] + ", ")
        assert anti["category"] and anti["severity"] == world.SEVERITY[anti["attributes"][0]]
    assert sorted(r["attributes"][0] for r in rows[::2]) == sorted(world.ATTRIBUTES)


def test_aesthetic_pairs_prefer_the_clean_render_under_the_ordinary_prompt():
    rows = world_pairs.aesthetic_pairs(6, seed=9)
    scenes = world.sample_scenes(6, seed=9)
    for r, s in zip(rows, scenes):
        assert r["kind"] == "general" and r["prompt"] == world.caption(s)
        assert np.array_equal(np.asarray(r["chosen"]), np.asarray(world.render(s)))
        assert not np.array_equal(np.asarray(r["rejected"]), np.asarray(r["chosen"]))


def test_items_carry_both_captions():
    it = world_pairs.intent_items(2, seed=1)[1]
    assert it["anti_caption"].startswith(it["caption"]) and it["attribute"] == world.ATTRIBUTES[1]
    assert it["clean"].size == it["degraded"].size == (32, 32)


def test_over_pairs_bound_the_request_from_above():
    """Same prompt and winner as the item's anti row; the loser is the same degradation pushed further."""
    n = len(world.ATTRIBUTES)
    anti = [r for r in world_pairs.intent_pairs(n, seed=5) if r["kind"] == "anti"]
    over = world_pairs.over_pairs(n, seed=5, over_severity=1.0)
    below = [r for r in anti if world.SEVERITY[r["attributes"][0]] < 1.0]
    assert len(over) == len(below) == sum(world.SEVERITY[a] < 1.0 for a in world.ATTRIBUTES)
    for o, a in zip(over, below):
        assert (o["kind"], o["prompt"], o["pair_id"]) == ("anti", a["prompt"], a["pair_id"])
        assert np.array_equal(np.asarray(o["chosen"]), np.asarray(a["chosen"]))
        assert not np.array_equal(np.asarray(o["rejected"]), np.asarray(o["chosen"]))
    dark = next(o for o in over if o["attributes"] == ["underexposed"])
    assert np.asarray(dark["rejected"]).mean() < np.asarray(dark["chosen"]).mean()  # darker than asked
    with pytest.raises(ValueError, match="over_severity"):
        world_pairs.over_pairs(2, over_severity=1.5)


def test_over_pairs_can_be_limited_to_some_attributes():
    rows = world_pairs.over_pairs(2 * len(world.ATTRIBUTES), seed=5, over_attributes=("small_subject", "muted"))
    assert sorted(r["attributes"][0] for r in rows) == ["muted", "muted", "small_subject", "small_subject"]
    with pytest.raises(ValueError, match="over_attributes"):
        world_pairs.over_pairs(2, over_attributes=("sepia",))


def test_a_full_severity_attribute_gets_its_over_row_from_a_second_pass():
    n = 2 * len(world.ATTRIBUTES)
    plain = world_pairs.over_pairs(n, seed=5, over_attributes=("muted",))
    rows = world_pairs.over_pairs(n, seed=5, over_attributes=("muted",), twice=("blurry",))
    blur = [r for r in rows if r["attributes"] == ["blurry"]]
    assert len(blur) == 2 and len(rows) == len(plain) + 2  # world severity 1.0: none without ``twice``
    anti = {r["pair_id"]: r for r in world_pairs.intent_pairs(n, seed=5) if r["kind"] == "anti"}

    def sharpness(img):
        y = np.asarray(img, dtype=np.float32).mean(axis=2)
        return (np.diff(y, axis=0) ** 2).mean() + (np.diff(y, axis=1) ** 2).mean()  # edge energy falls as 1/sigma

    for r in blur:
        assert np.array_equal(np.asarray(r["chosen"]), np.asarray(anti[r["pair_id"]]["chosen"]))
        assert sharpness(r["rejected"]) < 0.8 * sharpness(r["chosen"])  # blurrier than asked
    for not_full in ("off_center", "muted", "decay"):  # composed, below full severity, drawn
        with pytest.raises(ValueError, match="twice"):
            world_pairs.over_pairs(2, twice=(not_full,))


def test_alignment_weights_give_an_attribute_more_pairs_and_the_default_keeps_the_round_robin():
    import pytest

    from pluralign.config import parse
    from pluralign.toy.align import AlignConfig, attribute_cycle, universal_pairs
    from pluralign.toy.world import ATTRIBUTES

    assert attribute_cycle() == list(ATTRIBUTES)  # the shipped alignment's order, unchanged
    plain = universal_pairs(24, seed=1)
    assert [r["attributes"][0] for r in plain] == list(ATTRIBUTES) * 2
    (shipped,) = parse((AlignConfig,), [])  # the shipped alignment's (docs/toy.md, ninth re-alignment round)
    assert shipped.weights() == {"color_cast": 3, "small_subject": 2} and shipped.align_scenes == 1500
    (cfg,) = parse((AlignConfig,), ["--align_weights", ""])
    assert cfg.weights() == {}
    (cfg,) = parse((AlignConfig,), ["--align_weights", "color_cast=3,noisy=2"])
    weights = cfg.weights()
    assert weights == {"color_cast": 3, "noisy": 2}
    rows = universal_pairs(15 * 4, seed=1, weights=weights)
    counts = {a: sum(r["attributes"][0] == a for r in rows) for a in ATTRIBUTES}
    assert counts["color_cast"] == 12 and counts["noisy"] == 8 and counts["blurry"] == 4
    for bad in ("colour_cast=3", "noisy=0", "noisy=two", "noisy"):
        (cfg,) = parse((AlignConfig,), ["--align_weights", bad])
        with pytest.raises(ValueError, match="align_weights: .* is not ATTRIBUTE=N"):
            cfg.weights()


def test_onpolicy_alignment_pairs_take_the_models_sample_as_rejected_on_anti_rows_only():
    """With align_onpolicy, the rows of those attributes whose prompt asks for them reject what the base draws for
    that prompt; every other row keeps the world's render, and the saved dataset keeps the project's schema."""
    import torch
    from diffusers import StableDiffusionPipeline

    from pluralign.config import parse
    from pluralign.toy import paths
    from pluralign.toy.align import AlignConfig, onpolicy_rejected, universal_pairs
    from pluralign.toy.base_model import generate

    rows = universal_pairs(36, seed=1)  # three scenes per attribute: color_cast's include an anti row and a plain one
    before = [np.asarray(r["rejected"]).copy() for r in rows]
    pipe = StableDiffusionPipeline.from_pretrained(str(paths.base_dir()), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    sampling = {"num_inference_steps": 2, "guidance_scale": 6.0}
    n = onpolicy_rejected(rows, pipe, ["color_cast"], sampling, seed=7)
    chosen = [i for i, r in enumerate(rows) if r["attributes"] == ["color_cast"] and r["anti"]]
    assert n == len(chosen) >= 1 and sum(r["attributes"] == ["color_cast"] for r in rows) > n
    for i, r in enumerate(rows):
        same = np.array_equal(np.asarray(r["rejected"]), before[i])
        assert same != (i in chosen), i
    i = chosen[0]
    want = generate(pipe, [rows[i]["prompt"]], [7 + i], 2, 6.0)[0]
    assert np.array_equal(np.asarray(rows[i]["rejected"]), np.asarray(want))
    assert rows[i]["source"] == "toy:universal_aesthetic:onpolicy"
    (cfg,) = parse((AlignConfig,), ["--align_onpolicy", "colour_cast"])
    with pytest.raises(ValueError, match="align_onpolicy: colour_cast not among"):
        cfg.onpolicy()


def test_save_pairs_keeps_the_schema_and_drops_row_bookkeeping(tmp_path):
    import datasets

    from pluralign.toy.align import save_pairs, universal_pairs

    path = save_pairs(universal_pairs(3, seed=1), tmp_path / "pairs")
    ds = datasets.load_from_disk(str(path))
    assert "anti" not in ds.column_names and {"prompt", "chosen", "rejected", "kind"} <= set(ds.column_names)


def test_align_request_kind_marks_exactly_the_anti_caption_pairs():
    """``align_request_kind anti`` lets the trainer's request terms reach the pairs whose caption asks for the
    attribute; the ordinary-caption pairs stay general, and the default changes nothing."""
    from pluralign.config import ConfigError, parse
    from pluralign.toy.align import AlignConfig, universal_pairs

    plain = universal_pairs(24, seed=1)
    marked = universal_pairs(24, seed=1, request_kind="anti")
    assert {r["kind"] for r in plain} == {"general"}
    assert [r["kind"] for r in marked] == ["anti" if r["anti"] else "general" for r in plain]
    assert {r["kind"] for r in marked} == {"anti", "general"}
    assert [r["prompt"] for r in marked] == [r["prompt"] for r in plain]
    with pytest.raises(ConfigError, match="align_request_kind.*'mirror' is not one of"):
        parse((AlignConfig,), ["--align_request_kind", "mirror"])
