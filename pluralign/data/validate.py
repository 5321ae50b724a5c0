"""Check a source or a built dataset before training on it.

Reports every problem (not just the first): missing or unrecognised columns, lines that are not
rows and rows that lack a key, values of the wrong type, unreadable/corrupt images, zero-byte files,
image paths that lead outside a folder, extreme sizes (the pixel count is read from the header
before decoding, so a decompression bomb is refused without being expanded), empty prompts, ties
(Pick-a-Pic ``label_0 = 0.5``, or identical chosen and rejected images), duplicate rows, and in
built datasets unknown kinds, attributes and categories and severities that are not numbers in [0, 1].

Images and prompts are read by the functions the trainer reads them with (``sources.open_image``,
``sources.text_value``), so a dataset that validates is one that trains.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import sources as S
from .taxonomy import ATTRIBUTES, CATEGORIES, DIMENSIONS

# which fields of each schema hold text and images
_FIELDS = {
    "pairs": (("prompt",), ("chosen", "rejected")),
    "trl": (("prompt",), ("chosen", "rejected")),
    "pickapic": (("caption",), ("jpg_0", "jpg_1")),
    "prompt_set": (("original_prompt", "disorted_long_prompt"), ()),
    "benchmark": (("P_o", "P_a"), ("I_o", "I_a")),
    "photo_set": (("anti_aesthetic_caption",), ("image",)),
}
KINDS = ("anti", "mirror", "general")


@dataclass
class Report:
    source: str
    schema: str = ""
    rows: int = 0
    problems: list[dict] = field(default_factory=list)
    trainable: bool = False  # `pluralign train --dataset SOURCE` reads it (a built dataset or trl-style pairs)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> Counter:
        return Counter(p["kind"] for p in self.problems)

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.source}: schema {self.schema or '?'}, {self.rows} rows, {len(self.problems)} problems"]
        if self.schema:
            lines.append("  training: " + ("pluralign train reads it as it is (--dataset)" if self.trainable else
                                           "a source for pluralign data build; train on the dataset it builds"))
        for kind, n in sorted(self.counts().items()):
            lines.append(f"  {kind}: {n}")
        for p in self.problems[:limit]:
            where = f"row {p['row']}" if p["row"] is not None else "source"
            if p.get("line") is not None:
                where += f" ({p['file']}, line {p['line']})" if p.get("file") else f" (line {p['line']})"
            where += f", field '{p['field']}'" if p["field"] else ""
            lines.append(f"  - [{p['kind']}] {where}: {p['problem']}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _fields_for(src: S.Source, row: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if src.schema == "caption":
        return (S._first(row, S.CAPTION_COLUMNS),), (S._first(row, S.IMAGE_COLUMNS),)
    return _FIELDS[src.schema]


def _unknown(name: str, known, what: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown {what} {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def _names(src: S.Source, i: int, row: dict) -> list[S.DataError]:
    """Problems with the taxonomy names and numbers of a row: a build would carry an unknown
    attribute or category into the dataset silently, and training would then file the pair under
    no adapter (or, for a NaN severity, under a meaningless weight)."""
    out = []

    def bad(field_, problem, kind):
        out.append(S.DataError(src.name, i, field_, problem, kind=kind))

    if src.schema == "pairs":
        kind = row.get("kind")
        if kind not in KINDS:
            bad("kind", _unknown(str(kind), KINDS, "kind") + f"; expected one of {', '.join(KINDS)}", "unknown_name")
        category = row.get("category")
        if category not in (None, "") and category not in CATEGORIES:
            bad("category", _unknown(str(category), CATEGORIES, "category"), "unknown_name")
        if "severity" in row:
            sev = row["severity"]
            if isinstance(sev, bool) or not isinstance(sev, (int, float)) or not math.isfinite(sev) or not 0 <= sev <= 1:
                bad("severity", f"expected a number in [0, 1], got {sev!r}", "bad_number")
    if src.schema == "photo_set":
        try:
            S.parse_categories(row.get("major_classes"), source=src.name, row=i)
        except S.DataError as exc:
            out.append(exc)
    if src.schema in ("pairs", "benchmark") and row.get("attributes") is not None:
        for name in S.parse_attributes(row["attributes"]):
            if name not in ATTRIBUTES and name not in DIMENSIONS:
                bad("attributes", _unknown(name, ATTRIBUTES, "attribute"), "unknown_name")
    return out


def _train_reads(src: S.Source) -> bool:
    """Whether ``pluralign train --dataset`` opens this path: a ``save_to_disk`` folder, a parquet
    file, or a folder with parquet files at its top (the trainer does not look deeper)."""
    path = Path(src.spec)
    return src.kind == "disk" or (src.kind == "parquet" and (path.is_file() or any(path.glob("*.parquet"))))


def validate_source(spec: str, *, max_pixels: int = 64_000_000, min_side: int = 8, split: str = "train",
                    max_rows: int | None = None, progress: bool = True) -> Report:
    """Every problem of every row of ``spec`` (a path or hub id, as for building)."""
    report = Report(spec)
    try:
        src = S.open_source(spec, split)
    except S.DataError as exc:
        report.problems.append(exc.as_dict())
        return report
    report.schema = src.schema
    report.trainable = src.schema in ("pairs", "trl") and _train_reads(src)
    seen: dict[str, int] = {}
    rows = src.rows()
    try:
        for i, row in tqdm(rows, desc=f"validate {spec}", unit="row", disable=not progress):
            if max_rows is not None and report.rows >= max_rows:
                break
            report.rows += 1
            problems = _row_problems(src, i, row, max_pixels, min_side, seen)
            report.problems += [src.locate(p, row).as_dict() for p in problems]
    except S.DataError as exc:  # the file cannot be read past this point
        report.problems.append(exc.as_dict())
    return report


def _row_problems(src: S.Source, i: int, row: dict, max_pixels: int, min_side: int, seen: dict[str, int]
                  ) -> list[S.DataError]:
    try:
        S.check_row(src, i, row)
    except S.DataError as exc:
        return [exc]  # nothing else of the row can be read
    problems = []
    text_fields, image_fields = _fields_for(src, row)
    digest = hashlib.blake2b(digest_size=16)
    for f in text_fields:
        try:
            value = S._text(row, f, src, i)
            digest.update(value.encode())
        except S.DataError as exc:
            problems.append(exc)
    raw = {}
    for f in image_fields:
        try:
            S.open_image(row.get(f), source=src.name, row=i, field=f, base_dir=src.base_dir,
                         max_pixels=max_pixels, min_side=min_side)
            raw[f] = S.image_bytes(row.get(f), src.base_dir)[0]
            digest.update(hashlib.blake2b(raw[f], digest_size=16).digest())
        except S.DataError as exc:
            problems.append(exc)
    if src.schema == "pickapic":
        try:
            label = float(row.get("label_0"))
            if label == 0.5:
                problems.append(S.DataError(src.name, i, "label_0", "tie (label_0 = 0.5): drop it or build with ties: "
                                            "keep_both", kind="tie"))
            elif label not in (0.0, 1.0):
                raise ValueError
        except (TypeError, ValueError):
            problems.append(S.DataError(src.name, i, "label_0", f"expected 0, 0.5 or 1, got {row.get('label_0')!r}",
                                        kind="wrong_type"))
    if len(raw) == 2 and len(set(raw.values())) == 1 and src.schema in ("trl", "pairs", "pickapic"):
        problems.append(S.DataError(src.name, i, None, "chosen and rejected are the same image (a tie)", kind="tie"))
    problems += _names(src, i, row)
    if problems:
        return problems  # an incomplete row cannot be compared with others
    key = digest.hexdigest()
    if key in seen:
        return [S.DataError(src.name, i, None, f"duplicate of row {seen[key]}", kind="duplicate")]
    seen[key] = i
    return []
