"""How ``I_a`` maps onto ``I_o``: a similarity transform (scale, rotation, shift) and how well it fits.

The paired rules compare whole-frame statistics, which is right when ``I_a`` shows the same framing
as ``I_o``. When ``I_a`` is a re-framing of ``I_o`` (a crop, a shrink onto a canvas, a shift, a
roll), the frame holds different content, and its colour, contrast, brightness and subject mask
move although no photographic property changed. Registration separates the two:

* the geometric attributes are read from the transform itself (a magnification is a crop, a
  shrink is a smaller subject, a moved centre is an off-centre subject, an angle is a tilt);
* the photometric ones are compared on the content both images share, ``I_o`` warped into
  ``I_a``'s frame (:func:`shared_content`).

Both only when the transform explains ``I_a`` well: the registered content agrees block by block
(:func:`agreement` at least :data:`CONFIDENT_AGREEMENT`). Two generations of one seed under different
prompts rarely register that well; the rules then fall back to whole-frame statistics.

Coordinates are frame fractions (0..1 on each axis, pixel centres at ``(i + 0.5) / n``), so a
transform found on the 48 x 48 registration grid applies at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .verifiers import REGISTRATION_SIDE, resample_bilinear

# Scales searched by the template matching: 1/3.5 .. 2.5 (a subject shrunk to under a third, a crop
# keeping 40% of the side), 4% apart, 1 included.
ZOOM_SCALES = np.exp(np.arange(np.round(np.log(1 / 3.5) / np.log(1.04)), np.round(np.log(2.5) / np.log(1.04)) + 1)
                     * np.log(1.04))
# Two ways to match the shrunk image of a pair inside the other (min overlap, template kept, penalty):
# "inside": its central 90% wholly inside (a crop, a shrink onto a canvas); "overlap": the whole of it,
# overlapping by at least 30% (a scene pushed partly out of the frame), ranked by the NCC less
# 4 / sqrt(overlap pixels), since a small overlap correlates well by chance.
_MODES = {"inside": (1.0, 0.9, 0.0), "overlap": (0.3, 1.0, 4.0)}
_PREFER_IDENTITY = 0.05  # block agreement the identity may lose by and still win: a smooth scene
# matches many shifts of itself almost as well
_BLOCK, _FLAT = 8, 0.25  # agreement blocks (grid pixels a side); flat: std under this share of the content's
CONFIDENT_AGREEMENT = 0.8  # agreement below this: the transform does not explain I_a, the rules use whole frames
# A transform this close to the identity is the identity: no re-framing, compare whole frames.
IDENTITY_LOG_SCALE, IDENTITY_ANGLE, IDENTITY_SHIFT = 0.04, 1.5, 0.03
_MIN_ANGLE = 3.0  # a rotation estimate smaller than this is not tried apart from 0 (no tilt is this small)
_IDENTITY_EXPLAINS = 0.9  # identity agreement at which no other transform is searched for


class _Search:
    """One image prepared for masked template matching (Padfield's masked normalised cross-correlation):
    the spectra of the image, its square and its support, computed once and shared by every scale.

    Unlike a template that must lie wholly inside the image, the template may hang over the edge: the
    correlation at each shift is taken over the overlap only. A subject pushed towards a corner leaves
    part of the scene outside the frame, and that part has nothing to match.
    """

    def __init__(self, image: np.ndarray):
        n = image.shape[0]
        self.n, self.size = n, 2 * n
        s = (self.size, self.size)
        self.f = np.fft.rfft2(image, s=s)
        self.f2 = np.fft.rfft2(image * image, s=s)
        self.m = np.fft.rfft2(np.ones_like(image), s=s)

    def best(self, template: np.ndarray, min_overlap: float, penalty: float) -> tuple[float, float, float, float]:
        """The best shift of ``template`` among those where at least ``min_overlap`` of its area overlaps
        the image: its masked NCC, its rank score (the NCC less a small-overlap penalty), and the (row,
        column) of the template's top-left corner there (may be negative, and fractional)."""
        k = template.shape[0]
        s = (self.size, self.size)
        # correlation = convolution with the flipped template; one batched transform each way (the
        # transforms are small, so the calls, not the arithmetic, are the cost)
        tf = template[::-1, ::-1]
        t, t2, tm = np.fft.rfft2(np.stack([tf, tf * tf, np.ones_like(tf)]), s=s)
        sums = np.fft.irfft2(np.stack([self.m * tm, self.f * tm, self.f2 * tm, self.m * t, self.m * t2, self.f * t]), s=s)
        count, sf, sf2, st, st2, sft = sums[:, : self.n + k - 1, : self.n + k - 1]
        count = np.maximum(np.round(count), 1.0)
        num = sft - sf * st / count
        den = np.sqrt(np.maximum(sf2 - sf * sf / count, 1e-9) * np.maximum(st2 - st * st / count, 1e-9))
        ncc = np.where(count >= min_overlap * k * k - 0.5, num / den, -np.inf)
        score = ncc - penalty / np.sqrt(count)
        i = int(np.argmax(score))
        r, c = divmod(i, ncc.shape[1])
        # index (r, c) of the full correlation puts the template's bottom-right pixel at (r, c); a parabola
        # through the peak's neighbours places it to a fraction of a grid pixel
        dr, dc = _vertex(ncc, r, c, 0), _vertex(ncc, r, c, 1)
        return float(ncc[r, c]), float(score[r, c]), r + dr - k + 1, c + dc - k + 1


def _vertex(v: np.ndarray, r: int, c: int, axis: int) -> float:
    """Offset (within +-0.5) of the vertex of the parabola through a peak and its two neighbours along ``axis``."""
    i = (r, c)[axis]
    if i == 0 or i == v.shape[axis] - 1:
        return 0.0
    lo, hi = (v[r - 1, c], v[r + 1, c]) if axis == 0 else (v[r, c - 1], v[r, c + 1])
    curv = lo - 2 * v[r, c] + hi
    if not np.isfinite(curv) or curv >= 0:
        return 0.0
    return float(np.clip(0.5 * (lo - hi) / curv, -0.5, 0.5))


def _match(searches: dict, grids: dict, m: float, mode: str) -> tuple[float, float, np.ndarray]:
    """How well I_a matches I_o magnified by ``m`` (> 1) or shrunk (< 1) (NCC and rank score), and the
    shift ``b`` of the resulting map ``q = p / m + b`` from I_a's frame (after any derotation) to I_o's."""
    side = REGISTRATION_SIDE
    big, small = ("a", "o") if m >= 1 else ("o", "a")
    scaled = max(4, int(round(side / max(m, 1 / m))))
    min_overlap, keep, penalty = _MODES[mode]
    t = resample_bilinear(grids[big][None], scaled, scaled)[0]
    k = max(4, int(round(scaled * keep)))
    off = (scaled - k) // 2
    ncc, score, r, c = searches[small].best(t[off : off + k, off : off + k], min_overlap, penalty)
    pos = np.array([r - off, c - off], dtype=float) / side
    # the template is the big image at `scaled / side` of its size: a point u of the big image's frame
    # lies at u * scaled / side + pos in the small one's frame
    f = scaled / side
    return ncc, score, (pos if big == "a" else -pos / f)


def _search_scales(searches: dict, grids: dict, mode: str) -> tuple[float, float, np.ndarray]:
    """Best (ncc, magnification, shift) over :data:`ZOOM_SCALES` in one of :data:`_MODES`: a coarse pass,
    then the neighbours of the best scale."""
    step = np.log(ZOOM_SCALES[1] / ZOOM_SCALES[0])
    found = {float(m): _match(searches, grids, float(m), mode) for m in ZOOM_SCALES[::4]}
    best = max(found, key=lambda m: found[m][1])
    for j in (-3, -2, -1, 1, 2, 3):
        m = float(best * np.exp(j * step))
        if ZOOM_SCALES[0] * 0.999 <= m <= ZOOM_SCALES[-1] * 1.001:
            found[m] = _match(searches, grids, m, mode)
    m = max(found, key=lambda m: found[m][1])
    ncc, _, b = found[m]
    # the scale a template of whole grid pixels actually used, not the nominal one
    scaled = max(4, int(round(REGISTRATION_SIDE / max(m, 1 / m))))
    used = REGISTRATION_SIDE / scaled if m >= 1 else scaled / REGISTRATION_SIDE
    return ncc, used, b


def _rotation(angle: float) -> np.ndarray:
    """The 2 x 2 matrix turning (row, column) vectors by ``angle`` degrees, the way an image rotated by
    ``angle`` (counter-clockwise on screen) moves its content."""
    t = np.radians(angle)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _derotate(grid: np.ndarray, angle: float) -> np.ndarray:
    """``grid`` turned back by ``angle`` degrees about its centre (bilinear, edges replicated)."""
    n = grid.shape[0]
    c = np.full(2, (n - 1) / 2)
    r = _rotation(angle)  # output pixel p reads the input at c + R(angle)(p - c)
    return ndimage.affine_transform(grid, r, offset=c - r @ c, order=1, mode="nearest")


@dataclass(frozen=True)
class Registration:
    """Per pair, the map ``q = A p + t`` from a point ``p`` of I_a's frame to the point ``q`` of I_o's
    frame that shows the same content (frame fractions, (row, column)), and its quality."""

    A: np.ndarray  # N x 2 x 2
    t: np.ndarray  # N x 2
    agreement: np.ndarray  # N: block agreement of the registered content (:func:`agreement`)
    angle: np.ndarray  # N: degrees I_a is rotated relative to I_o

    @property
    def scale(self) -> np.ndarray:
        """Magnification of I_a relative to I_o (> 1: I_a shows less of the scene, larger)."""
        return 1.0 / np.sqrt(np.abs(np.linalg.det(self.A)))

    @property
    def confident(self) -> np.ndarray:
        """Whether the transform explains I_a: the rules then trust it."""
        return self.agreement >= CONFIDENT_AGREEMENT

    def centre_in_a(self) -> np.ndarray:
        """Where I_o's centre lands in I_a's frame: N x 2 (frame fractions)."""
        c = np.full(2, 0.5)
        return np.stack([np.linalg.solve(a, c - t) for a, t in zip(self.A, self.t)]) if len(self.A) else np.zeros((0, 2))

    def centre_shift(self) -> np.ndarray:
        """How far I_o's centre moved in I_a's frame (frame fractions)."""
        return np.linalg.norm(self.centre_in_a() - 0.5, axis=1)

    def is_identity(self) -> np.ndarray:
        """Whether the transform is the identity within the registration's resolution."""
        return ((np.abs(np.log(self.scale)) < IDENTITY_LOG_SCALE) & (np.abs(self.angle) < IDENTITY_ANGLE)
                & (self.centre_shift() < IDENTITY_SHIFT))


def _ncc(a: np.ndarray, o: np.ndarray) -> float:
    a, o = a - a.mean(), o - o.mean()
    return float((a * o).sum() / (np.sqrt((a * a).sum() * (o * o).sum()) + 1e-9))


def _to_matrix(angle: float, m: float, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A, t)`` of ``q = A p + t`` for I_a derotated by ``angle`` (``p' = c + R(-angle)(p - c)``) and
    then matched as ``q = p' / m + b``."""
    c = np.full(2, 0.5)
    r = _rotation(-angle)
    return r / m, (c - r @ c) / m + b


def agreement(grid_a: np.ndarray, grid_o: np.ndarray, A: np.ndarray, t: np.ndarray) -> float:
    """How well ``q = A p + t`` explains I_a: the median NCC over 8 x 8 blocks of the registration grid
    between I_a and I_o warped into its frame, over the blocks that lie inside I_o and are not flat.

    A median over blocks ignores what a photographic edit adds to part of the frame (an occluder, a
    light leak, a vignette's corners) and counts only how well the content lines up; a fill the
    re-framing left (a shrunk scene's canvas) lies outside I_o and is not counted. With fewer than four
    blocks of detail, the correlation over the whole shared area; with under four blocks' area shared, 0.
    """
    n = REGISTRATION_SIDE
    # smoothed first: grain and sensor noise are not content, and would decorrelate small blocks
    grid_a, grid_o = ndimage.gaussian_filter(grid_a, 1.0), ndimage.gaussian_filter(grid_o, 1.0)
    u = (np.arange(n) + 0.5) / n
    p = np.stack(np.meshgrid(u, u, indexing="ij"), axis=0).reshape(2, -1)
    q = A @ p + t[:, None]
    inside = np.all((q > 0) & (q < 1), axis=0).reshape(n, n)
    warped = ndimage.map_coordinates(grid_o, q * n - 0.5, order=1, mode="nearest").reshape(n, n)
    if inside.sum() < 4 * _BLOCK * _BLOCK:
        return 0.0
    # flat relative to the registered content: a crop enlarges it, so its blocks hold less detail
    flat = _FLAT * float(warped[inside].std())
    k = _BLOCK
    blocks = []
    for r in range(0, n - k + 1, k):
        for c in range(0, n - k + 1, k):
            if not inside[r : r + k, c : c + k].all():
                continue
            x, y = grid_a[r : r + k, c : c + k], warped[r : r + k, c : c + k]
            x, y = x - x.mean(), y - y.mean()
            sx, sy = np.sqrt((x * x).mean()), np.sqrt((y * y).mean())
            if sy < flat:
                continue
            blocks.append(float((x * y).mean() / (sx * sy + 1e-9)))
    if len(blocks) >= 4:
        return float(np.median(blocks))
    # too little detail for blocks (a sky, a crop into one): the correlation of the whole shared area
    x, y = grid_a[inside] - grid_a[inside].mean(), warped[inside] - warped[inside].mean()
    return float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-9))


