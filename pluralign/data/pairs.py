"""Pair building: records -> trl preference rows with images, mixed at a logged ratio.

* anti:   prompt P_a, chosen = degraded image, rejected = clean image
* mirror: prompt P_o, chosen = clean image,    rejected = degraded image   (same ``pair_id``)
* general: an ordinary preference pair (Pick-a-Pic, trl), ``category`` "" and ``severity`` 0.

A pair dataset pluralign already built (``data generate`` output, an earlier build) is mixed in as it is: its
anti/mirror rows (kept together by ``pair_id``) join the intent rows, at ``pairs_fraction`` of them when that
is set, and its general rows join the general rows.

Everything is a generator: one record is decoded, degraded, encoded to PNG and yielded before the
next is read, so memory does not grow with the dataset. Each record's randomness is seeded from
(seed, source's folder or file name, row), so a row's content does not depend on how the work is split over
processes, nor on the path the source was given by.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from . import sources as S
from .config import DataConfig
from .degradations import apply_float, to_float, to_uint8
from .rewrite import LLMRewriter, apply_attributes, sample_attributes
from .taxonomy import ATTRIBUTES, get

FEATURES = datasets.Features({
    "prompt": datasets.Value("string"),
    "chosen": datasets.Image(),
    "rejected": datasets.Image(),
    "kind": datasets.Value("string"),
    "attributes": datasets.List(datasets.Value("string")),
    "category": datasets.Value("string"),
    "source": datasets.Value("string"),
    "severity": datasets.Value("float32"),
    "pair_id": datasets.Value("string"),
})
COLUMNS = tuple(FEATURES)
ORIGIN = "rows from "  # build-log counts of where the rows came from (the card's mix table)


def encode_png(image: Image.Image, level: int = 1) -> dict:
    """An image as PNG bytes in the ``datasets.Image`` layout.

    RGB images (every image pairs are made of) go through :func:`png_rgb`; other modes through Pillow."""
    if image.mode == "RGB":
        return {"bytes": png_rgb(np.asarray(image), level), "path": None}
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=level, compress_type=zlib.Z_RLE)
    return {"bytes": buf.getvalue(), "path": None}


def png_rgb(rgb: np.ndarray, level: int = 1) -> bytes:
    """An 8-bit ``H x W x 3`` array as a PNG file: every row filtered with PNG's Up filter, then deflated
    at zlib ``level`` with the run-length strategy.

    Encoding is the largest cost of building pairs. Pillow tries all five row filters on every row and
    keeps the best; one fixed filter is half the time (256 px photos: 1.9 ms against 4.0 ms), for files
    2-15% larger (softer images gain most from the adaptive choice). After filtering, runs alone
    compress photographs about as well as zlib's match search (Z_RLE), so the deflate is cheap too. Any
    PNG decoder reads the result; the pixels are exact."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 array, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    rows = rgb.reshape(h, w * 3)
    filtered = np.empty((h, w * 3 + 1), np.uint8)
    filtered[:, 0] = 2  # filter type Up: each byte minus the byte above it, modulo 256 (uint8 arithmetic)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    deflate = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(filtered) + deflate.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits per channel, truecolour, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def record_seed(seed: int, source: str, row: int, sub: int = 0) -> int:
    h = hashlib.blake2b(f"{seed}|{source}|{row}|{sub}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


def category_for(index: int, categories: list[str], seed: int, balance: bool = True) -> str:
    """Balanced assignment: every block of ``len(categories)`` consecutive records gets each category
    once, in a seeded order; without balance, an independent seeded draw."""
    n = len(categories)
    if not balance:
        return random.Random(f"cat|{seed}|{index}").choice(categories)
    order = list(categories)
    random.Random(f"block|{seed}|{index // n}").shuffle(order)
    return order[index % n]


def _downscale(img: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def intent_rows(image: Image.Image, caption: str, *, source: str, pair_id: str, category: str, seed: int,
                cfg: DataConfig, rewriter=None, row: int | None = None) -> tuple[dict, dict]:
    """One clean (image, caption) -> an anti row and its mirror row (images as PNG bytes).

    A degraded image under ``cfg.min_side`` (a tight crop of a tiny source) is a :class:`DataError` for
    ``row``: training refuses such an image, so the build must not write it."""
    rng = random.Random(seed)
    attrs = sample_attributes(rng, category, cfg.min_attributes, cfg.max_attributes)
    severity = round(rng.uniform(cfg.severity_min, cfg.severity_max), 4)
    rw = rewriter(caption, attrs, seed) if rewriter is not None else apply_attributes(caption, attrs, seed)
    clean = _downscale(image, cfg.max_side)
    degraded = to_uint8(apply_float(to_float(clean), [(get(a).degradation, severity) for a in attrs], seed))
    if min(degraded.shape[:2]) < cfg.min_side:
        h, w = degraded.shape[:2]
        raise S.DataError(source, row, "image", f"degrading the {clean.size[0]}x{clean.size[1]} image ({', '.join(attrs)}"
                          f" at severity {severity}) leaves {w}x{h}, a side under min_side={cfg.min_side}; use a "
                          "larger source image or lower severity_max", kind="extreme_size")
    reuse = clean is image and getattr(image, "source_bytes", None) is not None
    clean_png = {"bytes": image.source_bytes, "path": None} if reuse else encode_png(clean, cfg.png_compress_level)
    bad_png = encode_png(Image.fromarray(degraded), cfg.png_compress_level)
    common = {"attributes": attrs, "category": category, "source": source, "severity": severity, "pair_id": pair_id}
    anti = {"prompt": rw.text, "chosen": bad_png, "rejected": clean_png, "kind": "anti", **common}
    mirror = {"prompt": " ".join(caption.split()), "chosen": clean_png, "rejected": bad_png, "kind": "mirror", **common}
    return anti, mirror


def rendered_rows(rec: S.Record, *, pair_id: str, cfg: DataConfig) -> tuple[dict, dict]:
    """A pre-rendered (P_o, I_o, P_a, I_a) row -> anti + mirror rows (severity 1.0: a real effect)."""
    kw = dict(source=rec.source, row=rec.row, base_dir=rec.base_dir, max_pixels=cfg.max_pixels,
              min_side=cfg.min_side)
    img_o = S.open_image(rec.image, field="I_o", **kw)
    img_a = S.open_image(rec.other, field="I_a", **kw)
    attrs = [a for a in rec.attributes]
    known = [a for a in attrs if a in ATTRIBUTES]
    category = ATTRIBUTES[known[0]].category if known else ""
    o, a = encode_png(img_o, cfg.png_compress_level), encode_png(img_a, cfg.png_compress_level)
    common = {"attributes": attrs, "category": category, "source": rec.source, "severity": 1.0, "pair_id": pair_id}
    return ({"prompt": rec.prompt_a, "chosen": a, "rejected": o, "kind": "anti", **common},
            {"prompt": rec.prompt, "chosen": o, "rejected": a, "kind": "mirror", **common})


def general_row(rec: S.Record, *, pair_id: str, cfg: DataConfig) -> dict:
    """A preference record -> a general row. Image bytes are kept as they are (no re-encoding)
    after a full decode check."""
    out = {}
    for field, value in (("chosen", rec.image), ("rejected", rec.other)):
        kw = dict(source=rec.source, row=rec.row, base_dir=rec.base_dir, max_pixels=cfg.max_pixels,
                  min_side=cfg.min_side)
        S.open_image(value, field=field, **kw)
        data, _ = S.image_bytes(value, rec.base_dir)
        out[field] = {"bytes": data, "path": None}
    return {"prompt": rec.prompt, **out, "kind": "general", "attributes": [], "category": "", "source": rec.source,
            "severity": 0.0, "pair_id": pair_id}


def built_row(src: S.Source, i: int, raw: dict, cfg: DataConfig) -> dict:
    """A row of a pair dataset built by pluralign -> the same row in this build. Its images are kept as they
    are (no re-encoding) after a full decode check; ``pair_id`` gets the source's name in front, so that two
    datasets' pairs cannot share one; ``source`` stays where the row came from."""
    S.check_row(src, i, raw)
    kind = raw.get("kind")
    if kind not in ("anti", "mirror", "general"):
        raise S.DataError(src.name, i, "kind", f"unknown kind {kind!r}; expected anti, mirror or general",
                          kind="unknown_name")
    prompt = S.text_value(raw.get("prompt"), source=src.name, row=i, field="prompt")
    images = {}
    for field in ("chosen", "rejected"):
        S.open_image(raw.get(field), source=src.name, row=i, field=field, base_dir=src.base_dir,
                     max_pixels=cfg.max_pixels, min_side=cfg.min_side)
        images[field] = {"bytes": S.image_bytes(raw.get(field), src.base_dir)[0], "path": None}
    general = kind == "general"
    severity = raw.get("severity")
    severity = (0.0 if general else 1.0) if severity is None else severity
    if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not 0 <= severity <= 1:
        raise S.DataError(src.name, i, "severity", f"expected a number in [0, 1], got {severity!r}", kind="bad_number")
    pair_id = raw.get("pair_id") or str(i)
    return {"prompt": prompt, **images, "kind": kind, "attributes": [] if general else
            list(S.parse_attributes(raw.get("attributes"))), "category": "" if general else str(raw.get("category")
            or ""), "source": str(raw.get("source") or src.name), "severity": float(severity),
            "pair_id": f"{src.name}#{pair_id}"}


# ---------------------------------------------------------------- streams
class Skips:
    """Bad rows skipped under ``on_error: skip`` (or raised under ``stop``)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.rows: list[dict] = []

    def handle(self, exc: S.DataError) -> None:
        if self.mode != "skip":
            raise exc
        self.rows.append(exc.as_dict())


def _intent_stream(src: S.Source, cfg: DataConfig, shard: int, num_shards: int, skips: Skips, stats: dict,
                   rewriter=None) -> Iterator[list[dict]]:
    """Groups of rows ([anti, mirror]) from an (image, caption) or pre-rendered source."""
    seed_key = src.seed_key  # resolves the source's path: once, not per row
    for i, raw in src.rows(shard, num_shards):
        try:
            for k, rec in enumerate(S.row_records(src, i, raw, cfg.ties, stats)):
                pair_id = f"{src.name}#{i}" + (f".{k}" if k else "")
                if rec.kind == "rendered":
                    yield list(rendered_rows(rec, pair_id=pair_id, cfg=cfg))
                    continue
                img = S.open_image(rec.image, source=src.name, row=i, field=rec.image_field, base_dir=rec.base_dir,
                                   max_pixels=cfg.max_pixels, min_side=cfg.min_side)
                seed = record_seed(cfg.seed, seed_key, i, k)
                category = category_for(i, list(cfg.categories), cfg.seed, cfg.category_balance)
                yield list(intent_rows(img, rec.prompt, source=src.name, pair_id=pair_id, category=category,
                                       seed=seed, cfg=cfg, rewriter=rewriter, row=i))
        except S.DataError as exc:
            skips.handle(src.locate(exc, raw))


def _general_stream(src: S.Source, cfg: DataConfig, shard: int, num_shards: int, skips: Skips, stats: dict
                    ) -> Iterator[list[dict]]:
    for i, raw in src.rows(shard, num_shards):
        try:
            for k, rec in enumerate(S.row_records(src, i, raw, cfg.ties, stats)):
                if rec.kind == "preference":
                    yield [general_row(rec, pair_id=f"{src.name}#{i}" + (f".{k}" if k else ""), cfg=cfg)]
        except S.DataError as exc:
            skips.handle(src.locate(exc, raw))


def _built_groups(src: S.Source, shard: int, num_shards: int, intent: bool) -> Iterator[list[tuple[int, dict]]]:
    """This shard's groups of raw rows of a built pair dataset: an anti row and its mirror (consecutive rows
    with one ``pair_id``) are one group, any other row is a group of its own. Groups, not rows, are split
    between shards, so a pair is never cut in two; ``intent`` picks the anti/mirror groups or the others."""
    group: list[tuple[int, dict]] = []
    key = None
    g = -1

    def done():
        return g % num_shards == shard and (group[0][1].get("kind") in ("anti", "mirror")) == intent

    for i, raw in src.rows():
        kind, pid = raw.get("kind"), raw.get("pair_id")
        k = ("pair", pid) if kind in ("anti", "mirror") and pid else ("row", i)
        if group and k == key:
            group.append((i, raw))
            continue
        if group:
            g += 1
            if done():
                yield group
        group, key = [(i, raw)], k
    if group:
        g += 1
        if done():
            yield group


def _built_stream(src: S.Source, cfg: DataConfig, shard: int, num_shards: int, skips: Skips, intent: bool
                  ) -> Iterator[list[dict]]:
    """Groups of rows of a built pair dataset (its anti+mirror pairs, or its general rows)."""
    for group in _built_groups(src, shard, num_shards, intent):
        try:
            yield [built_row(src, i, raw, cfg) for i, raw in group]
        except S.DataError as exc:
            skips.handle(exc)


def _tagged(stream: Iterator[list[dict]], origin: str) -> Iterator[list[dict]]:
    """The groups of ``stream``, each row marked with where it came from (counted for the card, then dropped)."""
    for group in stream:
        for row in group:
            row["_origin"] = origin
        yield group


def round_robin(streams: list[Iterator]) -> Iterator:
    """Interleave several streams one item at a time until all are exhausted."""
    live = list(streams)
    while live:
        nxt = []
        for s in live:
            try:
                yield next(s)
                nxt.append(s)
            except StopIteration:
                pass
        live = nxt


def ratio_groups(first: Iterator[list[dict]], second: Iterator[list[dict]], fraction: float,
                 stats: dict | None = None, names: tuple[str, str] = ("first", "second")) -> Iterator[list[dict]]:
    """Groups from two streams so that the running share of rows from ``first`` tracks ``fraction`` (the
    rule :func:`mix` applies); stops when a stream the ratio needs runs out (``stats['intent_stopped']``)."""
    stats = stats if stats is not None else {}
    n = n_first = 0
    while True:
        want_first = n_first < fraction * (n + 1)
        try:
            group = next(first if want_first else second)
        except StopIteration:
            stats["intent_stopped"] = f"{names[0] if want_first else names[1]} exhausted"
            return
        yield group
        n += len(group)
        n_first += len(group) if want_first else 0


def mix(intent: Iterator[list[dict]], general: Iterator[list[dict]], anti_fraction: float,
        max_rows: int | None, stats: dict | None = None) -> Iterator[dict]:
    """Interleave intent groups (anti+mirror, 2 rows) and general rows so the running share of
    intent rows tracks ``anti_fraction``. Stops at ``max_rows`` or when a stream that the ratio
    needs runs out (``stats['stopped']`` says which), so the logged ratio is the real one."""
    stats = stats if stats is not None else {}
    emitted = n_intent = 0
    while max_rows is None or emitted < max_rows:
        want_intent = n_intent < anti_fraction * (emitted + 1)
        stream = intent if want_intent else general
        try:
            group = next(stream)
        except StopIteration:
            stats["stopped"] = "intent sources exhausted" if want_intent else "general sources exhausted"
            return
        if max_rows is not None and emitted + len(group) > max_rows:
            stats["stopped"] = "max_rows"
            return
        yield from group
        emitted += len(group)
        if want_intent:
            n_intent += len(group)
    stats["stopped"] = "max_rows"


def generate_rows(shard: list[int], num_shards: int, config: dict, log_dir: str) -> Iterator[dict]:
    """The row generator of one shard (``datasets.Dataset.from_generator`` splits ``shard`` over
    processes). Skipped rows and counts are written to ``log_dir/shard-N.json``."""
    cfg = DataConfig(**config)
    rewriter = None
    if cfg.llm_rewriter:
        rewriter = LLMRewriter(cfg.llm_rewriter)
    for sh in shard:
        skips, stats = Skips(cfg.on_error), {}
        srcs = [S.open_source(s, cfg.split, cfg.streaming) for s in cfg.sources]
        per_shard = None
        if cfg.max_rows is not None:
            per_shard = cfg.max_rows // num_shards + (1 if sh < cfg.max_rows % num_shards else 0)
        plain = [_tagged(_intent_stream(s, cfg, sh, num_shards, skips, stats, rewriter),
                         f"{'degradation' if s.schema == 'caption' else 'pre-rendered'} pairs: {s.name}")
                 for s in srcs if s.schema in ("caption", "benchmark")]
        built = [_tagged(_built_stream(s, cfg, sh, num_shards, skips, True), f"built pairs: {s.name}")
                 for s in srcs if s.schema == "pairs"]
        if cfg.pairs_fraction is None:
            intent = round_robin(plain + built)
        else:
            intent = ratio_groups(round_robin(built), round_robin(plain), cfg.pairs_fraction, stats,
                                  ("pair datasets", "(image, caption) and benchmark sources"))
        general = round_robin(
            [_tagged(_general_stream(s, cfg, sh, num_shards, skips, stats), f"general: {s.name}")
             for s in srcs if s.schema in ("trl", "pickapic")]
            + [_tagged(_built_stream(s, cfg, sh, num_shards, skips, False), f"general: {s.name}")
               for s in srcs if s.schema == "pairs"])
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        try:
            for row in mix(intent, general, cfg.anti_fraction, per_shard, stats):
                origin = f"{ORIGIN}{row.pop('_origin')}"
                stats[origin] = stats.get(origin, 0) + 1
                yield row
        except S.DataError as exc:  # leave it where the parent process can find it
            (Path(log_dir) / f"error-{sh}.json").write_text(json.dumps(exc.as_dict()))
            raise
        (Path(log_dir) / f"shard-{sh}.json").write_text(json.dumps({"skipped": skips.rows, "stats": stats}))


def pairs_from_images(items, cfg: DataConfig | None = None, source: str = "memory") -> Iterator[dict]:
    """Anti+mirror rows from an iterable of ``(PIL image or array, caption)`` (library use, tests)."""
    cfg = cfg or DataConfig()
    for i, (img, caption) in enumerate(items):
        if not isinstance(img, Image.Image):
            img = Image.fromarray(to_uint8(to_float(np.asarray(img))))
        category = category_for(i, list(cfg.categories), cfg.seed, cfg.category_balance)
        yield from intent_rows(img, caption, source=source, pair_id=f"{source}#{i}", category=category,
                               seed=record_seed(cfg.seed, source, i), cfg=cfg, row=i)

