"""Load and check a pair dataset (the project's trl-style schema) and pick the rows of a run."""

from __future__ import annotations

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


def select_rows(ds, category: str | None, share_general: bool, max_pairs: int | None) -> list[int]:
    """Indices of the rows a run trains on: all rows, or one category (+ general rows if shared)."""
    kinds, cats = column(ds, "kind"), column(ds, "category")
    if category is None:
        idx = list(range(len(ds)))
    else:
        idx = [i for i, (k, c) in enumerate(zip(kinds, cats)) if c == category or (share_general and k == "general")]
    return idx[:max_pairs] if max_pairs else idx


def data_mix(ds, indices: list[int]) -> dict:
    """Counts per kind and per category, for the model card and the run log."""
    kinds, cats = column(ds, "kind"), column(ds, "category")
    mix = {"pairs": len(indices), "kind": {}, "category": {}}
    for i in indices:
        mix["kind"][kinds[i]] = mix["kind"].get(kinds[i], 0) + 1
        c = cats[i] or "(none)"
        mix["category"][c] = mix["category"].get(c, 0) + 1
    return mix
