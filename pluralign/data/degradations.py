"""Image degradations: clean picture -> the same picture with one anti-aesthetic effect.

Every degradation is a pure function ``f(x, severity, rng) -> x`` on a float32 ``H x W x 3``
array in [0, 1]; ``severity`` in [0, 1] scales the effect and severity 0 returns the input
unchanged. Randomness (noise, the direction of a shift, the colour of a cast) comes only from
``rng``, so :func:`degrade` with the same seed gives identical bytes.

:func:`degrade` is the public entry point. It accepts a PIL image of any mode (converted
explicitly to RGB: alpha is composited on white, palettes and greyscale expanded) or a numpy
array (``H x W``, ``H x W x 1``, ``x 3`` or ``x 4``; uint8 in [0, 255] or float in [0, 1]) and
returns the same kind: PIL RGB for PIL input, ``H x W x 3`` of the input's dtype for arrays.
The output has the input's size, except ``crop``, which returns a smaller window on purpose.

The functions are vectorised (numpy, scipy.ndimage, PIL's C filters) because a dataset build
runs them tens of thousands of times.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from .taxonomy import get

Degradation = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ---------------------------------------------------------------- conversions
def to_rgb_pil(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white rather than dropped to black."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float32)
        hi = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((np.clip(arr / hi, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def to_float(image) -> np.ndarray:
    """PIL image or array -> float32 ``H x W x 3`` in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb_pil(image), dtype=np.float32) * np.float32(1 / 255)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an H x W, H x W x 1, x 3 or x 4 image array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) * np.float32(1 / 255)
    elif np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"integer image arrays must be uint8, got {arr.dtype}")
    else:
        arr = np.clip(arr.astype(np.float32), 0, 1)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4]
        arr = arr[:, :, :3] * alpha + (1 - alpha)
    return np.ascontiguousarray(arr)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(x))


def _back(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) * np.float32(1 / 255)


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ _LUMA


