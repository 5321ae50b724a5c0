"""Registration (pluralign.rewards.registration): the transform it reads off re-framed pairs, and how the
paired rules use it - geometric attributes from the transform, photometric ones on the shared content."""

import numpy as np
import pytest
from PIL import Image
from skimage.transform import rotate

from pluralign.rewards import calibrate as C
from pluralign.rewards.registration import register, shared_content
from pluralign.rewards.rules import (
    CAST_FALLBACK_SCALE,
    _features,
    estimate_rotation_spectra,
    grey_world_offset,
    load_rules,
    paired_statistics,
)


@pytest.fixture(scope="module")
def view():
    img, _ = C.sample_view(C.load_photo("coffee"), 128, np.random.default_rng(0), box=(40, 100, 300, 360))
    return img


def _resize(x, w, h):
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c]), mode="F").resize((w, h), Image.BICUBIC))
                     for c in range(3)], axis=-1).clip(0, 1).astype(np.float32)


def _crop(x, keep, top_frac=1 / 3, left_frac=1 / 2):
    h, w = x.shape[:2]
    ch, cw = int(h * keep), int(w * keep)
    t, left = int((h - ch) * top_frac), int((w - cw) * left_frac)
    return _resize(x[t : t + ch, left : left + cw], w, h)


def _shrink_shift(x, scale, shift):
    """The frame shrunk by ``scale`` and moved by ``shift`` (frame fractions, down and right) on a grey canvas."""
    h, w = x.shape[:2]
    small = _resize(x, round(w * scale), round(h * scale))
    out = np.full_like(x, 0.5)
    top, left = round((h - small.shape[0]) / 2 + shift * h), round((w - small.shape[1]) / 2 + shift * w)
    vis = out[top : top + small.shape[0], left : left + small.shape[1]]
    vis[...] = small[: vis.shape[0], : vis.shape[1]]
    return out


def _register(imgs_a, imgs_o):
    fa, fo = _features(imgs_a, {"_grid", "_spectrum"}), _features(imgs_o, {"_grid", "_spectrum"})
    return register(fa["_grid"], fo["_grid"], estimate_rotation_spectra(fa["_spectrum"], fo["_spectrum"]))


def test_register_reads_crops_shrinks_shifts_and_rolls(view):
    tilted = rotate(view, 12, mode="edge", order=1).astype(np.float32)
    imgs = [_crop(view, 0.8), _crop(view, 0.5), _shrink_shift(view, 0.85, 0.25), _shrink_shift(view, 0.45, 0.0), tilted]
    reg = _register(imgs, [view] * len(imgs))
    assert reg.confident.all()
    assert reg.scale[:4] == pytest.approx([1.25, 2.0, 0.85, 0.45], rel=0.06)
    assert reg.centre_shift()[2] == pytest.approx(np.sqrt(2) * 0.25, abs=0.03)  # moved towards a corner
    assert reg.centre_shift()[3] < 0.03  # shrunk in place
    assert abs(reg.angle[4]) == pytest.approx(12, abs=1.5) and reg.scale[4] == pytest.approx(1.0, abs=0.05)
    assert not reg.is_identity().any()


def test_photometric_edits_and_small_shifts_register_as_the_identity(view):
    shifted = C.benign(C.load_photo("coffee"), view, (40, 100, 300, 360), 128, "shift", np.random.default_rng(1), shift=0.02)
    imgs = [view * 0.5, np.clip(view * [1.2, 1.0, 0.8], 0, 1).astype(np.float32), shifted,
            np.clip(view + np.random.default_rng(2).normal(0, 0.08, view.shape), 0, 1).astype(np.float32)]
    reg = _register(imgs, [view] * len(imgs))
    assert reg.confident.all() and reg.is_identity().all()


def test_unrelated_images_do_not_register_confidently(view):
    other, _ = C.sample_view(C.load_photo("rocket"), 128, np.random.default_rng(3))
    other = np.ascontiguousarray(other[:128, :128])
    reg = _register([other], [np.ascontiguousarray(view[:128, :128])])
    assert not reg.confident[0]


def test_shared_content_warps_I_o_onto_the_window_of_I_a_it_also_shows(view):
    crop = _crop(view, 0.6)
    reg = _register([crop], [view])
    a, o = shared_content(crop, view, reg.A[0], reg.t[0])
    assert a.shape == o.shape and a.shape[0] > 0.8 * crop.shape[0]
    assert np.abs(a - o).mean() < 0.03  # the same content, lined up


