import numpy as np
import pytest

from pluralign.rewards import verifiers
from pluralign.toy import world


def test_render_is_deterministic_and_32px():
    a = world.sample_scenes(5, seed=3)
    b = world.sample_scenes(5, seed=3)
    assert a == b
    assert world.sample_scenes(5, seed=4) != a
    img = world.render(a[0])
    assert img.size == (32, 32) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(world.render(b[0])))


def test_caption_names_the_scene():
    s = world.Scene(shape="circle", colour="red", background="light blue")
    assert world.caption(s) == "a red circle on a light blue background"
    two = world.Scene(shape="square", colour="blue", background="white", shape2="triangle", colour2="green")
    assert world.caption(two) == "a blue square and a small green triangle on a white background"


def test_render_shows_the_colour_at_the_centre():
    for colour, rgb in world.COLOURS.items():
        img = world.to_array(world.render(world.Scene(shape="square", colour=colour, background="white")))
        assert np.allclose(img[16, 16], np.array(rgb) / 255, atol=0.02), colour


def test_bad_scene_is_rejected():
    with pytest.raises(ValueError, match="colour"):
        world.Scene(shape="circle", colour="teal", background="white")


# each attribute moves its verifier in the intended direction on every scene
DIRECTION = {
    "blurry": ("sharpness", -1), "underexposed": ("brightness", -1), "overexposed": ("brightness", +1),
    "muted": ("saturation", -1), "noisy": ("noise", +1), "low_contrast": ("contrast", -1),
    "color_cast": ("color_cast", +1), "small_subject": ("subject_size", -1), "off_center": ("subject_offcenter", +1),
}


@pytest.mark.parametrize("attribute", world.PIXEL_ATTRIBUTES)
def test_degraded_variant_moves_in_the_intended_direction(attribute):
    name, sign = DIRECTION[attribute]
    f = verifiers.VERIFIERS[name]
    for i, scene in enumerate(world.sample_scenes(8, seed=11)):
        clean = world.render(scene)
        bad, cap = world.variant(scene, attribute, seed=i)
        assert cap.startswith(world.caption(scene) + ", ")
        assert sign * (f(world.to_array(bad)) - f(world.to_array(clean))) > 0, (attribute, i)


def test_eval_suite_is_balanced_and_complete():
    rows = world.eval_suite(4 * len(world.ATTRIBUTES), seed=5)
    assert len(rows) == 4 * len(world.ATTRIBUTES)
    counts = {a: sum(r["attributes"] == [a] for r in rows) for a in world.ATTRIBUTES}
    assert set(counts.values()) == {4}
    for r in rows:
        assert r["prompt_a"].startswith(r["prompt_o"]) and r["prompt_a"] != r["prompt_o"]
        assert f"{r['colour']} {r['shape']}" in r["prompt_o"]
    assert rows == world.eval_suite(4 * len(world.ATTRIBUTES), seed=5)


@pytest.mark.parametrize("attribute", world.SEMANTIC_ATTRIBUTES)
def test_semantic_attributes_are_drawn_as_scene_content(attribute):
    scene = world.Scene(shape="circle", colour="blue", background="white")
    clean = world.to_array(world.render(scene))
    img = world.to_array(world.degraded_image(scene, attribute, seed=3))
    assert img.shape == (32, 32, 3)
    assert np.array_equal(img, world.to_array(world.render_semantic(scene, attribute, seed=3)))  # a pure function
    assert np.abs(img - clean).mean() > 0.005  # it changes the picture (decay: only the object) ...
    # ... in its own way: not a pixel operation on the clean render, so no degradation exists for it
    with pytest.raises(ValueError, match="has no degradation"):
        world.degradation_for(attribute)
    mild, strong = (world.to_array(world.render_semantic(scene, attribute, s, seed=3)) for s in (0.3, 1.0))
    assert np.abs(strong - clean).mean() > np.abs(mild - clean).mean()  # severity scales it


def test_semantic_content_looks_like_its_description():
    scene = world.Scene(shape="square", colour="red", background="white")
    clean = world.to_array(world.render(scene))
    # unfinished: an outline only, the background shows through the middle of the object
    sketch = world.to_array(world.render_semantic(scene, "unfinished", seed=0))
    assert np.allclose(sketch[14, 14], clean[2, 16], atol=0.08) and not np.allclose(clean[14, 14], clean[2, 16], atol=0.08)
    # bleak: the sky darkens around the object, the object keeps its colour
    bleak = world.to_array(world.render_semantic(scene, "bleak", seed=0))
    assert bleak[2:6].mean() < clean[2:6].mean() - 0.3
    assert np.allclose(bleak[16, 16], clean[16, 16], atol=0.25)
    # decay: the background untouched, the object browned and darkened
    decay = world.to_array(world.render_semantic(scene, "decay", seed=0))
    assert np.allclose(decay[:4], clean[:4], atol=1e-6)
    assert decay[12:20, 12:20].mean() < clean[12:20, 12:20].mean() - 0.03
    with pytest.raises(ValueError, match="not a semantic attribute"):
        world.render_semantic(scene, "blurry")
