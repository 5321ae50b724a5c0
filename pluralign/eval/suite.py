"""Eval suites: rows of (P_o, P_a, requested attributes, generation seed).

Every metric of the eval loop is *paired*: I_o is generated from P_o and I_a from P_a with the
same seed, so the only thing that differs between the two images is the request. A suite is just
the list of those rows; it can come from

- a source another package registers (:class:`SuiteSource`), such as the embedded toy world, whose rows
  also carry the scene for its content checker;
- a prompt file, JSONL or CSV with ``prompt_o, prompt_a, attributes`` and an optional ``seed`` (:func:`from_file`);
- the paper's anti-aesthetic prompt set (``original_prompt, disorted_long_prompt, selected``; :func:`from_anti_aesthetic`);
- plain prompts P_o plus the attributes to request, rewritten to P_a by
  :func:`pluralign.data.rewrite.rewrite_prompt` (:func:`from_prompts`).

:func:`load_suite` picks one of those from a single string (a registered name such as ``toy``, a path,
or ``hf:REPO``).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pluralign.data.rewrite import rewrite_prompt
from pluralign.data.taxonomy import ATTRIBUTES, dimension_key, dimension_request, is_requestable


class SuiteError(ValueError):
    """A suite file or row is malformed; the message names the file, row and field."""


@dataclass
class EvalRow:
    """One paired eval case. ``seed`` seeds the generator of both I_o and I_a."""

    prompt_o: str
    prompt_a: str
    attributes: list[str]
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_o": self.prompt_o, "prompt_a": self.prompt_a, "attributes": list(self.attributes),
                "seed": self.seed, "meta": dict(self.meta)}


def _split_attributes(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise SuiteError(f"{where}: field 'attributes': {value!r} is not a JSON list; "
                                 "write a list or names separated by ',', ';' or '|'") from None
        else:
            value = [v for v in re.split(r"[,;|]", text)]
    if not isinstance(value, (list, tuple)):
        raise SuiteError(f"{where}: field 'attributes': expected a list of attribute names, got {value!r}")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise SuiteError(f"{where}: field 'attributes': {v!r} is not an attribute name (a string)")
        v = v.strip()
        if v:
            out.append(v)
    return out


def _check_attributes(attributes: list[str], where: str) -> None:
    for a in attributes:
        if not is_requestable(a):
            close = difflib.get_close_matches(a, list(ATTRIBUTES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(sorted(ATTRIBUTES))}"
            raise SuiteError(f"{where}: field 'attributes': unknown attribute {a!r}{hint} "
                             "(a whole VisionReward dimension is written dimension:NAME)")


def make_row(record: dict[str, Any], where: str, default_seed: int) -> EvalRow:
    """Validate one record (a dict from a file or a dataset) into an :class:`EvalRow`."""
    for key in ("prompt_o", "prompt_a"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            raise SuiteError(f"{where}: field '{key}' is missing or empty; every row needs prompt_o and prompt_a")
    if "attributes" not in record:
        raise SuiteError(f"{where}: field 'attributes' is missing; give the requested attribute names "
                         "(an empty list is allowed for ordinary-only rows)")
    attributes = _split_attributes(record.get("attributes"), where)
    _check_attributes(attributes, where)
    seed = record.get("seed")
    if seed is None or seed == "":
        seed = default_seed
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise SuiteError(f"{where}: field 'seed': {seed!r} is not an integer") from None
    if not -(2**63) <= seed < 2**64:  # what torch.Generator.manual_seed takes
        raise SuiteError(f"{where}: field 'seed': {seed} is outside the range a torch generator takes (-2**63 to "
                         "2**64 - 1); give a smaller seed")
    meta = {k: v for k, v in record.items() if k not in ("prompt_o", "prompt_a", "attributes", "seed")}
    return EvalRow(record["prompt_o"].strip(), record["prompt_a"].strip(), attributes, seed, meta)


def _limit(rows: list[EvalRow], n: int | None) -> list[EvalRow]:
    return rows if not n or n <= 0 else rows[:n]


def from_records(records: Iterable[dict[str, Any]], source: str = "<records>", n: int | None = None,
                 seed: int = 0) -> list[EvalRow]:
    """Rows from dicts with ``prompt_o, prompt_a, attributes[, seed]``; missing seeds are ``seed + index``."""
    rows = [make_row(dict(r), f"{source}: row {i + 1}", seed + i) for i, r in enumerate(records)]
    return _limit(rows, n)


def read_text(path: Path) -> str:
    """A prompt file's text; a file that is not UTF-8 is a ``SuiteError`` naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark, as spreadsheet exports write, is not text
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def jsonl_records(path: Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL prompt file; a line that is not a JSON object
    is a ``SuiteError`` naming the file and the line."""
    out = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SuiteError(f"{path}: line {lineno}: not valid JSON ({exc.msg}); write one object per line") from None
        if not isinstance(obj, dict):
            raise SuiteError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        out.append((lineno, obj))
    return out


def from_file(path: str | Path, n: int | None = None, seed: int = 0) -> list[EvalRow]:
    """Rows from a JSONL (one object per line) or CSV (header row) prompt file."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found; pass 'toy', a .jsonl/.csv file or hf:REPO")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = [make_row(r, f"{path}: line {line}", seed + i) for i, (line, r) in enumerate(jsonl_records(path))]
        return _limit(rows, n)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""), strict=True)
        try:
            missing = [c for c in ("prompt_o", "prompt_a", "attributes") if c not in (reader.fieldnames or [])]
            if missing:
                raise SuiteError(f"{path}: header lacks column(s) {missing}; expected prompt_o,prompt_a,attributes[,seed]")
            rows = []
            width = len(reader.fieldnames)
            for i, r in enumerate(reader):
                extra = r.pop(None, None)  # more values than columns: csv keeps them under the key None
                if extra and any(v.strip() for v in extra):  # a trailing comma leaves only empty ones
                    raise SuiteError(f"{path}: line {reader.line_num}: {width + len(extra)} values for the header's "
                                     f"{width} columns; quote a field that holds commas, e.g. \"blurry,underexposed\", or separate "
                                     "attribute names with ';'")
                short = [k for k in ("prompt_o", "prompt_a", "attributes") if r[k] is None]
                if short:
                    raise SuiteError(f"{path}: line {reader.line_num}: fewer values than the header's {width} columns "
                                     f"({', '.join(short)} missing)")
                rows.append(make_row({k: v for k, v in r.items() if v is not None}, f"{path}: line {reader.line_num}",
                                     seed + i))
        except csv.Error as exc:
            raise SuiteError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
        return _limit(rows, n)
    raise SuiteError(f"{path}: unsupported suite file type {suffix!r}; use .jsonl or .csv")


