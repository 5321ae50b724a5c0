"""Where rows come from, and what they mean.

A *source spec* is a string:

* a directory written by ``Dataset.save_to_disk`` (``state.json`` inside);
* a ``.parquet`` file (or a directory of them);
* an ``imagefolder`` directory with ``metadata.jsonl`` / ``metadata.csv`` (``file_name`` + caption);
* a folder of images with ``captions.jsonl`` / ``captions.csv``, or the path of such a file
  (image paths are relative to the file's folder);
* anything else is a hub dataset id, optionally ``id:split`` (read with ``datasets.load_dataset``,
  streamed by default so nothing is downloaded in full).

The *schema* is detected from the column names (:data:`SCHEMAS`). Rows are streamed one at a time
with raw image values (bytes, ``{"bytes", "path"}`` dicts or file paths); images are decoded only
when used, through :func:`open_image`, which checks for zero-byte files, corrupt data,
decompression bombs (the pixel count is read from the header before any decoding) and, for
folders, paths that lead outside the folder. The trainer reads a pair dataset's images and prompts
with the same functions (:func:`pair_images`, :func:`pair_prompts`), so whatever ``pluralign data
validate`` accepts, training reads.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .degradations import to_rgb_pil
from .taxonomy import CATEGORIES

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class DataError(ValueError):
    """A bad input row: the message names the source, the row and the field, and what to do.

    Rows read from a metadata/captions file also carry that ``file`` and its ``line``, which is what
    a user opens an editor at."""

    def __init__(self, source: str, row: int | str | None, field: str | None, problem: str, kind: str = "invalid",
                 file: str | None = None, line: int | None = None):
        self.source, self.row, self.field, self.problem, self.kind = source, row, field, problem, kind
        self.file, self.line = file, line
        at = ""
        if line is not None:
            at = f" ({file}, line {line})" if file and file != source else f" (line {line})"
        where = f"{source}" + (f", row {row}" if row is not None else "") + at + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # survives the trip back from a worker process
        return (DataError, (self.source, self.row, self.field, self.problem, self.kind, self.file, self.line))

    def at_line(self, file: str | None, line: int | None) -> DataError:
        """This error, located at ``line`` of ``file``."""
        return DataError(self.source, self.row, self.field, self.problem, self.kind, file, line)

    def as_dict(self) -> dict:
        return {"source": self.source, "row": self.row, "field": self.field, "kind": self.kind,
                "problem": self.problem, "file": self.file, "line": self.line}


# schema -> (required columns, what the rows become)
SCHEMAS: dict[str, tuple[tuple[str, ...], str]] = {
    "pairs": (("prompt", "chosen", "rejected", "kind"), "rows already built by pluralign (validated, not rebuilt)"),
    "trl": (("prompt", "chosen", "rejected"), "general preference pairs"),
    "pickapic": (("caption", "jpg_0", "jpg_1", "label_0"), "general preference pairs (Pick-a-Pic v2)"),
    "prompt_set": (("original_prompt", "disorted_long_prompt", "selected"),
                   "the paper's anti-aesthetic prompt set: prompts without images"),
    "benchmark": (("P_o", "I_o", "P_a", "I_a"), "pre-rendered anti/mirror pairs"),
    "photo_set": (("image", "anti_aesthetic_caption", "major_classes"),
                  "curated photographs that show anti-aesthetic qualities, with their captions: the chosen "
                  "images of on-policy pairs (`pluralign data generate --suite`); objective_caption or "
                  "clean_caption, when present, is the content-only prompt"),
    "caption": (("<image: image|file_name|file|path|jpg|png>", "<caption: caption|text|prompt>"),
                "(image, caption) rows for anti/mirror pairs"),
}
IMAGE_COLUMNS = ("image", "file_name", "file", "path", "jpg", "png")
PHOTO_CLEAN_COLUMNS = ("objective_caption", "clean_caption")  # a photo set's content-only caption, if it has one
CAPTION_COLUMNS = ("caption", "text", "prompt")
BENCH_ALIASES = {"prompt_o": "P_o", "image_o": "I_o", "prompt_a": "P_a", "image_a": "I_a"}


def detect_schema(columns: list[str], where: str) -> str:
    """The schema name for these columns, or a DataError listing what was found and what is expected."""
    cols = set(columns) | {BENCH_ALIASES[c] for c in columns if c in BENCH_ALIASES}
    for name in ("pairs", "trl", "pickapic", "prompt_set", "benchmark", "photo_set"):
        if set(SCHEMAS[name][0]) <= cols:
            return name
    if any(c in cols for c in IMAGE_COLUMNS) and any(c in cols for c in CAPTION_COLUMNS):
        return "caption"
    expected = "; ".join(f"{k}: {', '.join(v[0])}" for k, v in SCHEMAS.items())
    raise DataError(where, None, None, f"columns {sorted(columns)} match no known schema. Expected one of -> {expected}",
                    kind="columns")


# ---------------------------------------------------------------- images
class OutsideFolder(ValueError):
    """An image path of a folder source that leads outside the folder."""


def _inside(base_dir: Path, p: Path) -> Path:
    """``p`` (relative to ``base_dir``) if it stays inside ``base_dir`` once ``..`` and symlinks are
    followed. A metadata file is data, often someone else's: it must not make a build read, and copy
    into a dataset, files from elsewhere on the machine."""
    full = p if p.is_absolute() else base_dir / p
    try:
        inside = full.resolve().is_relative_to(base_dir.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise OutsideFolder(f"image path {str(p)!r} leads outside the folder {base_dir} (an absolute path, '..' or "
                            "a symlink); copy the image into the folder")
    return full


def image_bytes(value, base_dir: Path | None = None) -> tuple[bytes | None, str | None]:
    """(raw bytes, path) of an image value; bytes are read from the path when only a path is given.

    With ``base_dir`` (a folder source), a path must stay inside that folder (:class:`OutsideFolder`)."""
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue(), None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            return bytes(data), path
        value = path
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, (str, Path)) and str(value):
        p = Path(value)
        if base_dir is not None:
            p = _inside(base_dir, p)
        if not p.is_file():
            raise FileNotFoundError(str(p))
        return p.read_bytes(), str(p)
    return None, None


def open_image(value, *, source: str, row, field: str, base_dir: Path | None = None,
               max_pixels: int = 64_000_000, min_side: int = 1) -> Image.Image:
    """Decode one image value into an RGB PIL image, or raise a DataError saying what is wrong.

    A problem with an image file names that file, not only the row that points at it. An EXIF
    orientation is applied, as ``datasets.Image`` does, so the pixels are the way a viewer shows them."""
    try:
        data, path = image_bytes(value, base_dir)
    except FileNotFoundError as exc:
        raise DataError(source, row, field, f"image file not found: {exc}", kind="missing_image") from None
    except OutsideFolder as exc:
        raise DataError(source, row, field, str(exc), kind="outside_folder") from None
    except OSError as exc:
        raise DataError(source, row, field, f"cannot read image file {exc.filename or value}: {exc.strerror or exc}",
                        kind="missing_image") from None
    if data is None:
        raise DataError(source, row, field, f"no image (got {type(value).__name__})", kind="missing_image")
    named = f"{path}: " if path else ""
    if len(data) == 0:
        raise DataError(source, row, field, f"{named}zero-byte image file", kind="zero_byte")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise DataError(source, row, field, f"{named}image too large to decode safely ({exc})",
                        kind="extreme_size") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(source, row, field, f"{named}not a readable image ({exc.__class__.__name__})",
                        kind="corrupt") from None
    w, h = img.size
    if w * h > max_pixels:
        raise DataError(source, row, field, f"{named}image is {w}x{h} = {w * h} pixels, over max_pixels={max_pixels} "
                        "(possible decompression bomb); raise max_pixels if it is genuine", kind="extreme_size")
    if min(w, h) < min_side:
        raise DataError(source, row, field, f"{named}image is {w}x{h}, a side is under min_side={min_side}",
                        kind="extreme_size")
    try:
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        upright = ImageOps.exif_transpose(img) if orientation not in (None, 1) else img
        rgb = to_rgb_pil(upright)
    except Image.DecompressionBombError as exc:
        raise DataError(source, row, field, f"{named}image too large to decode safely ({exc})",
                        kind="extreme_size") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(source, row, field, f"{named}corrupt image data ({exc})", kind="corrupt") from None
    if rgb is img and img.format in ("PNG", "JPEG"):
        # the stored file already holds exactly these RGB pixels: writers may keep it instead of re-encoding
        rgb.source_bytes = data
    return rgb


# ---------------------------------------------------------------- sources
@dataclass
class Source:
    """A stream of raw rows plus what they are. ``base_dir`` resolves relative image paths."""

    spec: str
    kind: str  # disk | parquet | imagefolder | captions | hub
    columns: list[str]
    schema: str
    base_dir: Path | None = None
    split: str = "train"
    streaming: bool = True
    table: Path | None = None  # imagefolder/captions: the metadata or captions file the rows come from

    @property
    def name(self) -> str:
        return self.spec

    @property
    def seed_key(self) -> str:
        """What a row's randomness is seeded from besides its index: the folder or file name for a local
        source, so that one folder given as ``data``, ``./data/`` or an absolute path (or copied to another
        machine) yields the same pairs; the spec itself for a hub dataset."""
        if self.kind == "hub":
            return self.spec
        return Path(self.spec).resolve().name or self.spec

    def locate(self, exc: DataError, row: dict) -> DataError:
        """``exc`` with the file and line ``row`` was read from, when it came from a table file."""
        line = getattr(row, "line", None)
        if line is None or exc.line is not None:
            return exc
        return exc.at_line(str(self.table), line)

    def rows(self, shard: int = 0, num_shards: int = 1) -> Iterator[tuple[int, dict]]:
        """(row index, raw row) for the rows of this shard (index % num_shards == shard)."""
        for i, row in enumerate(_iter_raw(self)):
            if i % num_shards == shard:
                yield i, _alias(row)


def _alias(row: dict) -> dict:
    for k, v in BENCH_ALIASES.items():
        if k in row and v not in row:
            row[v] = row[k]
    return row


def _metadata_file(d: Path) -> Path | None:
    for name in ("metadata.jsonl", "metadata.csv", "captions.jsonl", "captions.csv"):
        if (d / name).is_file():
            return d / name
    return None


class Row(dict):
    """A row of a metadata/captions file, with the ``line`` it starts on. A line that cannot be read
    as a row is an empty Row whose ``problem`` says why: it still counts as a row, so that
    ``on_error: skip`` counts it and goes on to the next line."""

    line: int | None = None
    problem: str | None = None


def _read_table_file(path: Path) -> Iterator[Row]:
    if path.suffix == ".jsonl":
        with path.open("rb") as f:  # decoded line by line, so a bad byte spoils one line, not the file
            for n, raw in enumerate(f, 1):
                row = Row()
                row.line = n
                try:
                    text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    row.problem = f"not UTF-8 text (byte {exc.start + 1} of the line)"
                    yield row
                    continue
                if not text.strip():
                    continue
                try:
                    value = json.loads(text.strip())
                except json.JSONDecodeError as exc:
                    row.problem = f"not valid JSON ({exc.msg} at column {exc.colno}); write one object per line"
                else:
                    if isinstance(value, dict):
                        row.update(value)
                    else:
                        row.problem = f"expected a JSON object {{...}}, got {type(value).__name__}"
                yield row
    else:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            try:
                for rec in reader:
                    row = Row()
                    row.line = reader.line_num
                    if None in rec:
                        row.problem = f"more values than the header's {len(reader.fieldnames)} columns"
                    elif any(v is None for v in rec.values()):
                        row.problem = f"fewer values than the header's {len(reader.fieldnames)} columns"
                    else:
                        row.update(rec)
                    yield row
            except (UnicodeDecodeError, csv.Error) as exc:  # the reader cannot find the next row: stop here
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"not valid CSV ({exc})"
                raise DataError(str(path), None, None, f"{reason} after line {reader.line_num}; fix the file",
                                kind="bad_line", file=str(path), line=reader.line_num + 1) from None


SAVED_DATASET_FILES = ("state.json", "dataset_info.json", "dataset_dict.json")


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder that ``datasets``' ``save_to_disk`` wrote (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / f).is_file() for f in SAVED_DATASET_FILES)


def _parquet_files(p: Path) -> list[Path]:
    return [p] if p.is_file() else sorted(p.glob("**/*.parquet"))


def _iter_raw(src: Source) -> Iterator[dict]:
    p = Path(src.spec)
    if src.kind in ("imagefolder", "captions"):
        yield from _read_table_file(src.table)
    elif src.kind == "parquet":
        import pyarrow.parquet as pq

        for f in _parquet_files(p):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=32):
                yield from batch.to_pylist()
    elif src.kind == "disk":
        import datasets

        ds = _undecoded(datasets.load_from_disk(str(p)))
        for batch in ds.iter(batch_size=32):
            keys = list(batch)
            for i in range(len(batch[keys[0]]) if keys else 0):
                yield {k: batch[k][i] for k in keys}
    else:
        yield from _undecoded(_load_hub(src))


def _undecoded(ds):
    """Image columns as raw {bytes, path} so decoding happens (checked) in :func:`open_image`."""
    import datasets

    feats = getattr(ds, "features", None) or {}
    for name, feat in feats.items():
        if isinstance(feat, datasets.Image) and feat.decode:
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return ds


def _load_hub(src: Source):
    import datasets

    name, _, split = src.spec.partition(":")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an org/name id: say it is missing
        raise DataError(src.spec, None, None, f"no such local path {name!r}; pass an existing folder or file, or a "
                        "hub dataset id (org/name)", kind="source")
    try:
        return datasets.load_dataset(name, split=split or src.split, streaming=src.streaming)
    except Exception as exc:  # offline, unknown id, missing auth: all end here with the same advice
        raise DataError(src.spec, None, None, f"could not load hub dataset {name!r} ({exc.__class__.__name__}: "
                        f"{str(exc)[:300]}). Check the id, your access and HF_HUB_OFFLINE, or pass a local path",
                        kind="source") from None


def _hub_columns(src: Source) -> list[str]:
    ds = _load_hub(src)
    cols = list(getattr(ds, "column_names", None) or [])
    if not cols:
        first = next(iter(ds), {})
        cols = list(first)
    return cols


def open_source(spec: str, split: str = "train", streaming: bool = True) -> Source:
    """Resolve a source spec, read its columns and detect its schema (errors name the spec)."""
    if spec.startswith("~"):  # a recipe's ~/photos: the shell would have expanded it on a command line
        spec = str(Path(spec).expanduser())
    p = Path(spec)
    if p.is_dir() and (p / "state.json").is_file():
        import datasets

        cols = list(datasets.load_from_disk(str(p)).column_names)
        src = Source(spec, "disk", cols, "", None, split, streaming)
    elif (p.is_file() and p.suffix == ".parquet") or (p.is_dir() and _parquet_files(p) and not _metadata_file(p)):
        import pyarrow.parquet as pq

        cols = list(pq.read_schema(_parquet_files(p)[0]).names)
        src = Source(spec, "parquet", cols, "", None, split, streaming)
    elif p.is_dir() or (p.is_file() and p.suffix in (".jsonl", ".csv")):
        meta = _metadata_file(p) if p.is_dir() else p
        if meta is None:
            raise DataError(spec, None, None, "folder has no metadata.jsonl/metadata.csv (imagefolder) nor "
                            "captions.jsonl/captions.csv; add one with a file_name and a caption column",
                            kind="columns")
        first = broken = None
        for row in _read_table_file(meta):
            if row.problem is None:
                first = row
                break
            broken = broken or row
        if first is None and broken is not None:
            raise DataError(str(meta), None, None, f"no readable row; the first: {broken.problem}", kind="columns",
                            file=str(meta), line=broken.line)
        if first is None:
            raise DataError(str(meta), None, None, "captions file has no rows", kind="columns")
        cols = list(first)
        kind = "imagefolder" if meta.name.startswith("metadata") else "captions"
        src = Source(str(p), kind, cols, "", meta.parent, split, streaming, table=meta)
    elif p.exists():
        raise DataError(spec, None, None, "unsupported file type; expected a directory, .parquet, .jsonl or .csv",
                        kind="source")
    else:
        src = Source(spec, "hub", [], "", None, split, streaming)
        src.columns = _hub_columns(src)
    src.columns = [c for c in src.columns]
    src.schema = detect_schema(src.columns, spec)
    return src


# ---------------------------------------------------------------- rows -> records
@dataclass
class Record:
    """A normalised row. ``kind``: caption (an image to degrade), preference (general pair),
    rendered (a pre-rendered anti/mirror pair), prompts (prompt set, no images), photo (a curated
    photograph that shows the anti-aesthetic qualities its ``prompt_a`` describes; ``prompt`` is its
    content-only caption or empty)."""

    kind: str
    source: str
    row: int
    prompt: str = ""
    image: object = None  # caption: the clean image; preference: chosen; rendered: I_o
    other: object = None  # preference: rejected; rendered: I_a
    prompt_a: str = ""
    attributes: tuple[str, ...] = ()
    image_field: str = "image"  # the column the clean image came from (for error messages)
    categories: tuple[str, ...] = ()  # photo: the adapter categories the photo shows (major_classes)
    base_dir: Path | None = None  # relative image paths are relative to this folder


def text_value(value, *, source: str, row, field: str) -> str:
    """A prompt value as text (a conversational prompt's contents joined), or a DataError."""
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):  # conversational prompt
        value = " ".join(str(m.get("content", "")) for m in value)
    if not isinstance(value, str):
        raise DataError(source, row, field, f"expected text, got {type(value).__name__}", kind="wrong_type")
    if not value.strip():
        raise DataError(source, row, field, "empty prompt", kind="empty_prompt")
    return value.strip()


