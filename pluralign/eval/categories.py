"""The per-category dial: one LoRA adapter per taxonomy category, each swept on its own rows.

``pluralign eval --adapters clarity_and_focus=DIR,color_and_tone=DIR`` (or ``--adapters_dir RUN_DIR``,
the output of a training run with ``adapter_mode: per_category``) loads every adapter of the set
under its category's name. Category ``c``'s sweep is the pipeline with ``c`` at each of ``weights``
and every other adapter of the set at 0, scored on the suite rows that request an attribute of
``c`` (each row's attributes narrowed to those of ``c``; the taxonomy maps attribute -> category).
At the top weight ``c`` is also generated on every other row, which gives the cross-effects:
adherence and leakage on every other category's attributes (``pluralign.eval.runner``).

This module resolves the set from the options and plans which rows each variant needs; the
metrics are the eval loop's own (:mod:`pluralign.eval.metrics`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path

from pluralign.data.taxonomy import ATTRIBUTES, CATEGORIES

from .generate import LORA_WEIGHT_FILE, Variant, category_variant
from .suite import EvalRow

EXAMPLE = "clarity_and_focus=outputs/runs/NAME/adapter/clarity_and_focus"


def category_of(attribute: str) -> str | None:
    """The taxonomy category of an attribute (None for a name the taxonomy does not know)."""
    attr = ATTRIBUTES.get(attribute)
    return attr.category if attr is not None else None


def _not_a_category(name: str, option: str) -> str:
    close = difflib.get_close_matches(name, list(CATEGORIES), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return (f"{option}: {name!r} is not a taxonomy category{hint}; the categories are {', '.join(CATEGORIES)}. "
            "The name says which suite rows score the adapter")


def parse_adapter_entries(entries: Sequence[str]) -> dict[str, str]:
    """``["clarity_and_focus=DIR", ...]`` -> ``{category: path}``; ValueError naming the ``adapters`` option
    for an entry that is not ``CATEGORY=PATH``, an unknown category or a category given twice."""
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, path = str(entry).partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ValueError(f"adapters: {entry!r} is not CATEGORY=PATH; write e.g. --adapters {EXAMPLE} (entries "
                             "separated by commas), or --adapters_dir RUN_DIR for a per-category training run")
        if name not in CATEGORIES:
            raise ValueError(_not_a_category(name, "adapters"))
        if name in out:
            raise ValueError(f"adapters: category {name} is given twice ({out[name]} and {path}); keep one")
        out[name] = path
    return out


def find_category_adapters(run_dir: str | Path) -> dict[str, Path]:
    """The adapters a per-category training run wrote: ``RUN_DIR/adapter/<category>/`` (``RUN_DIR`` may also
    be that ``adapter`` folder). Every error names the ``adapters_dir`` option and says what to pass."""
    root = Path(run_dir).expanduser()
    where = f"adapters_dir {run_dir}"
    if not root.is_dir():
        raise FileNotFoundError(f"{where}: no such directory; pass the output_dir of a training run with "
                                "adapter_mode: per_category (it holds adapter/<category>/)")
    folder = root / "adapter" if (root / "adapter").is_dir() else root
    found: dict[str, Path] = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name in CATEGORIES:
            found[d.name] = d
        elif any(d.glob("*.safetensors")):
            raise ValueError(f"{where}: {d} holds LoRA weights but is not named after a taxonomy category "
                             f"({', '.join(CATEGORIES)}), so no suite rows say what it should do; name each adapter "
                             f"with --adapters CATEGORY=DIR instead")
    if not found:
        if (folder / LORA_WEIGHT_FILE).is_file():
            raise ValueError(f"{where}: {folder / LORA_WEIGHT_FILE} is a single adapter (adapter_mode: single), not "
                             f"one per category; evaluate it with --adapter {folder}")
        raise FileNotFoundError(f"{where}: no per-category adapters in {folder} (expected adapter/<category>/"
                                f"{LORA_WEIGHT_FILE}); pass the output_dir of a training run with adapter_mode: "
                                "per_category, or name each adapter with --adapters CATEGORY=DIR")
    runs = root / "runs"
    if folder != root and runs.is_dir():  # a category that trained (or began to) but exported nothing
        for d in sorted(p for p in runs.iterdir() if p.is_dir() and p.name in CATEGORIES and p.name not in found):
            raise FileNotFoundError(f"{where}: category {d.name} has a run ({d}) but no exported adapter "
                                    f"({folder / d.name}); finish its training (resume_from_checkpoint: latest) or "
                                    "evaluate the others by naming them with --adapters CATEGORY=DIR")
    return found


def category_adapters(adapters: Sequence[str], adapters_dir: str | None) -> dict[str, Path]:
    """The dial set of a per-category eval, ``{category: adapter path}`` in taxonomy order (empty for a
    single-adapter eval): the adapters found in ``adapters_dir``, with ``adapters`` entries replacing or
    adding to them."""
    found: dict[str, Path] = dict(find_category_adapters(adapters_dir)) if adapters_dir else {}
    found.update({c: Path(p) for c, p in parse_adapter_entries(adapters).items()})
    return {c: found[c] for c in CATEGORIES if c in found}


def only_category(row: EvalRow, category: str) -> EvalRow:
    """The row with its attributes narrowed to those of ``category``."""
    return dataclasses.replace(row, attributes=[a for a in row.attributes if category_of(a) == category])


def rows_by_category(rows: Sequence[EvalRow], categories: Sequence[str], suite: str) -> dict[str, list[int]]:
    """Per category, the indices of the rows that request at least one of its attributes. A category
    without rows is an error naming it and the suite: its dial curve would measure nothing."""
    out = {c: [i for i, r in enumerate(rows) if any(category_of(a) == c for a in r.attributes)] for c in categories}
    empty = [c for c, idx in out.items() if not idx]
    if empty:
        c = empty[0]
        present = sorted({category_of(a) for r in rows for a in r.attributes} - {None})
        raise ValueError(f"adapters: the suite {suite!r} ({len(rows)} rows) has no row requesting an attribute of "
                         f"{c} (its attributes: {', '.join(a for a, x in ATTRIBUTES.items() if x.category == c)}); "
                         f"use a suite (or a larger n_prompts) with such rows, or leave the {c} adapter out "
                         f"(categories in this suite: {', '.join(present) or 'none'})")
    return out


def category_plan(categories: Sequence[str], weights: Sequence[float], rows_of: dict[str, list[int]],
                  n_rows: int) -> tuple[list[Variant], dict[str, list[int]]]:
    """The variants of a per-category eval (``<category>@W`` for each category and weight, after the base)
    and the rows each is generated on: its category's rows, and every row at the top weight (the
    cross-effects)."""
    top = max(weights)
    variants, rows_for = [], {}
    for c in categories:
        for w in weights:
            v = category_variant(c, w)
            variants.append(v)
            rows_for[v.name] = list(range(n_rows)) if w == top else list(rows_of[c])
    return variants, rows_for

