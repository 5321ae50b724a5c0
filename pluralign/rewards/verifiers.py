"""Model-free image measurements ("verifiers").

Each verifier is a real measurement of one photographic property, computed with vectorised
numpy on any image size. ``VERIFIERS[name](image) -> float`` measures one image;
:func:`measure` scores a whole batch, sharing intermediate arrays (luminance, gradients, a
64-pixel thumbnail) between verifiers and stacking same-sized images so numpy works on the
batch at once.

Images are float32 ``H x W x 3`` arrays in [0, 1]; PIL images, uint8 arrays and greyscale
arrays are converted. This module only measures: the paired decision rules (does ``I_a``
show attribute ``a`` relative to ``I_o`` made from the same seed?) are thresholds on these
measurements and live in :mod:`pluralign.rewards.rules`, which imports this module and never
the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache

import numpy as np
from scipy import fft as _fft
from scipy import ndimage

EPS = 1e-6
THUMB = 64  # side of the thumbnail used by the layout verifiers (subject, vignetting)
CHUNK = 8  # images scored together: small enough that a chunk's planes stay in the CPU cache

# Rec. 709 luma weights.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def to_array(image) -> np.ndarray:
    """Any RGB(A)/greyscale PIL image or array -> float32 ``H x W x 3`` in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
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
    if not arr.size:
        return arr
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(
            f"float images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}] (divide uint8 data by 255)"
        )
    # Clipping copies the whole image; skip it when nothing lies outside [0, 1].
    return arr if lo >= 0.0 and hi <= 1.0 else np.clip(arr, 0.0, 1.0)


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


