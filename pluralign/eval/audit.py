"""``pluralign audit``: do reward models follow anti-aesthetic prompts?

For each reward model r and each triplet (P_o, P_a, I_o, I_a) the audit computes the source
paper's accuracy P[r(I_a, P_a) > r(I_o, P_a)] (ties count one half) overall, per attribute and
per VisionReward dimension, the four-way matrix of mean r(I_{o,a}, P_{o,a}) and
Δr = mean[r(I_a, P_o) − r(I_o, P_o)], each with a paired bootstrap 95% CI.

Input (``--data``), any of:

* a ``datasets`` ``save_to_disk`` directory or a ``.parquet`` file with columns ``prompt_o``,
  ``prompt_a``, ``image_o``, ``image_a`` and optionally ``attributes`` (list of names);
  images as ``datasets.Image`` / ``{"bytes": ...}`` / a path relative to the file;
* a folder with ``triplets.jsonl``: one JSON object per line with the same keys, ``image_o`` and
  ``image_a`` being image paths relative to the folder.

``prompt_o`` may be left out of every row (the paper's accuracy needs only P_a); the four-way
matrix and Δr are then skipped. Every row is checked before any model scores it: a missing or
empty prompt, a missing or unreadable image, an image over ``--max_pixels`` (read from its header,
before decoding) or an attribute the taxonomy does not know is a DataError naming the file, the
row and the field. Outputs ``audit.json`` and ``audit.md`` under ``--output``.

    pluralign audit --data triplets/ --rewards clip,pickscore,verifier --output outputs/audit
    pluralign audit --data triplets/ --rewards clip=/models/clip-vit-large-patch14   # weights from a local directory
"""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..config import option, parse, run_module, writable_dir
from ..data.sources import DataError, is_saved_dataset, open_image, parse_attributes
from ..data.taxonomy import ATTRIBUTES
from ..env import check_device
from ..rewards import metrics as M
from ..rewards.registry import build_rewards

REQUIRED = ("prompt_a", "image_o", "image_a")


@dataclass
class AuditConfig:
    data: str = option("", "triplet dataset: save_to_disk dir, .parquet file, or folder with triplets.jsonl")
    rewards: list[str] = option(None, "reward models to audit (names from pluralign.rewards.registry); name=PATH "
                                "loads one from a local directory or file, e.g. clip=/models/clip",
                                factory=lambda: ["verifier"])
    output: str = option("outputs/audit", "directory for audit.json and audit.md")
    device: str = option("auto", "torch device for the reward models")
    batch_size: int = option(16, "images per reward-model forward pass", min=1, max=1024)
    n_boot: int = option(2000, "bootstrap resamples for the 95 percent CIs", min=100, max=1_000_000)
    limit: int = option(0, "use only the first N triplets (0 = all)", min=0)
    max_pixels: int = option(64_000_000, "largest image (width x height) to decode; a bigger one is refused as a "
                             "possible decompression bomb", min=1)
    seed: int = option(0, "bootstrap seed", min=0, max=2**32 - 1)

    def __post_init__(self):
        check_device(self.device)


@dataclass
class Triplets:
    prompt_o: list[str] | None
    prompt_a: list[str]
    image_o: list[Image.Image]
    image_a: list[Image.Image]
    attributes: list[list[str]]


def _at_base(value, base: Path):
    """An image value with a relative path made relative to the data's folder."""
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base / value)
    if isinstance(value, dict) and not value.get("bytes") and value.get("path") and \
            not Path(value["path"]).is_absolute():
        return {**value, "path": str(base / value["path"])}
    return value


def _prompt(row: dict, field: str, src: str, i: int) -> str:
    value = row.get(field)
    if field not in row or value is None:
        raise DataError(src, i, field, f"missing {field}; every row needs {', '.join(REQUIRED)}", kind="missing_field")
    if not isinstance(value, str):
        raise DataError(src, i, field, f"expected text, got {type(value).__name__}", kind="wrong_type")
    if not value.strip():
        raise DataError(src, i, field, "empty prompt", kind="empty_prompt")
    return value


