"""Prompt rewriting P_o -> P_a: add requested anti-aesthetic attributes, keep the subject.

The template rewriter is deterministic given a seed and keeps the original caption verbatim
inside the new prompt, so the subject can never drift; it only appends (or prefixes) phrases
from each attribute's templates. The optional LLM rewriter goes through a transformers
``text-generation`` pipeline for more natural phrasing; its output is accepted only if it still
contains the subject's content words, otherwise the template rewrite is used (and the fallback
is recorded), so a weak model cannot silently change what the picture is of.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from .taxonomy import ATTRIBUTES, attributes_in, get

# How the attribute phrases are attached to the caption. {p}: caption, {m}: joined phrases.
_PATTERNS = ("{p}, {m}", "{p}; {m}", "{M}: {p}", "{p}, photographed {m}", "{p} — {m}")


@dataclass
class Rewrite:
    """A rewritten prompt and what was requested in it."""

    text: str
    attributes: list[str]
    original: str
    method: str = "template"  # template | llm | llm_fallback
    notes: list[str] = field(default_factory=list)


def _clean(prompt: str) -> str:
    p = " ".join(str(prompt).split())
    return p.rstrip(" .;,")


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def apply_attributes(prompt: str, attributes: list[str], seed: int = 0) -> Rewrite:
    """Rewrite ``prompt`` so it requests every attribute in ``attributes`` (1 to 4 names)."""
    if not 1 <= len(attributes) <= 4:
        raise ValueError(f"ask for 1 to 4 attributes, got {len(attributes)}: {attributes}")
    base = _clean(prompt)
    if not base:
        raise ValueError("cannot rewrite an empty prompt")
    rng = random.Random(f"{seed}|{base}|{'|'.join(attributes)}")
    phrases = [rng.choice(get(a).templates) for a in attributes]
    pattern = rng.choice(_PATTERNS)
    joined = _join(phrases)
    text = pattern.format(p=base, m=joined, M=joined[:1].upper() + joined[1:])
    return Rewrite(text=text, attributes=list(attributes), original=str(prompt))


def rewrite_prompt(prompt: str, attributes: list[str], seed: int = 0) -> str:
    """P_o -> P_a as a string (see :func:`apply_attributes` for the attributes applied)."""
    return apply_attributes(prompt, attributes, seed).text


def sample_attributes(rng: random.Random, category: str | None = None, k_min: int = 1, k_max: int = 4,
                      degradable: bool = True) -> list[str]:
    """Draw 1-4 compatible attributes (never two of the same ``exclusive`` group), from one
    category if given (one adapter per category), else from all."""
    pool = list(attributes_in(category, degradable=degradable)) if category else [
        n for n, a in ATTRIBUTES.items() if a.degradation or not degradable]
    rng.shuffle(pool)
    k = rng.randint(k_min, k_max)
    chosen: list[str] = []
    groups: set[str] = set()
    for name in pool:
        g = ATTRIBUTES[name].exclusive
        if g is not None and g in groups:
            continue
        chosen.append(name)
        if g is not None:
            groups.add(g)
        if len(chosen) == k:
            break
    return chosen


def random_rewrite(prompt: str, seed: int, category: str | None = None, k_min: int = 1, k_max: int = 4) -> Rewrite:
    """Sample attributes and rewrite: the seeded P_o -> P_a the pair builder uses."""
    rng = random.Random(f"attrs|{seed}|{category}")
    return apply_attributes(prompt, sample_attributes(rng, category, k_min, k_max), seed)


# ---------------------------------------------------------------- LLM rewriter
INSTRUCTION = (
    "Rewrite the image prompt below so that the picture shows exactly these visual effects: {effects}. "
    "Keep the subject, objects and scene of the prompt unchanged. Do not add any other effect, style "
    "or object. Answer with the rewritten prompt only, on one line.\n"
    "Prompt: {prompt}\nRewritten prompt:"
)

_STOP = {"a", "an", "the", "of", "in", "on", "at", "with", "and", "to", "by", "for", "is", "are", "photo", "image"}


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2}


def keeps_subject(original: str, rewritten: str, min_share: float = 0.6) -> bool:
    """True when most content words of the original caption survive in the rewrite."""
    words = content_words(original)
    if not words:
        return True
    return len(words & content_words(rewritten)) / len(words) >= min_share


class LLMRewriter:
    """Rewrite with an instruction-following language model (any hub id or local directory that
    ``transformers.pipeline("text-generation")`` can load; no remote code).

    Generation is greedy, so the result is deterministic for a given model. A rewrite that loses
    the subject or comes back empty falls back to the template rewrite.
    """

    def __init__(self, model: str, max_new_tokens: int = 64, device: str | int | None = None, pipeline=None):
        if pipeline is None:
            from transformers import pipeline as make_pipeline

            pipeline = make_pipeline("text-generation", model=model, device=device, trust_remote_code=False)
        self.pipe = pipeline
        self.model = model
        self.max_new_tokens = max_new_tokens

    def prompt_for(self, prompt: str, attributes: list[str]) -> str:
        effects = "; ".join(get(a).templates[0] for a in attributes)
        return INSTRUCTION.format(effects=effects, prompt=_clean(prompt))

    def __call__(self, prompt: str, attributes: list[str], seed: int = 0) -> Rewrite:
        template = apply_attributes(prompt, attributes, seed)
        out = self.pipe(self.prompt_for(prompt, attributes), max_new_tokens=self.max_new_tokens,
                        do_sample=False, return_full_text=False)
        text = out[0]["generated_text"] if out else ""
        text = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
        if text and keeps_subject(prompt, text):
            return Rewrite(text=text, attributes=list(attributes), original=str(prompt), method="llm")
        template.method = "llm_fallback"
        template.notes.append("model output empty" if not text else "model output lost the subject")
        return template
