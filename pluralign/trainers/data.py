"""Load and check a pair dataset (the project's trl-style schema) and pick the rows of a run."""

from __future__ import annotations

import random
from pathlib import Path

from ..data.shapes import shape_pairs

BUILTIN_SHAPES = "builtin:shapes"

REQUIRED = {"dpo": ("prompt", "chosen", "rejected"), "sft": ("prompt", "chosen")}
OPTIONAL_DEFAULTS = {"kind": "general", "category": "", "source": "", "severity": 0.0, "pair_id": ""}


def load_pairs(spec: str):
    """``builtin:shapes``, a ``save_to_disk`` directory, or a ``.parquet`` file -> ``datasets.Dataset``."""
    import datasets

    if spec == BUILTIN_SHAPES:
        return shape_pairs()
    path = Path(spec)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return datasets.load_from_disk(str(path))
        files = sorted(path.glob("*.parquet"))
        if files:
            return datasets.Dataset.from_parquet([str(f) for f in files])
        raise ValueError(f"dataset {spec}: directory holds neither a save_to_disk dataset nor .parquet files")
    if path.is_file() and path.suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(path))
    if path.is_file():
        raise ValueError(f"dataset {spec}: a {path.suffix or 'extensionless'} file is not a pair dataset; build one "
                         "with `pluralign data build --sources ... --output_dir DIR` and pass DIR, or pass a .parquet "
                         f"file or '{BUILTIN_SHAPES}'")
    raise ValueError(f"dataset {spec!r} not found: pass a save_to_disk directory, a .parquet file or '{BUILTIN_SHAPES}'")


def check_columns(ds, method: str, source: str) -> None:
    missing = [c for c in REQUIRED[method] if c not in ds.column_names]
    if missing:
        raise ValueError(f"dataset {source}: missing column(s) {missing} needed for method={method} "
                         f"(has {ds.column_names}); rename the columns to the pair schema prompt/chosen/rejected")
    if len(ds) == 0:
        raise ValueError(f"dataset {source}: has no rows")


def column(ds, name: str) -> list:
    if name in ds.column_names:
        return list(ds[name])
    return [OPTIONAL_DEFAULTS[name]] * len(ds)


def select_rows(ds, category: str | None, share_general: bool, max_pairs: int | None, *,
                intent_fraction: float | None = None, seed: int = 0) -> list[int]:
    """Indices of the rows a run trains on, in dataset order: all rows (``category`` None), or one
    category's rows plus, with ``share_general``, general rows.

    With ``intent_fraction`` f, a category run gets only as many general rows as keep its own
    (anti + mirror) rows at f of the whole: ``round(n * (1 - f) / f)`` for n own rows, drawn without
    replacement from the general rows by a generator seeded from ``seed`` and the category (the same
    rows every time; another category gets another draw). All general rows at once would dilute a
    small category (2 own rows among 14 general ones is 12.5% intent where 50% was asked). When there
    are fewer general rows than that, all of them are used and the share comes out higher;
    :func:`data_mix` records what was achieved. ``max_pairs`` keeps the ratio: about f of it own rows
    (the first ones), the rest general, own rows filling in where general ones run short. Without
    ``intent_fraction`` every general row is shared, as before the option existed."""
    kinds, cats = column(ds, "kind"), column(ds, "category")
    if category is None:
        idx = list(range(len(ds)))
        return idx[:max_pairs] if max_pairs else idx
    if intent_fraction is None or not share_general:
        idx = [i for i, (k, c) in enumerate(zip(kinds, cats)) if c == category or (share_general and k == "general")]
        return idx[:max_pairs] if max_pairs else idx
    if not 0 < intent_fraction <= 1:
        raise ValueError(f"intent_fraction must be in (0, 1], got {intent_fraction}")
    own = [i for i, c in enumerate(cats) if c == category]
    pool = [i for i, (k, c) in enumerate(zip(kinds, cats)) if k == "general" and c != category]
    n_own, n_general = mix_counts(len(own), len(pool), intent_fraction, max_pairs)
    rng = random.Random(f"pluralign.general_rows:{seed}:{category}")
    return sorted(own[:n_own] + rng.sample(pool, n_general))


def mix_counts(n_own: int, n_pool: int, intent_fraction: float, max_pairs: int | None = None) -> tuple[int, int]:
    """How many own (intent) rows and general rows a category run takes (see :func:`select_rows`)."""
    f = intent_fraction
    n_i, n_g = n_own, min(n_pool, round(n_own * (1 - f) / f))
    if max_pairs and n_i + n_g > max_pairs:
        n_i = min(n_own, max(1, round(max_pairs * f)))
        n_g = min(n_pool, max_pairs - n_i)
        n_i = min(n_own, max_pairs - n_g)  # general rows ran short: own rows fill the budget
    return n_i, n_g


def data_mix(ds, indices: list[int], *, intent_fraction: float | None = None) -> dict:
    """Counts per kind and per category, and the intent share, for the model card and ``data_mix.json``.

    ``intent_rows`` (anti + mirror) and ``general_rows`` give ``intent_fraction``, the share
    achieved; ``requested_intent_fraction`` is what was asked (None: no ratio was applied) and
    ``general_available`` how many general rows the dataset has, so a share above the request can be
    read as "ran out of general rows"."""
    kinds, cats = column(ds, "kind"), column(ds, "category")
    mix = {"pairs": len(indices), "kind": {}, "category": {}}
    for i in indices:
        mix["kind"][kinds[i]] = mix["kind"].get(kinds[i], 0) + 1
        c = cats[i] or "(none)"
        mix["category"][c] = mix["category"].get(c, 0) + 1
    general = mix["kind"].get("general", 0)
    mix.update(intent_rows=len(indices) - general, general_rows=general,
               intent_fraction=round((len(indices) - general) / len(indices), 6) if indices else None,
               requested_intent_fraction=intent_fraction, general_available=sum(k == "general" for k in kinds))
    return mix