def _text(row: dict, field: str, src: Source, i: int) -> str:
    return text_value(row.get(field), source=src.name, row=i, field=field)


def _first(row: dict, names: tuple[str, ...]) -> str:
    """The first of ``names`` the row has (:func:`check_row` has made sure there is one)."""
    return next((n for n in names if n in row), names[0])


def check_row(src: Source, i: int, row: dict) -> None:
    """Raise the DataError of a row that cannot be used at all: a line that is not a row, or a key
    the schema needs that the row lacks (a metadata file's rows need not all have the same keys).
    Callers add the file and line with :meth:`Source.locate`."""
    if getattr(row, "problem", None):
        raise DataError(src.name, i, None, row.problem, kind="bad_line")
    if src.schema == "caption":
        for names, what in ((IMAGE_COLUMNS, "image"), (CAPTION_COLUMNS, "caption")):
            if not any(n in row for n in names):
                raise DataError(src.name, i, None, f"missing key: no {what} key (one of {', '.join(names)}); the row "
                                f"has {sorted(map(str, row))}", kind="missing_field")
        return
    for key in SCHEMAS[src.schema][0]:
        if key not in row:
            raise DataError(src.name, i, key, f"missing key '{key}'; the row has {sorted(map(str, row))}",
                            kind="missing_field")


