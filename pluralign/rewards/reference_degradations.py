"""Reference photographic degradations for measuring the model-free verifiers on held-out photos.

The verifiers (``verifiers.py`` + ``rules.py``) were developed against the degradations that build the training pairs.
Measuring their accuracy on those same degradations would reward them for recognising one implementation's quirks
rather than the photographic defect. This module is a second, independent implementation, written from the textbook
or literature model of each defect (cited in each function's docstring), sharing no code, constants or imports with
the training-pair degradations: it uses only numpy, scipy, PIL and scikit-image, and imports nothing from pluralign.

Every operation takes a float32 H x W x 3 sRGB image in [0, 1] (any size, non-square allowed), a severity in [0, 1]
and a ``numpy.random.Generator`` (the only source of randomness), and returns the same shape, float32, clipped to
[0, 1]. Strength is set relative to the image size (a fraction of the short side, half-diagonal or frame), so a 64 px
and a 1024 px image look equally degraded; severity 0.3 is clearly visible, 1.0 is strong.
"""

from __future__ import annotations

import colorsys
import functools
import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage, signal

Degradation = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
REFERENCE_DEGRADATIONS: dict[str, Degradation] = {}

_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # ITU-R BT.709 luminance weights


# ----------------------------------------------------------------------------------------------------------- helpers
def _register(fn: Degradation) -> Degradation:
    """Register ``fn`` under its name and enforce the contract: float32 input, severity in [0, 1], clipped output."""

    @functools.wraps(fn)
    def wrapped(x: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 image, got shape {x.shape}")
        out = fn(x, float(np.clip(severity, 0.0, 1.0)), rng)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)

    REFERENCE_DEGRADATIONS[fn.__name__] = wrapped
    return wrapped


def _lerp(a: float, b: float, s: float) -> float:
    return a + (b - a) * s


def _short(x: np.ndarray) -> int:
    return min(x.shape[0], x.shape[1])


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB EOTF, IEC 61966-2-1."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Inverse sRGB EOTF (encoding), IEC 61966-2-1."""
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055).astype(np.float32)


def _border_mean(x: np.ndarray, width: int = 2) -> np.ndarray:
    """Mean colour of the outermost ``width`` pixels of the frame."""
    mask = np.ones(x.shape[:2], dtype=bool)
    mask[width:-width, width:-width] = False
    return x[mask].mean(axis=0)


def _resize(x: np.ndarray, size_wh: tuple[int, int], resample: int, box=None) -> np.ndarray:
    """PIL resize of a float image, channel by channel in 32-bit float mode (no 8-bit quantisation)."""
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c])).resize(size_wh, resample, box=box))
             for c in range(x.shape[2])]
    return np.stack(chans, axis=-1).astype(np.float32)


def _paste(canvas: np.ndarray, img: np.ndarray, top: int, left: int) -> np.ndarray:
    """Paste ``img`` into ``canvas`` with its top-left corner at (top, left), clipping whatever falls outside."""
    H, W = canvas.shape[:2]
    h, w = img.shape[:2]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, H), min(left + w, W)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = img[y0 - top:y1 - top, x0 - left:x1 - left]
    return canvas


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """FFT convolution of a 2-D or H x W x C image with an odd-sized 2-D kernel, reflect (edge-symmetric) boundary."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    pad = ((ry, ry), (rx, rx)) + ((0, 0),) * (x.ndim - 2)
    k = kernel.astype(np.float32).reshape(kernel.shape + (1,) * (x.ndim - 2))
    return signal.fftconvolve(np.pad(x, pad, mode="symmetric"), k, mode="valid", axes=(0, 1)).astype(np.float32)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3.5 * sigma)))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; direct separable filtering for small sigma, FFT for large."""
    if sigma < 4:
        return ndimage.gaussian_filter(x, (sigma, sigma) + (0,) * (x.ndim - 2), mode="reflect").astype(np.float32)
    return _convolve(x, _gaussian_kernel(sigma))


def _luminance(lin: np.ndarray) -> np.ndarray:
    return lin @ _LUMA


# ----------------------------------------------------------------------------------------------------- sharpness/PSF
@_register
def blurry(x, s, rng):
    """Isotropic Gaussian PSF (the standard out-of-focus/low-resolution blur model), sigma 0.4-2.5 % of the short side."""
    return _gaussian_blur(x, max(0.6, _lerp(0.004, 0.025, s) * _short(x)))