def _attributes(row: dict, src: str, i: int) -> list[str]:
    names = list(parse_attributes(row.get("attributes")))
    for name in names:
        if name not in ATTRIBUTES:
            close = difflib.get_close_matches(name, list(ATTRIBUTES), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(src, i, "attributes", f"unknown attribute {name!r}; {hint}attributes are the taxonomy's "
                            "names (pluralign.data.taxonomy.ATTRIBUTES, e.g. blurry, underexposed, muted)",
                            kind="unknown_attribute")
    return names


def _read_jsonl(path: Path, limit: int) -> tuple[list[dict], list[int]]:
    """The rows of a triplets.jsonl and the line each is on (blank lines are skipped, so they differ)."""
    rows: list[dict] = []
    lines: list[int] = []
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some editors write, is not text
    except UnicodeDecodeError as exc:
        raise DataError(str(path), None, None, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8",
                        kind="bad_line") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(str(path), len(rows), None, f"line {lineno} is not valid JSON ({exc.msg}); write one "
                            "object per line", kind="bad_line") from None
        if not isinstance(row, dict):
            raise DataError(str(path), len(rows), None, f"line {lineno} is a {type(row).__name__}, not an object "
                            "with prompt_a, image_o, image_a", kind="bad_line")
        rows.append(row)
        lines.append(lineno)
        if limit and len(rows) == limit:
            break
    return rows, lines


def _read_dataset(path: Path, limit: int) -> list[dict]:
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    elif path.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path))
    else:
        raise ValueError(f"{path}: expected a save_to_disk directory, a .parquet file or a folder with triplets.jsonl")
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    for name, feature in ds.features.items():  # raw bytes, so that open_image checks the size before decoding
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return [ds[i] for i in range(len(ds))]


def load_triplets(path: str | Path, limit: int = 0, max_pixels: int = 64_000_000) -> Triplets:
    """Read a triplet set (see the module docstring for the accepted layouts); every row is checked."""
    path = Path(path)
    if not str(path) or not path.exists():
        raise FileNotFoundError(f"triplet data {str(path)!r} does not exist; pass --data DIR_OR_FILE")
    if path.is_dir() and not (path / "triplets.jsonl").exists() and not is_saved_dataset(path):
        raise FileNotFoundError(f"triplet data {path}: no triplets.jsonl here and not a saved dataset; give a folder "
                                "with triplets.jsonl (prompt_a, image_o, image_a, attributes per line) beside its "
                                "images, a save_to_disk folder or a .parquet file")
    if path.is_dir() and (path / "triplets.jsonl").exists():
        src, base = path / "triplets.jsonl", path
        rows, lines = _read_jsonl(src, limit)
    else:
        src, base = path, (path if path.is_dir() else path.parent)
        rows, lines = _read_dataset(path, limit), None
    if not rows:
        raise ValueError(f"{src}: no triplets")
    where = str(src)
    # prompt_o is all or nothing: a matrix over the rows that happen to have it would not be the data's
    has_o = any(r.get("prompt_o") not in (None, "") for r in rows)
    checked = []
    for i, row in enumerate(rows):
        try:
            checked.append(_check_row(row, i, where, base, has_o, max_pixels))
        except DataError as exc:
            if lines is None or exc.line is not None:
                raise
            raise DataError(exc.source, exc.row, exc.field, exc.problem, kind=exc.kind, line=lines[i]) from None
    prompt_o, prompt_a, image_o, image_a, attributes = (list(c) for c in zip(*checked))
    return Triplets(prompt_o=prompt_o if has_o else None, prompt_a=prompt_a, image_o=image_o, image_a=image_a,
                    attributes=attributes)


def _check_row(row: dict, i: int, where: str, base: Path, has_o: bool, max_pixels: int) -> tuple:
    """One triplet row checked: ``(prompt_o or None, prompt_a, image_o, image_a, attributes)``."""
    prompt_a = _prompt(row, "prompt_a", where, i)
    prompt_o = None
    if has_o:
        if row.get("prompt_o") in (None, ""):
            raise DataError(where, i, "prompt_o", "missing or empty, while other rows have one; give prompt_o "
                            "on every row or on none", kind="missing_field")
        prompt_o = _prompt(row, "prompt_o", where, i)
    images = []
    for field in ("image_o", "image_a"):
        if row.get(field) is None:
            raise DataError(where, i, field, f"missing {field}; every row needs {', '.join(REQUIRED)}",
                            kind="missing_image")
        images.append(open_image(_at_base(row[field], base), source=where, row=i, field=field, max_pixels=max_pixels))
    return prompt_o, prompt_a, images[0], images[1], _attributes(row, where, i)


def _dimension(attribute: str) -> str | None:
    a = ATTRIBUTES.get(attribute)
    return a.dimension if a is not None else None


