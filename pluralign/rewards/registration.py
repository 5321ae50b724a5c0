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
# Blur of I_o before a shrinking warp, as a share of sqrt(1/m^2 - 1) grid pixels (m < 1 the shrink): half, as
# common anti-aliasing takes; the whole of it smooths I_o so far that a wrong shrink of a tilted frame agrees
_ANTIALIAS = 0.5
CONFIDENT_AGREEMENT = 0.8  # agreement below this: the transform does not explain I_a, the rules use whole frames
# A transform this close to the identity is the identity: no re-framing, compare whole frames.
IDENTITY_LOG_SCALE, IDENTITY_ANGLE, IDENTITY_SHIFT = 0.04, 1.5, 0.03
_MIN_ANGLE = 3.0  # a rotation estimate smaller than this is not tried apart from 0 (no tilt is this small)
_IDENTITY_EXPLAINS = 0.9  # identity agreement at which no other transform is searched for
_OVERLAP_UNLESS = _IDENTITY_EXPLAINS  # agreement of the match inside at which the overlapping one is not tried


def _integral(x: np.ndarray) -> np.ndarray:
    """T x (h + 1) x (w + 1) summed-area tables of a T x h x w stack (a zero row and column first)."""
    out = np.zeros((x.shape[0], x.shape[1] + 1, x.shape[2] + 1))
    out[:, 1:, 1:] = x.cumsum(axis=1).cumsum(axis=2)
    return out