@_register
def motion_blur(x, s, rng):
    """Uniform linear camera motion during exposure: PSF is a line segment of length 2-8 % of the short side."""
    length = max(2.0, _lerp(0.02, 0.08, s) * _short(x))
    theta = rng.uniform(0.0, np.pi)
    r = int(np.ceil(length / 2)) + 1
    t = np.linspace(-length / 2, length / 2, max(2, int(np.ceil(length * 10))))  # supersampled segment
    px, py = r + t * np.cos(theta), r - t * np.sin(theta)
    k = np.zeros((2 * r + 1, 2 * r + 1))
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(k, (y0 + dy, x0 + dx), w)  # bilinear splat = anti-aliased line
    return _convolve(x, k / k.sum())


@_register
def defocused(x, s, rng):
    """Geometric-optics defocus: pillbox (uniform circle of confusion) PSF, radius 0.8-3 % of the short side."""
    radius = max(1.0, _lerp(0.008, 0.03, s) * _short(x))
    r = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0)  # pixel-coverage anti-aliased disk edge
    return _convolve(x, k / k.sum())


# ------------------------------------------------------------------------------------------------------- noise/grain
@_register
def noisy(x, s, rng):
    """Poisson-Gaussian sensor noise (Foi et al. 2008): var = a*y + b in linear light, per channel, sRGB std ~.03-.12."""
    t = _lerp(0.03, 0.12, s)  # target sRGB std near mid-grey; the sRGB slope there is ~1.12
    a, b = 3.85 * t * t, 0.02 * t * t
    lin = srgb_to_linear(x)
    noisy_lin = lin + np.sqrt(a * lin + b) * rng.standard_normal(x.shape, dtype=np.float32)
    return linear_to_srgb(noisy_lin)


@_register
def film_grain(x, s, rng):
    """Film grain: blurred (clumped) monochrome Gaussian noise, strongest in mid-tones (4y(1-y)), std 0.04-0.12."""
    short = _short(x)
    sigma = _lerp(0.7, 1.2, s) * max(1.0, short / 512)
    field = ndimage.gaussian_filter(rng.standard_normal(x.shape[:2], dtype=np.float32), sigma, mode="reflect")
    field /= field.std() + 1e-8
    y = x @ _LUMA
    grain = _lerp(0.04, 0.12, s) * field * 4.0 * y * (1.0 - y)
    return x + grain[..., None]


@_register
def jpeg_artifacts(x, s, rng):
    """Lossy JPEG (DCT quantisation, 4:2:0 chroma subsampling) via PIL, quality 30 down to 3."""
    quality = int(round(_lerp(30, 3, s)))
    buf = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality, subsampling=2)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------------------------------- tone/exposure
@_register
def underexposed(x, s, rng):
    """Exposure error of -1 to -3 EV: linear-light radiance scaled by 2^-EV (sRGB EOTF round trip)."""
    return linear_to_srgb(srgb_to_linear(x) * 2.0 ** -_lerp(1.0, 3.0, s))


@_register
def overexposed(x, s, rng):
    """Exposure error of +1 to +2.5 EV: linear-light radiance scaled by 2^EV, sensor saturation clips at 1."""
    return linear_to_srgb(np.minimum(srgb_to_linear(x) * 2.0 ** _lerp(1.0, 2.5, s), 1.0))


@_register
def low_contrast(x, s, rng):
    """Affine contrast compression towards the mean grey (veiling glare/haze model): m + k(x - m), k 0.6 to 0.2."""
    m = x.mean()
    return m + _lerp(0.6, 0.2, s) * (x - m)


@_register
def flat_lighting(x, s, rng):
    """Homomorphic flattening (Land's Retinex): remove 60-100 % of the log-illumination's spatial variation."""
    lin = srgb_to_linear(x)
    log_l = np.log(_luminance(lin) + 1e-4)
    illum = _gaussian_blur(log_l, 0.08 * _short(x))  # illumination = low-pass of log luminance
    ratio = np.exp(-_lerp(0.6, 1.0, s) * (illum - illum.mean()))
    return linear_to_srgb(lin * ratio[..., None])