def _area_downscale_planes(p: np.ndarray, max_side: int) -> np.ndarray:
    """:func:`_area_downscale` of channel-first ``N x C x H x W`` planes, returned channel-last.

    Same sums in the same order (so the same values) as on the channel-last array, but every
    strided read runs over one contiguous plane instead of pixels interleaved with channels.
    """
    h, w = p.shape[2:]
    f = int(np.ceil(max(h, w) / max_side))
    if f > 1:
        hh, ww = (h // f) * f, (w // f) * f
        p = p[:, :, :hh, :ww]
        rows = p[:, :, 0::f]
        for i in range(1, f):
            rows = rows + p[:, :, i::f]
        out = rows[..., 0::f]
        for i in range(1, f):
            out = out + rows[..., i::f]
        p = out * np.float32(1.0 / (f * f))
    return np.ascontiguousarray(np.moveaxis(p, 1, -1))


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
        return self._get("thumb", lambda: _area_downscale_planes(self.planes, THUMB))

    @property
    def mid(self) -> np.ndarray:  # N x h x w x 3, longer side <= 128 (colour statistics)
        return self._get("mid", lambda: _area_downscale_planes(self.planes, 128))

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
    def planes(self) -> np.ndarray:  # N x 3 x H x W contiguous copy: per-channel filters run ~3x faster on it
        return self._get("planes", lambda: np.ascontiguousarray(np.moveaxis(self.x, -1, 1)))

    @property
    def value(self) -> np.ndarray:  # N x H x W brightest channel (HSV value)
        return self._get("value", lambda: _channel_max(self.planes, axis=1))

    @property
    def planes256(self) -> np.ndarray:  # N x 3 x h x w, longer side <= 256 (chromatic aberration)
        def f():
            if max(self.x.shape[1:3]) <= 256:
                return self.planes
            return np.ascontiguousarray(np.moveaxis(_area_downscale_planes(self.planes, 256), -1, 1))

        return self._get("planes256", f)

    @property
    def y128(self) -> np.ndarray:  # luminance, longer side <= 128 (edge orientation, rotation spectrum)
        return self._get("y128", lambda: _area_downscale(self.y[..., None], 128)[..., 0])


def _channel_max(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x.max(axis)`` over a 3-channel axis as two elementwise maxima: the same values, about ten times faster
    than numpy's reduction, which runs a strided inner loop of length 3 per pixel."""
    c = np.moveaxis(x, axis, 0)
    return np.maximum(np.maximum(c[0], c[1]), c[2])


def _second_diff(a: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``a[i - step] - 2 a[i] + a[i + step]`` along ``axis`` (valid part), with in-place arithmetic.

    Written out with ``out=`` so a 256 x 256 batch allocates one array instead of three; the
    residual filters below run on every image, so their temporaries dominate the verifier cost.
    """
    m = max(a.shape[axis] - 2 * step, 0)  # an axis shorter than the filter has no valid part: empty, not wrapped
    lo = [slice(None)] * a.ndim
    mid, hi = list(lo), list(lo)
    lo[axis], mid[axis], hi[axis] = slice(0, m), slice(step, step + m), slice(2 * step, 2 * step + m)
    out = np.add(a[tuple(lo)], a[tuple(hi)])
    out -= a[tuple(mid)]
    out -= a[tuple(mid)]
    return out


def _immerkaer(y: np.ndarray, step: int = 1) -> np.ndarray:
    """Immerkaer's noise mask ``[1,-2,1] (x) [1,-2,1]`` (taps ``step`` apart) on the last two axes.

    It cancels constant planes and linear ramps, so on smooth image content only noise remains;
    i.i.d. noise of standard deviation ``s`` comes out with standard deviation ``6 s``.
    """
    return _second_diff(_second_diff(y, y.ndim - 1, step), y.ndim - 2, step)


def _dots(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-row dot products of two ``N x ...`` float32 arrays through BLAS (several times faster than einsum)."""
    n = a.shape[0]
    a, c = a.reshape(n, 1, -1), c.reshape(n, -1, 1)
    return np.matmul(a, c).reshape(n).astype(np.float64)


def _abs_quantile(r: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of ``|r|`` over all but the first axis. Overwrites ``r`` (a scratch residual).

    A selection (``partition``) in place rather than a sort or a copy: this runs on three
    full-resolution residuals per image.
    """
    flat = r.reshape(r.shape[0], -1)
    if flat.shape[1] == 0:  # image smaller than the filter: nothing measurable
        return np.zeros(r.shape[0], dtype=np.float32)
    np.abs(flat, out=flat)
    k = min(flat.shape[1] - 1, int(q * flat.shape[1]))
    flat.partition(k, axis=1)
    return flat[:, k].copy()


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


BLUR_SECTORS = 12  # 15-degree sectors of frequency direction, over 180 (the power spectrum of a real image is symmetric)
BLUR_BANDS = (0.03, 0.06, 0.12, 0.24, 0.5)  # octave band edges, cycles per pixel of the <= 128 px luminance


@cache
def _sector_bands(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin label (sector * bands + band, -1 outside the bands) of every rfft2 coefficient of a ``side`` square,
    the count per bin (0 for a bin no coefficient falls in: a small square has no coarse band) and the
    separable Hann window (computed once per side)."""
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    sector = np.minimum((np.mod(np.degrees(np.arctan2(fy, fx)), 180.0) * BLUR_SECTORS / 180.0).astype(np.int64),
                        BLUR_SECTORS - 1)
    band = np.searchsorted(np.asarray(BLUR_BANDS), np.hypot(fx, fy), side="right") - 1
    inside = (band >= 0) & (band < len(BLUR_BANDS) - 1)
    label = np.where(inside, sector * (len(BLUR_BANDS) - 1) + band, -1).ravel()
    counts = np.bincount(label[label >= 0], minlength=BLUR_SECTORS * (len(BLUR_BANDS) - 1))
    hann = np.hanning(side + 2)[1:-1].astype(np.float32)
    return label, counts, np.outer(hann, hann)


def band_spectrum(b: Batch) -> np.ndarray:
    """Log mean power of the luminance spectrum per direction sector and octave band: N x (12 * 4),
    sector-major (central square of the <= 128 px luminance, Hann-windowed, mean removed); NaN for a bin
    with no frequency of the square in it (up to a 64 px square the coarsest band is partly empty).

    A blur multiplies the spectrum by its transfer function, so the ratio of two images' powers in a
    bin is that function there whatever the scene: a Gaussian or a lens disk lowers every direction
    alike, a smear along one direction lowers only the frequencies along it (the ``spectral_smear``
    and ``isotropic_loss`` statistics in :mod:`pluralign.rewards.rules`). Gradient energies mix
    all frequencies by the scene's own spectrum, and an isotropic blur of a scene with strong
    edges in one direction then looks one-sided.
    """

    def f():
        y = b.y128
        n, h, w = y.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        sq = y[:, top : top + side, left : left + side]
        label, counts, window = _sector_bands(side)
        mean = sq.mean(axis=(1, 2))
        power = np.square(np.abs(_fft.rfft2((sq - mean[:, None, None]) * window, axes=(1, 2), workers=1))).reshape(n, -1)
        keep = label >= 0
        nbins = len(counts)
        # one bincount over all images: offset each image's labels by its row
        lab = (label[keep][None, :] + nbins * np.arange(n)[:, None]).ravel()
        sums = np.bincount(lab, weights=power[:, keep].ravel(), minlength=n * nbins).reshape(n, nbins)
        # an empty bin is NaN, not a power: the paired statistics leave it out rather than read a loss of 0
        return np.where(counts > 0, np.log(sums / np.maximum(counts, 1) + 1e-10), np.nan)

    return b._get("band_spectrum", f)


def _brightness(b: Batch) -> np.ndarray:
    """Mean luminance."""
    return b.y_stats[:, 0]


def _value(b: Batch) -> np.ndarray:
    """Mean HSV value, the brightest channel per pixel, on the thumbnail.

    More light raises every channel, so it raises this as it raises luminance; a fade of colour
    towards grey at constant value (HSV desaturation) raises the luminance of saturated pixels
    without adding light, and leaves this unchanged."""
    return _channel_max(b.thumb).mean(axis=(1, 2))


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


def _coarse_std(plane: np.ndarray) -> np.ndarray:
    """Standard deviation of an ``N x H x W`` plane block-averaged to 16 pixels (the longer side)."""
    return _area_downscale(plane[..., None], 16)[..., 0].std(axis=(1, 2))


def _split_bands(coarse: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """``[coarse, fine]`` (N x 2): the fine band is the rest of the plane's variance beyond the coarse one."""
    return np.stack([coarse, np.sqrt(np.maximum(variance - coarse * coarse, 0.0))], axis=1)


def coarse_contrast(b: Batch) -> np.ndarray:
    """RMS contrast of luminance block-averaged to 16 pixels: the large-scale light and shadow.

    Flat, shadowless light removes the slow luminance variation across the frame while keeping
    texture; on grass or a star field, where texture carries almost all of the full-resolution
    contrast, only this coarse contrast shows the change.
    """
    return b._get("coarse_contrast", lambda: _coarse_std(b.y))


def contrast_bands(b: Batch) -> np.ndarray:
    """RMS contrast split into a coarse and a fine band: N x 2 ``[coarse, fine]``.

    Coarse is :func:`coarse_contrast`; fine is the rest of the luminance variance (the variance
    within the 16-pixel blocks). A faded, low-contrast look compresses both alike; flat light
    removes the coarse band and keeps texture; a blur removes the fine band and keeps the layout.
    """
    return _split_bands(coarse_contrast(b), b.y_stats[:, 1])


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


def chroma_moments(b: Batch) -> np.ndarray:
    """:func:`chroma_vector` and the spread of the opponent chroma about its mean, both relative to mean
    luminance: N x 3 (mean r-g, mean y-b, std).

    A desaturation or a fade towards grey scales every pixel's chroma by one factor, the mean and the
    spread alike; a cast moves them all by one offset, which leaves the spread. The paired colour-cast
    rule compares the two (:func:`pluralign.rewards.rules.grey_world_offset`).
    """
    t = b.thumb
    rg, yb = _opponent(t)
    m = b.thumb_y.mean(axis=(1, 2)) + 0.05
    mean = np.stack([rg.mean(axis=(1, 2)), yb.mean(axis=(1, 2))], axis=1)
    spread = np.sqrt(rg.var(axis=(1, 2)) + yb.var(axis=(1, 2)))
    return np.concatenate([mean, spread[:, None]], axis=1) / m[:, None]


CAST_GRID = 32  # side of the fixed grid the colour-cast rule compares pixels on


def cast_features(b: Batch) -> np.ndarray:
    """:func:`chroma_moments` followed by the thumbnail's sRGB colour resampled to a fixed 32 x 32 grid:
    N x (3 + 3 * 32 * 32).

    The moments give the grey-world offset of the whole frame; the grid lets the paired rule ask whether
    most pixels moved the same way (:func:`pluralign.rewards.rules.cast_offset`). The grid is the same
    size for every image, so pairs of any size batch together.
    """
    t = np.moveaxis(b.thumb, -1, 1)  # N x 3 x h x w
    n, _, h, w = t.shape
    grid = resample_bilinear(t.reshape(n * 3, h, w), CAST_GRID, CAST_GRID).reshape(n, -1)
    return np.concatenate([chroma_moments(b), grid], axis=1)


def exposure_pair(b: Batch) -> np.ndarray:
    """Mean HSV value and mean luminance: N x 2. More light raises both; a cast that keeps luminance
    raises only the brightest channel, a fade towards grey only the luminance of saturated pixels."""
    return np.stack([_value(b), _brightness(b)], axis=1)


def _color_cast(b: Batch) -> np.ndarray:
    """Length of the grey-world chroma offset: how far the average colour sits from neutral."""
    return np.linalg.norm(chroma_vector(b), axis=1)


# For Gaussian noise the Immerkaer mask output has std 6 * sigma, and the q-quantile of |N(0, s)| is
# s * Phi^-1((1 + q) / 2): 0.6745 s for the median, 0.4538 s for q = 0.35.
_MEDIAN_TO_SIGMA = 1.0 / (0.6745 * 6.0)
_Q35_TO_SIGMA = 1.0 / (0.4538 * 6.0)


def noise_sigmas(b: Batch) -> np.ndarray:
    """Robust noise sigma of luminance and of the two opponent-colour planes: N x 3 ``[y, r-g, y-b]``.

    Each plane's Immerkaer residual cancels planes and linear ramps; the median of its absolute
    value ignores edges and texture (a minority of pixels) and reads i.i.d. noise as its sigma.
    The opponent planes matter because camera noise is largely independent per channel (colour
    speckle) while scene texture is mostly shared by the channels: on grass or gravel the
    luminance residual is dominated by texture, the chroma residual much less.
    """

    def f():
        rgb = b.planes
        r, g, bl = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        yb = np.add(r, g)
        yb *= 0.5
        yb -= bl
        # one plane at a time: three separate small temporaries are reused by the allocator,
        # while one N x 3 x H x W temporary is returned to the OS and page-faulted back each chunk
        sig = [_abs_quantile(_immerkaer(p), 0.5) for p in (b.y, np.subtract(r, g), yb)]
        return np.stack(sig, axis=1) * _MEDIAN_TO_SIGMA

    return b._get("noise_sigmas", f)


def _noise(b: Batch) -> np.ndarray:
    """Total noise sigma: luminance sigma and mean opponent-chroma sigma added in quadrature.

    Monochrome noise reads as its luminance sigma; colour speckle adds its chroma part, which
    scene texture barely moves (see :func:`noise_sigmas`).
    """
    s = noise_sigmas(b)
    chroma = 0.5 * (s[:, 1] + s[:, 2])
    return np.sqrt(s[:, 0] ** 2 + chroma**2)


def _grain(b: Batch) -> np.ndarray:
    """Sigma of clumped (film-grain) luminance noise: Immerkaer mask with taps two pixels apart.

    Grain clumps are about two pixels wide, so the usual mask (taps one pixel apart, peaking at
    the Nyquist frequency) barely sees them; spreading the taps moves the pass band to half the
    Nyquist frequency while keeping every pixel position (the earlier 2x2-average variant threw
    three quarters of the samples away, which hurt on 32 px images). The 35th percentile of the
    absolute residual, rather than the median, keeps texture (a minority of large values) out.
    """
    return _abs_quantile(_immerkaer(b.y, step=2), 0.35) * _Q35_TO_SIGMA


def grain_scales(b: Batch) -> np.ndarray:
    """The :func:`_grain` sigma with taps 1, 2 and 4 pixels apart: N x 3 (the 35th percentile of
    :func:`grain_quantiles`, which computes the residuals once for both).

    Grain is a size on the film, not in pixels: the same clumps span under a pixel of a 128 px scan and
    several of a 1024 px one. The paired rule until 2026-12-07 took the largest rise over the three pass bands.
    """
    return grain_quantiles(b)[:, 1]


# The residual's quantile levels the grain rule compares, the lower first, and the same quantiles of |N(0, 1)|,
# which read each as a noise sigma.
GRAIN_QUANTILES = (0.2, 0.35)
GRAIN_TAPS = (1, 2, 4)  # the residual's taps in px: a clump spans more pixels of a larger scan
# The residual's top quantile, which the grain rule asks not to fall: the scene's strongest edges (2% of the pixels:
# 80 of a 64 px image). Grain adds to every pixel's residual and takes from none, so this quantile holds or rises; a
# blend with a second frame scales the first frame's edges by one less the blend's weight, and it falls.
GRAIN_TOP_QUANTILE = 0.98
_HALF_NORMAL = {0.2: 0.2533, 0.35: 0.4538, 0.98: 2.3263}


def grain_quantiles(b: Batch) -> np.ndarray:
    """The residual of :func:`grain_scales` read at its 20th and at its 35th percentile, each as a sigma: N x 2 x 3.

    Grain covers the mid-tones evenly, so it raises every low quantile of the residual alike. A blend that carries
    a second exposure's edges into flat areas, or a clip that leaves one channel's texture amplified, adds residual
    to part of the frame: the 35th percentile rises, the 20th much less.
    """
    return _grain_residual_quantiles(b)[:, :2]


def grain_top(b: Batch) -> np.ndarray:
    """The residual of :func:`grain_scales` read at its :data:`GRAIN_TOP_QUANTILE`, as a sigma: N x 3 (one per tap).

    Grain adds texture and takes none away: the strongest edges keep their residual. A double exposure scales them
    by one less the second frame's weight (0.5-0.7), and its second frame's own edges, at other places and zoomed,
    do not make that up.
    """
    return _grain_residual_quantiles(b)[:, 2]


def _grain_residual_quantiles(b: Batch) -> np.ndarray:
    """:data:`GRAIN_QUANTILES` and :data:`GRAIN_TOP_QUANTILE` of the absolute residual at each of
    :data:`GRAIN_TAPS`, each as a sigma: N x 3 x 3, computed once for all three (nested selections)."""
    def f():
        out = np.zeros((b.y.shape[0], len(GRAIN_QUANTILES) + 1, len(GRAIN_TAPS)), dtype=np.float64)
        q_low, q_high = GRAIN_QUANTILES
        for j, k in enumerate(GRAIN_TAPS):
            flat = _immerkaer(b.y, step=k).reshape(b.y.shape[0], -1)  # a scratch residual: made absolute in place
            if flat.shape[1] == 0:  # image smaller than the filter: nothing measurable
                continue
            np.abs(flat, out=flat)
            n = flat.shape[1]
            k_low, k_high, k_top = (min(n - 1, int(q * n)) for q in (*GRAIN_QUANTILES, GRAIN_TOP_QUANTILE))
            flat.partition(k_high, axis=1)
            at_high = flat[:, k_high].copy()  # read before the selections below reorder the two sides
            out[:, 1, j] = at_high / (_HALF_NORMAL[q_high] * 6.0)
            if k_top > k_high:  # the top quantile is among the values right of the 35th: a selection there alone
                upper = flat[:, k_high:]
                upper.partition(k_top - k_high, axis=1)
                out[:, 2, j] = upper[:, k_top - k_high] / (_HALF_NORMAL[GRAIN_TOP_QUANTILE] * 6.0)
            else:
                out[:, 2, j] = at_high / (_HALF_NORMAL[GRAIN_TOP_QUANTILE] * 6.0)
            if k_low < k_high:  # the lower quantile is among the values left of the higher: a second, smaller
                lower = flat[:, :k_high]  # selection there is several times faster than numpy's one of both
                lower.partition(k_low, axis=1)
                out[:, 0, j] = lower[:, k_low] / (_HALF_NORMAL[q_low] * 6.0)
            else:
                out[:, 0, j] = at_high / (_HALF_NORMAL[q_low] * 6.0)
        return out

    return b._get("grain_residual_quantiles", f)


GRAIN_CELLS = 16  # cells per side of the luminance grid grain_light adds


def grain_light(b: Batch) -> np.ndarray:
    """:func:`grain_quantiles` (flattened, 2 x 3), :func:`grain_top` (3) and the luminance's cell means on a
    16 x 16 grid of the image at most 128 px on its longer side: N x (6 + 3 + 256).

    The film-grain rule (:func:`pluralign.rewards.rules.grain_added`) reads the even rise of the grain residual, the
    fall of its top quantile and, from the cells, the slope of the tone curve between the two images: a curve steeper
    than 1 (an overexposure) scales the texture the scene already has and raises the residual as grain does, while
    grain's zero-mean clumps leave the large-scale light where it was.
    """
    return b._get("grain_light", lambda: np.concatenate(
        [grain_quantiles(b).reshape(len(b.x), -1), grain_top(b),
         _cell_means(b.mid, GRAIN_CELLS, lambda t: (t @ _LUMA)[:, None])], axis=1))


def _dct8() -> np.ndarray:
    """The orthonormal 8-point DCT-II matrix (row ``u`` holds frequency ``u``): JPEG's block transform."""
    k = np.arange(8)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 16) * np.sqrt(2.0 / 8)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


_DCT8 = _dct8()


def _block_hf_energy(y: np.ndarray, offset: int) -> np.ndarray:
    """Mean absolute 8x8-DCT coefficient with u + v >= 2 over the blocks of a grid shifted by ``offset``.

    The 2-D DCT is two BLAS products: ``D @ rows`` over each 8-row strip, then every 8-column
    piece times ``D.T`` as one tall matrix product.
    """
    yy = y[:, offset:, offset:]
    n, h, w = yy.shape
    bh, bw = h // 8, w // 8
    strips = np.ascontiguousarray(yy[:, : bh * 8, : bw * 8]).reshape(n * bh, 8, bw * 8)
    c = np.matmul(_DCT8, strips).reshape(-1, 8) @ _DCT8.T
    c = np.abs(c, out=c).reshape(n, bh, 8, bw, 8)  # n, block row, u, block column, v
    low = c[:, :, 0, :, 0] + c[:, :, 0, :, 1] + c[:, :, 1, :, 0]
    return (c.sum(axis=(1, 2, 3, 4)) - low.sum(axis=(1, 2))) / (61.0 * bh * bw)


def _blockiness(b: Batch) -> np.ndarray:
    """JPEG grid strength: log of the high-frequency 8x8-DCT energy of blocks *straddling* the
    8-pixel grid over that of blocks *aligned* with it (0 for an image without a grid).

    JPEG quantises each aligned block separately: inside a block high frequencies are flattened,
    while the steps between blocks put high frequencies into any block that straddles a boundary.
    Comparing the two tilings of the same image cancels the scene's own texture, which a ratio
    of boundary to interior pixel steps cannot do on 32 px images with three boundaries per axis. The floor (half a grey level) keeps flat images at 0.
    """
    y = b.y
    n, h, w = y.shape
    if min(h, w) < 12:
        return np.zeros(n)
    floor = 0.5 / 255.0
    return np.log((_block_hf_energy(y, 4) + floor) / (_block_hf_energy(y, 0) + floor))


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


def subject_extent(b: Batch) -> np.ndarray:
    """The subject mask's area fraction and its spread over the frame, in the same units: N x 2.

    The spread is six times the mask-weighted variance of x plus that of y (frame fractions): 1 for a mask
    spread evenly over the whole frame, s^2 for one shrunk to s of the side. A smaller subject shrinks both.
    A blend that lowers a texture's local contrast (a double exposure of gravel) thins the mask, so its area
    falls, but leaves what is left spread over the whole frame.
    """
    m = _saliency(b)
    n, h, w = m.shape
    ys = (np.arange(h, dtype=np.float64) + 0.5) / h - 0.5
    xs = (np.arange(w, dtype=np.float64) + 0.5) / w - 0.5
    tot = m.sum(axis=(1, 2)) + EPS
    px, py = m.sum(axis=1), m.sum(axis=2)  # N x w, N x h
    cx, cy = subject_centroid(b).T
    var = (px * np.square(xs[None] - cx[:, None])).sum(axis=1) / tot + \
        (py * np.square(ys[None] - cy[:, None])).sum(axis=1) / tot
    return np.stack([m.mean(axis=(1, 2)), 6.0 * var], axis=1)


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
        y = b.y128
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


# Polar sampling of the magnitude spectrum for the rotation estimate: 180 angles (1 degree apart)
# x 16 radii between 6% and 45% of the square's side (cycles per window), so both the coarse
# layout and fine edges vote, while the window's own blur (lowest radii) and aliasing near the
# Nyquist frequency (highest) stay out.
SPECTRUM_ANGLES = 180
SPECTRUM_RADII = np.linspace(0.06, 0.45, 16)


@cache
def _polar_grid(side: int) -> tuple[np.ndarray, ...]:
    """Bilinear gather indices/weights of the polar samples in a ``side x (side // 2 + 1)`` rfft2 grid
    and the radial window (computed once per side)."""
    th = np.radians(np.arange(SPECTRUM_ANGLES) * 180.0 / SPECTRUM_ANGLES)
    r = SPECTRUM_RADII * side
    fx = r[None, :] * np.cos(th)[:, None]
    fy = r[None, :] * np.sin(th)[:, None]
    # |F(-f)| = |F(f)| for a real image: reflect the left half-plane onto the stored right half
    neg = fx < 0
    fx, fy = np.where(neg, -fx, fx), np.where(neg, -fy, fy)
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    wx, wy = (fx - x0).ravel(), (fy - y0).ravel()
    x0, y0 = x0.ravel(), y0.ravel()
    width = side // 2 + 1
    idx = [((y0 + dy) % side) * width + np.minimum(x0 + dx, width - 1) for dy in (0, 1) for dx in (0, 1)]
    wts = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
    c = (side - 1) / 2
    rr = np.hypot(*np.meshgrid(np.arange(side) - c, np.arange(side) - c, indexing="ij")) / (side / 2)
    window = np.where(rr < 1, 0.5 + 0.5 * np.cos(np.pi * np.minimum(rr, 1)), 0.0).astype(np.float32)
    return np.stack(idx), np.stack(wts).astype(np.float32), window



def rotation_spectrum(b: Batch) -> np.ndarray:
    """Whitened polar log-magnitude spectrum of the central square: N x (180 * 16) (angle-major).

    Rotating an image rotates its magnitude spectrum by the same angle, while a small shift (a
    slightly different crop) leaves the magnitude unchanged, so correlating two of these along
    the angle axis (:func:`pluralign.rewards.rules.estimate_rotation_spectra`, Fourier-Mellin
    registration) recovers the rotation between two images of one scene. Unlike the
    orientation histogram it also works for isotropic scenes (a star field, grass), whose
    spectra are speckle patterns that still rotate rigidly. A radial Hann window removes the
    image border, whose axis-aligned cut would otherwise pin the estimate to 0 degrees; each
    radius is standardised over the angles so every scale votes equally.
    """

    def f():
        y = b.y128
        n, h, w = y.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        idx, wts, window = _polar_grid(side)
        sq = y[:, top : top + side, left : left + side]
        mean = (sq * window).sum(axis=(1, 2)) / window.sum()
        mag = np.abs(_fft.rfft2((sq - mean[:, None, None]) * window, axes=(1, 2), workers=1))
        flat = np.log(mag + 1e-3).reshape(n, -1)
        p = (flat[:, idx] * wts).sum(axis=1).reshape(n, SPECTRUM_ANGLES, len(SPECTRUM_RADII))
        p -= p.mean(axis=1, keepdims=True)
        p /= p.std(axis=1, keepdims=True) + 1e-9
        return p.reshape(n, -1)

    return b._get("rotation_spectrum", f)


GLOW_GRID = 8  # cells per side of the light-leak field
GLOW_PLANES = 3  # R - B, luma, value; glow_field holds their cell means, then their cell means of squares


def glow_field(b: Batch) -> np.ndarray:
    """Warmth, luminance and HSV value on an 8 x 8 grid of cells: N x 384, flattened from 6 x 8 x 8, the cell means
    of the :data:`GLOW_PLANES` planes (``R - B``, luma, the brightest channel) and then the cell means of their squares.

    A light leak is fog from stray light entering at one edge of the frame: warm (orange-red) and
    additive, strongest at that edge and fading across; a vignette darkens the corners. The paired
    rules compare two of these fields, so the scene's own warm, bright or dark side cancels.

    The squares are there because a tone curve acts on pixels, not on cell means: a curve that bends
    (clipped highlights) moves a smooth cell's mean more than a textured cell's of the same mean. With
    each cell's mean of squares, a quadratic curve applied to every pixel has an exact cell-level
    prediction (:func:`pluralign.rewards.rules._tone_residual`, which the leak's rule uses), so a smooth sky along one edge does not read
    as light added there.
    """

    def planes(t):
        p = np.stack([t[..., 0] - t[..., 2], t @ _LUMA, _channel_max(t)], axis=1).astype(np.float64)  # N x 3 x h x w
        return np.concatenate([p, np.square(p)], axis=1)  # N x 6 x h x w

    return b._get("glow_field", lambda: _cell_means(b.mid, GLOW_GRID, planes))


def _cell_means(t: np.ndarray, g: int, planes) -> np.ndarray:
    """``planes(t)`` (N x P x h x w from the N x h x w x 3 images ``t``) averaged over a g x g grid of cells,
    flattened to N x (P * g * g). An image with fewer pixels than cells is first resampled so each cell takes
    the nearest pixel."""
    n, h, w, _ = t.shape
    if h < g or w < g:
        t = t[:, (np.arange(max(h, g)) * h) // max(h, g)][:, :, (np.arange(max(w, g)) * w) // max(w, g)]
        h, w = t.shape[1:3]
    ys, xs = -((-np.arange(g) * h) // g), -((-np.arange(g) * w) // g)  # first row / column of each cell
    cells = np.add.reduceat(np.add.reduceat(planes(t), ys, axis=2), xs, axis=3)
    counts = np.diff(np.append(ys, h))[:, None] * np.diff(np.append(xs, w))[None, :]
    return (cells / counts).reshape(n, -1)


RADIAL_GRID = 16  # cells per side of the log-value field the vignette rule fits
RADIAL_FLOOR = 0.02  # added to HSV value before the log, so black pixels stay finite


def radial_value_field(b: Batch) -> np.ndarray:
    """Log HSV value on a 16 x 16 grid of cells: N x 512, the cell means of ``u = log(value + 0.02)`` and then of
    ``u**2``, on the image at most 128 px on its longer side.

    A vignette multiplies every pixel's light by a falloff that depends only on its distance from the frame's
    centre, so in log value it adds the same amount to a dark corner as to a bright one; a tone curve (a fade,
    an exposure change) maps each pixel's value alike wherever it is. The vignette rule
    (:func:`pluralign.rewards.rules.radial_falloff`) fits both to the change between two of these fields. The
    means of squares make a quadratic curve in ``u``, applied to every pixel, exactly predictable from the cells.
    """

    def planes(t):
        u = np.log(_channel_max(t).astype(np.float64) + RADIAL_FLOOR)  # N x h x w
        return np.stack([u, np.square(u)], axis=1)

    return b._get("radial_value_field", lambda: _cell_means(b.mid, RADIAL_GRID, planes))


LIGHT_GRID = 48  # cells per side of the linear-light field the flat-lighting rule fits


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1): encoded values in [0, 1] to linear light."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function (IEC 61966-2-1): linear light to encoded values."""
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0.0) ** (1 / 2.4) - 0.055)


def light_field(b: Batch) -> np.ndarray:
    """Linear-light RGB on a 48 x 48 grid of cells: N x 6912, the cell means of R, then G, then B, on the image at
    most 128 px on its longer side.

    Light falls on a scene as a gain on each pixel's linear RGB. Flat lighting changes that gain smoothly over the
    frame, by the scene's own large-scale light (Retinex); a tone curve, a desaturation or a white-balance error
    changes each pixel by its own values, wherever it is. The flat-lighting rule
    (:func:`pluralign.rewards.rules.light_flattening`) tells the two apart on the change between two of these
    fields, so the cells must be fine enough that a cell's own values vary faster than the light does.
    """
    return b._get("light_field", lambda: _cell_means(
        b.mid, LIGHT_GRID, lambda t: np.moveaxis(srgb_to_linear(t.astype(np.float64)), -1, 1)))


def resample_bilinear(y: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resample of ``N x h x w`` planes to ``N x height x width`` (pixel centres aligned, edges clamped)."""

    def axis(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        i0 = np.floor(c).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), c - i0

    y0, y1, fy = axis(y.shape[1], height)
    x0, x1, fx = axis(y.shape[2], width)
    rows = y[:, y0] * (1 - fy)[None, :, None] + y[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


REGISTRATION_SIDE = 48  # the fixed grid the zoom registration compares two images on


def registration_grid(b: Batch) -> np.ndarray:
    """Standardised luminance resampled to a fixed 48 x 48 grid (bilinear): N x 2304.

    The registration (:func:`pluralign.rewards.registration.register`) matches one image of a pair
    inside the other at many scales; a fixed grid makes every pair's search the same size whatever
    the image size, and both images of a pair share their aspect, so stretching it to a square
    distorts both alike.
    """

    def f():
        y = b.y128
        # anti-aliased: a Gaussian of half the downscale factor (in pixels, per axis) first, so a dense texture
        # does not alias into a pattern the same scene shrunk by a re-framing does not show
        sy, sx = (0.5 * np.sqrt(max((d / REGISTRATION_SIDE) ** 2 - 1.0, 0.0)) for d in y.shape[1:])
        if sy or sx:
            y = ndimage.gaussian_filter(y, (0, sy, sx), mode="nearest")
        g = resample_bilinear(y, REGISTRATION_SIDE, REGISTRATION_SIDE).reshape(len(b.x), -1)
        g = g - g.mean(axis=1, keepdims=True)
        return g / (g.std(axis=1, keepdims=True) + 1e-6)

    return b._get("registration_grid", f)


def _radial_fits(b: Batch, regions) -> np.ndarray:
    """:func:`lateral_ca`'s fit on each region of the frame: N x regions x 2 ``[k_r, k_b]``.

    ``regions`` are ``(rows, columns)`` slices of the interior (one pixel in from every border). The radial
    coordinate is always about the whole frame's centre, where a lens centres its aberration.
    """
    rgb = b.planes256
    n, _, h, w = rgb.shape
    out = np.zeros((n, len(regions), 2))
    if h < 3 or w < 3:
        return out
    g = rgb[:, 1]
    gx = g[:, 1:-1, 2:] - g[:, 1:-1, :-2]
    gy = g[:, 2:, 1:-1] - g[:, :-2, 1:-1]
    gx *= (np.arange(1, w - 1, dtype=np.float32) - (w - 1) / 2) * np.float32(0.5)
    gy *= ((np.arange(1, h - 1, dtype=np.float32) - (h - 1) / 2) * np.float32(0.5))[:, None]
    u_all = gx
    u_all += gy  # (x - c) . grad G, central differences
    for r, (rows, cols) in enumerate(regions):
        u = u_all[:, rows, cols].copy()
        if u.shape[1] * u.shape[2] == 0:  # a quadrant of a 3-pixel frame: no interior pixel, nothing measurable
            continue
        g_in = g[:, 1:-1, 1:-1][:, rows, cols]
        # Centring G and u is enough: the dot of any plane with a zero-mean plane ignores its mean.
        u -= u.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[:, None, None]
        gc = g_in - g_in.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[:, None, None]
        gg, gu, uu = _dots(gc, gc), _dots(gc, u), _dots(u, u)
        det = gg * uu - gu * gu
        ok = det > 1e-12 * (gg * uu + 1e-30)
        for j, ch in enumerate((0, 2)):
            c = np.ascontiguousarray(rgb[:, ch, 1:-1, 1:-1][:, rows, cols])
            cg, cu = _dots(c, gc), _dots(c, u)
            out[:, r, j] = -100.0 * np.divide(gg * cu - gu * cg, det, out=np.zeros(n), where=ok)
    return out


_WHOLE = (slice(None), slice(None))


def lateral_ca(b: Batch) -> np.ndarray:
    """Radial magnification of red and of blue relative to green, in percent: N x 2 ``[k_r, k_b]``.

    Lateral chromatic aberration images red and blue at slightly different magnifications
    about the optical centre, so ``R(x) ~ R0(x) - k (x - c) . grad R0(x)``. Taking green as the
    reference for the scene, each colour plane is regressed on ``[G, 1, (x - c) . grad G]``;
    the last coefficient is ``-k`` (times the plane's gain on green). The least-squares fit
    uses every pixel, so it resolves sub-pixel misregistration (0.1 px at the border of a 32 px
    image) that a gradient-correlation score cannot separate from scene colour. A colour cast or
    gain change moves only the ``G`` and ``1`` coefficients. The first-order expansion holds for
    shifts up to about a pixel, so large images are measured at 256 px (``k`` is a fraction of the
    radius, the same at any size): at 1024 px a visible fringe is several pixels wide.
    """
    return b._get("lateral_ca", lambda: _radial_fits(b, [_WHOLE])[:, 0])


def lateral_ca_quadrants(b: Batch) -> np.ndarray:
    """:func:`lateral_ca` fitted on each quadrant of the frame on its own: N x 4 x 2 (top left, top right,
    bottom left, bottom right; ``[k_r, k_b]``).

    A lens magnifies a colour plane about the frame's centre, so every quadrant sees the same ``k``. What
    a scene's own colour edges add to the fit (red that does not follow green where the fit also finds a
    radial gradient) differs from quadrant to quadrant, and a blur inflates it: the fit divides by the
    gradients' energy, which a blur takes away first. The paired rule asks the quadrants to agree.
    """

    def f():
        h, w = b.planes256.shape[2:]
        hh, ww = max(h - 2, 0) // 2, max(w - 2, 0) // 2
        top, bottom, left, right = slice(0, hh), slice(hh, None), slice(0, ww), slice(ww, None)
        return _radial_fits(b, [(top, left), (top, right), (bottom, left), (bottom, right)])

    return b._get("lateral_ca_quadrants", f)


def _chromatic_aberration(b: Batch) -> np.ndarray:
    """Lateral chromatic aberration: relative radial magnification of red vs blue, |k_r - k_b| in percent.

    Real lenses magnify red and blue in opposite directions relative to green (by an amount
    and sign that depend on the lens), so the difference is the visible colour fringing at the
    frame's edges; see :func:`lateral_ca`.
    """
    k = lateral_ca(b)
    return np.abs(k[:, 0] - k[:, 1])


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


OCCLUSION_LEVEL = 0.3  # luminance under which a featureless area counts as dark
FEATURELESS_STEP = 0.06  # summed 4-neighbour step under which a pixel counts as featureless
OCCLUSION_GRID = 16  # cells per side of the map the obstruction rule compares place by place


def smoothed_steps(b: Batch) -> tuple[np.ndarray, np.ndarray]:
    """The 64-pixel thumbnail's luminance after a 2x2 mean, and each pixel's summed 4-neighbour step on it: two
    N x h x w arrays.

    A foreground object close to the lens (a finger, a post) is out of focus and in shadow, so it shows up as a
    smooth dark region. The 2x2 mean keeps pixel noise in small images (where the thumbnail is the image itself)
    from deciding whether an area is smooth, so a slight resize does not flip dark night sky between "textured"
    and "smooth".
    """

    def f():
        t = b.thumb_y
        y = 0.25 * (t[:, :-1, :-1] + t[:, 1:, :-1] + t[:, :-1, 1:] + t[:, 1:, 1:]) if min(t.shape[1:]) > 1 else t
        gx = np.abs(np.diff(y, axis=2))
        gy = np.abs(np.diff(y, axis=1))
        g = np.zeros_like(y)
        g[:, :, :-1] += gx
        g[:, :, 1:] += gx
        g[:, :-1] += gy
        g[:, 1:] += gy
        return np.stack([y, g])

    y, g = b._get("smoothed_steps", f)
    return y, g


def _dark_featureless(b: Batch) -> np.ndarray:
    """N x h x w: the pixels of :func:`smoothed_steps` that are featureless and darker than :data:`OCCLUSION_LEVEL`."""
    y, g = smoothed_steps(b)
    return (g < FEATURELESS_STEP) & (y < OCCLUSION_LEVEL)


def dark_flat_cells(b: Batch) -> np.ndarray:
    """Three maps on a 16 x 16 grid of cells of :func:`smoothed_steps`: the fraction of each cell's pixels that
    are featureless and darker than :data:`OCCLUSION_LEVEL`, the cell's mean luminance, and its mean summed
    4-neighbour step (its texture): N x (3 * 256).

    A whole-frame fraction of dark, featureless area cannot tell an occluder from a fade or a flat light on a dark
    scene: all three leave more of it. They differ place by place. An occluder lays a surface of its own over
    whatever was there: the place changes its light and loses its texture. A fade scales a place's texture by its
    factor and a change of light scales it with the light, so neither takes it beyond what the place's own change
    explains. The paired rule (:func:`pluralign.rewards.rules.laid_surface`) reads the cells.
    """

    def f():
        y, g = smoothed_steps(b)
        planes = np.stack([_dark_featureless(b), y, g], axis=-1).astype(np.float64)
        return _cell_means(planes, OCCLUSION_GRID, lambda p: np.moveaxis(p, -1, 1))

    return b._get("dark_flat_cells", f)


def _occlusion(b: Batch) -> np.ndarray:
    """Fraction of the frame covered by dark (< 0.3), featureless area (see :func:`smoothed_steps`)."""
    return _dark_featureless(b).mean(axis=(1, 2))


BATCH_VERIFIERS: dict[str, Callable[[Batch], np.ndarray]] = {
    "sharpness": _sharpness,
    "brightness": _brightness,
    "value": _value,
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


def batched(arrays: Sequence[np.ndarray], fns: dict[str, Callable[[Batch], np.ndarray]],
            chunk: int = CHUNK) -> dict[str, np.ndarray]:
    """``{name: fn}`` applied to every image: ``{name: float64 array N or N x k}``, rows in input order.

    Same-sized images are stacked into batches of at most ``chunk``, so numpy works on many
    images at once and every ``fn`` shares the batch's cached intermediates. This one loop serves
    both the scalar verifiers (:func:`measure`) and the vector features the paired rules
    compare, so the two always see the same batches.
    """
    n = len(arrays)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape, []).append(i)
    out: dict[str, np.ndarray] = {}
    for idx in by_shape.values():
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            b = Batch(np.stack([arrays[i] for i in part]))
            for name, fn in fns.items():
                val = fn(b)
                if name not in out:  # the first batch tells a vector feature's width
                    out[name] = np.zeros((n,) + val.shape[1:], dtype=np.float64)
                out[name][part] = val
    # without images no batch tells the width: every result is an empty vector
    return {name: out.get(name, np.zeros(0)) for name in fns}


def measure(images, names: Iterable[str] | None = None, *, chunk: int = CHUNK) -> dict[str, np.ndarray]:
    """Score every image with every named verifier (all by default).

    ``images`` is a list of PIL images / arrays or one ``N x H x W x 3`` array. Returns
    ``{name: float64 array [N]}``. Same-sized images are scored together in chunks of
    ``chunk`` (see :func:`batched`).
    """
    names = _check_names(names)
    return batched([to_array(im) for im in images], {n: BATCH_VERIFIERS[n] for n in names}, chunk)
