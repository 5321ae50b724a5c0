"""Model-free image measurements ("verifiers") and the paired decision rule built on them.

Each verifier is a real measurement of one photographic property, computed with vectorised
numpy on any image size. ``VERIFIERS[name](image) -> float`` measures one image;
:func:`measure` scores a whole batch, sharing intermediate arrays (luminance, gradients, a
64-pixel thumbnail) between verifiers and stacking same-sized images so numpy works on the
batch at once.

Images are float32 ``H x W x 3`` arrays in [0, 1]; PIL images, uint8 arrays and greyscale
arrays are converted. The paired decision rule (does ``I_a`` show attribute ``a`` relative
to ``I_o`` made from the same seed?) lives in :mod:`pluralign.rewards.rules` and is
re-exported here as :func:`adheres` / :func:`adherence_scores`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

EPS = 1e-6
THUMB = 64  # side of the thumbnail used by the layout verifiers (subject, vignetting)

# Rec. 709 luma weights.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def to_array(image) -> np.ndarray:
    """Any RGB(A)/greyscale PIL image or array -> float32 ``H x W x 3`` in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return arr
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an H x W x 3 image, got an array of shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    arr = arr.astype(np.float32, copy=False)
    if arr.size and (float(arr.min()) < -1e-3 or float(arr.max()) > 1.0 + 1e-3):
        raise ValueError(
            f"float images must lie in [0, 1]; got values in [{float(arr.min()):.3g}, {float(arr.max()):.3g}]"
            " (divide uint8 data by 255)"
        )
    return np.clip(arr, 0.0, 1.0)