# ------------------------------------------------------------------------------------------------------------- colour
@_register
def muted(x, s, rng):
    """Desaturation: HSV saturation scaled by 0.5 down to 0, keeping H and V (closed form of rgb2hsv/hsv2rgb)."""
    # Each HSV channel is c = V * (1 - S * g_hue(c)), so S -> f*S with H, V fixed is exactly c' = V - f * (V - c);
    # skimage's rgb2hsv/hsv2rgb round trip gives the same result (see the tests) but takes ~0.6 s at 1024 px.
    v = x.max(axis=2, keepdims=True)
    return v - _lerp(0.5, 0.0, s) * (v - x)


@_register
def color_cast(x, s, rng):
    """White-balance error, von Kries diagonal model: linear RGB times a random illuminant's gains (max/min 1.15-1.6)."""
    ratio = _lerp(1.15, 1.6, s)
    hue_dir = np.array(colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), 1.0, 1.0))  # max 1, min 0: a random hue direction
    gains = ratio ** hue_dir
    gains = gains / float(gains @ _LUMA)  # a neutral grey keeps its luminance
    return linear_to_srgb(srgb_to_linear(x) * gains.astype(np.float32))


@_register
def chromatic_aberration(x, s, rng):
    """Lateral chromatic aberration: R magnified by 1+k, B by 1-k about the centre; corner shift 0.4-1.2 % (>= 1 px)."""
    H, W = x.shape[:2]
    cy, cx = (H - 1) / 2, (W - 1) / 2
    half_diag = 0.5 * np.hypot(H, W)
    k = max(_lerp(0.004, 0.012, s), 1.0 / half_diag)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = x.copy()
    for c, mag in ((0, 1 + k), (2, 1 - k)):
        coords = np.stack([cy + (yy - cy) / mag, cx + (xx - cx) / mag])  # out(p) = in(c + (p - c) / mag)
        out[..., c] = ndimage.map_coordinates(x[..., c], coords, order=1, mode="nearest")
    return out


