"""The intent-aware scorer of a run, from its ``--scorer`` spec, checked before any image is generated.

Scorers come from :func:`pluralign.rewards.intent_scorers.build_intent_scorer`: ``verifiers``, ``clip[:MODEL]``,
``blip[:MODEL]``, ``judge:MODEL``, comma lists, and plugins registered under the ``pluralign.scorers``
entry-point group (the toy world's ``toy``). An optional ``min_margin`` attribute of a scorer is its default
margin for ``data generate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np

from pluralign.rewards.intent_scorers import build_intent_scorer


def build_scorer(spec: str, device: str = "auto"):
    """The scorer of ``spec``, constructed but not loaded; ``check_available()`` is the caller's next call."""
    return build_intent_scorer(spec, device=device)


def scorer_name(scorer, spec: str) -> str:
    return str(getattr(scorer, "name", None) or spec)


def _takes_references(method) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "references" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def score(method, *args, references: Sequence | None = None) -> np.ndarray:
    """``method(*args)`` as float64, with the same-seed ``references`` when the method takes them (a plugin
    written to the bare interface does not)."""
    if references is not None and _takes_references(method):
        return np.asarray(method(*args, references=list(references)), dtype=np.float64)
    return np.asarray(method(*args), dtype=np.float64)