# ---------------------------------------------------------------- what training reads
def pair_images(ds, column: str, *, source: str, rows: list[int] | None = None) -> list[Image.Image]:
    """The images of one column of a pair dataset (a ``datasets.Dataset``: raw bytes, ``{bytes, path}``
    or decoded images), each read by :func:`open_image` as ``pluralign data validate`` reads it: what
    validate accepts, training reads, and a bad image is a DataError naming the dataset, row and
    column instead of a PIL traceback. ``rows`` are the dataset's row numbers of ``ds``'s rows, when
    ``ds`` is a ``select``ion of it."""
    values = _undecoded(ds.select_columns([column]))[column]
    rows = range(len(ds)) if rows is None else rows
    return [open_image(v, source=source, row=r, field=column) for r, v in zip(rows, values)]


def pair_prompts(ds, column: str = "prompt", *, source: str, rows: list[int] | None = None) -> list[str]:
    """The prompts of a pair dataset, read by :func:`text_value` as ``pluralign data validate`` reads
    them (a conversational prompt becomes its text; an empty or missing one is a DataError)."""
    rows = range(len(ds)) if rows is None else rows
    return [text_value(v, source=source, row=r, field=column) for r, v in zip(rows, ds[column])]


def parse_attributes(value) -> tuple[str, ...]:
    """Attribute or dimension names from a list or a comma/semicolon separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip().strip("[]")
        items = [t.strip().strip("'\"") for t in text.replace(";", ",").split(",")]
    else:
        items = [str(v) for v in value]
    return tuple(t.strip().lower().replace(" ", "_") for t in items if t and t.strip())



def parse_categories(value, *, source: str, row) -> tuple[str, ...]:
    """A photo set's ``major_classes``: a list (or comma-separated text) of adapter category names,
    each checked against the taxonomy so a misspelt one is named, not silently filed under none."""
    names = parse_attributes(value)
    if not names:
        raise DataError(source, row, "major_classes", "no category given; list the adapter categories the photo "
                        f"shows ({', '.join(CATEGORIES)})", kind="missing")
    for name in names:
        if name not in CATEGORIES:
            close = get_close_matches(name, list(CATEGORIES), n=1)
            raise DataError(source, row, "major_classes", f"unknown category {name!r}"
                            + (f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(CATEGORIES)}"),
                            kind="unknown_name")
    return names

def records(src: Source, rows: Iterator[tuple[int, dict]], ties: str = "drop", stats: dict | None = None
            ) -> Iterator[Record]:
    """Raw rows -> :class:`Record` (raising DataError at the first bad row)."""
    stats = stats if stats is not None else {}
    for i, row in rows:
        yield from row_records(src, i, row, ties, stats)


def row_records(src: Source, i: int, row: dict, ties: str = "drop", stats: dict | None = None) -> list[Record]:
    """One raw row -> its records. Field problems raise DataError; Pick-a-Pic ties follow ``ties``
    (drop: no record, counted in ``stats['dropped_ties']``; keep_both: both orders; error: raise)."""
    try:
        check_row(src, i, row)
        out = _row_records(src, i, row, ties, stats if stats is not None else {})
    except DataError as exc:
        raise src.locate(exc, row) from None
    for r in out:
        r.base_dir = src.base_dir
    return out


def _row_records(src: Source, i: int, row: dict, ties: str, stats: dict) -> list[Record]:
    s = src.schema
    if s in ("trl", "pairs"):
        return [Record("preference", src.name, i, _text(row, "prompt", src, i), row.get("chosen"), row.get("rejected"))]
    if s == "pickapic":
        caption = _text(row, "caption", src, i)
        label = row.get("label_0")
        try:
            label = float(label)
        except (TypeError, ValueError):
            raise DataError(src.name, i, "label_0", f"expected 0, 0.5 or 1, got {label!r}", kind="wrong_type") from None
        a, b = row.get("jpg_0"), row.get("jpg_1")
        if label == 0.5:
            if ties == "error":
                raise DataError(src.name, i, "label_0", "tie (0.5); set ties: drop or keep_both", kind="tie")
            if ties == "drop":
                stats["dropped_ties"] = stats.get("dropped_ties", 0) + 1
                return []
            return [Record("preference", src.name, i, caption, a, b), Record("preference", src.name, i, caption, b, a)]
        if label in (0.0, 1.0):
            return [Record("preference", src.name, i, caption, a if label == 1.0 else b, b if label == 1.0 else a)]
        raise DataError(src.name, i, "label_0", f"expected 0, 0.5 or 1, got {label}", kind="wrong_type")
    if s == "benchmark":
        attrs = parse_attributes(row.get("attributes", row.get("selected")))
        return [Record("rendered", src.name, i, _text(row, "P_o", src, i), row.get("I_o"), row.get("I_a"),
                       _text(row, "P_a", src, i), attrs)]
    if s == "photo_set":
        clean = next((c for c in PHOTO_CLEAN_COLUMNS if row.get(c) not in (None, "")), None)
        return [Record("photo", src.name, i, _text(row, clean, src, i) if clean else "", row.get("image"), None,
                       _text(row, "anti_aesthetic_caption", src, i), (),
                       categories=parse_categories(row.get("major_classes"), source=src.name, row=i))]
    if s == "prompt_set":
        return [Record("prompts", src.name, i, _text(row, "original_prompt", src, i), None, None,
                       _text(row, "disorted_long_prompt", src, i), parse_attributes(row.get("selected")))]
    img_col, cap_col = _first(row, IMAGE_COLUMNS), _first(row, CAPTION_COLUMNS)
    return [Record("caption", src.name, i, _text(row, cap_col, src, i), row.get(img_col), image_field=img_col)]
