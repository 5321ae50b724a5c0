"""The prompt pairs (P_o, P_a, requested attributes, seed) that ``data generate`` samples images for.

A ``--suite`` is one of:

* a registered suite (``toy``, through the ``pluralign.suites`` entry points), a ``.jsonl``/``.csv`` file of
  ``prompt_o, prompt_a, attributes[, seed]`` or ``hf:REPO`` (or a local copy) in the anti-aesthetic prompt-set
  schema: read by :func:`pluralign.eval.suite.load_suite`, exactly as ``pluralign eval --suite`` reads it;
* plain captions: a ``.txt`` file (one caption a line) or a ``.jsonl``/``.csv`` file whose rows have a caption
  (``caption``, ``text``, ``prompt`` or ``prompt_o``) and no ``prompt_a``. Each caption gets 1-4 attributes of
  one adapter category (categories taken round-robin, prompt-only ones such as grief included) and is
  rewritten to P_a by the taxonomy rewriter (:func:`pluralign.data.rewrite.apply_attributes`);
* a curated photo set (``image, anti_aesthetic_caption, major_classes`` and a content-only
  ``objective_caption`` or ``clean_caption``; a folder, parquet or dataset as ``data validate`` reads it): the
  photograph is the one P_a candidate and the generator samples the K clean P_o candidates it is paired with.
  Its attributes are the taxonomy attributes of its categories that the caption names.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import re
from pathlib import Path

from pluralign.data import sources as S
from pluralign.data.pairs import category_for
from pluralign.data.rewrite import apply_attributes, sample_attributes
from pluralign.data.taxonomy import ATTRIBUTES
from pluralign.eval.suite import EvalRow, SuiteError, jsonl_records, load_suite, read_text, suite_source

from .config import GenerateConfig

CAPTION_KEYS = ("caption", "text", "prompt", "prompt_o")
PAIR_KEYS = ("prompt_a", "disorted_long_prompt")


def candidate_seeds(seed: int, row_seed: int, k: int) -> list[int]:
    """The ``k`` generation seeds of a prompt pair: candidate j gets ``seeds[j]`` under P_a *and* under P_o,
    so the two images of a seed differ only by the prompt. A pure function of (seed, row seed, j)."""
    out = []
    for j in range(k):
        h = hashlib.blake2b(f"onpolicy|{seed}|{row_seed}|{j}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(h, "little") & 0x7FFFFFFF)
    return out


def _csv_records(path: Path) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), strict=True)
    try:
        return [(reader.line_num, dict(r)) for r in reader]
    except csv.Error as exc:
        raise SuiteError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(read_text(path).split("\n", 1)[0]))
        return next(reader, [])
    records = jsonl_records(path)
    return list(records[0][1]) if records else []


def captions_to_rows(captions: list[tuple[str, str, int | None]], cfg: GenerateConfig) -> list[EvalRow]:
    """``(where, caption, seed or None)`` -> rows with sampled attributes and the rewritten P_a.

    Categories go round-robin (in a seeded order per block, as ``data build`` assigns them), so each gets
    the same share of prompts; the attributes and the phrasing are seeded by (suite_seed, index)."""
    base = cfg.suite_seed or 0
    rows = []
    for i, (where, caption, seed) in enumerate(captions):
        caption = " ".join(caption.split())
        if not caption:
            raise SuiteError(f"{where}: empty caption; remove the line or write the caption")
        category = category_for(i, list(cfg.categories), base)
        rng = random.Random(f"onpolicy-attrs|{base}|{i}")
        attrs = sample_attributes(rng, category, cfg.min_attributes, cfg.max_attributes, degradable=False)
        row_seed = base + i if seed is None else seed
        rows.append(EvalRow(caption, apply_attributes(caption, attrs, row_seed).text, attrs, row_seed,
                            {"category": category, "rewritten": True}))
    return rows


def _caption_rows(path: Path, cfg: GenerateConfig) -> list[EvalRow]:
    if path.suffix.lower() == ".txt":
        captions = [(f"{path}: line {n}", line, None) for n, line in enumerate(read_text(path).splitlines(), 1)
                    if line.strip()]
    else:
        records = _csv_records(path) if path.suffix.lower() == ".csv" else jsonl_records(path)
        captions = []
        for line, rec in records:
            where = f"{path}: line {line}"
            key = next((k for k in CAPTION_KEYS if k in rec), None)
            if key is None or not isinstance(rec[key], str):
                raise SuiteError(f"{where}: no caption; give a text field named one of {', '.join(CAPTION_KEYS)} "
                                 f"(the row has {sorted(rec)})")
            seed = rec.get("seed")
            if seed not in (None, ""):
                try:
                    seed = int(seed)
                except (TypeError, ValueError):
                    raise SuiteError(f"{where}: field 'seed': {seed!r} is not an integer") from None
            else:
                seed = None
            captions.append((where, rec[key], seed))
    if not captions:
        raise SuiteError(f"{path}: no captions in the file")
    if cfg.n_prompts:
        captions = captions[:cfg.n_prompts]
    return captions_to_rows(captions, cfg)


def infer_attributes(text: str, categories) -> list[str]:
    """The attributes of ``categories`` that ``text`` names: the attribute's own name or one of its prompt
    phrasings (whole words, any case), in taxonomy order. A curated caption says what the photo shows."""
    low = " ".join(text.lower().split())
    found = []
    for name, attr in ATTRIBUTES.items():
        if attr.category not in categories:
            continue
        phrases = [name.replace("_", " "), name.replace("_", "-"), *(t.lower() for t in attr.templates)]
        if any(re.search(rf"(?<![a-z]){re.escape(p)}(?![a-z])", low) for p in phrases):
            found.append(name)
    return found


def photo_rows(spec: str, cfg: GenerateConfig) -> list[EvalRow] | None:
    """The rows of a curated photo set at ``spec`` (None when it is not one). Every photo is read and checked
    here, before any image is generated; an error names the source, row and field."""
    try:
        src = S.open_source(spec)
    except S.DataError:
        return None
    if src.schema != "photo_set":
        return None
    base = cfg.suite_seed or 0
    rows = []
    for i, raw in src.rows():
        rec = S.row_records(src, i, raw)[0]
        if not rec.prompt:
            raise src.locate(S.DataError(src.name, i, "objective_caption", "no content-only caption: the generator "
                                         "needs P_o for the clean images the photo is paired with; add an "
                                         "objective_caption (or clean_caption) column", kind="missing_field"), raw)
        try:
            S.open_image(rec.image, source=src.name, row=i, field="image", base_dir=src.base_dir)
            data, _ = S.image_bytes(rec.image, src.base_dir)
        except S.DataError as exc:
            raise src.locate(exc, raw) from None
        meta = {"category": rec.categories[0], "categories": list(rec.categories), "photo_row": i,
                "photo_sha256": hashlib.sha256(data).hexdigest(), "photo": rec.image,
                "base_dir": str(src.base_dir) if src.base_dir else None}
        rows.append(EvalRow(rec.prompt, rec.prompt_a, infer_attributes(rec.prompt_a, rec.categories), base + i, meta))
        if cfg.n_prompts and len(rows) >= cfg.n_prompts:
            break
    if not rows:
        raise SuiteError(f"{spec}: the photo set has no rows")
    return rows


def load_prompt_pairs(cfg: GenerateConfig) -> list[EvalRow]:
    """The suite's rows: ``(prompt_o, prompt_a, attributes, seed)``; errors name the file, line and field."""
    spec = cfg.suite
    n = cfg.n_prompts or None
    if suite_source(spec) is not None or spec.startswith("hf:"):
        rows = load_suite(spec, n, cfg.suite_seed)
    else:
        path = Path(spec)
        if not path.exists():
            raise SuiteError(f"suite {spec}: no such file, registered suite or hf:REPO; pass toy, a .jsonl/.csv of "
                             "prompt_o, prompt_a, attributes, a .txt of captions, or hf:REPO")
        suffix = path.suffix.lower()
        photos = photo_rows(spec, cfg) if suffix != ".txt" else None
        if photos is not None:
            rows = photos
        elif path.is_file() and suffix == ".txt":
            rows = _caption_rows(path, cfg)
        elif path.is_file() and suffix in (".jsonl", ".json", ".csv"):
            cols = _columns(path)
            if any(k in cols for k in PAIR_KEYS):
                rows = load_suite(spec, n, cfg.suite_seed)
            elif any(k in cols for k in CAPTION_KEYS):
                rows = _caption_rows(path, cfg)
            else:
                raise SuiteError(f"{path}: columns {cols} hold neither prompt pairs (prompt_o, prompt_a, attributes) "
                                 f"nor captions (one of {', '.join(CAPTION_KEYS)})")
        else:
            rows = load_suite(spec, n, cfg.suite_seed)
    if not rows:
        raise SuiteError(f"suite {spec}: no prompt pairs")
    return rows