def _box(table: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """T x R x R sums of the boxes ``[lo[r], hi[r]) x [lo[c], hi[c])`` from :func:`_integral` tables."""
    r0, r1, c0, c1 = lo[:, None], hi[:, None], lo[None, :], hi[None, :]
    return table[:, r1, c1] - table[:, r0, c1] - table[:, r1, c0] + table[:, r0, c0]


def _best_shifts(spectra: np.ndarray, tables: np.ndarray, size: int, templates: np.ndarray, min_overlap: float,
                 penalty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per task, the best shift of ``templates[i]`` over image ``i`` (Padfield's masked normalised
    cross-correlation) among the shifts where at least ``min_overlap`` of the template overlaps the image:
    its NCC, its rank score (the NCC less ``penalty / sqrt(overlap pixels)``, since a small overlap
    correlates well by chance), and the (row, column) of the template's top-left corner, to a fraction of
    a grid pixel (may be negative).

    Unlike a template that must lie wholly inside the image, the template may hang over the edge: the
    correlation at each shift is taken over the overlap only. A subject pushed towards a corner leaves
    part of the scene outside the frame, and that part has nothing to match.

    ``spectra``: the images' spectra zero-padded to ``size`` (twice the grid side gives every overlap; the
    side itself gives exactly the shifts wholly inside, where the circular correlation does not wrap, at
    a quarter of the arithmetic). ``tables``: :func:`_integral` of the images and of their squares
    (T x 2 x ...). Only the cross term needs a transform; the overlap's sums of image and template are
    box sums. All templates have one size, and the tasks go through the transforms in one batch: one
    call per task would cost more than the arithmetic.
    """
    n = REGISTRATION_SIDE
    k = templates.shape[-1]
    lo, hi = (k - 1, n) if size == n else (0, n + k - 1)
    # full-correlation index r puts the template's top-left pixel at row r - k + 1: the overlap's rows of
    # the image and of the template (the same on both axes)
    top = np.arange(lo, hi) - k + 1
    i0, i1 = np.maximum(top, 0), np.minimum(top + k, n)
    u0, u1 = i0 - top, i1 - top
    count = ((i1 - i0)[:, None] * (i1 - i0)[None, :]).astype(float)[None]
    sf, sf2 = _box(tables[:, 0], i0, i1), _box(tables[:, 1], i0, i1)
    st, st2 = _box(_integral(templates), u0, u1), _box(_integral(templates * templates), u0, u1)
    # correlation = convolution with the flipped template
    t = np.fft.rfft2(templates[:, ::-1, ::-1], s=(size, size))
    sft = np.fft.irfft2(spectra * t, s=(size, size))[:, lo:hi, lo:hi]
    num = sft - sf * st / count
    den = np.sqrt(np.maximum(sf2 - sf * sf / count, 1e-9) * np.maximum(st2 - st * st / count, 1e-9))
    ncc = np.where(count >= min_overlap * k * k - 0.5, num / den, -np.inf)
    score = ncc - penalty / np.sqrt(count)
    r, c = np.divmod(np.argmax(score.reshape(len(score), -1), axis=1), ncc.shape[2])
    # a parabola through the peak's neighbours places it to a fraction of a grid pixel
    dr, dc = _vertex(ncc, r, c, 0), _vertex(ncc, r, c, 1)
    i = np.arange(len(ncc))
    return ncc[i, r, c], score[i, r, c], top[r] + dr, top[c] + dc


def _vertex(v: np.ndarray, r: np.ndarray, c: np.ndarray, axis: int) -> np.ndarray:
    """Per task, the offset (within +-0.5) of the vertex of the parabola through the peak ``v[i, r, c]``
    and its two neighbours along ``axis`` (0 at the border, or where the three do not make a peak)."""
    i = np.arange(len(v))
    j, size = (r, v.shape[1]) if axis == 0 else (c, v.shape[2])
    before, after = np.maximum(j - 1, 0), np.minimum(j + 1, size - 1)
    lo = v[i, before, c] if axis == 0 else v[i, r, before]
    hi = v[i, after, c] if axis == 0 else v[i, r, after]
    with np.errstate(invalid="ignore"):
        curv = lo - 2 * v[i, r, c] + hi
        ok = (j > 0) & (j < size - 1) & np.isfinite(curv) & (curv < 0)
        return np.where(ok, np.clip(0.5 * (lo - hi) / np.where(ok, curv, -1.0), -0.5, 0.5), 0.0)


def _match(grids: dict, spectra: dict, tables: dict, size: int, m: float, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task, how well I_a matches I_o magnified by ``m`` (> 1) or shrunk (< 1) (NCC and rank score), and
    the shift ``b`` (T x 2) of the resulting map ``q = p / m + b`` from I_a's frame (after any derotation)
    to I_o's."""
    side = REGISTRATION_SIDE
    big, small = ("a", "o") if m >= 1 else ("o", "a")
    scaled = max(4, int(round(side / max(m, 1 / m))))
    min_overlap, keep, penalty = _MODES[mode]
    t = resample_bilinear(grids[big], scaled, scaled)
    k = max(4, int(round(scaled * keep)))
    off = (scaled - k) // 2
    ncc, score, r, c = _best_shifts(spectra[small], tables[small], size, t[:, off : off + k, off : off + k],
                                    min_overlap, penalty)
    pos = np.stack([r - off, c - off], axis=1) / side
    # the template is the big image at `scaled / side` of its size: a point u of the big image's frame
    # lies at u * scaled / side + pos in the small one's frame
    f = scaled / side
    return ncc, score, (pos if big == "a" else -pos / f)


def _search_scales(grids_a: np.ndarray, grids_o: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task, the best (ncc, magnification, shift) over :data:`ZOOM_SCALES` in one of :data:`_MODES`:
    a coarse pass over every fourth scale, then the three neighbours either side of the best."""
    size = REGISTRATION_SIDE if _MODES[mode][0] >= 1 else 2 * REGISTRATION_SIDE
    grids = {"a": grids_a, "o": grids_o}
    # per image, computed once and shared by every scale
    spectra = {x: np.fft.rfft2(g, s=(size, size)) for x, g in grids.items()}
    tables = {x: np.stack([_integral(g), _integral(g * g)], axis=1) for x, g in grids.items()}
    n_tasks, n_scales = len(grids_a), len(ZOOM_SCALES)
    ncc, score = np.full((n_tasks, n_scales), np.nan), np.full((n_tasks, n_scales), -np.inf)
    shift = np.zeros((n_tasks, n_scales, 2))

    def run(j: int, tasks: np.ndarray) -> None:
        sub = {x: g[tasks] for x, g in grids.items()}
        spec = {x: s[tasks] for x, s in spectra.items()}
        tab = {x: s[tasks] for x, s in tables.items()}
        ncc[tasks, j], score[tasks, j], shift[tasks, j] = _match(sub, spec, tab, size, float(ZOOM_SCALES[j]), mode)

    everyone = np.arange(n_tasks)
    for j in range(0, n_scales, 4):
        run(j, everyone)
    coarse = 4 * np.argmax(score[:, ::4], axis=1)
    near = coarse[:, None] + np.array([-3, -2, -1, 1, 2, 3])[None]
    for j in np.unique(near[(near >= 0) & (near < n_scales)]):
        run(int(j), np.flatnonzero((near == j).any(axis=1)))
    best = np.argmax(score, axis=1)
    i = np.arange(n_tasks)
    # the scale a template of whole grid pixels actually used, not the nominal one
    m = ZOOM_SCALES[best]
    scaled = np.maximum(4, np.round(REGISTRATION_SIDE / np.maximum(m, 1 / m)))
    used = np.where(m >= 1, REGISTRATION_SIDE / scaled, scaled / REGISTRATION_SIDE)
    return ncc[i, best], used, shift[i, best]


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


def _ncc(a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per row, the normalised cross-correlation of two N x P stacks."""
    a, o = a - a.mean(axis=1, keepdims=True), o - o.mean(axis=1, keepdims=True)
    return (a * o).sum(axis=1) / (np.sqrt((a * a).sum(axis=1) * (o * o).sum(axis=1)) + 1e-9)


def _to_matrix(angle: np.ndarray, m: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per task, ``(A, t)`` of ``q = A p + t`` for I_a derotated by ``angle`` (``p' = c + R(-angle)(p - c)``)
    and then matched as ``q = p' / m + b``."""
    c = np.full(2, 0.5)
    r = np.stack([_rotation(-a) for a in angle])  # T x 2 x 2
    m = np.asarray(m, dtype=float)[:, None]
    return r / m[:, :, None], (c - r @ c) / m + b


def _smooth(grids: np.ndarray) -> np.ndarray:
    """N x side x side registration grids smoothed for :func:`agreement`: grain and sensor noise are not
    content, and would decorrelate small blocks."""
    return ndimage.gaussian_filter(grids, (0, 1.0, 1.0))


def _antialias(smooth_o: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``smooth_o`` with each task's grid blurred by ``_ANTIALIAS * sqrt(1 / m^2 - 1)`` grid pixels where its map
    shrinks I_o by ``m < 1``."""
    m = 1.0 / np.sqrt(np.abs(np.linalg.det(A)))  # magnification of I_a relative to I_o
    shrunk = np.flatnonzero(m < 1.0 - 1e-6)
    if not len(shrunk):
        return smooth_o
    out = smooth_o.copy()
    for i in shrunk:
        out[i] = ndimage.gaussian_filter(smooth_o[i], _ANTIALIAS * np.sqrt(1.0 / m[i] ** 2 - 1.0))
    return out


def agreement(smooth_a: np.ndarray, smooth_o: np.ndarray, A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per task, how well ``q = A p + t`` explains I_a: the median NCC over 8 x 8 blocks of the registration
    grid between I_a and I_o warped into its frame, over the blocks that lie inside I_o and are not flat.

    A median over blocks ignores what a photographic edit adds to part of the frame (an occluder, a
    light leak, a vignette's corners) and counts only how well the content lines up; a fill the
    re-framing left (a shrunk scene's canvas) lies outside I_o and is not counted. With fewer than four
    blocks of detail, the correlation over the whole shared area; with under four blocks' area shared, 0.

    Where the map shrinks I_o (I_a shows its content smaller), I_o is first blurred towards the resolution I_a
    shows it at (:func:`_antialias`): sampled sharp, a dense texture (shelves of goods, gravel) aliases into a
    pattern that I_a's own downscaled pixels do not show, and the true shrink would not agree.
    ``smooth_a``, ``smooth_o``: T x side x side grids from :func:`_smooth`; ``A``: T x 2 x 2; ``t``: T x 2.
    """
    smooth_o = _antialias(smooth_o, A)
    n, k = REGISTRATION_SIDE, _BLOCK
    n_tasks = len(A)
    u = (np.arange(n) + 0.5) / n
    p = np.stack(np.meshgrid(u, u, indexing="ij"), axis=0).reshape(2, -1)
    q = A @ p + t[:, :, None]  # T x 2 x n*n
    inside = np.all((q > 0) & (q < 1), axis=1).reshape(n_tasks, n, n)
    # one interpolation for every task: the first coordinate picks the task's own grid
    task = np.broadcast_to(np.arange(n_tasks, dtype=float)[:, None], (n_tasks, n * n))
    coords = np.stack([task, q[:, 0] * n - 0.5, q[:, 1] * n - 0.5]).reshape(3, -1)
    warped = ndimage.map_coordinates(smooth_o, coords, order=1, mode="nearest").reshape(n_tasks, n, n)
    area = inside.sum(axis=(1, 2))
    # flat relative to the registered content: a crop enlarges it, so its blocks hold less detail
    mean_in = (warped * inside).sum(axis=(1, 2)) / np.maximum(area, 1)
    spread = np.sqrt((((warped - mean_in[:, None, None]) ** 2) * inside).sum(axis=(1, 2)) / np.maximum(area, 1))
    flat = _FLAT * spread

    def blocks(x: np.ndarray) -> np.ndarray:  # T x side x side -> T x blocks x k*k
        b = n // k
        return x[:, : b * k, : b * k].reshape(n_tasks, b, k, b, k).transpose(0, 1, 3, 2, 4).reshape(n_tasks, b * b, k * k)

    x, y, whole = blocks(smooth_a), blocks(warped), blocks(inside).all(axis=2)
    x, y = x - x.mean(axis=2, keepdims=True), y - y.mean(axis=2, keepdims=True)
    sx, sy = np.sqrt((x * x).mean(axis=2)), np.sqrt((y * y).mean(axis=2))
    used = whole & (sy >= flat[:, None])
    r = np.where(used, (x * y).mean(axis=2) / (sx * sy + 1e-9), np.nan)
    enough = used.sum(axis=1) >= 4
    median = np.nanmedian(np.where(enough[:, None], r, 0.0), axis=1)
    # too little detail for blocks (a sky, a crop into one): the correlation of the whole shared area
    a_in = np.where(inside, smooth_a - ((smooth_a * inside).sum(axis=(1, 2)) / np.maximum(area, 1))[:, None, None], 0.0)
    o_in = np.where(inside, warped - mean_in[:, None, None], 0.0)
    whole_ncc = (a_in * o_in).sum(axis=(1, 2)) / (np.sqrt((a_in * a_in).sum(axis=(1, 2)) * (o_in * o_in).sum(axis=(1, 2))) + 1e-9)
    return np.where(area < 4 * k * k, 0.0, np.where(enough, median, whole_ncc))


def register(grids_a: np.ndarray, grids_o: np.ndarray, angles: np.ndarray) -> Registration:
    """Register every pair from their :func:`~pluralign.rewards.verifiers.registration_grid` features.

    ``angles``: the Fourier-Mellin rotation estimate per pair (the tilt rule's). Candidates: the
    identity; the best magnification and shift of the unrotated pair; and, when the rotation estimate is
    not small, the best of the pair with I_a turned back by it. Template matching (masked normalised
    cross-correlation, so exposure, contrast and colour changes do not matter) finds each candidate's
    magnification and shift. Of the candidates whose blocks agree (:func:`agreement` at least
    :data:`CONFIDENT_AGREEMENT`), the best wins, the identity breaking near-ties; when none agrees, the best
    template match, and the registration is not confident.

    The search runs for :data:`CHUNK` pairs at once, one batch per scale and mode: pair by pair, the calls
    into the small transforms cost more than their arithmetic, and all pairs of a large evaluation at once
    would hold gigabytes of correlation planes.
    """
    parts = [_register(grids_a[s : s + CHUNK], grids_o[s : s + CHUNK], np.asarray(angles)[s : s + CHUNK])
             for s in range(0, len(grids_a), CHUNK)]
    if not parts:
        return Registration(np.zeros((0, 2, 2)), np.zeros((0, 2)), np.zeros(0), np.zeros(0))
    return Registration(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("A", "t", "agreement", "angle")))


CHUNK = 256  # pairs registered in one batch (each correlation plane of a chunk takes about 18 MB)


def _register(grids_a: np.ndarray, grids_o: np.ndarray, angles: np.ndarray) -> Registration:
    """:func:`register` for one chunk of pairs."""
    side = REGISTRATION_SIDE
    n = len(grids_a)
    ga = np.asarray(grids_a, dtype=np.float64).reshape(n, side, side)
    go = np.asarray(grids_o, dtype=np.float64).reshape(n, side, side)
    sa, so = _smooth(ga), _smooth(go)
    eye, zero = np.broadcast_to(np.eye(2), (n, 2, 2)), np.zeros((n, 2))
    # candidates per pair, in order: (agreement, masked NCC, A, t, angle); the identity's NCC is the plain one
    identity = agreement(sa, so, eye, zero)
    cands = [[(identity[i], ncc, np.eye(2), np.zeros(2), 0.0)] for i, ncc in enumerate(_ncc(ga.reshape(n, -1), go.reshape(n, -1)))]

    def add(pairs: np.ndarray, angle: np.ndarray, grids: np.ndarray, mode: str) -> np.ndarray:
        """Search ``pairs`` (I_a's grids after derotation by ``angle``) in ``mode``; their agreements."""
        ncc, m, b = _search_scales(grids, go[pairs], mode)
        A, t = _to_matrix(angle, m, b)
        agree = agreement(sa[pairs], so[pairs], A, t)
        for j, i in enumerate(pairs):
            cands[i].append((agree[j], ncc[j], A[j], t[j], float(angle[j])))
        return agree

    # the identity explains I_a almost block for block: no magnification or shift is searched for (most
    # pairs of an evaluation; the search is what registration costs)
    unrotated = np.flatnonzero(identity < _IDENTITY_EXPLAINS)
    if len(unrotated):
        inside = add(unrotated, np.zeros(len(unrotated)), ga[unrotated], "inside")
        # a scene wholly inside the other image has nothing hanging over the edge. Unless the match inside
        # explains I_a almost block for block, the scene pushed partly out of the frame is tried as well: an
        # anti-aliased wrong shrink of a smooth scene can just reach the confident bar, and the right overlap
        # then wins on agreement
        over = unrotated[inside < _OVERLAP_UNLESS]
        if len(over):
            add(over, np.zeros(len(over)), ga[over], "overlap")
    # A small image turned by a few degrees agrees with the identity as well, so a rotation the spectrum
    # sees is tried either way. The spectrum estimate turns I_o onto I_a; turning I_a back takes the
    # opposite angle.
    turned = np.flatnonzero(np.abs(angles) >= _MIN_ANGLE)
    if len(turned):
        back = -np.asarray(angles, dtype=float)[turned]
        add(turned, back, np.stack([_derotate(ga[i], a) for i, a in zip(turned, back)]), "inside")
    A, T, N, ANG = np.zeros((n, 2, 2)), np.zeros((n, 2)), np.zeros(n), np.zeros(n)
    for i, c in enumerate(cands):
        # a candidate the blocks confirm wins by its agreement; when none is confirmed the best template
        # match still says the most about the magnification (the zoom rule reads it either way). The
        # identity breaks near-ties in both.
        bonus = [_PREFER_IDENTITY] + [0.0] * (len(c) - 1)
        confirmed = [j for j, x in enumerate(c) if x[0] >= CONFIDENT_AGREEMENT]
        if confirmed:
            j = max(confirmed, key=lambda j: c[j][0] + bonus[j])
        else:
            j = max(range(len(c)), key=lambda j: c[j][1] + bonus[j])
        N[i], _, A[i], T[i], ANG[i] = c[j]
    return Registration(A, T, N, ANG)


def _largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest all-True axis-aligned rectangle in a boolean mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) and len(cols):
        top, left, height, width = rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        if mask[top : top + height, left : left + width].all() and mask.sum() == height * width:
            return int(top), int(left), int(height), int(width)  # the mask is one rectangle (no rotation)
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
# The smallest window worth comparing, as a share of I_a's frame. A subject shrunk to 0.3 of the frame's side
# (within the registration's search) fills 0.09 of it: a window that small still says more than the whole
# frames, whose flat canvas reads as lost contrast, a cast or flat light.
_MIN_SHARED = 0.02


def shared_content(x_a: np.ndarray, x_o: np.ndarray, A: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The largest axis-aligned window of I_a's frame whose content I_o also shows, and I_o's content
    warped into it (bicubic; resized with Lanczos first where I_o is shrunk): two equal-sized images, or
    None when they share too little (under :data:`_MIN_SHARED` of the frame or 8 px a side).
    """
    h, w = x_a.shape[:2]
    g = _OVERLAP_GRID
    u = (np.arange(g) + 0.5) / g
    p = np.stack(np.meshgrid(u, u, indexing="ij"), axis=-1)  # g x g x 2
    q = p @ A.T + t
    inside = np.all((q >= _MARGIN) & (q <= 1 - _MARGIN), axis=-1)
    top, left, hh, ww = _largest_rectangle(inside)
    if hh * ww < _MIN_SHARED * g * g:
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