@dataclass(frozen=True)
class SuiteSource:
    """A named suite that another package provides (``load_suite(name)``), e.g. the toy world.

    ``records(n, seed)`` returns dicts with ``prompt_o, prompt_a, attributes[, seed]`` (other keys
    go to ``EvalRow.meta``); ``content_checker()``, if given, loads the object whose ``check(images,
    rows)`` says whether each image shows the row's requested content. Sources register through
    the ``pluralign.suites`` entry-point group (an entry point names a SuiteSource or a function
    returning one) or :func:`register_suite`, so the eval loop never imports the packages that
    provide them.
    """

    records: Callable[[int, int], list[dict[str, Any]]]
    default_n: int = 72
    default_seed: int = 0
    content_checker: Callable[[], Any] | None = None
    # an intent-scorer spec (pluralign.rewards.intent_scorers) that judges the suite's attributes no verifier
    # rule measures; the eval uses it with attribute_judge: auto
    attribute_judge: str | None = None


ENTRY_POINT_GROUP = "pluralign.suites"
_SOURCES: dict[str, SuiteSource] = {}
_discovered = False


def register_suite(name: str, source: SuiteSource) -> None:
    """Make ``name`` a suite of :func:`load_suite` and the eval config's ``suite`` option."""
    _SOURCES[name] = source


def suite_source(name: str) -> SuiteSource | None:
    """The registered source called ``name`` (entry points are read once, on first use)."""
    global _discovered
    if not _discovered:
        _discovered = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in _SOURCES:
                obj = ep.load()
                _SOURCES[ep.name] = obj if isinstance(obj, SuiteSource) else obj()
    return _SOURCES.get(name)


def from_source(name: str, n: int | None = None, seed: int | None = None) -> list[EvalRow]:
    """Rows of the registered suite ``name``; ``n``/``seed`` default to the source's own."""
    source = suite_source(name)
    if source is None:
        raise SuiteError(f"no suite named {name!r} is registered (entry-point group {ENTRY_POINT_GROUP!r}); "
                         "pass a .jsonl/.csv file or hf:REPO")
    seed = source.default_seed if seed is None else seed
    return from_records(source.records(n or source.default_n, seed), f"{name} suite", seed=seed)


