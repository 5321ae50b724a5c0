"""Intent-aware reward: does I_a show the requested attributes *and* keep I_o's content?

``intent_reward = adherence_weight * mean_a sigmoid(margin_a / temperature) + (1 - adherence_weight) * similarity``

where ``margin_a`` is the paired verifier margin (statistic - calibrated threshold) of each
requested verifiable attribute and ``similarity`` comes from a pluggable content scorer. The
default scorer is model-free: SSIM between the two images' luminance after both are reduced to
32 px and blurred, so exposure, noise and blur changes cost little while a different scene
costs a lot. Use it to pick the best of n candidate I_a for a pair, or as an eval score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..config import option
from .rules import adherence_table
from .verifiers import to_array

ContentScorer = Callable[[list, list], np.ndarray]


def _small_luma(img) -> np.ndarray:
    """Luminance box-averaged to 32 x 32: the scene's layout survives, the fine texture an attribute changes does not."""
    pil = Image.fromarray((to_array(img) * 255 + 0.5).astype(np.uint8)).convert("L").resize((32, 32), Image.Resampling.BOX)
    return np.asarray(pil, dtype=np.float64) / 255.0


def _normalise(y: np.ndarray) -> np.ndarray:
    return (y - y.mean()) / (y.std() + 1e-3)


def structural_similarity(images_a: Sequence, images_o: Sequence) -> np.ndarray:
    """Model-free content similarity in [0, 1]: correlation of standardised 32-px luminance, then SSIM-style structure term.

    Standardising each image first removes exposure and contrast changes (which the requested
    attribute may cause); what remains compares the layout of light and dark, i.e. the scene.
    """
    from scipy.ndimage import gaussian_filter

    out = np.zeros(len(images_a))
    for i, (a, o) in enumerate(zip(images_a, images_o)):
        ya = gaussian_filter(_normalise(_small_luma(a)), 1.0)
        yo = gaussian_filter(_normalise(_small_luma(o)), 1.0)
        ya, yo = ya - ya.mean(), yo - yo.mean()
        corr = float((ya * yo).sum() / np.sqrt((ya * ya).sum() * (yo * yo).sum() + 1e-12))
        out[i] = max(0.0, corr)
    return out


@dataclass
class IntentRewardConfig:
    adherence_weight: float = option(0.7, "weight of verifier adherence vs content similarity", min=0.0, max=1.0)
    temperature: float = option(0.25, "softness of the sigmoid on the (statistic - threshold) margin", min=1e-6)
    min_similarity: float = option(0.0, "similarity below this zeroes the reward (content lost)", min=0.0, max=1.0)


def intent_reward(images_a: Sequence, images_o: Sequence, attributes, cfg: IntentRewardConfig | None = None,
                  content_scorer: ContentScorer | None = None) -> dict[str, np.ndarray]:
    """Per pair: ``reward``, ``adherence`` (soft, in [0, 1]), ``adheres`` (all attributes past threshold), ``similarity``.

    ``attributes`` is one name for all pairs or a name / list of names per pair. Pairs with no
    verifiable attribute get adherence NaN and are scored on similarity alone.
    """
    cfg = cfg or IntentRewardConfig()
    a, o = list(images_a), list(images_o)
    table = adherence_table(a, o, attributes)
    n = len(a)
    if table:
        margins = np.stack(list(table.values()), axis=1)
        soft = 1.0 / (1.0 + np.exp(-np.clip(margins / cfg.temperature, -50, 50)))
        soft = np.where(np.isnan(margins), np.nan, soft)
        measured = (~np.isnan(soft)).sum(axis=1)
        with np.errstate(all="ignore"):  # a pair with no verifiable attribute: NaN, without numpy's empty-slice warning
            adherence = np.where(measured > 0, np.nansum(soft, axis=1) / np.maximum(measured, 1), np.nan)
            hard = np.where(np.isnan(margins).all(axis=1), np.nan,
                            np.nanmin(np.where(np.isnan(margins), np.inf, margins), axis=1) > 0)
    else:
        adherence = np.full(n, np.nan)
        hard = np.full(n, np.nan)
    sim = np.asarray((content_scorer or structural_similarity)(a, o), dtype=np.float64)
    w = cfg.adherence_weight
    reward = np.where(np.isnan(adherence), sim, w * np.nan_to_num(adherence) + (1 - w) * sim)
    reward = np.where(sim < cfg.min_similarity, 0.0, reward)
    return {"reward": reward, "adherence": adherence, "adheres": hard, "similarity": sim}


def best_of_n(candidates_a: Sequence, image_o, attributes, cfg: IntentRewardConfig | None = None,
              content_scorer: ContentScorer | None = None) -> tuple[int, np.ndarray]:
    """Index of the candidate I_a with the highest intent reward against ``image_o``, and all rewards."""
    cands = list(candidates_a)
    if not cands:
        raise ValueError("best_of_n needs at least one candidate image")
    attrs = attributes if isinstance(attributes, str) else [list(attributes)] * len(cands)
    r = intent_reward(cands, [image_o] * len(cands), attrs, cfg, content_scorer)["reward"]
    return int(np.argmax(r)), r
