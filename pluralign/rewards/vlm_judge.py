"""A local vision-language model as a judge, read from next-token probabilities (no free generation).

Any checkpoint that ``transformers.AutoModelForImageTextToText`` and ``AutoProcessor`` load (a hub
id or a local directory) can judge; the model is checked with :func:`pluralign.hub.require_model`
before anything loads. Two questions:

* **yes/no**: ``P(yes)`` to a question about one image, normalised over the "yes" and "no" answer
  tokens. :meth:`VLMJudge.score` (the :class:`~pluralign.rewards.base.RewardModel` interface, so
  ``pluralign audit --rewards vlm=DIR`` works) asks whether the image shows the prompt;
  :meth:`VLMJudge.attribute_probability` asks whether a taxonomy attribute's phrasing describes it.
* **pairwise**: which of two images better matches a prompt, read as ``P(A) / (P(A) + P(B))``.
  VLMs favour one position, so the order is randomised: the image shown first is the one whose
  seeded hash of its pixels is smaller. That order is random with respect to which image the caller
  passed first (so position bias averages out over many pairs) yet depends only on the *set* of two
  images, so swapping the pair shows the model the same thing and exactly flips the probability.

Reading probabilities of the answer tokens rather than generating text gives a graded score, costs
one forward pass, and cannot fail to parse. The question goes through the processor's chat template
when it has one, and a plain ``<image> question Answer:`` prompt otherwise.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.taxonomy import phrase
from .base import RewardModel, _to_pil
from .models import _hub_error

YES_NO = ("yes", "no")
PAIR_ANSWERS = ("A", "B")
CONTENT_QUESTION = "Does this image show {prompt}? Answer yes or no."
# The taxonomy's phrasings are adjectives ("blurry"), prepositional phrases ("with coarse film grain")
# and similes ("like an accidental phone photo"); quoting one fits them all into one question.
ATTRIBUTE_QUESTION = 'Does the description "{phrase}" fit this image? Answer yes or no.'
PAIR_QUESTION = ('Prompt: "{prompt}"\nWhich image better matches this prompt: the first (A) or the second (B)? '
                 "Answer A or B.")


def answer_token_ids(tokenizer, word: str, model_id: str) -> list[int]:
    """Ids of the single tokens that spell ``word`` as an answer: bare or after a space, lower or capitalised.

    A variant counts only when it encodes to one token that decodes to the word (tokens that decode
    to whitespace are skipped: some tokenizers emit a lone word-boundary piece first); the unknown
    token never counts. No such token at all is an error naming the model, since the answer could
    not be read."""
    variants = {word, word.capitalize()} if word.islower() else {word}
    ids: set[int] = set()
    unk = getattr(tokenizer, "unk_token_id", None)
    for v in sorted(variants):
        for text in (v, " " + v):
            pieces = [t for t in tokenizer.encode(text, add_special_tokens=False)
                      if tokenizer.decode([t]).strip() != ""]
            if len(pieces) == 1 and pieces[0] != unk and tokenizer.decode(pieces).strip().lower() == word.lower():
                ids.add(pieces[0])
    if not ids:
        raise ValueError(f"vlm judge {model_id}: its tokenizer has no single token for the answer {word!r}, so the "
                         "answer probability cannot be read; use a model whose tokenizer spells it as one token")
    return sorted(ids)


def pixel_key(image, seed: int) -> bytes:
    """A seeded hash of an image's pixels (with its size and mode): the pairwise order key."""
    h = hashlib.blake2b(str(seed).encode(), digest_size=16)
    h.update(f"{image.size}|{image.mode}|".encode())
    h.update(image.tobytes())
    return h.digest()


@dataclass
class PairwiseResult:
    """Per pair: ``p_first`` = P(the first image passed is the better match), ``tie`` (|p1 - p2| below the
    tolerance), ``wins`` (1, 0, or 0.5 for a tie) and ``swapped`` (the model was shown the second one first)."""

    p_first: np.ndarray
    tie: np.ndarray
    wins: np.ndarray
    swapped: np.ndarray