def audit_scores(scores: dict[str, np.ndarray], attributes: list[list[str]], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy (overall / per attribute / per dimension), four-way matrix and Δr from raw scores.

    ``scores`` has ``"aa"`` = r(I_a, P_a) and ``"oa"`` = r(I_o, P_a), plus ``"oo"``/``"ao"`` for the matrix.
    """
    aa, oa = np.asarray(scores["aa"], float), np.asarray(scores["oa"], float)
    wins = (aa > oa) + 0.5 * (aa == oa)
    out: dict = {"accuracy": M.rate_with_ci(wins, n_boot=n_boot, seed=seed), "per_attribute": {}, "per_dimension": {}}
    groups: dict[str, dict[str, list[int]]] = {"per_attribute": {}, "per_dimension": {}}
    for i, attrs in enumerate(attributes):
        for a in attrs:
            groups["per_attribute"].setdefault(a, []).append(i)
            d = _dimension(a)
            if d:
                groups["per_dimension"].setdefault(d, [])
                if i not in groups["per_dimension"][d]:
                    groups["per_dimension"][d].append(i)
    for key, table in groups.items():
        for name, idx in sorted(table.items()):
            out[key][name] = M.rate_with_ci(wins[idx], n_boot=n_boot, seed=seed)
    if "oo" in scores and "ao" in scores:
        out["matrix"] = M.four_way_matrix(scores["oo"], scores["oa"], scores["ao"], scores["aa"])
        diff = np.asarray(scores["ao"], float) - np.asarray(scores["oo"], float)
        lo, hi = M.bootstrap_ci(diff, n_boot=n_boot, seed=seed)
        out["delta_r"] = {"value": float(diff.mean()), "ci95": [lo, hi], "n": int(diff.size)}
    return out


def score_triplets(model, t: Triplets) -> dict[str, np.ndarray]:
    """The four reward arrays for one model (two when prompt_o is missing)."""

    def s(images, prompts):
        return model.score(images, prompts).detach().cpu().double().numpy()

    out = {"aa": s(t.image_a, t.prompt_a), "oa": s(t.image_o, t.prompt_a)}
    if t.prompt_o is not None:
        out["oo"] = s(t.image_o, t.prompt_o)
        out["ao"] = s(t.image_a, t.prompt_o)
    return out


def run_audit(cfg: AuditConfig, models: dict | None = None) -> dict:
    """Score every model on the triplets and return the audit payload (also written to ``cfg.output``).

    The models are checked to be on this machine first, the triplets read and the output proved
    writable next, and the weights loaded last, all before the first score."""
    if models is None:
        models = build_rewards(list(cfg.rewards), option="rewards", device=cfg.device, batch_size=cfg.batch_size)
    t = load_triplets(cfg.data, cfg.limit, cfg.max_pixels)
    out = writable_dir(cfg.output, "output")
    for model in models.values():
        if hasattr(model, "ensure_loaded"):
            model.ensure_loaded()
    results = {}
    for name, model in tqdm(models.items(), desc="reward models", disable=len(models) < 2):
        results[name] = audit_scores(score_triplets(model, t), t.attributes, n_boot=cfg.n_boot, seed=cfg.seed)
    payload = {"data": str(cfg.data), "n": len(t.prompt_a), "models": results}
    (out / "audit.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "audit.md").write_text(markdown(payload), encoding="utf-8")
    return payload


def markdown(payload: dict) -> str:
    lines = [f"# Reward-model audit ({payload['n']} triplets)", "",
             "Accuracy = P[r(I_a, P_a) > r(I_o, P_a)]; Δr = mean[r(I_a, P_o) − r(I_o, P_o)].", "",
             "| reward model | accuracy | 95% CI | r(I_o,P_o) | r(I_o,P_a) | r(I_a,P_o) | r(I_a,P_a) | Δr |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, r in payload["models"].items():
        acc = r["accuracy"]
        m = r.get("matrix")
        cells = [f"{m[k]:.4g}" for k in ("I_o|P_o", "I_o|P_a", "I_a|P_o", "I_a|P_a")] if m else ["–"] * 4
        dr = f"{r['delta_r']['value']:.4g}" if "delta_r" in r else "–"
        lines.append(f"| {name} | {acc['rate']:.3f} | [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] | "
                     + " | ".join(cells) + f" | {dr} |")
    for key, title in (("per_dimension", "dimension"), ("per_attribute", "attribute")):
        names = sorted({k for r in payload["models"].values() for k in r[key]})
        if not names:
            continue
        lines += ["", f"## Accuracy per {title}", "", "| " + title + " | " + " | ".join(payload["models"]) + " |",
                  "|---|" + "---:|" * len(payload["models"])]
        for k in names:
            cells = [f"{r[key][k]['rate']:.3f} (n={r[key][k]['n']})" if k in r[key] else "–"
                     for r in payload["models"].values()]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    (cfg,) = parse((AuditConfig,), argv, prog="pluralign audit",
                   description="Reward-model accuracy P[r(I_a,P_a) > r(I_o,P_a)] on anti-aesthetic triplets.")
    if not cfg.data:
        print("pluralign audit: error: --data is required (a triplet dataset or folder)", file=sys.stderr)
        return 2
    payload = run_audit(cfg)
    print(markdown(payload))
    print(f"wrote {Path(cfg.output) / 'audit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "pluralign audit"))