def register(grids_a: np.ndarray, grids_o: np.ndarray, angles: np.ndarray) -> Registration:
    """Register every pair from their :func:`~pluralign.rewards.verifiers.registration_grid` features.

    ``angles``: the Fourier-Mellin rotation estimate per pair (the tilt rule's). Candidates: the
    identity; the best magnification and shift of the unrotated pair; and, when the rotation estimate is
    not small, the best of the pair with I_a turned back by it. Template matching (masked normalised
    cross-correlation, so exposure, contrast and colour changes do not matter) finds each candidate's
    magnification and shift. Of the candidates whose blocks agree (:func:`agreement` at least
    :data:`CONFIDENT_AGREEMENT`), the best wins, the identity breaking near-ties; when none agrees, the best
    template match, and the registration is not confident.
    """
    side = REGISTRATION_SIDE
    n = len(grids_a)
    A, T, N, ANG = np.zeros((n, 2, 2)), np.zeros((n, 2)), np.zeros(n), np.zeros(n)
    for i in range(n):
        ga, go = grids_a[i].reshape(side, side), grids_o[i].reshape(side, side)
        # the spectrum estimate turns I_o onto I_a; turning I_a back takes the opposite angle
        tries = [0.0] + ([-float(angles[i])] if abs(angles[i]) >= _MIN_ANGLE else [])
        # (agreement, masked NCC, A, t, angle) per candidate; the identity's NCC is the plain one
        cands = [(agreement(ga, go, np.eye(2), np.zeros(2)), _ncc(ga, go), np.eye(2), np.zeros(2), 0.0)]
        if cands[0][0] >= _IDENTITY_EXPLAINS:
            # the identity explains I_a almost block for block: no magnification or shift is searched for
            # (most pairs of an evaluation; the search is what registration costs). A small image turned
            # by a few degrees still agrees this well, so a rotation the spectrum sees is still tried.
            tries = tries[1:]
        search_o = _Search(go) if tries else None
        for angle in tries:
            g = ga if angle == 0 else _derotate(ga, angle)
            grids, searches = {"a": g, "o": go}, {"a": _Search(g), "o": search_o}
            for mode in _MODES if angle == 0 else ("inside",):
                if mode == "overlap" and cands[-1][0] >= CONFIDENT_AGREEMENT:
                    continue  # the scene lies wholly inside the other image: nothing hangs over the edge
                ncc, m, b = _search_scales(searches, grids, mode)
                a, t = _to_matrix(angle, m, b)
                cands.append((agreement(ga, go, a, t), ncc, a, t, angle))
        # a candidate the blocks confirm wins by its agreement; when none is confirmed the best template
        # match still says the most about the magnification (the zoom rule reads it either way). The
        # identity breaks near-ties in both.
        bonus = [_PREFER_IDENTITY] + [0.0] * (len(cands) - 1)
        confirmed = [j for j, c in enumerate(cands) if c[0] >= CONFIDENT_AGREEMENT]
        if confirmed:
            j = max(confirmed, key=lambda j: cands[j][0] + bonus[j])
        else:
            j = max(range(len(cands)), key=lambda j: cands[j][1] + bonus[j])
        N[i], _, A[i], T[i], ANG[i] = cands[j]
    return Registration(A, T, N, ANG)