# ---------------------------------------------------------------------------------------------------------- geometry
@_register
def vignette(x, s, rng):
    """Natural vignetting, cos^4 law in linear light: tan(theta) = r / f, f set so the corner falls to 0.7-0.25."""
    H, W = x.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = (yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2
    corner = _lerp(0.7, 0.25, s)
    f2 = r2.max() / (corner ** -0.5 - 1.0)  # cos^4 = 1 / (1 + r^2/f^2)^2 equals `corner` at the corner
    falloff = 1.0 / (1.0 + r2 / f2) ** 2
    return linear_to_srgb(srgb_to_linear(x) * falloff[..., None])


@_register
def small_subject(x, s, rng):
    """Subject too small in frame: the frame shrunk to 0.6-0.3 (Lanczos) on a canvas of the border's mean colour."""
    H, W = x.shape[:2]
    scale = _lerp(0.6, 0.3, s)
    w, h = max(1, round(W * scale)), max(1, round(H * scale))
    canvas = np.broadcast_to(_border_mean(x), x.shape).copy()
    return _paste(canvas, _resize(x, (w, h), Image.LANCZOS), (H - h) // 2, (W - w) // 2)


@_register
def off_center(x, s, rng):
    """Poor framing: content shrunk by 0.85 and translated 15-35 % of width/height towards a random corner."""
    H, W = x.shape[:2]
    w, h = max(1, round(W * 0.85)), max(1, round(H * 0.85))
    shift = _lerp(0.15, 0.35, s)
    sy, sx = rng.choice([-1, 1], size=2)
    canvas = np.broadcast_to(_border_mean(x), x.shape).copy()
    top, left = round((H - h) / 2 + sy * shift * H), round((W - w) / 2 + sx * shift * W)
    return _paste(canvas, _resize(x, (w, h), Image.LANCZOS), top, left)


@_register
def tilted(x, s, rng):
    """Camera roll (tilted horizon): rotation by 5-20 degrees of random sign, edge-replicated, same size."""
    from skimage.transform import rotate

    angle = _lerp(5.0, 20.0, s) * rng.choice([-1.0, 1.0])
    return rotate(x, angle, resize=False, mode="edge", order=1, preserve_range=True)


@_register
def cropped(x, s, rng):
    """Over-tight framing: a crop window keeping 0.8-0.5 of each side at a random position, resized back (bicubic)."""
    H, W = x.shape[:2]
    f = _lerp(0.8, 0.5, s)
    cw, ch = max(1, round(W * f)), max(1, round(H * f))
    left, top = rng.integers(0, W - cw + 1), rng.integers(0, H - ch + 1)
    return _resize(x, (W, H), Image.BICUBIC, box=(int(left), int(top), int(left + cw), int(top + ch)))


# ----------------------------------------------------------------------------------------------------------- optical
@_register
def obstructed(x, s, rng):
    """Occluder near the lens (finger/post): defocused dark ellipse from a random edge covering 12-35 % of the frame."""
    H, W = x.shape[:2]
    target = _lerp(0.12, 0.35, s)
    edge = rng.integers(4)  # 0 top, 1 bottom, 2 left, 3 right
    along = rng.uniform(0.25, 0.75)
    cy, cx = [(0.0, along * W), (H - 1.0, along * W), (along * H, 0.0), (along * H, W - 1.0)][edge]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    phi = rng.uniform(-0.35, 0.35) + (0.0 if edge < 2 else np.pi / 2)  # long axis roughly perpendicular to the edge
    u, v = dy * np.cos(phi) + dx * np.sin(phi), -dy * np.sin(phi) + dx * np.cos(phi)  # u: into the frame
    aspect = rng.uniform(0.45, 0.8)  # width/depth of the finger
    depth = np.sqrt(2 * target * H * W / (np.pi * aspect))  # half an ellipse inside: pi*a*b/2 = target area
    for _ in range(4):  # correct for the parts that fall outside the frame
        mask = (u / depth) ** 2 + (v / (aspect * depth)) ** 2 <= 1.0
        depth *= np.sqrt(target / max(mask.mean(), 1e-6)) ** 0.8
    mask = ((u / depth) ** 2 + (v / (aspect * depth)) ** 2 <= 1.0).astype(np.float32)
    alpha = np.clip(_gaussian_blur(mask, 0.03 * _short(x)), 0.0, 1.0)[..., None]
    colour = rng.uniform(0.05, 0.15) * np.array([1.15, 1.0, 0.85], dtype=np.float32)  # dark brown-grey
    return (1.0 - alpha) * x + alpha * colour


@_register
def light_leak(x, s, rng):
    """Light leak: screen blend of a warm glow decaying exponentially from a random frame edge, intensity 0.4-0.9."""
    H, W = x.shape[:2]
    edge = rng.integers(4)
    d = np.linspace(0.0, 1.0, H if edge < 2 else W, dtype=np.float32)
    d = d if edge in (0, 2) else d[::-1]
    d = d[:, None] * np.ones((1, W), np.float32) if edge < 2 else d[None, :] * np.ones((H, 1), np.float32)
    falloff = np.exp(-d / _lerp(0.15, 0.35, s))
    colour = np.array([1.0, rng.uniform(0.45, 0.6), rng.uniform(0.1, 0.2)], dtype=np.float32)
    glow = colour * _lerp(0.4, 0.9, s) * falloff[..., None]
    return 1.0 - (1.0 - x) * (1.0 - glow)


@_register
def double_exposure(x, s, rng):
    """Double exposure: weighted blend with a second frame (zoomed 1.2-1.5x about a random point, mirrored)."""
    H, W = x.shape[:2]
    zoom = rng.uniform(1.2, 1.5)
    py, px = rng.uniform(0, H), rng.uniform(0, W)
    box = (px - px / zoom, py - py / zoom, px + (W - px) / zoom, py + (H - py) / zoom)
    second = _resize(x, (W, H), Image.BICUBIC, box=box)[:, ::-1]
    alpha = _lerp(0.3, 0.5, s)
    return (1.0 - alpha) * x + alpha * second


def degrade(x: np.ndarray, attribute: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Apply the reference degradation ``attribute`` at ``severity`` in [0, 1] to a float32 H x W x 3 image."""
    if attribute not in REFERENCE_DEGRADATIONS:
        raise ValueError(f"unknown attribute {attribute!r}; known: {', '.join(sorted(REFERENCE_DEGRADATIONS))}")
    return REFERENCE_DEGRADATIONS[attribute](x, severity, rng)