def _attributes_from_selected(selected: Any, where: str) -> tuple[list[str], list[str]]:
    """Map the paper's ``selected`` entries to requests.

    An entry may be an attribute name (``blurry``), a VisionReward dimension (``color brightness``) or a
    ``dimension: option`` string. A dimension becomes the request ``dimension:NAME``, which the eval
    measures by any of the rules in ``taxonomy.DIMENSION_MEASURES`` or, for a judge-only dimension, by
    the attribute judge. Entries that map to nothing are returned separately so they stay visible in
    ``meta`` instead of silently vanishing.
    """
    entries = _split_attributes(selected, where) if selected is not None else []
    attributes, unmapped = [], []
    for entry in entries:
        key = re.sub(r"[\s\-]+", "_", entry.split(":")[0].strip().lower())
        if key in ATTRIBUTES:
            name = key
        elif dimension_key(key) is not None:
            name = dimension_request(dimension_key(key))
        else:
            unmapped.append(entry)
            continue
        if name not in attributes:
            attributes.append(name)
    return attributes, unmapped


def from_anti_aesthetic(source: Any, n: int | None = None, seed: int = 0, split: str = "train") -> list[EvalRow]:
    """Rows from the paper's prompt-set schema: ``original_prompt, disorted_long_prompt, selected``.

    ``source`` is a ``datasets.Dataset``, a local dataset directory/file readable by
    ``datasets.load_dataset``, or a hub id (needs hub access).
    """
    name = str(source)
    if isinstance(source, (str, Path)):
        import datasets

        path = Path(source)
        try:
            if path.is_dir() and (path / "dataset_info.json").exists():
                ds = datasets.load_from_disk(str(path))
            elif path.is_file():
                fmt = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower())
                if fmt is None:
                    raise SuiteError(f"{path}: unsupported file type for the anti-aesthetic schema")
                ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
            else:
                ds = datasets.load_dataset(str(source), split=split)
        except SuiteError:
            raise
        except Exception as exc:  # datasets raises many types; say what to do
            raise SuiteError(f"{name}: could not load the anti-aesthetic prompt set ({exc}); "
                             "give a local copy or enable hub access") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        ds = source
    columns = list(getattr(ds, "column_names", []) or [])
    missing = [c for c in ("original_prompt", "disorted_long_prompt") if c not in columns]
    if missing:
        raise SuiteError(f"{name}: column(s) {missing} missing; the anti-aesthetic schema has "
                         f"original_prompt, disorted_long_prompt, selected (found {columns})")
    rows = []
    for i, rec in enumerate(ds):
        if n and n > 0 and len(rows) >= n:
            break
        where = f"{name}: row {i}"
        attributes, unmapped = _attributes_from_selected(rec.get("selected"), where)
        record = {"prompt_o": rec["original_prompt"], "prompt_a": rec["disorted_long_prompt"],
                  "attributes": attributes, "seed": seed + i, "selected": rec.get("selected")}
        if unmapped:
            record["unmapped"] = unmapped
        rows.append(make_row(record, where, seed + i))
    return rows


def from_prompts(prompts: Sequence[str], attributes: Sequence[str] | Sequence[Sequence[str]], seed: int = 0,
                 n: int | None = None) -> list[EvalRow]:
    """Rows from ordinary prompts P_o; P_a is written by ``pluralign.data.rewrite.rewrite_prompt``.

    ``attributes`` is either one list of names, assigned round-robin (one per prompt), or one
    list of names per prompt.
    """
    if not prompts:
        raise SuiteError("from_prompts: no prompts given")
    if not attributes:
        raise SuiteError("from_prompts: no attributes given; name at least one attribute to request")
    per_prompt = not isinstance(attributes[0], str)
    if per_prompt and len(attributes) != len(prompts):
        raise SuiteError(f"from_prompts: {len(prompts)} prompts but {len(attributes)} attribute lists")
    rows = []
    for i, p in enumerate(prompts):
        attrs = list(attributes[i]) if per_prompt else [attributes[i % len(attributes)]]
        where = f"prompt {i + 1}"
        _check_attributes(attrs, where)
        rows.append(EvalRow(p, rewrite_prompt(p, attrs, seed + i), attrs, seed + i, {}))
    return _limit(rows, n)


def load_suite(spec: str, n: int | None = None, seed: int | None = None) -> list[EvalRow]:
    """A registered suite name (``toy``) | a ``.jsonl``/``.csv`` prompt file | ``hf:REPO`` or a local file/dir
    in the paper's schema."""
    if suite_source(spec) is not None:
        return from_source(spec, n, seed)
    if spec.startswith("hf:"):
        return from_anti_aesthetic(spec[3:], n, seed or 0)
    path = Path(spec)
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return from_anti_aesthetic(path, n, seed or 0)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json", ".csv"):
        # A file in the paper's schema is recognised by its columns.
        head = read_text(path)[:4096]
        if "disorted_long_prompt" in head and "prompt_a" not in head:
            return from_anti_aesthetic(path, n, seed or 0)
    return from_file(path, n, seed or 0)
