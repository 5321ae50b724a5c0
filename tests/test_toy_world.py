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
    "blurry": ("sharpness", -1), "underexposed": ("brightness", -1), "overexposed": ("headroom", -1),
    "muted": ("saturation", -1), "noisy": ("noise", +1), "low_contrast": ("contrast", -1),
    "color_cast": ("color_cast", +1), "small_subject": ("subject_size", -1), "off_center": ("subject_offcenter", +1),
}


@pytest.mark.parametrize("attribute", world.ATTRIBUTES)
def test_degraded_variant_moves_in_the_intended_direction(attribute):
    name, sign = DIRECTION[attribute]
    f = verifiers.VERIFIERS[name]
    for i, scene in enumerate(world.sample_scenes(8, seed=11)):
        clean = world.render(scene)
        bad, cap = world.variant(scene, attribute, seed=i)
        assert cap.startswith(world.caption(scene) + ", ")
        assert sign * (f(world.to_array(bad)) - f(world.to_array(clean))) > 0, (attribute, i)


def test_eval_suite_is_balanced_and_complete():
    rows = world.eval_suite(36, seed=5)
    assert len(rows) == 36
    counts = {a: sum(r["attributes"] == [a] for r in rows) for a in world.ATTRIBUTES}
    assert set(counts.values()) == {4}
    for r in rows:
        assert r["prompt_a"].startswith(r["prompt_o"]) and r["prompt_a"] != r["prompt_o"]
        assert f"{r['colour']} {r['shape']}" in r["prompt_o"]
    assert rows == world.eval_suite(36, seed=5)
