"""Each degradation moves the property it is named after in the intended direction as severity
rises, is deterministic given a seed, and handles any size and mode."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data as skdata

from pluralign.data import degradations as D
from pluralign.data.taxonomy import ATTRIBUTES

SEVERITIES = (0.0, 0.35, 0.7, 1.0)


def _photo(size=128):
    return D.to_float(Image.fromarray(skdata.astronaut()).resize((size, size), Image.Resampling.BILINEAR))


def _grey_photo(size=128):
    g = np.asarray(Image.fromarray(skdata.camera()).resize((size, size)), dtype=np.float32) / 255
    return np.repeat(g[:, :, None], 3, axis=2)


def _subject(size=96):
    """A red square (the subject) centred on a flat blue-grey background."""
    x = np.empty((size, size, 3), np.float32)
    x[:] = (0.4, 0.45, 0.55)
    q = size // 4
    x[q:size - q, q:size - q] = (0.9, 0.1, 0.1)
    return x


def _stripes(size=96):
    y = (np.arange(size) // 6 % 2).astype(np.float32)
    return np.repeat(np.repeat(y[:, None], size, axis=1)[:, :, None], 3, axis=2) * 0.8 + 0.1


def luma(x):
    return x @ np.array([0.299, 0.587, 0.114], np.float32)


def laplacian_var(x):
    return float(ndimage.laplace(luma(x).astype(np.float64)).var())


def hf_noise(x):
    y = luma(x)
    return float(np.abs(y - ndimage.median_filter(y, size=3)).mean())


def blockiness(x):
    y = luma(x).astype(np.float64)
    d = np.abs(np.diff(y, axis=1))
    cols = np.arange(d.shape[1])
    at_edges = d[:, cols % 8 == 7].mean()
    inside = d[:, cols % 8 != 7].mean()
    return float(at_edges / (inside + 1e-6))


def saturation(x):
    return float((x.max(axis=2) - x.min(axis=2)).mean())


def cast(x):
    m = x.reshape(-1, 3).mean(axis=0)
    return float(np.abs(m - m.mean()).sum())


def red_blue_misalignment(x):
    return float(np.abs(x[:, :, 0] - x[:, :, 2]).mean())


def corner_centre_ratio(x):
    y = luma(x)
    h, w = y.shape
    k = max(1, h // 8)
    corners = np.mean([y[:k, :k].mean(), y[:k, -k:].mean(), y[-k:, :k].mean(), y[-k:, -k:].mean()])
    centre = y[h // 2 - k:h // 2 + k, w // 2 - k:w // 2 + k].mean()
    return float(corners / centre)


def lowfreq_std(x):
    return float(ndimage.gaussian_filter(luma(x), 12).std())


def warmth(x):
    return float((x[:, :, 0] - x[:, :, 2]).mean())


def decorrelation(x, ref):
    return 1 - float(np.corrcoef(luma(x).ravel(), luma(ref).ravel())[0, 1])


def subject_mask(x):
    return (x[:, :, 0] > 0.6) & (x[:, :, 2] < 0.4)


def subject_area(x):
    return float(subject_mask(x).mean())


def subject_offset(x):
    m = subject_mask(x)
    yy, xx = np.nonzero(m)
    h, w = m.shape
    return float(np.hypot(yy.mean() / h - 0.5, xx.mean() / w - 0.5))


def tilt_measure(x):
    y = luma(x)
    h, w = y.shape
    c = y[h // 4:3 * h // 4, w // 4:3 * w // 4]
    gx, gy = np.abs(np.diff(c, axis=1)).mean(), np.abs(np.diff(c, axis=0)).mean()
    return float(gx / (gy + 1e-6))


def changed_area(x, ref):
    return float((np.abs(x - ref).max(axis=2) > 0.1).mean())


# name -> (test image factory, measure(x, ref), expected sign as severity rises)
CASES = {
    "gaussian_blur": (_photo, lambda x, r: laplacian_var(x), -1),
    "motion_blur": (_photo, lambda x, r: laplacian_var(x), -1),
    "defocus_blur": (_photo, lambda x, r: laplacian_var(x), -1),
    "sensor_noise": (_photo, lambda x, r: hf_noise(x), +1),
    "film_grain": (_photo, lambda x, r: hf_noise(x), +1),
    "jpeg_blocking": (_photo, lambda x, r: blockiness(x), +1),
    "underexposure": (_photo, lambda x, r: float(luma(x).mean()), -1),
    "overexposure": (_photo, lambda x, r: float((x >= 0.999).mean()), +1),
    "low_contrast": (_photo, lambda x, r: float(luma(x).std()), -1),
    "desaturate": (_photo, lambda x, r: saturation(x), -1),
    "color_cast": (_grey_photo, lambda x, r: cast(x), +1),
    "chromatic_aberration": (_grey_photo, lambda x, r: red_blue_misalignment(x), +1),
    "vignette": (_photo, lambda x, r: corner_centre_ratio(x), -1),
    "flat_lighting": (_photo, lambda x, r: lowfreq_std(x), -1),
    "light_leak": (_grey_photo, lambda x, r: warmth(x), +1),
    "double_exposure": (_photo, decorrelation, +1),
    "small_subject": (_subject, lambda x, r: subject_area(x), -1),
    "offcenter_subject": (_subject, lambda x, r: subject_offset(x), +1),
    "tilt": (_stripes, lambda x, r: tilt_measure(x), +1),
    "obstruction": (_photo, changed_area, +1),
    "crop": (_photo, lambda x, r: float(x.shape[0] * x.shape[1]), -1),
}


def test_every_degradation_has_a_direction_test():
    assert set(CASES) == set(D.DEGRADATIONS)


@pytest.mark.parametrize("name", sorted(D.DEGRADATIONS))
def test_direction_as_severity_rises(name):
    make, measure, sign = CASES[name]
    ref = make()
    values = [measure(D.degrade(ref, name, s, seed=3), ref) for s in SEVERITIES]
    steps = np.diff(values) * sign
    assert np.all(steps > 0), f"{name}: {values} should move with sign {sign}"


@pytest.mark.parametrize("name", sorted(D.DEGRADATIONS))
def test_severity_zero_is_identity(name):
    img = Image.fromarray(skdata.coffee()).resize((64, 48))
    assert D.degrade(img, name, 0.0, seed=5).tobytes() == img.tobytes()
    arr = _photo(32)
    np.testing.assert_array_equal(D.degrade(arr, name, 0.0), arr)


RANDOM = {"motion_blur", "sensor_noise", "film_grain", "color_cast", "light_leak", "double_exposure",
          "offcenter_subject", "tilt", "obstruction", "crop"}


@pytest.mark.parametrize("name", sorted(D.DEGRADATIONS))
def test_deterministic_given_seed(name):
    img = Image.fromarray(skdata.chelsea()).resize((80, 60))
    a = D.degrade(img, name, 0.8, seed=11).tobytes()
    assert a == D.degrade(img, name, 0.8, seed=11).tobytes()
    outs = {D.degrade(img, name, 0.8, seed=s).tobytes() for s in range(8)}
    if name in RANDOM:
        assert len(outs) > 1, f"{name} ignores its seed"
    else:
        assert len(outs) == 1


def _modes():
    base = Image.fromarray(skdata.astronaut()).resize((37, 53))
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    return {
        "L": base.convert("L"), "RGBA": rgba, "P": base.convert("P"), "LA": base.convert("LA"),
        "CMYK": base.convert("CMYK"), "I;16": Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257),
        "1": base.convert("1"),
    }


@pytest.mark.parametrize("name", sorted(D.DEGRADATIONS))
def test_any_mode_and_size(name):
    for label, img in _modes().items():
        out = D.degrade(img, name, 0.7, seed=1)
        assert out.mode == "RGB", label
        if name != "crop":
            assert out.size == img.size, (label, out.size)
        else:
            assert out.size[0] <= img.size[0] and out.size[1] <= img.size[1]
    for shape in [(1, 40), (40, 1), (1, 1), (2, 3), (31, 17)]:
        img = Image.fromarray(np.random.default_rng(0).integers(0, 255, shape + (3,), dtype=np.uint8))
        out = D.degrade(img, name, 1.0, seed=2)
        assert out.mode == "RGB"
        if name != "crop":
            assert out.size == img.size, (shape, out.size)
        assert min(out.size) >= 1


@pytest.mark.parametrize("name", sorted(D.DEGRADATIONS))
def test_arrays_in_arrays_out(name):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 255, (24, 30), dtype=np.uint8)  # greyscale 2D
    out = D.degrade(u8, name, 0.6, seed=0)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    f4 = rng.random((24, 30, 4), dtype=np.float32)  # RGBA float
    out = D.degrade(f4, name, 0.6, seed=0)
    assert out.dtype == np.float32 and out.shape[2] == 3 and 0 <= out.min() and out.max() <= 1
    if name != "crop":
        assert out.shape[:2] == (24, 30)


def test_alpha_composited_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(D.to_rgb_pil(img)).min() == 255


def test_bad_inputs_have_clear_errors():
    with pytest.raises(KeyError, match="unknown degradation"):
        D.degrade(_photo(8), "melt", 0.5)
    with pytest.raises(ValueError, match="severity"):
        D.degrade(_photo(8), "tilt", 1.5)
    with pytest.raises(ValueError, match="shape"):
        D.degrade(np.zeros((4, 4, 2)), "tilt", 0.5)


def test_taxonomy_degradations_exist():
    for a in ATTRIBUTES.values():
        if a.degradation is not None:
            assert a.degradation in D.DEGRADATIONS, a.name


def test_degrade_attributes_combines_in_pipeline_order():
    x = _photo(64)
    out = D.degrade_attributes(x, ["jpeg_artifacts", "blurry"], 0.8, seed=0)
    manual = D.degrade(D.degrade(x, "gaussian_blur", 0.8, seed=0), "jpeg_blocking", 0.8, seed=0)
    np.testing.assert_allclose(out, manual, atol=1e-6)
    with pytest.raises(ValueError, match="prompt-only"):
        D.degrade_attributes(x, ["grief"], 0.5)
