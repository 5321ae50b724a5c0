"""Directional prompt-aware scores: ``s(I) = r(I, P_a) - r(I, P_o)`` for a prompt-aware model ``r``.

A preference model scores how good an image looks, so under P_a it still favours the clean I_o
(HPSv3 picks I_a only 38.1% of the time in the source paper). A prompt-aware encoder compares the
image with the text, and the paper reports CLIP-L picking I_a under P_a 91.3% of the time and BLIP
96.5%. Subtracting the score under P_o removes what the two prompts share (the scene) and leaves
how much better the image matches what P_a adds: the requested attributes.

The model is any :class:`~pluralign.rewards.base.RewardModel` (``CLIPScore``, ``BLIPITM`` ...); its
own loading, batching and device handling are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import RewardModel

# The caption that names nothing, against which a similarity model's content probability is read.
NULL_CAPTION = "an image"


def _same_length(images: list, prompts: Sequence[str], what: str, model: RewardModel) -> list[str]:
    prompts = list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"{model.name}: got {len(images)} images but {len(prompts)} {what}")
    return prompts


def directional_score(model: RewardModel, images: Sequence, prompts_a: Sequence[str],
                      prompts_o: Sequence[str]) -> np.ndarray:
    """``r(I, P_a) - r(I, P_o)`` per image, float64 [N]: > 0 when the image matches P_a better than P_o."""
    images = list(images)
    pa = _same_length(images, prompts_a, "prompts P_a", model)
    po = _same_length(images, prompts_o, "prompts P_o", model)
    if not images:
        return np.zeros(0)
    return (model.score(images, pa) - model.score(images, po)).double().numpy()


def content_probability(model: RewardModel, images: Sequence, prompts_o: Sequence[str]) -> np.ndarray:
    """How surely each image shows P_o's content, in [0, 1].

    A model whose scores are probabilities (``model.probability``: BLIP ITM's match probability) is
    read directly. For a similarity model it is ``sigmoid(r(I, P_o) - r(I, NULL_CAPTION))``: with CLIP's
    score (logit scale x cosine; OpenAI CLIP's trained logit scale is the 100 CLIPScore uses) that is
    CLIP's own zero-shot probability of P_o against a caption that names nothing, so an image that
    lost the scene scores near 0.5 or below while one that keeps it scores near 1.
    """
    images = list(images)
    po = _same_length(images, prompts_o, "prompts P_o", model)
    if not images:
        return np.zeros(0)
    if model.probability:
        return model.score(images, po).double().numpy()
    margin = (model.score(images, po) - model.score(images, [NULL_CAPTION] * len(images))).double().numpy()
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -50, 50)))
