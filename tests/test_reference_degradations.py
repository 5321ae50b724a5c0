"""The independent reference degradations: contract (shape, dtype, range, determinism), visibility at severity 0.3,
physical sanity of a few, and independence from the rest of pluralign."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pluralign.rewards.reference_degradations import REFERENCE_DEGRADATIONS, degrade

MODULE = Path(__file__).resolve().parents[1] / "pluralign" / "rewards" / "reference_degradations.py"
ATTRIBUTES = sorted(REFERENCE_DEGRADATIONS)
SIZES = [(48, 64), (200, 300)]  # (H, W): a tiny landscape frame and a portrait-ish one

# Minimum mean |out - in| at severity 0.3 on the synthetic images. Most effects move the image by several percent;
# the blurs, JPEG and lateral CA only touch edges/texture, so they get a lower, still clearly non-zero bar.
MIN_MAD = {"blurry": 0.005, "motion_blur": 0.005, "defocused": 0.005, "jpeg_artifacts": 0.005,
           "chromatic_aberration": 0.003, "color_cast": 0.008}


def synthetic(h: int, w: int) -> np.ndarray:
    """Smooth colour gradients under an uneven light, a stripe texture, a bright rectangle and a dark disk."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    light = 0.55 + 0.45 * xx  # illumination rising to the right
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.5 + 0.3 * np.sin(6 * xx + 3 * yy)], -1) * light[..., None]
    img[: h // 3, : w // 2] *= (0.75 + 0.25 * np.sign(np.sin(np.arange(w // 2) * np.pi / 2)))[None, :, None]
    img[h // 2: h // 2 + h // 5, w // 8: w // 8 + w // 4] = (0.95, 0.9, 0.3)
    img[(yy - 0.7) ** 2 + ((xx - 0.7) * w / h) ** 2 < 0.04] = (0.05, 0.1, 0.4)
    return np.clip(img, 0, 1).astype(np.float32)


IMAGES = {size: synthetic(*size) for size in SIZES}


def luminance(x):
    return x @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def saturation(x):
    mx = x.max(-1)
    return ((mx - x.min(-1)) / np.maximum(mx, 1e-6)).mean()


def laplacian_var(x):
    return ndimage.laplace(luminance(x)).var()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_contract_visibility_and_determinism(attribute, size):
    x = IMAGES[size]
    before = x.copy()
    out = degrade(x, attribute, 0.3, np.random.default_rng(7))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and np.isfinite(out).all()
    np.testing.assert_array_equal(x, before)  # the input is not modified
    assert np.abs(out - x).mean() > MIN_MAD.get(attribute, 0.01), attribute
    np.testing.assert_array_equal(out, degrade(x, attribute, 0.3, np.random.default_rng(7)))
    strong = degrade(x, attribute, 1.0, np.random.default_rng(7))
    assert strong.shape == x.shape and strong.dtype == np.float32 and 0 <= strong.min() <= strong.max() <= 1


@pytest.mark.parametrize("size", SIZES)
def test_physical_sanity(size):
    x, rng = IMAGES[size], np.random.default_rng(0)
    lum = luminance(x).mean()
    assert luminance(degrade(x, "underexposed", 0.3, rng)).mean() < 0.7 * lum
    assert luminance(degrade(x, "overexposed", 0.3, rng)).mean() > 1.3 * lum
    assert saturation(degrade(x, "muted", 0.3, rng)) < 0.7 * saturation(x)
    assert saturation(degrade(x, "muted", 1.0, rng)) < 1e-5
    assert degrade(x, "low_contrast", 0.3, rng).std() < 0.6 * x.std()
    for blur in ("blurry", "motion_blur", "defocused"):
        mild, strong = (laplacian_var(degrade(x, blur, s, np.random.default_rng(0))) for s in (0.3, 1.0))
        assert strong < mild < 0.8 * laplacian_var(x), blur
    # noise adds high-frequency energy; flattening removes the left-to-right light falloff
    assert laplacian_var(degrade(x, "noisy", 0.3, rng)) > 2 * laplacian_var(x)
    flat = degrade(x, "flat_lighting", 0.3, rng)
    left, right = slice(None, x.shape[1] // 4), slice(-(x.shape[1] // 4), None)
    assert (luminance(flat)[:, right].mean() / luminance(flat)[:, left].mean()
            < 0.9 * luminance(x)[:, right].mean() / luminance(x)[:, left].mean())
    # the vignette darkens corners much more than the centre
    vig, (h, w) = degrade(x, "vignette", 0.3, rng), x.shape[:2]
    assert vig[0, 0].mean() < 0.85 * x[0, 0].mean() and abs(vig[h // 2, w // 2] - x[h // 2, w // 2]).max() < 0.02


def test_muted_matches_skimage_hsv():
    skcolor = pytest.importorskip("skimage.color")
    x = IMAGES[SIZES[0]]
    hsv = skcolor.rgb2hsv(x)
    hsv[..., 1] *= 0.5 * (1 - 0.3)
    np.testing.assert_allclose(degrade(x, "muted", 0.3, np.random.default_rng(0)), skcolor.hsv2rgb(hsv), atol=1e-5)


def test_severity_is_relative_to_image_size():
    """The same scene at 64 and 256 px is blurred to the same look: equal after bringing both to 64 px."""
    from PIL import Image

    big = synthetic(192, 256)
    small = np.asarray(Image.fromarray((big * 255).astype(np.uint8)).resize((64, 48), Image.BOX), np.float32) / 255

    def down(a):
        return np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((64, 48), Image.BOX), np.float32) / 255

    for attribute in ("blurry", "defocused", "vignette", "small_subject"):
        a = degrade(small, attribute, 0.6, np.random.default_rng(0))
        b = down(degrade(big, attribute, 0.6, np.random.default_rng(0)))
        assert np.abs(a - b).mean() < 0.5 * np.abs(a - small).mean(), attribute


def test_unknown_attribute_names_the_known_ones():
    with pytest.raises(ValueError) as err:
        degrade(IMAGES[SIZES[0]], "sepia", 0.5, np.random.default_rng(0))
    assert all(name in str(err.value) for name in ATTRIBUTES)


def test_imports_nothing_from_pluralign():
    imported = set()
    for node in ast.walk(ast.parse(MODULE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "collections", "colorsys", "functools", "io", "numpy", "PIL", "scipy", "skimage"}
    # and at run time: loaded by path in a fresh interpreter, running every operation pulls in no pluralign module
    code = ("import importlib.util, sys, numpy as np\n"
            f"spec = importlib.util.spec_from_file_location('refdeg', {str(MODULE)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "[m.degrade(np.full((32, 40, 3), 0.5, np.float32), k, 0.5, np.random.default_rng(0))"
            " for k in m.REFERENCE_DEGRADATIONS]\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] == 'pluralign'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
