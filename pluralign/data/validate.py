"""Check a source or a built dataset before training on it.

Reports every problem (not just the first): missing or unrecognised columns, values of the wrong
type, unreadable/corrupt images, zero-byte files, extreme sizes (the pixel count is read from the
header before decoding, so a decompression bomb is refused without being expanded), empty prompts,
ties (Pick-a-Pic ``label_0 = 0.5``, or identical chosen and rejected images) and duplicate rows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from . import sources as S

# which fields of each schema hold text and images
_FIELDS = {
    "pairs": (("prompt",), ("chosen", "rejected")),
    "trl": (("prompt",), ("chosen", "rejected")),
    "pickapic": (("caption",), ("jpg_0", "jpg_1")),
    "prompt_set": (("original_prompt", "disorted_long_prompt"), ()),
    "benchmark": (("P_o", "P_a"), ("I_o", "I_a")),
}


@dataclass
class Report:
    source: str
    schema: str = ""
    rows: int = 0
    problems: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> Counter:
        return Counter(p["kind"] for p in self.problems)

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.source}: schema {self.schema or '?'}, {self.rows} rows, {len(self.problems)} problems"]
        for kind, n in sorted(self.counts().items()):
            lines.append(f"  {kind}: {n}")
        for p in self.problems[:limit]:
            where = (f"row {p['row']}" if p["row"] is not None else "source") + (f", field '{p['field']}'" if p["field"] else "")
            lines.append(f"  - [{p['kind']}] {where}: {p['problem']}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _fields_for(src: S.Source, row: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if src.schema == "caption":
        return (S._first(row, S.CAPTION_COLUMNS),), (S._first(row, S.IMAGE_COLUMNS),)
    return _FIELDS[src.schema]


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
    seen: dict[str, int] = {}
    rows = src.rows()
    for i, row in tqdm(rows, desc=f"validate {spec}", unit="row", disable=not progress):
        if max_rows is not None and report.rows >= max_rows:
            break
        report.rows += 1
        problems_before = len(report.problems)
        text_fields, image_fields = _fields_for(src, row)
        digest = hashlib.blake2b(digest_size=16)
        for f in text_fields:
            try:
                value = S._text(row, f, src, i)
                digest.update(value.encode())
            except S.DataError as exc:
                report.problems.append(exc.as_dict())
        raw = {}
        for f in image_fields:
            try:
                S.open_image(row.get(f), source=src.name, row=i, field=f, base_dir=src.base_dir,
                             max_pixels=max_pixels, min_side=min_side)
                raw[f] = S.image_bytes(row.get(f), src.base_dir)[0]
                digest.update(hashlib.blake2b(raw[f], digest_size=16).digest())
            except S.DataError as exc:
                report.problems.append(exc.as_dict())
        if src.schema == "pickapic":
            try:
                label = float(row.get("label_0"))
                if label == 0.5:
                    report.problems.append(S.DataError(src.name, i, "label_0", "tie (label_0 = 0.5): drop it or "
                                                       "build with ties: keep_both", kind="tie").as_dict())
                elif label not in (0.0, 1.0):
                    raise ValueError
            except (TypeError, ValueError):
                report.problems.append(S.DataError(src.name, i, "label_0", f"expected 0, 0.5 or 1, got "
                                                   f"{row.get('label_0')!r}", kind="wrong_type").as_dict())
        if len(raw) == 2 and len(set(raw.values())) == 1 and src.schema in ("trl", "pairs", "pickapic"):
            report.problems.append(S.DataError(src.name, i, None, "chosen and rejected are the same image (a tie)",
                                               kind="tie").as_dict())
        key = digest.hexdigest()
        if len(report.problems) > problems_before:
            continue  # an incomplete row cannot be compared with others
        if key in seen:
            report.problems.append(S.DataError(src.name, i, None, f"duplicate of row {seen[key]}",
                                               kind="duplicate").as_dict())
        else:
            seen[key] = i
    return report
