"""The toy world's intent-aware scorer (``--scorer toy``): its content checker plus the verifier rules.

Registered through the ``pluralign.scorers`` entry point (``toy = "pluralign.toy.scorer:scorer"``), so
``pluralign data generate`` finds it without importing the toy package. It implements the intent-scorer
interface (``check_available``, ``ensure_loaded``, ``attribute_score``, ``content_score``):

* ``content_score``: the checker's probability that the image shows the shape *and* colour named in P_o
  (``"a red circle on a light blue background"``), in [0, 1];
* ``attribute_score``: for pixel attributes, the paired verifier rules
  (:func:`pluralign.rewards.rules.adherence_scores`) of the image against the clean render of the scene P_o
  describes. A rule compares two images of one scene; the world can draw that scene, so a single image gets
  a score: the margin (statistic - calibrated threshold), > 0 when the image shows the attribute. For the
  semantic attributes (decay, unfinished, bleak), which no rule measures, the checker's judge network:
  P(shows it) - 0.5. A row's score is the smallest margin over its requested attributes (> 0: it shows
  all of them); NaN for an attribute neither measures. Every candidate of a prompt pair, under P_a or P_o,
  is measured against the same render, so their scores compare directly; same-seed ``references`` are
  accepted and not needed.

It scores toy-world images and captions only; a prompt that names no toy object is an error saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pluralign.rewards.intent_scorers import IntentScorer
from pluralign.rewards.rules import THRESHOLDS_PATH, adherence_scores, load_rules

from . import paths, world
from .checker import CONFIG, WEIGHTS, ContentChecker, _to_tensor

_OBJECT = re.compile(rf"\b({'|'.join(world.COLOURS)}) ({'|'.join(world.SHAPES)})\b")
_BACKGROUND = re.compile(rf"\bon an? ({'|'.join(world.BACKGROUNDS)}) background\b")


def parse_caption(prompt: str) -> tuple[str, str, str]:
    """(colour, shape, background) of the main object a toy caption names; the background defaults to white."""
    m = _OBJECT.search(prompt)
    if m is None:
        raise ValueError(f"toy scorer: prompt {prompt!r} names no toy object (a colour of {list(world.COLOURS)} and "
                         f"a shape of {list(world.SHAPES)}); the toy scorer scores toy-world prompts only, use "
                         "--scorer verifiers, clip or blip for other prompts")
    bg = _BACKGROUND.search(prompt)
    return m.group(1), m.group(2), bg.group(1) if bg else "white"


class ToyScorer(IntentScorer):
    """The toy world's content checker + verifier rules, behind the intent-scorer interface."""

    name = "toy"
    # scores are (statistic - threshold) of the rules: a pair whose margin is below 0.2 is noise at 32 x 32.
    # (A chosen image that scores below 0 does not show the attribute by the calibrated rule:
    # --min_chosen_score 0 keeps only those that do.)
    min_margin = 0.2

    def __init__(self, checker_dir: str | None = None, device: str = "auto"):
        self.checker_dir = checker_dir
        self.checker: ContentChecker | None = None

    def check_available(self) -> None:
        path = paths.checker_dir() if self.checker_dir is None else Path(self.checker_dir)
        missing = [str(path / f) for f in (CONFIG, WEIGHTS) if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"toy scorer: the content checker is missing ({', '.join(missing)}); rebuild the "
                                    "toy checkpoints with `pluralign build-toy` or set PLURALIGN_TOY_DIR")
        if not THRESHOLDS_PATH.is_file():
            raise FileNotFoundError(f"toy scorer: no verifier thresholds at {THRESHOLDS_PATH}; run "
                                    "`python -m pluralign.rewards.calibrate`")

    def ensure_loaded(self) -> ToyScorer:
        if self.checker is None:
            self.check_available()
            self.checker = ContentChecker.from_pretrained(self.checker_dir)
        return self

    @staticmethod
    def _lists(n: int, attributes) -> list[list[str]]:
        rows = [attributes] * n if isinstance(attributes, str) else list(attributes)
        if len(rows) != n:
            raise ValueError(f"toy scorer: {n} images but {len(rows)} attribute entries")
        return [[r] if isinstance(r, str) else list(r) for r in rows]

    def judged(self) -> list[str]:
        """The semantic attributes the checker's judge judges."""
        return list(self.ensure_loaded().checker.attributes)

    def measures(self, attribute: str) -> bool:
        return attribute in load_rules() or attribute in self.judged()

    def attribute_score(self, images: Sequence, prompts_o: Sequence[str], prompts_a: Sequence[str],
                        attributes, references: Sequence | None = None) -> np.ndarray:
        images = list(images)
        if len(prompts_o) != len(images):
            raise ValueError(f"toy scorer: {len(images)} images but {len(prompts_o)} prompts P_o")
        if not images:
            return np.zeros(0)
        wanted = self._lists(len(images), attributes)
        judged = set(self.judged()) & {a for w in wanted for a in w}
        ruled = [[a for a in w if a not in judged] for w in wanted]
        refs = {}
        for p in prompts_o:
            if p not in refs:
                colour, shape, background = parse_caption(p)
                refs[p] = world.render(world.Scene(shape, colour, background))
        score = np.asarray(adherence_scores(images, [refs[p] for p in prompts_o], ruled), dtype=np.float64)
        if judged:
            probs = self.checker.attribute_probs(images)
            for i, w in enumerate(wanted):
                for a in judged & set(w):
                    m = probs[a][i] - 0.5
                    score[i] = m if np.isnan(score[i]) else min(score[i], m)
        return score

    @torch.no_grad()
    def content_score(self, images: Sequence, prompts_o: Sequence[str],
                      references: Sequence | None = None) -> np.ndarray:
        images = list(images)
        if len(prompts_o) != len(images):
            raise ValueError(f"toy scorer: {len(images)} images but {len(prompts_o)} prompts P_o")
        if not images:
            return np.zeros(0)
        checker = self.ensure_loaded().checker
        wanted = [parse_caption(p) for p in prompts_o]
        out = []
        for s in range(0, len(images), 256):
            logits_s, logits_c, _ = checker.net(_to_tensor(images[s:s + 256]))
            ps, pc = logits_s.softmax(1).double(), logits_c.softmax(1).double()
            for j, (colour, shape, _) in enumerate(wanted[s:s + 256]):
                out.append(float(ps[j, checker.shapes.index(shape)] * pc[j, checker.colours.index(colour)]))
        return np.asarray(out, dtype=np.float64)


def scorer(arg: str | None = None, device: str = "auto") -> ToyScorer:
    """The ``pluralign.scorers`` entry point: ``toy`` (the shipped checker) or ``toy:DIR`` (a checker directory)."""
    return ToyScorer(arg or None, device)