def _largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest all-True axis-aligned rectangle in a boolean mask."""
    h, w = mask.shape
    heights = np.zeros(w, dtype=int)
    best = (0, 0, 0, 0, 0)
    for r in range(h):
        heights = np.where(mask[r], heights + 1, 0)
        stack: list[int] = []
        for col in range(w + 1):
            cur = heights[col] if col < w else 0
            while stack and heights[stack[-1]] >= cur:
                top_h = heights[stack.pop()]
                left = stack[-1] + 1 if stack else 0
                area = top_h * (col - left)
                if area > best[0]:
                    best = (area, r - top_h + 1, left, top_h, col - left)
            stack.append(col)
    return best[1:]


_OVERLAP_GRID = 64  # resolution of the shared-content mask
_MARGIN = 0.02  # stay this far inside I_o's frame: the registration is accurate to about a grid pixel


def shared_content(x_a: np.ndarray, x_o: np.ndarray, A: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The largest axis-aligned window of I_a's frame whose content I_o also shows, and I_o's content
    warped into it (bicubic; resized with Lanczos first where I_o is shrunk): two equal-sized images, or
    None when they share too little (under a tenth of the frame or 8 px a side).
    """
    h, w = x_a.shape[:2]
    g = _OVERLAP_GRID
    u = (np.arange(g) + 0.5) / g
    p = np.stack(np.meshgrid(u, u, indexing="ij"), axis=-1)  # g x g x 2
    q = p @ A.T + t
    inside = np.all((q >= _MARGIN) & (q <= 1 - _MARGIN), axis=-1)
    top, left, hh, ww = _largest_rectangle(inside)
    if hh * ww < 0.1 * g * g:
        return None
    r0, r1 = int(np.ceil(top / g * h)), int(np.floor((top + hh) / g * h))
    c0, c1 = int(np.ceil(left / g * w)), int(np.floor((left + ww) / g * w))
    if r1 - r0 < 8 or c1 - c0 < 8:
        return None
    rows = (np.arange(r0, r1) + 0.5) / h
    cols = (np.arange(c0, c1) + 0.5) / w
    pp = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=0).reshape(2, -1)  # frame fractions
    qq = A @ pp + t[:, None]
    shrink = float(np.sqrt(abs(np.linalg.det(A)))) ** -1 * x_a.shape[0] / x_o.shape[0]  # I_a px per I_o px
    src = x_o
    if shrink < 0.95:
        # I_o is sampled sparser than its pixels: resize it the way a re-framing would (Lanczos) first, so
        # neither aliasing nor a softer filter than the edit's own changes its sharpness, noise or grain
        size = (max(8, round(x_o.shape[1] * shrink)), max(8, round(x_o.shape[0] * shrink)))
        src = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x_o[..., ch]), mode="F").resize(size, Image.LANCZOS))
                        for ch in range(x_o.shape[2])], axis=-1)
    ho, wo = src.shape[:2]
    coords = np.stack([qq[0] * ho - 0.5, qq[1] * wo - 0.5])
    # cubic: the re-framings being undone are bicubic or Lanczos; bilinear would soften I_o and make I_a
    # look sharper and noisier than it is
    warped = np.stack([ndimage.map_coordinates(src[..., ch], coords, order=3, mode="nearest")
                       for ch in range(src.shape[2])], axis=-1).reshape(r1 - r0, c1 - c0, -1)
    warped = np.clip(warped, 0.0, 1.0)
    return np.ascontiguousarray(x_a[r0:r1, c0:c1]), warped.astype(x_a.dtype)