def _area_downscale(x: np.ndarray, max_side: int) -> np.ndarray:
    """Block-mean downscale of ``N x H x W x C`` so the longer side is at most ~``max_side``."""
    h, w = x.shape[1:3]
    f = int(np.ceil(max(h, w) / max_side))
    if f <= 1:
        return x
    hh, ww = (h // f) * f, (w // f) * f
    x = x[:, :hh, :ww]
    # Strided sums are several times faster than a reshape-mean over two axes.
    rows = x[:, 0::f]
    for i in range(1, f):
        rows = rows + x[:, i::f]
    out = rows[:, :, 0::f]
    for i in range(1, f):
        out = out + rows[:, :, i::f]
    return out * np.float32(1.0 / (f * f))


class Batch:
    """Same-sized images ``N x H x W x 3`` with lazily computed shared intermediates."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self._cache: dict[str, np.ndarray] = {}

    def _get(self, key: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def y(self) -> np.ndarray:  # luminance N x H x W
        return self._get("y", lambda: self.x @ _LUMA)

    @property
    def thumb(self) -> np.ndarray:  # N x h x w x 3, longer side <= THUMB
        return self._get("thumb", lambda: _area_downscale(self.x, THUMB))

    @property
    def mid(self) -> np.ndarray:  # N x h x w x 3, longer side <= 128 (colour statistics)
        return self._get("mid", lambda: _area_downscale(self.x, 128))

    @property
    def thumb_y(self) -> np.ndarray:
        return self._get("thumb_y", lambda: self.thumb @ _LUMA)

    @property
    def y_stats(self) -> np.ndarray:  # N x 2: mean, variance of luminance
        def f():
            y = self.y
            m = y.mean(axis=(1, 2))
            v = np.square(y - m[:, None, None]).mean(axis=(1, 2))
            return np.stack([m, v], axis=1)

        return self._get("y_stats", f)

    @property
    def hf_residual(self) -> np.ndarray:  # Immerkaer's 3x3 mask [1,-2,1] (x) [1,-2,1] on luminance
        def f():
            y = self.y
            dx = y[:, :, :-2] - 2 * y[:, :, 1:-1] + y[:, :, 2:]
            return dx[:, :-2] - 2 * dx[:, 1:-1] + dx[:, 2:]

        return self._get("hf", f)


# ----------------------------------------------------------------------------- verifiers
# Each takes a Batch and returns an (N,) float array.


def _sharpness(b: Batch) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian of luminance over the luminance variance.

    Dividing by the image's own variance makes the measure insensitive to exposure and global
    contrast changes, so only a loss of fine detail (blur) moves it.
    """
    y = b.y
    lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4.0 * y[:, 1:-1, 1:-1]
    return lap.var(axis=(1, 2)) / (b.y_stats[:, 1] + 1e-4)


def _brightness(b: Batch) -> np.ndarray:
    """Mean luminance."""
    return b.y_stats[:, 0]


def _highlight_clipping(b: Batch) -> np.ndarray:
    """Fraction of pixels with luminance at or above 0.98 (blown highlights)."""
    return (b.y >= 0.98).mean(axis=(1, 2))


def _shadow_clipping(b: Batch) -> np.ndarray:
    """Fraction of pixels with luminance at or below 0.02 (crushed shadows)."""
    return (b.y <= 0.02).mean(axis=(1, 2))


def _contrast(b: Batch) -> np.ndarray:
    """RMS contrast: standard deviation of luminance."""
    return np.sqrt(b.y_stats[:, 1])


def _opponent(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g, bl = x[..., 0], x[..., 1], x[..., 2]
    return r - g, 0.5 * (r + g) - bl


def _colorfulness(b: Batch) -> np.ndarray:
    """Hasler & Suesstrunk (2003) colourfulness on [0, 1] RGB (x255 for their scale), at <= 128 px.

    Measured on a 128-pixel area downscale so pixel noise does not read as colour.
    """
    rg, yb = _opponent(b.mid)
    std = np.sqrt(rg.var(axis=(1, 2)) + yb.var(axis=(1, 2)))
    mean = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return std + 0.3 * mean


def _saturation(b: Batch) -> np.ndarray:
    """Mean HSV saturation, (max - min) / max per pixel, on the thumbnail."""
    t = b.thumb
    r, g, bl = t[..., 0], t[..., 1], t[..., 2]
    mx, mn = np.maximum(np.maximum(r, g), bl), np.minimum(np.minimum(r, g), bl)
    return ((mx - mn) / (mx + 0.02)).mean(axis=(1, 2))


def chroma_vector(b: Batch) -> np.ndarray:
    """Mean opponent chroma (r-g, y-b) relative to mean luminance: an N x 2 grey-world offset."""
    t = b.thumb
    rg, yb = _opponent(t)
    m = b.thumb_y.mean(axis=(1, 2))[:, None] + 0.05
    return np.stack([rg.mean(axis=(1, 2)), yb.mean(axis=(1, 2))], axis=1) / m


def _color_cast(b: Batch) -> np.ndarray:
    """Length of the grey-world chroma offset: how far the average colour sits from neutral."""
    return np.linalg.norm(chroma_vector(b), axis=1)


def _noise(b: Batch) -> np.ndarray:
    """Robust noise sigma: median absolute Immerkaer residual, scaled so i.i.d. noise reads as its sigma.

    The 3x3 mask cancels planes and linear ramps; the median (not the mean) of its response
    ignores edges and texture, which occupy a minority of pixels, and so tracks sensor-like noise.
    """
    r = np.abs(b.hf_residual.reshape(b.x.shape[0], -1))
    k = r.shape[1] // 2
    med = np.partition(r, k, axis=1)[:, k]
    # For Gaussian noise the mask output has std 6 * sigma; median|N(0, s)| = 0.6745 s.
    return med / (0.6745 * 6.0)


def _grain(b: Batch) -> np.ndarray:
    """Noise sigma at half resolution: the Immerkaer residual of the 2x2-averaged luminance.

    Film grain is clumped (spatially correlated) and survives the averaging, while compression
    error and single-pixel detail do not, so this separates grain from re-encoding.
    """
    y = b.y
    n, h, w = y.shape
    y = y[:, : h // 2 * 2, : w // 2 * 2]
    y = 0.25 * (y[:, 0::2, 0::2] + y[:, 1::2, 0::2] + y[:, 0::2, 1::2] + y[:, 1::2, 1::2])
    dx = y[:, :, :-2] - 2 * y[:, :, 1:-1] + y[:, :, 2:]
    r = np.abs((dx[:, :-2] - 2 * dx[:, 1:-1] + dx[:, 2:]).reshape(n, -1))
    k = r.shape[1] // 2
    return np.partition(r, k, axis=1)[:, k] / (0.6745 * 6.0)


def _blockiness(b: Batch) -> np.ndarray:
    """Mean absolute luminance step across 8x8 block boundaries over the step inside blocks.

    1.0 means no grid; JPEG at low quality raises it. Computed for columns and rows and averaged.
    """
    y = b.y
    n, h, w = y.shape
    out = np.zeros(n, dtype=np.float64)
    parts = 0
    for axis, size in ((2, w), (1, h)):
        if size < 17:
            continue
        d = np.abs(np.diff(y, axis=axis)).mean(axis=3 - axis)  # N x (size-1): mean step per column/row
        idx = np.arange(size - 1)
        boundary = (idx % 8) == 7
        # compare with the steps right beside each boundary, so smooth gradients and texture cancel
        beside = ((idx % 8) == 6) | (((idx % 8) == 0) & (idx > 0))
        out += d[:, boundary].mean(axis=1) / (d[:, beside].mean(axis=1) + 1e-4)
        parts += 1
    return out / parts if parts else np.ones(n)


def _saliency(b: Batch) -> np.ndarray:
    """Soft subject mask on the thumbnail: colour distance from the border-estimated background.

    The background colour is the median of a one-sixteenth-wide border ring; a pixel's weight
    rises linearly from 0 at distance 0.08 to 1 at 0.25 (RGB Euclidean distance).
    """

    def f():
        t = b.thumb
        n, h, w, _ = t.shape
        k = max(1, min(h, w) // 16)
        ring = np.concatenate(
            [t[:, :k].reshape(n, -1, 3), t[:, -k:].reshape(n, -1, 3),
             t[:, k:-k, :k].reshape(n, -1, 3), t[:, k:-k, -k:].reshape(n, -1, 3)], axis=1)
        bg = np.median(ring, axis=1)  # N x 3
        d = np.sqrt(np.square(t - bg[:, None, None, :]).sum(axis=-1))
        return np.clip((d - 0.08) / 0.17, 0.0, 1.0)

    return b._get("saliency", f)


def _subject_size(b: Batch) -> np.ndarray:
    """Area fraction of the soft subject mask."""
    return _saliency(b).mean(axis=(1, 2))


def subject_centroid(b: Batch) -> np.ndarray:
    """Centroid (x, y) of the soft subject mask relative to the image centre, in frame fractions: N x 2."""
    m = _saliency(b)
    n, h, w = m.shape
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5
    tot = m.sum(axis=(1, 2)) + EPS
    return np.stack([(m.sum(axis=1) @ xs) / tot, (m.sum(axis=2) @ ys) / tot], axis=1)


def orientation_moments(b: Batch, k: int = 6) -> np.ndarray:
    """Fourier moments of the edge-orientation distribution: N x 2k reals (cos, sin of 2j*theta).

    Weighted by gradient magnitude and normalised by the total weight. Rotating the image by
    phi rotates moment j by 2j*phi, which :mod:`rules` uses to estimate the rotation between
    two images of the same scene.
    """

    def f():
        y = _area_downscale(b.y[..., None], 128)[..., 0]
        # Scharr derivatives: nearly isotropic, so the pixel grid does not bias the angle.
        sy = 3 * y[:, :, :-2] + 10 * y[:, :, 1:-1] + 3 * y[:, :, 2:]
        sx = 3 * y[:, :-2] + 10 * y[:, 1:-1] + 3 * y[:, 2:]
        gx = sx[:, :, 2:] - sx[:, :, :-2]
        gy = sy[:, 2:] - sy[:, :-2]
        mag = np.sqrt(gx * gx + gy * gy) + 1e-12
        theta2 = 2.0 * np.arctan2(gy, gx)
        tot = mag.sum(axis=(1, 2))
        cols = []
        for j in range(1, k + 1):
            cols.append((mag * np.cos(j * theta2)).sum(axis=(1, 2)) / tot)
            cols.append((mag * np.sin(j * theta2)).sum(axis=(1, 2)) / tot)
        return np.stack(cols, axis=1)

    return b._get("orientation_moments", f)


def _subject_offcenter(b: Batch) -> np.ndarray:
    """Distance of the subject mask's centroid from the image centre, over the half-diagonal (0..1)."""
    cx, cy = subject_centroid(b).T
    return np.sqrt(cx**2 + cy**2) / np.sqrt(0.5)


def orientation(b: Batch) -> np.ndarray:
    """Dominant edge orientation modulo 90 degrees, in degrees in (-45, 45], and its coherence.

    Uses the fourth power of the complex gradient weighted by magnitude squared, which folds
    horizontal and vertical structure onto one direction. Returns an N x 2 array
    ``[angle_deg, coherence in [0, 1]]``.
    """

    def f():
        y = _area_downscale(b.y[..., None], 128)[..., 0]
        gx = y[:, 1:-1, 2:] - y[:, 1:-1, :-2]
        gy = y[:, 2:, 1:-1] - y[:, :-2, 1:-1]
        # z = gx + i gy; z^2 = a + i c; z^4 / |z|^2 = ((a^2 - c^2) + 2i ac) / |z|^2, in real arithmetic.
        a = gx * gx - gy * gy
        c = 2.0 * gx * gy
        mag2 = gx * gx + gy * gy + 1e-12
        re = ((a * a - c * c) / mag2).sum(axis=(1, 2))
        im = ((2.0 * a * c) / mag2).sum(axis=(1, 2))
        coh = np.hypot(re, im) / mag2.sum(axis=(1, 2))
        ang = np.degrees(np.arctan2(im, re)) / 4.0
        return np.stack([ang, coh], axis=1)

    return b._get("orientation", f)


def _tilt(b: Batch) -> np.ndarray:
    """Deviation of the dominant edge orientation from the nearest image axis, in degrees (0..45)."""
    return np.abs(orientation(b)[:, 0])


def _cos(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    # Gradients have ~zero mean, so the cosine equals the normalised cross-correlation.
    n = a.shape[0]
    a, c = a.reshape(n, -1), c.reshape(n, -1)
    dot = np.einsum("ni,ni->n", a, c)
    return dot / np.sqrt(np.einsum("ni,ni->n", a, a) * np.einsum("ni,ni->n", c, c) + 1e-12)


def _chromatic_aberration(b: Batch) -> np.ndarray:
    """Red/blue misregistration against green at edges: 1 - mean normalised correlation of gradients.

    Scaling or offsetting a channel (a colour cast) leaves the correlation at 1; shifting or
    magnifying the red or blue plane relative to green (lateral aberration) lowers it.
    """
    planes = np.ascontiguousarray(np.moveaxis(b.x, -1, 0))  # 3 x N x H x W
    c = 0.0
    for axis in (1, 2):
        g = [np.diff(planes[ch], axis=axis) for ch in range(3)]
        c = c + _cos(g[0], g[1]) + _cos(g[2], g[1])
    return 1.0 - c / 4.0


def _vignetting(b: Batch) -> np.ndarray:
    """Mean luminance of the corners (normalised radius > 0.85) over the centre (radius < 0.4).

    1.0 for even illumination; darker corners lower it.
    """
    y = b.thumb_y
    n, h, w = y.shape
    ys = ((np.arange(h) + 0.5) / h - 0.5)[:, None]
    xs = ((np.arange(w) + 0.5) / w - 0.5)[None, :]
    r = np.sqrt(xs**2 + ys**2) / np.sqrt(0.5)
    corner, centre = r > 0.85, r < 0.4
    return (y[:, corner].mean(axis=1) + 0.02) / (y[:, centre].mean(axis=1) + 0.02)


def _occlusion(b: Batch) -> np.ndarray:
    """Fraction of the frame covered by dark, featureless area (luminance < 0.3, summed 4-neighbour step < 0.06).

    A foreground object close to the lens (a finger, a post) is out of focus and in shadow, so
    it shows up as a smooth dark region; on the 64-pixel thumbnail fine texture still reads as
    gradient, so ordinary dark but detailed areas mostly do not count.
    """
    y = b.thumb_y
    gx = np.abs(np.diff(y, axis=2))
    gy = np.abs(np.diff(y, axis=1))
    g = np.zeros_like(y)
    g[:, :, :-1] += gx
    g[:, :, 1:] += gx
    g[:, :-1] += gy
    g[:, 1:] += gy
    return ((y < 0.3) & (g < 0.06)).mean(axis=(1, 2))


BATCH_VERIFIERS: dict[str, Callable[[Batch], np.ndarray]] = {
    "sharpness": _sharpness,
    "brightness": _brightness,
    "highlight_clipping": _highlight_clipping,
    "shadow_clipping": _shadow_clipping,
    "contrast": _contrast,
    "colorfulness": _colorfulness,
    "saturation": _saturation,
    "color_cast": _color_cast,
    "noise": _noise,
    "blockiness": _blockiness,
    "subject_size": _subject_size,
    "subject_offcenter": _subject_offcenter,
    "tilt": _tilt,
    "chromatic_aberration": _chromatic_aberration,
    "vignetting": _vignetting,
    "occlusion": _occlusion,
    "grain": _grain,
}


def _single(fn: Callable[[Batch], np.ndarray]) -> Callable[[object], float]:
    def measure_one(image) -> float:
        return float(fn(Batch(to_array(image)[None]))[0])

    measure_one.__name__ = fn.__name__.lstrip("_")
    measure_one.__doc__ = fn.__doc__
    return measure_one


VERIFIERS: dict[str, Callable[[object], float]] = {name: _single(fn) for name, fn in BATCH_VERIFIERS.items()}


def _check_names(names: Iterable[str] | None) -> list[str]:
    names = list(BATCH_VERIFIERS) if names is None else list(names)
    unknown = [n for n in names if n not in BATCH_VERIFIERS]
    if unknown:
        raise KeyError(f"unknown verifier(s) {unknown}; available: {sorted(BATCH_VERIFIERS)}")
    return names


def group_by_shape(arrays: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    return groups


def measure(images, names: Iterable[str] | None = None, *, chunk: int = 64) -> dict[str, np.ndarray]:
    """Score every image with every named verifier (all by default).

    ``images`` is a list of PIL images / arrays or one ``N x H x W x 3`` array. Returns
    ``{name: float64 array [N]}``. Same-sized images are scored together in chunks of
    ``chunk`` so shared intermediates are computed once and numpy works on whole batches.
    """
    names = _check_names(names)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        arrays = [to_array(im) for im in images]
    else:
        arrays = [to_array(im) for im in images]
    out = {n: np.zeros(len(arrays), dtype=np.float64) for n in names}
    for idx in group_by_shape(arrays).values():
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            b = Batch(np.stack([arrays[i] for i in part]))
            for n in names:
                out[n][part] = BATCH_VERIFIERS[n](b)
    return out


def __getattr__(name: str):
    # Re-export the paired decision rule without an import cycle.
    if name in ("adheres", "adherence_scores", "RULES", "paired_statistic"):
        from . import rules

        return getattr(rules, name)
    raise AttributeError(name)