class VLMJudge(RewardModel):
    """A local VLM read through answer-token probabilities; ``score`` is P(yes) that the image shows the prompt."""

    name = "vlm"
    probability = True

    def __init__(self, model_id: str | None = None, *, seed: int = 0, tie_tolerance: float = 0.02,
                 local_option: str | None = None, **kw):
        super().__init__(**kw)
        if kw.get("dtype") is None and self.device.type == "cuda":
            self.dtype = torch.bfloat16  # a 7B judge in float32 would not fit beside a generator
        self.model_id, self.seed, self.tie_tolerance = model_id, int(seed), float(tie_tolerance)
        self.local_option = local_option

    def required_models(self) -> list[tuple[str, str]]:
        return [(self.model_id, "vision-language model")] if self.model_id else []

    def check_available(self, local_option: str | None = None) -> None:
        if not self.model_id:
            raise ValueError(f"{self.name}: name the vision-language model to judge with, a hub id or a local "
                             "directory (vlm=MODEL_OR_DIR, or judge:MODEL_OR_DIR as an intent scorer)")
        super().check_available(local_option or self.local_option)

    def load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.check_available()
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_id)
            self.model = AutoModelForImageTextToText.from_pretrained(self.model_id, dtype=self.dtype)
        except OSError as exc:
            raise _hub_error(self.name, self.model_id, exc) from exc
        except ValueError as exc:  # an architecture AutoModelForImageTextToText does not map
            raise ValueError(f"{self.name}: {self.model_id} does not load as an image-text-to-text model "
                             f"({exc}); pass a VLM checkpoint (e.g. LLaVA, Qwen2-VL, Idefics3, PaliGemma)") from exc
        self.model = self.model.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        # right padding: every row's last real token is at attention_mask.sum() - 1, whatever the model
        self.tokenizer.padding_side = "right"
        self._keep_arg = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._answers = {w: answer_token_ids(self.tokenizer, w, self.model_id) for w in YES_NO + PAIR_ANSWERS}

    # --------------------------------------------------------------------------------- prompts

    def prompt_text(self, question: str, n_images: int) -> str:
        """The model input for ``question`` about ``n_images`` images: the chat template's user turn plus
        the assistant's opening, or ``<image>`` placeholders, the question and "Answer:" without one."""
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
        token = getattr(self.processor, "image_token", None) or ""  # processors without one insert it themselves
        return "".join(f"{token}\n" for _ in range(n_images) if token) + f"{question}\nAnswer:"

    # --------------------------------------------------------------------------------- reading

    @torch.no_grad()
    def _next_token_logprobs(self, image_groups: list[list], questions: list[str]) -> torch.Tensor:
        """Log-softmax of the next-token logits after each prompt: float32 [B, vocab] on CPU."""
        texts = [self.prompt_text(q, len(g)) for q, g in zip(questions, image_groups)]
        inputs = self.processor(images=image_groups, text=texts, padding=True, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        last = inputs["attention_mask"].sum(dim=1) - 1
        if self._keep_arg:  # only the positions read: the full [B, L, vocab] logits of a long image prompt are large
            keep = torch.unique(last)
            logits = self.model(**inputs, logits_to_keep=keep).logits
            logits = logits[torch.arange(len(texts), device=logits.device), torch.searchsorted(keep, last)]
        else:
            logits = self.model(**inputs).logits
            logits = logits[torch.arange(len(texts), device=logits.device), last]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def _two_way(self, image_groups: list[list], questions: list[str], first: str, second: str) -> np.ndarray:
        """P(first answer) / (P(first) + P(second)) per prompt, each answer summed over its token spellings."""
        self.ensure_loaded()
        out = []
        for s in range(0, len(questions), self.batch_size):
            lp = self._next_token_logprobs(image_groups[s : s + self.batch_size], questions[s : s + self.batch_size])
            a = torch.logsumexp(lp[:, self._answers[first]], dim=-1)
            b = torch.logsumexp(lp[:, self._answers[second]], dim=-1)
            out.append(torch.sigmoid(a - b).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def yes_probability(self, images: Sequence, questions: Sequence[str]) -> np.ndarray:
        """P(yes) / (P(yes) + P(no)) to one question per image, float64 [N] in [0, 1]."""
        images, questions = list(images), list(questions)
        if len(images) != len(questions):
            raise ValueError(f"{self.name}: got {len(images)} images but {len(questions)} questions")
        return self._two_way([[_to_pil(im)] for im in images], questions, *YES_NO)

    def attribute_probability(self, images: Sequence, attributes: Sequence[Sequence[str]]) -> np.ndarray:
        """Per image, the mean P(yes) over its attributes that the attribute's first taxonomy phrasing fits
        (:data:`ATTRIBUTE_QUESTION`); NaN for an image with no attributes."""
        images, rows = list(images), [list(r) for r in attributes]
        if len(images) != len(rows):
            raise ValueError(f"{self.name}: got {len(images)} images but {len(rows)} attribute lists")
        flat = [(i, ATTRIBUTE_QUESTION.format(phrase=phrase(a))) for i, r in enumerate(rows)
                for a in r]
        p = self.yes_probability([images[i] for i, _ in flat], [q for _, q in flat])
        owner = np.array([i for i, _ in flat], dtype=np.int64)
        total, count = np.zeros(len(images)), np.bincount(owner, minlength=len(images))
        np.add.at(total, owner, p)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def pairwise(self, images_first: Sequence, images_second: Sequence, prompts: Sequence[str] | str) -> PairwiseResult:
        """Which of each pair better matches its prompt; see the module docstring for the order."""
        a, b = [_to_pil(x) for x in images_first], [_to_pil(x) for x in images_second]
        prompts = [prompts] * len(a) if isinstance(prompts, str) else list(prompts)
        if not len(a) == len(b) == len(prompts):
            raise ValueError(f"{self.name}: pairwise needs as many second images and prompts as first images, "
                             f"got {len(a)}, {len(b)} and {len(prompts)}")
        swapped = np.array([pixel_key(x, self.seed) > pixel_key(y, self.seed) for x, y in zip(a, b)], dtype=bool)
        groups = [[y, x] if s else [x, y] for x, y, s in zip(a, b, swapped)]
        p_shown_first = self._two_way(groups, [PAIR_QUESTION.format(prompt=p) for p in prompts], *PAIR_ANSWERS)
        p_first = np.where(swapped, 1.0 - p_shown_first, p_shown_first)
        tie = np.abs(2.0 * p_first - 1.0) < self.tie_tolerance  # |p1 - p2| with p2 = 1 - p1
        wins = np.where(tie, 0.5, (p_first > 0.5).astype(np.float64))
        return PairwiseResult(p_first=p_first, tie=tie, wins=wins, swapped=swapped)

    def _score_batch(self, images, prompts):
        return torch.from_numpy(self.yes_probability(images, [CONTENT_QUESTION.format(prompt=p) for p in prompts]))