def test_a_crop_into_one_colour_is_not_a_cast_and_a_shrink_reads_from_the_transform(view):
    rules = load_rules()
    # the crop window sits in the warm, saturated top-left: its grey-world chroma differs from the frame's
    crop = _crop(view, 0.5, top_frac=0.0, left_frac=0.0)
    fa, fo = _features([crop], {"_cast"}), _features([view], {"_cast"})
    # the frame's mean in sRGB opponent chroma, in the rule's units (what it falls back on where no cell compares)
    whole_frame_shift = CAST_FALLBACK_SCALE * float(grey_world_offset(fa["_cast"][:, :3], fo["_cast"][:, :3])[0])
    stats = paired_statistics({k: rules[k] for k in ("color_cast", "cropped", "small_subject")}, [crop], [view])
    assert whole_frame_shift > rules["color_cast"].threshold  # the frame's mean alone would call it a cast
    assert stats["color_cast"][0] < rules["color_cast"].threshold  # the shared content does not
    assert stats["cropped"][0] > rules["cropped"].threshold and stats["small_subject"][0] < 0

    shrunk = _shrink_shift(view, 0.45, 0.0)
    st = paired_statistics({"small_subject": rules["small_subject"]}, [shrunk], [view])
    assert st["small_subject"][0] == pytest.approx(-2 * np.log(0.45), abs=0.15)  # area ratio from the scale


def test_a_subject_shrunk_to_a_third_compares_its_window_not_the_canvas(view):
    # 0.32 of the side fills a tenth of the frame: the photometric rules read the shared window, where the
    # whole frames (a flat canvas around a small picture) would read as lost contrast and flat light
    shrunk = _shrink_shift(view, 0.32, 0.0)
    reg = _register([shrunk], [view])
    assert reg.confident[0] and reg.scale[0] == pytest.approx(0.32, rel=0.08)
    a, o = shared_content(shrunk, view, reg.A[0], reg.t[0])
    assert a.shape == o.shape and np.abs(a - o).mean() < 0.05
    rules = load_rules()
    names = ("flat_lighting", "low_contrast", "color_cast", "muted")
    stats = paired_statistics({k: rules[k] for k in names}, [shrunk], [view])
    for k in names:
        assert stats[k][0] < rules[k].threshold, k


def test_registration_in_chunks_equals_one_batch(monkeypatch):
    from pluralign.rewards import registration as RG
    from pluralign.rewards.verifiers import Batch, registration_grid

    rng = np.random.default_rng(0)
    photo = C._resize_to(C.load_photo("astronaut"), 96)
    views = [photo[i : i + 64, j : j + 64] for i, j in rng.integers(0, 32, size=(5, 2))]
    grids = registration_grid(Batch(np.stack(views)))
    angles = np.array([0.0, 4.0, 0.0, -5.0, 0.0])
    whole = RG.register(grids[:4], grids[1:], angles[:4])
    monkeypatch.setattr(RG, "CHUNK", 3)
    parts = RG.register(grids[:4], grids[1:], angles[:4])
    for f in ("A", "t", "agreement", "angle"):
        assert np.allclose(getattr(whole, f), getattr(parts, f), atol=1e-9), f
    assert RG.register(grids[:0], grids[:0], angles[:0]).A.shape == (0, 2, 2)


def test_a_blended_second_exposure_is_not_a_cast_where_the_frames_line_up():
    from pluralign.rewards.reference_degradations import degrade as reference_degrade
    from pluralign.rewards.rules import cast_offset, pixel_offset

    rules = load_rules()
    v, _ = C.sample_view(C.load_photo("coffee"), 128, np.random.default_rng(1))
    double = reference_degrade(v, "double_exposure", 0.8, np.random.default_rng(5))
    f = _features([double, v], {"_cast"})["_cast"]
    # the blend moves the frame's mean colour, and most pixels changed brightness each their own way
    assert grey_world_offset(f[:1, :3], f[1:, :3])[0] > rules["color_cast"].threshold
    assert pixel_offset(f[:1, 3:], f[1:, 3:])[0] == np.inf  # unregistered: too few comparable pixels, abstain
    # registered as the same frame, the pixels that are left share no offset
    assert cast_offset(f[:1], f[1:], np.array([True]))[0] < rules["color_cast"].threshold / 2
    st = paired_statistics({"color_cast": rules["color_cast"]}, [double], [v])
    assert st["color_cast"][0] < rules["color_cast"].threshold
    cast = reference_degrade(v, "color_cast", 0.6, np.random.default_rng(1))  # cyan, across the scene's warm hue
    assert paired_statistics({"color_cast": rules["color_cast"]}, [cast], [v])["color_cast"][0] > rules["color_cast"].threshold


def test_flat_light_lifting_one_side_of_a_warm_scene_is_not_a_light_leak():
    from pluralign.rewards.reference_degradations import degrade as reference_degrade

    rules = load_rules()
    leak_rule = {"light_leak": rules["light_leak"]}
    for seed in (0, 2):
        rng = np.random.default_rng(seed)
        v, _ = C.sample_view(C.load_photo("coffee"), 128, rng)  # brown and warm: lifted shadows turn warmer
        flat = reference_degrade(v, "flat_lighting", 0.9, rng)
        leak = reference_degrade(v, "light_leak", 0.4, rng)
        st = paired_statistics(leak_rule, [flat, leak], [v, v])["light_leak"]
        assert st[0] < rules["light_leak"].threshold < st[1], seed
