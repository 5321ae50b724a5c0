"""Intent scorers: does an image show what P_a asks for beyond P_o, and does it still show P_o's content?

One interface (:class:`IntentScorer`) for everything that ranks candidate images by intent, so that
``pluralign data generate --scorer SPEC`` (best-of-n pair selection) and the accuracy check
(:mod:`pluralign.rewards.scorer_accuracy`) treat model-free verifiers, prompt-aware encoders, VLM
judges and plugins alike:

* ``attribute_score(images, prompts_o, prompts_a, attributes) -> [N]``: higher = the image shows the
  requested attributes of P_a (relative to P_o); NaN where the scorer cannot measure the row's attributes;
* ``content_score(images, prompts_o) -> [N]`` in [0, 1]: the image still shows P_o's content.

Both take an optional ``references``: per image, the image generated from P_o with the same seed. Only
the verifiers use it (paired rules and structural similarity need a second image of the scene).

``SPEC`` (:func:`build_intent_scorer`)::

    verifiers                    model-free verifier statistics (paired margins when references are given)
    clip | clip:MODEL_OR_DIR     CLIP directional score r(I, P_a) - r(I, P_o)   (default openai/clip-vit-large-patch14)
    blip | blip:MODEL_OR_DIR     BLIP ITM directional score                     (default Salesforce/blip-itm-large-coco)
    judge:MODEL_OR_DIR           a local VLM's P(yes) per attribute (pluralign.rewards.vlm_judge)
    NAME | NAME:ARG              a plugin registered under the ``pluralign.scorers`` entry-point group
    A,B,...                      several combined (:class:`CombinedScorer`)

``=`` may stand for ``:`` (``clip=/models/clip``), as in ``--rewards clip=DIR``. A plugin's entry point
names a factory ``(arg: str | None, device: str) -> scorer``; the toy world registers ``toy`` that way,
so this package never imports it. Constructing a scorer reads no weights: ``check_available()`` checks
they are on this machine, ``ensure_loaded()`` reads them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import numpy as np

from .base import RewardModel
from .directional import content_probability, directional_score
from .intent import structural_similarity
from .models import BLIPITM, CLIPScore, verifier_statistics
from .rules import _per_row, adherence_table, load_rules
from .vlm_judge import CONTENT_QUESTION, VLMJudge

ENTRY_POINT_GROUP = "pluralign.scorers"


def with_references(method, *args, references=None) -> np.ndarray:
    """``method(*args)``, with ``references=`` only when there are some: a plugin written to the bare
    interface (no ``references`` parameter) is called the way it expects."""
    out = method(*args) if references is None else method(*args, references=list(references))
    return np.asarray(out, dtype=np.float64)


def row_mean(x: np.ndarray) -> np.ndarray:
    """Mean of each row's non-NaN entries; NaN for a row with none (without numpy's empty-slice warning)."""
    ok = ~np.isnan(x)
    n = ok.sum(axis=1)
    return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)


def zscore(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` over the finite entries; 0 where they do not vary (or fewer than two); NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return np.where(ok, 0.0, np.nan)
    sd = x[ok].std()
    return np.where(ok, (x - x[ok].mean()) / sd if sd > 1e-12 else 0.0, np.nan)


class IntentScorer:
    """Base class; subclasses implement :meth:`attribute_score` and :meth:`content_score` (float64 [N])."""

    name: str = "scorer"
    # attribute_score above this = "the image shows the attributes", which is how the eval's attribute judge
    # decides adherence for attributes no verifier rule measures (probabilities: 0.5; margins and directional
    # differences: 0)
    decision_threshold: float = 0.0

    def measures(self, attribute: str) -> bool:
        """Whether :meth:`attribute_score` can say anything about ``attribute`` (NaN otherwise)."""
        return True

    def check_available(self) -> None:
        """Raise, naming what is missing and how to get it, before any work; a model-free scorer has nothing to check."""

    def ensure_loaded(self) -> IntentScorer:
        """Read weights now (once); returns ``self`` so ``build_intent_scorer(spec).ensure_loaded()`` chains."""
        return self

    def attribute_score(self, images: Sequence, prompts_o: Sequence[str], prompts_a: Sequence[str], attributes,
                        references: Sequence | None = None) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def content_score(self, images: Sequence, prompts_o: Sequence[str],
                      references: Sequence | None = None) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check(self, images: list, **named) -> None:
        for what, values in named.items():
            if values is not None and len(values) != len(images):
                raise ValueError(f"{self.name} scorer: got {len(images)} images but {len(values)} {what}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class VerifierScorer(IntentScorer):
    """Model-free: the verifiers of the row's verifiable attributes.

    With ``references`` (the same-seed P_o image) the score is the paired rule's margin in units of its
    calibrated threshold, ``statistic / threshold - 1`` (> 0: the rule fires), averaged over the row's
    verifiable attributes: the pairing removes the scene, and dividing by the threshold puts statistics in
    degrees, log ratios and fractions on one scale. Without references it is the per-image
    ``direction * log(verifier value + eps)`` of :class:`~pluralign.rewards.models.VerifierReward`, averaged
    likewise: it cannot tell the attribute from the scene, but ranks candidates of one scene well. NaN for
    a row none of whose attributes has a verifier (emotions, surrealism: use a judge).

    Content: structural similarity to the reference (:func:`~pluralign.rewards.intent.structural_similarity`);
    without references 1.0, since verifiers measure photographic properties, not what is shown, and no
    model-free measure can read P_o's content from its text.
    """

    name = "verifiers"

    def measures(self, attribute: str) -> bool:
        return attribute in load_rules()

    def attribute_score(self, images, prompts_o, prompts_a, attributes, references=None):
        images = list(images)
        self._check(images, **{"prompts P_o": prompts_o, "prompts P_a": prompts_a, "references": references})
        rows = _per_row(attributes, len(images))
        if not images:
            return np.zeros(0)
        if references is None:
            total, count = verifier_statistics(images, rows)
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)
        rules = load_rules()
        table = adherence_table(images, list(references), rows, rules)
        if not table:
            return np.full(len(images), np.nan)
        return row_mean(np.stack([table[a] / max(rules[a].threshold, 1e-9) for a in sorted(table)], axis=1))

    def content_score(self, images, prompts_o, references=None):
        images = list(images)
        self._check(images, **{"prompts P_o": prompts_o, "references": references})
        if references is None:
            return np.ones(len(images))
        return np.asarray(structural_similarity(images, list(references)), dtype=np.float64)


class PromptAwareScorer(IntentScorer):
    """A prompt-aware reward model (CLIP, BLIP ITM) read directionally: ``r(I, P_a) - r(I, P_o)``
    (:mod:`pluralign.rewards.directional`); content is its probability that the image shows P_o."""

    def __init__(self, model: RewardModel, name: str, local_option: str):
        self.model, self.name, self.local_option = model, name, local_option

    def check_available(self) -> None:
        self.model.check_available(self.local_option)

    def ensure_loaded(self) -> PromptAwareScorer:
        self.model.ensure_loaded()
        return self

    def attribute_score(self, images, prompts_o, prompts_a, attributes, references=None):
        return directional_score(self.model, images, prompts_a, prompts_o)

    def content_score(self, images, prompts_o, references=None):
        return content_probability(self.model, images, prompts_o)


class JudgeScorer(IntentScorer):
    """A local VLM: mean P(yes) over the row's attributes (the taxonomy's phrasing), NaN for a row with
    none; content is P(yes) to "Does this image show <P_o>?"."""

    decision_threshold = 0.5  # P(yes)

    def __init__(self, judge: VLMJudge, name: str):
        self.judge, self.name = judge, name

    def check_available(self) -> None:
        self.judge.check_available()

    def ensure_loaded(self) -> JudgeScorer:
        self.judge.ensure_loaded()
        return self

    def attribute_score(self, images, prompts_o, prompts_a, attributes, references=None):
        images = list(images)
        self._check(images, **{"prompts P_o": prompts_o, "prompts P_a": prompts_a})
        return self.judge.attribute_probability(images, _per_row(attributes, len(images)))

    def content_score(self, images, prompts_o, references=None):
        images = list(images)
        self._check(images, **{"prompts P_o": prompts_o})
        return self.judge.yes_probability(images, [CONTENT_QUESTION.format(prompt=p) for p in prompts_o])


class CombinedScorer(IntentScorer):
    """Several scorers as one (``spec`` ``a,b,...``).

    Attribute score: the mean of the scorers' z-scores. Their units differ (CLIP's 100 x cosine
    differences, verifier log ratios, probabilities), so each is standardised over the images of the
    call first, and a scorer that cannot score an image (NaN) is left out of that image's mean. The
    z-scores depend on the batch: score every image you compare (all candidates of a prompt pair,
    under P_a and under P_o) in one call; a single image always scores 0.

    Content score: the minimum. Keeping P_o's content is a constraint, not a quantity to trade: a
    candidate any one scorer sees as having lost the scene should be dropped, which an average would
    let a confident second scorer outvote.
    """

    def __init__(self, scorers: list[IntentScorer]):
        self.scorers = list(scorers)
        self.name = ",".join(s.name for s in self.scorers)

    def check_available(self) -> None:
        for s in self.scorers:  # all checked before any loads
            s.check_available()

    def ensure_loaded(self) -> CombinedScorer:
        for s in self.scorers:
            s.ensure_loaded()
        return self

    def attribute_score(self, images, prompts_o, prompts_a, attributes, references=None):
        images = list(images)
        z = np.stack([zscore(with_references(s.attribute_score, images, prompts_o, prompts_a, attributes,
                                             references=references)) for s in self.scorers], axis=1)
        return row_mean(z)

    def content_score(self, images, prompts_o, references=None):
        images = list(images)
        c = np.stack([with_references(s.content_score, images, prompts_o, references=references)
                      for s in self.scorers], axis=1)
        return c.min(axis=1)


# ------------------------------------------------------------------------------------------ registry

ScorerFactory = Callable[..., IntentScorer]  # (arg: str | None, device: str) -> scorer


def _verifiers(arg, device="auto", **kw):
    if arg:
        raise ValueError(f"scorer 'verifiers:{arg}': verifiers take no model or path; write 'verifiers'")
    return VerifierScorer()


def _prompt_aware(cls, name, default):
    def factory(arg, device="auto", **kw):
        return PromptAwareScorer(cls(model_id=arg or default, device=device, **kw), f"{name}:{arg}" if arg else name,
                                 f"--scorer {name}:DIR")
    return factory


def _judge(arg, device="auto", **kw):
    if not arg:
        raise ValueError("scorer 'judge': name the vision-language model, judge:HUB_ID or judge:/local/dir "
                         "(any checkpoint AutoModelForImageTextToText loads)")
    judge = VLMJudge(arg, device=device, local_option="--scorer judge:DIR", **kw)
    judge.name = "judge"  # messages name the option the user wrote
    return JudgeScorer(judge, f"judge:{arg}")


# name -> (factory, one-line description)
BUILTIN: dict[str, tuple[ScorerFactory, str]] = {
    "verifiers": (_verifiers, "model-free verifier statistics (paired rule margins with references)"),
    "clip": (_prompt_aware(CLIPScore, "clip", "openai/clip-vit-large-patch14"), "CLIP r(I,P_a) - r(I,P_o); clip:DIR"),
    "blip": (_prompt_aware(BLIPITM, "blip", "Salesforce/blip-itm-large-coco"), "BLIP ITM r(I,P_a) - r(I,P_o); blip:DIR"),
    "judge": (_judge, "a local VLM's P(yes) per attribute; judge:MODEL_OR_DIR"),
}
_PLUGINS: dict[str, ScorerFactory] = {}


def register_scorer(name: str, factory: ScorerFactory) -> None:
    """Make ``name`` (and ``name:ARG``) a scorer spec without an entry point (tests, notebooks)."""
    if name in BUILTIN:
        raise ValueError(f"scorer {name!r} is built in; register a plugin under another name")
    _PLUGINS[name] = factory


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def registered_scorers() -> list[str]:
    """Every scorer name: the built-ins, then plugins (registered here or through entry points)."""
    return list(BUILTIN) + sorted(set(_PLUGINS) | set(_entry_points()) - set(BUILTIN))


def split_spec(part: str) -> tuple[str, str | None]:
    """``"clip:/m"`` or ``"clip=/m"`` -> ("clip", "/m"); ``"verifiers"`` -> ("verifiers", None)."""
    cut = min((i for i in (part.find(":"), part.find("=")) if i >= 0), default=-1)
    if cut < 0:
        return part.strip(), None
    return part[:cut].strip(), part[cut + 1 :].strip() or None


def _build_one(part: str, device: str, **kw) -> IntentScorer:
    name, arg = split_spec(part)
    if name in BUILTIN:
        return BUILTIN[name][0](arg, device=device, **kw)
    if name in _PLUGINS:
        return _PLUGINS[name](arg, device=device)
    eps = _entry_points()
    if name in eps:
        return eps[name].load()(arg, device=device)
    known = registered_scorers()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown scorer {name!r} in {part!r}; {hint}registered scorers: {', '.join(known)} "
                     f"(plugins register under the {ENTRY_POINT_GROUP!r} entry-point group)")


def build_intent_scorer(spec: str, device: str = "auto", **kwargs) -> IntentScorer:
    """The scorer of ``spec`` (grammar in the module docstring), constructed but not loaded.

    ``kwargs`` (``batch_size=``, ``dtype=``) go to the built-in models. Call ``check_available()`` for
    every scorer before long work, then ``ensure_loaded()``."""
    parts = [p.strip() for p in str(spec).split(",")]
    if not spec or not any(parts):
        raise ValueError(f"scorer spec {spec!r} is empty; give one of {', '.join(registered_scorers())} "
                         "(or several, separated by commas)")
    if any(not p for p in parts):
        raise ValueError(f"scorer spec {spec!r} has an empty entry between commas")
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:  # the same model twice would count double in the combined mean
        raise ValueError(f"scorer spec {spec!r} gives {', '.join(twice)} twice; give each scorer once")
    scorers = [_build_one(p, device, **kwargs) for p in parts]
    return scorers[0] if len(scorers) == 1 else CombinedScorer(scorers)


__all__ = ["IntentScorer", "VerifierScorer", "PromptAwareScorer", "JudgeScorer", "CombinedScorer", "zscore",
           "build_intent_scorer", "register_scorer", "registered_scorers", "split_spec", "ENTRY_POINT_GROUP"]
