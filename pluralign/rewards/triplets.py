"""Labelled triplets (P_o, P_a, I_o, I_a, attributes) from the project's pair schema, for scorer accuracy.

In the pair schema (:mod:`pluralign.data.pairs`) an ``anti`` row (prompt P_a, chosen I_a, rejected I_o)
and its ``mirror`` row (prompt P_o, chosen I_o, rejected I_a) share a ``pair_id``; together they are one
triplet whose label is known: I_a shows the requested attributes, I_o does not. Sources, by ``spec``:

* a pair set registered under the ``pluralign.pair_sets`` entry-point group: a callable ``(n, seed)``
  returning pair rows (the toy world registers ``toy``, its ``world_pairs.intent_pairs``), so this
  package never imports the toy world;
* ``module:function``, a callable with that signature named directly (works before the entry point is
  installed, e.g. ``pluralign.toy.world_pairs:intent_pairs``);
* a pair dataset on disk, a ``save_to_disk`` directory or a ``.parquet`` file (what ``pluralign data
  build`` writes).

Rows of other kinds (``general``) and a pair_id without both an anti and a mirror row are skipped and
counted.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..data.sources import is_saved_dataset, open_image, parse_attributes

ENTRY_POINT_GROUP = "pluralign.pair_sets"


@dataclass
class Triplets:
    prompt_o: list[str] = field(default_factory=list)
    prompt_a: list[str] = field(default_factory=list)
    image_o: list[Image.Image] = field(default_factory=list)
    image_a: list[Image.Image] = field(default_factory=list)
    attributes: list[list[str]] = field(default_factory=list)
    pair_id: list[str] = field(default_factory=list)
    skipped: int = 0  # pair_ids without both an anti and a mirror row

    def __len__(self) -> int:
        return len(self.prompt_a)


def _image(value, source: str, row: int, column: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    return open_image(value, source=source, row=row, field=column)


def triplets_from_rows(rows: Iterable[dict], source: str = "<rows>", n: int = 0) -> Triplets:
    """Join anti and mirror rows on ``pair_id`` (the first of each kind per id), in order of first
    appearance; at most ``n`` triplets (0: all)."""
    anti: dict[str, tuple[int, dict]] = {}
    mirror: dict[str, dict] = {}
    order: list[str] = []
    for i, row in enumerate(rows):
        kind, pid = row.get("kind"), row.get("pair_id")
        if kind not in ("anti", "mirror") or not pid:
            continue
        if pid not in anti and pid not in mirror:
            order.append(pid)
        if kind == "anti":
            anti.setdefault(pid, (i, row))
        else:
            mirror.setdefault(pid, row)
    out = Triplets()
    for pid in order:
        if pid not in anti or pid not in mirror:
            out.skipped += 1
            continue
        if n and len(out) == n:
            break
        i, a = anti[pid]
        out.prompt_a.append(a["prompt"])
        out.prompt_o.append(mirror[pid]["prompt"])
        out.image_a.append(_image(a["chosen"], source, i, "chosen"))
        out.image_o.append(_image(a["rejected"], source, i, "rejected"))
        out.attributes.append(list(parse_attributes(a.get("attributes"))))
        out.pair_id.append(pid)
    if not len(out):
        raise ValueError(f"{source}: no anti row with a mirror row of the same pair_id; a pair set in the "
                         "pair schema (pluralign.data.pairs) is needed")
    return out


def _dataset_rows(path: Path) -> list[dict]:
    import datasets

    ds = datasets.load_from_disk(str(path)) if path.is_dir() else datasets.Dataset.from_parquet(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    for name, feature in ds.features.items():  # raw bytes, so that open_image checks the size before decoding
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return [ds[i] for i in range(len(ds))]


def _callable(spec: str):
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            return ep.load()
    module, sep, attr = spec.partition(":")
    if sep and module and attr and not Path(spec).exists():
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"pair set {spec!r}: cannot import {attr} from {module} ({exc})") from None
    return None


def load_triplets(spec: str, n: int = 0, seed: int = 0) -> Triplets:
    """Triplets from a registered pair set, ``module:function`` (called as ``f(n, seed)``) or a pair dataset."""
    fn = _callable(spec)
    if fn is not None:
        if n <= 0:
            raise ValueError(f"pair set {spec!r} draws as many pairs as asked for; give their number (n > 0)")
        try:
            rows = fn(n, seed)
        except TypeError as exc:  # a module:function that is not a pair set: its own signature error says little
            raise ValueError(f"pair set {spec!r}: calling it as f(n, seed) failed ({exc}); a pair set is a function "
                             "of (n, seed) that returns rows of prompt_a, image_o, image_a, attributes") from None
        return triplets_from_rows(rows, spec, n)
    path = Path(spec)
    if path.is_dir() or path.suffix == ".parquet":
        if not path.exists():
            raise FileNotFoundError(f"pair dataset {spec!r} does not exist")
        if path.is_dir() and not is_saved_dataset(path):
            raise ValueError(f"pair dataset {spec!r}: this folder is not a saved dataset (no state.json or "
                             "dataset_dict.json); pass what save_to_disk or `pluralign data build` wrote, or a .parquet "
                             "file")
        return triplets_from_rows(_dataset_rows(path), spec, n)
    from importlib.metadata import entry_points

    names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    raise ValueError(f"pair set {spec!r}: not a registered pair set ({', '.join(names) or 'none registered'} under "
                     f"{ENTRY_POINT_GROUP!r}), a module:function, a save_to_disk directory or a .parquet file")