def border_fill(x: np.ndarray) -> np.ndarray:
    """The background colour estimated from the image border (median of the outer ring)."""
    h, w = x.shape[:2]
    k = max(1, min(h, w) // 16)
    ring = np.concatenate([x[:k].reshape(-1, 3), x[-k:].reshape(-1, 3), x[:, :k].reshape(-1, 3),
                           x[:, -k:].reshape(-1, 3)])
    return np.median(ring, axis=0).astype(np.float32)


def _short(x: np.ndarray) -> int:
    return min(x.shape[:2])


# ---------------------------------------------------------------- blur
def gaussian_blur(x, s, rng):
    """Isotropic Gaussian blur; sigma up to 4% of the short side."""
    sigma = s * 0.04 * _short(x)
    if sigma < 0.3:
        return x
    return _back(_pil(x).filter(ImageFilter.GaussianBlur(sigma)))


def motion_blur(x, s, rng):
    """Linear motion blur along a random direction: the mean of shifted copies along a line."""
    length = int(round(s * 0.08 * _short(x)))
    if length < 2:
        return x
    angle = rng.uniform(0, np.pi)
    n = length + 1
    offsets = np.linspace(-length / 2, length / 2, n)
    dy = np.round(offsets * np.sin(angle)).astype(int)
    dx = np.round(offsets * np.cos(angle)).astype(int)
    p = length // 2 + 1
    padded = np.pad(x, ((p, p), (p, p), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for oy, ox in zip(dy, dx):
        out += padded[p + oy:p + oy + h, p + ox:p + ox + w]
    return out / np.float32(n)


def defocus_blur(x, s, rng):
    """Lens defocus: the mean over a disk (the out-of-focus point spread), radius up to 3% of the
    short side. The disk is built from horizontal runs, each a box filter read off one cumulative
    sum, so the cost grows with the radius, not its square."""
    radius = s * 0.03 * _short(x)
    if radius < 0.7:
        return x
    r = int(np.ceil(radius))
    h, w = x.shape[:2]
    padded = np.pad(x, ((r, r), (r + 1, r), (0, 0)), mode="edge")
    csum = np.cumsum(padded, axis=1, dtype=np.float32)
    out = np.zeros_like(x)
    total = 0
    for dy in range(-r, r + 1):
        a = int(np.floor(np.sqrt(max(radius * radius + 0.5 - dy * dy, 0))))
        rows = csum[r + dy:r + dy + h]
        out += rows[:, r + 1 + a:r + 1 + a + w] - rows[:, r - a:r - a + w]
        total += 2 * a + 1
    return np.clip(out / np.float32(total), 0, 1)


# ---------------------------------------------------------------- noise and compression
def sensor_noise(x, s, rng):
    """Digital sensor noise: signal-dependent shot noise plus per-channel read noise (colour speckle)."""
    if s <= 0:
        return x
    shot = np.sqrt(np.maximum(x, 1e-4)) * np.float32(0.10 * s)
    read = np.float32(0.04 * s)
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x + noise * (shot + read), 0, 1)


def film_grain(x, s, rng):
    """Film grain: monochrome grain clumps (blurred noise) strongest in the mid-tones."""
    if s <= 0:
        return x
    h, w = x.shape[:2]
    grain = rng.standard_normal((h, w), dtype=np.float32)
    grain = ndimage.uniform_filter(grain, size=2, mode="reflect") * 2.0
    y = _luma(x)
    midtone = 4 * y * (1 - y) * 0.7 + 0.3
    return np.clip(x + (grain * midtone * np.float32(0.16 * s))[:, :, None], 0, 1)


def jpeg_blocking(x, s, rng):
    """JPEG compression at a quality that falls from 90 to 2 as severity rises (8x8 blocking)."""
    if s <= 0:
        return x
    quality = int(round(90 - 88 * s))
    buf = io.BytesIO()
    _pil(x).save(buf, format="JPEG", quality=max(1, quality), subsampling=2)
    buf.seek(0)
    return _back(Image.open(buf).convert("RGB"))


# ---------------------------------------------------------------- tone and exposure
def underexposure(x, s, rng):
    """Darken by up to 3.5 stops (in linear light), crushing the shadows."""
    if s <= 0:
        return x
    lin = x ** 2.2
    return np.clip(lin * np.float32(2 ** (-3.5 * s)), 0, 1) ** np.float32(1 / 2.2)


def overexposure(x, s, rng):
    """Brighten by up to 3 stops in linear light and clip the highlights at white."""
    if s <= 0:
        return x
    lin = x ** 2.2
    return np.clip(lin * np.float32(2 ** (3.0 * s)), 0, 1) ** np.float32(1 / 2.2)


def low_contrast(x, s, rng):
    """A faded look: compress the tonal range towards a lifted grey (up to 80% compression)."""
    if s <= 0:
        return x
    k = np.float32(1 - 0.8 * s)
    mean = np.float32(_luma(x).mean() * 0.7 + 0.5 * 0.3)
    return np.clip(mean + (x - mean) * k, 0, 1)


def desaturate(x, s, rng):
    """Muted colours: blend towards the luminance, fully grey at severity 1."""
    if s <= 0:
        return x
    y = _luma(x)[:, :, None]
    return np.clip(y + (x - y) * np.float32(1 - s), 0, 1)


_CASTS = np.array([[0.75, 1.0, 0.45], [0.55, 1.0, 0.65], [1.0, 0.55, 0.95], [0.6, 0.8, 1.0], [1.0, 0.85, 0.4]],
                  dtype=np.float32)


def color_cast(x, s, rng):
    """A sickly colour cast: multiply by a random tint (yellow-green, green, magenta, cyan, amber)."""
    if s <= 0:
        return x
    tint = _CASTS[rng.integers(len(_CASTS))]
    gain = 1 + (tint / tint.max() - 1) * np.float32(s)
    y = _luma(x).mean()
    out = x * gain
    out *= np.float32(y / max(_luma(out).mean(), 1e-4)) ** np.float32(0.5)  # keep exposure roughly constant
    return np.clip(out, 0, 1)


def _scale_channel(ch: Image.Image, scale: float) -> Image.Image:
    w, h = ch.size
    cx, cy = w / 2, h / 2
    inv = 1 / scale
    return ch.transform(ch.size, Image.Transform.AFFINE, (inv, 0, cx - cx * inv, 0, inv, cy - cy * inv),
                        resample=Image.Resampling.BILINEAR, fillcolor=None)


def chromatic_aberration(x, s, rng):
    """Lateral chromatic aberration: red magnified and blue shrunk about the centre (up to 1.5%)."""
    k = 0.015 * s
    if k * max(x.shape[:2]) < 0.25:
        return x
    r, g, b = _pil(x).split()
    r, b = _scale_channel(r, 1 + k), _scale_channel(b, 1 - k)
    out = _back(Image.merge("RGB", (r, g, b)))
    # the shrunk blue channel leaves an empty ring at the border: keep the original blue there
    h, w = x.shape[:2]
    my, mx = min(h, int(np.ceil(k * h / 2)) + 1), min(w, int(np.ceil(k * w / 2)) + 1)
    for sl in ((slice(0, my), slice(None)), (slice(h - my, h), slice(None)), (slice(None), slice(0, mx)),
               (slice(None), slice(w - mx, w))):
        out[sl + (2,)] = x[sl + (2,)]
    return out


def _radius(h: int, w: int) -> np.ndarray:
    yy = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / max(h / 2, 1)
    xx = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / max(w / 2, 1)
    return np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2) / np.float32(np.sqrt(2))


def vignette(x, s, rng):
    """Dark corners: multiply by a smooth radial fall-off reaching (1 - 0.9 s) in the corners."""
    if s <= 0:
        return x
    r = _radius(*x.shape[:2])
    mask = 1 - np.float32(0.9 * s) * r ** 2.5
    return x * mask[:, :, None]


def flat_lighting(x, s, rng):
    """Flat, shadowless light: remove the large-scale luminance variation (the light and shadow)
    while keeping local detail, then soften the remaining contrast a little."""
    if s <= 0:
        return x
    y = _luma(x)
    sigma = max(1.0, 0.08 * _short(x))
    small = _pil(np.repeat(y[:, :, None], 3, axis=2)).convert("L").filter(ImageFilter.GaussianBlur(sigma))
    low = np.asarray(small, dtype=np.float32) / 255
    shift = (low.mean() - low) * np.float32(0.85 * s)
    out = x + shift[:, :, None]
    m = np.float32(out.mean())
    return np.clip(m + (out - m) * np.float32(1 - 0.3 * s), 0, 1)


def light_leak(x, s, rng):
    """A warm light leak: an orange-red glow screened in from a random edge."""
    if s <= 0:
        return x
    h, w = x.shape[:2]
    side = rng.integers(4)
    t = np.linspace(1, 0, w if side < 2 else h, dtype=np.float32) ** 2
    if side % 2:
        t = t[::-1]
    glow = t[None, :] if side < 2 else t[:, None]
    glow = np.broadcast_to(glow, (h, w))[:, :, None] * np.array([1.0, 0.45, 0.15], np.float32) * np.float32(s)
    return 1 - (1 - x) * (1 - glow)


def double_exposure(x, s, rng):
    """A second, mirrored and shifted exposure of the same frame blended on top (up to 50%)."""
    if s <= 0:
        return x
    h, w = x.shape[:2]
    other = x[:, ::-1]
    other = np.roll(other, (int(rng.integers(-h // 4, h // 4 + 1)), int(rng.integers(-w // 4, w // 4 + 1))), (0, 1))
    a = np.float32(0.5 * s)
    return np.clip(x * (1 - a) + other * a, 0, 1)


# ---------------------------------------------------------------- geometry and composition
def _place(x: np.ndarray, scale: float, cy: float, cx: float) -> np.ndarray:
    """Rescale ``x`` by ``scale`` and paste it centred at (cy, cx) (fractions of the frame) on a
    canvas of the same size filled with the border colour."""
    h, w = x.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    small = _back(_pil(x).resize((nw, nh), Image.Resampling.BILINEAR)) if (nh, nw) != (h, w) else x
    canvas = np.empty_like(x)
    canvas[:] = border_fill(x)
    top, left = int(round(cy * h - nh / 2)), int(round(cx * w - nw / 2))
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(h, top + nh), min(w, left + nw)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = small[y0 - top:y1 - top, x0 - left:x1 - left]
    return canvas


def small_subject(x, s, rng):
    """Shrink the whole picture to as little as 25% of the frame, centred on a border-coloured fill."""
    if s <= 0:
        return x
    return _place(x, 1 - 0.75 * s, 0.5, 0.5)


def offcenter_subject(x, s, rng):
    """Push the picture towards a random corner (up to 35% of the frame) after a mild rescale,
    filling the uncovered area with the border colour."""
    if s <= 0:
        return x
    scale = 1 - 0.35 * s
    sy, sx = rng.choice([-1, 1], size=2)
    shift = 0.35 * s
    return _place(x, scale, 0.5 + sy * shift, 0.5 + sx * shift)


def tilt(x, s, rng):
    """Rotate by up to 25 degrees either way, keeping the size; corners get the border colour."""
    angle = float(25 * s * rng.choice([-1, 1]))
    if abs(angle) < 0.1:
        return x
    fill = tuple(int(v) for v in to_uint8(border_fill(x)))
    return _back(_pil(x).rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=fill))


def obstruction(x, s, rng):
    """A dark, soft foreground blob (a finger, a post) intruding from a random edge, covering up to
    about 35% of the frame."""
    if s <= 0:
        return x
    h, w = x.shape[:2]
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    side = int(rng.integers(4))
    along = float(rng.uniform(0.25, 0.75))
    depth = 0.7 * s
    radius = 0.45 * np.sqrt(s) + 0.05
    cy, cx = [(-0.2 + depth, along), (1.2 - depth, along), (along, -0.2 + depth), (along, 1.2 - depth)][side]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    mask = np.clip((radius - d) / 0.06 + 0.5, 0, 1)[:, :, None]
    colour = np.array([0.12, 0.09, 0.08], np.float32) + np.float32(0.1) * _luma(x).mean()
    return x * (1 - mask) + colour * mask


def crop(x, s, rng):
    """A careless tight crop: a random window keeping (1 - 0.6 s) of each side.

    Unlike the other degradations this *changes the image size* (the window is returned as is);
    trainers resize pairs to their resolution anyway.
    """
    if s <= 0:
        return x
    h, w = x.shape[:2]
    keep = 1 - 0.6 * s
    nh, nw = max(1, int(round(h * keep))), max(1, int(round(w * keep)))
    top = int(rng.integers(0, h - nh + 1))
    left = int(rng.integers(0, w - nw + 1))
    return np.ascontiguousarray(x[top:top + nh, left:left + nw])


DEGRADATIONS: dict[str, Degradation] = {
    f.__name__: f
    for f in (
        gaussian_blur, motion_blur, defocus_blur, sensor_noise, film_grain, jpeg_blocking, underexposure,
        overexposure, low_contrast, desaturate, color_cast, chromatic_aberration, vignette, flat_lighting,
        light_leak, double_exposure, small_subject, offcenter_subject, tilt, obstruction, crop,
    )
}

# Order in which several degradations are applied to one image: scene/geometry first, then the
# optics, the tone, the sensor, and compression last, as in a real camera pipeline.
PIPELINE_ORDER = (
    "obstruction", "small_subject", "offcenter_subject", "crop", "tilt", "double_exposure", "defocus_blur",
    "gaussian_blur", "motion_blur", "chromatic_aberration", "vignette", "flat_lighting", "light_leak",
    "underexposure", "overexposure", "low_contrast", "desaturate", "color_cast", "sensor_noise", "film_grain",
    "jpeg_blocking",
)
assert set(PIPELINE_ORDER) == set(DEGRADATIONS)


def _check(name: str, severity: float) -> None:
    if name not in DEGRADATIONS:
        raise KeyError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    if not 0.0 <= float(severity) <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")


def _rng(seed: int, name: str) -> np.random.Generator:
    # a per-degradation stream so adding one effect does not change another's randomness
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, sum(map(ord, name)), len(name)])


def apply_float(x: np.ndarray, steps: list[tuple[str, float]], seed: int = 0) -> np.ndarray:
    """Apply ``(name, severity)`` steps to a float32 ``H x W x 3`` array in pipeline order."""
    for name, s in sorted(steps, key=lambda t: PIPELINE_ORDER.index(t[0])):
        _check(name, s)
        if s > 0:
            x = DEGRADATIONS[name](x, float(s), _rng(seed, name)).astype(np.float32, copy=False)
    return x


def degrade(image, name: str | list[tuple[str, float]], severity: float = 1.0, seed: int = 0):
    """Degrade ``image`` with one named degradation at ``severity`` (or a list of ``(name, severity)``
    steps, applied in camera-pipeline order). Pure and deterministic given ``seed``.

    PIL in -> PIL RGB out; ndarray in -> ``H x W x 3`` ndarray of the input dtype out (uint8 or
    float32 in [0, 1]). Same size as the input except for ``crop``.
    """
    steps = [(name, severity)] if isinstance(name, str) else list(name)
    for n, s in steps:
        _check(n, s)
    is_pil = isinstance(image, Image.Image)
    out = apply_float(to_float(image), steps, seed)
    if is_pil:
        return Image.fromarray(to_uint8(out))
    if np.asarray(image).dtype == np.uint8:
        return to_uint8(out)
    return out.astype(np.float32)


def degrade_attributes(image, attributes: list[str], severity: float, seed: int = 0):
    """Degrade ``image`` so it shows every attribute in ``attributes`` (names from the taxonomy)."""
    steps = []
    for a in attributes:
        d = get(a).degradation
        if d is None:
            raise ValueError(f"attribute {a!r} is prompt-only: no image degradation can produce it")
        steps.append((d, severity))
    return degrade(image, steps, seed=seed)
