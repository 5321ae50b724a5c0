"""Pure metric functions shared by the reward-model audit and the evaluation loop.

Notation follows the source paper: for a caption pair (P_o, P_a) and images (I_o, I_a),
``r(I, P)`` is a reward. A reward model is *accurate* on a pair when r(I_a, P_a) > r(I_o, P_a):
it prefers the image that does what the anti-aesthetic prompt asks. The *four-way matrix*
holds the mean of r(I_x, P_y) for x, y in {o, a}, and ``delta_r`` is
mean[r(I_a, P_o) - r(I_o, P_o)] (how much the reward penalises the anti-aesthetic image under
the ordinary prompt).
"""

from __future__ import annotations

import numpy as np

_ALPHA = (1 - 0.95) / 2  # each tail of a two-sided 95% interval (the ``ci95`` of every report)


def _arr(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def pairwise_accuracy(r_a_pa, r_o_pa, *, ties: str = "half") -> float:
    """Share of pairs with r(I_a, P_a) > r(I_o, P_a). Ties count 0.5 (``ties="half"``) or 0 (``"loss"``)."""
    a, o = _arr(r_a_pa), _arr(r_o_pa)
    if a.shape != o.shape or a.size == 0:
        raise ValueError(f"need two equal-length non-empty score arrays, got {a.shape} and {o.shape}")
    wins = (a > o).astype(np.float64)
    if ties == "half":
        wins += 0.5 * (a == o)
    elif ties != "loss":
        raise ValueError(f"ties must be 'half' or 'loss', got {ties!r}")
    return float(wins.mean())


def four_way_matrix(r_o_po, r_o_pa, r_a_po, r_a_pa) -> dict[str, float]:
    """Mean reward of each (image, prompt) combination: keys ``"I_o|P_o"``, ``"I_o|P_a"``, ``"I_a|P_o"``, ``"I_a|P_a"``."""
    return {
        "I_o|P_o": float(_arr(r_o_po).mean()),
        "I_o|P_a": float(_arr(r_o_pa).mean()),
        "I_a|P_o": float(_arr(r_a_po).mean()),
        "I_a|P_a": float(_arr(r_a_pa).mean()),
    }


def delta_r(r_a_po, r_o_po) -> float:
    """mean[r(I_a, P_o) - r(I_o, P_o)]."""
    a, o = _arr(r_a_po), _arr(r_o_po)
    if a.shape != o.shape:
        raise ValueError(f"score arrays differ in length: {a.shape} vs {o.shape}")
    return float((a - o).mean())


def bootstrap_ci(values, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean over per-item values (e.g. 0/1 wins, or paired differences).

    Paired metrics must pass the per-pair quantity (win indicator, r_a - r_o), so resampling
    keeps each pair together: that is the paired bootstrap.
    """
    v = _arr(values)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    boots = v[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [_ALPHA, 1 - _ALPHA])
    return (float(lo), float(hi))


def paired_bootstrap_ci(x_a, x_b, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% CI of mean(x_a) - mean(x_b) when both were measured on the same items (resample items jointly)."""
    a, b = _arr(x_a), _arr(x_b)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, n_boot=n_boot, seed=seed)


_Z = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_ci(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion, ``successes`` of ``n``.

    Why not the bootstrap: resampling 24 successes of 24 gives 24 of 24 every time, so the percentile bootstrap
    reads [100%, 100%], as if one small suite had proved a certainty, and it covers less than 95% at small n
    elsewhere too. The score interval inverts the binomial test: at 24 of 24 it reads [86%, 100%]."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p, z2 = successes / n, _Z * _Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off by rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (float(lo), float(hi))


def rate_with_ci(indicators, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """``{"rate", "ci95": [lo, hi], "n"}`` for 0/1 (or fractional) per-item outcomes; NaNs are skipped.

    Outcomes that are all 0 or 1 get the Wilson score interval (:func:`wilson_ci`); fractional ones (a tie
    counted as one half, a row's share of its attributes) the percentile bootstrap."""
    v = _arr(indicators)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"rate": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    if np.all((v == 0) | (v == 1)):
        lo, hi = wilson_ci(int(v.sum()), int(v.size))
    else:
        lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
    return {"rate": float(v.mean()), "ci95": [lo, hi], "n": int(v.size)}


def accuracy_report(r_o_po, r_o_pa, r_a_po, r_a_pa, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy with CI, four-way matrix and delta_r (with CI) for one reward model."""
    a, o = _arr(r_a_pa), _arr(r_o_pa)
    wins = (a > o) + 0.5 * (a == o)
    diff = _arr(r_a_po) - _arr(r_o_po)
    lo, hi = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
    return {
        "accuracy": rate_with_ci(wins, n_boot=n_boot, seed=seed),
        "matrix": four_way_matrix(r_o_po, r_o_pa, r_a_po, r_a_pa),
        "delta_r": {"value": float(diff.mean()), "ci95": [lo, hi], "n": int(diff.size)},
    }
