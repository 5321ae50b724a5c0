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

``prompt_o`` may be missing (the paper's accuracy needs only P_a); the four-way matrix and Δr
are then skipped. Outputs ``audit.json`` and ``audit.md`` under ``--output``.

    pluralign audit --data triplets/ --rewards clip,pickscore,verifier --output outputs/audit
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..config import option, parse, run_module, writable_dir
from ..data.taxonomy import ATTRIBUTES
from ..rewards import metrics as M
from ..rewards.registry import get_reward

REQUIRED = ("prompt_a", "image_o", "image_a")


@dataclass
class AuditConfig:
    data: str = option("", "triplet dataset: save_to_disk dir, .parquet file, or folder with triplets.jsonl")
    rewards: list[str] = option(None, "reward models to audit (names from pluralign.rewards.registry)",
                                factory=lambda: ["verifier"])
    output: str = option("outputs/audit", "directory for audit.json and audit.md")
    device: str = option("auto", "torch device for the reward models")
    batch_size: int = option(16, "images per reward-model forward pass", min=1)
    n_boot: int = option(2000, "bootstrap resamples for the 95 percent CIs", min=100)
    limit: int = option(0, "use only the first N triplets (0 = all)", min=0)
    seed: int = option(0, "bootstrap seed")


@dataclass
class Triplets:
    prompt_o: list[str] | None
    prompt_a: list[str]
    image_o: list[Image.Image]
    image_a: list[Image.Image]
    attributes: list[list[str]]


def _image(value, base: Path, where: str) -> Image.Image:
    try:
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict):
            if value.get("bytes"):
                return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return Image.open(io.BytesIO(value)).convert("RGB")
        if isinstance(value, str):
            path = Path(value) if Path(value).is_absolute() else base / value
            return Image.open(path).convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: cannot read the image ({exc})") from exc
    raise ValueError(f"{where}: expected an image, bytes or a path, got {type(value).__name__}")


def _attrs(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
    return [str(v) for v in value]


def load_triplets(path: str | Path, limit: int = 0) -> Triplets:
    """Read a triplet set (see the module docstring for the accepted layouts)."""
    path = Path(path)
    if not str(path) or not path.exists():
        raise FileNotFoundError(f"triplet data {str(path)!r} does not exist; pass --data DIR_OR_FILE")
    if path.is_dir() and (path / "triplets.jsonl").exists():
        src = path / "triplets.jsonl"
        rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
        base = path
    else:
        if path.is_dir():
            from datasets import load_from_disk

            ds = load_from_disk(str(path))
        elif path.suffix == ".parquet":
            from datasets import Dataset

            ds = Dataset.from_parquet(str(path))
        else:
            raise ValueError(f"{path}: expected a save_to_disk directory, a .parquet file or a folder with triplets.jsonl")
        src, base = path, (path if path.is_dir() else path.parent)
        if limit:
            ds = ds.select(range(min(limit, len(ds))))
        rows = [ds[i] for i in range(len(ds))]
    if limit:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"{src}: no triplets")
    missing = [k for k in REQUIRED if k not in rows[0]]
    if missing:
        raise ValueError(f"{src}: missing column(s) {missing}; need {list(REQUIRED)} (+ prompt_o, attributes)")
    has_o = all(r.get("prompt_o") for r in rows)
    return Triplets(
        prompt_o=[str(r["prompt_o"]) for r in rows] if has_o else None,
        prompt_a=[str(r["prompt_a"]) for r in rows],
        image_o=[_image(r["image_o"], base, f"{src} row {i} field image_o") for i, r in enumerate(rows)],
        image_a=[_image(r["image_a"], base, f"{src} row {i} field image_a") for i, r in enumerate(rows)],
        attributes=[_attrs(r.get("attributes")) for r in rows],
    )


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
    """Score every model on the triplets and return the audit payload (also written to ``cfg.output``)."""
    t = load_triplets(cfg.data, cfg.limit)
    out = writable_dir(cfg.output, "output")  # before scoring, which can take long with real reward models
    if models is None:
        models = {name: get_reward(name, device=cfg.device, batch_size=cfg.batch_size) for name in cfg.rewards}
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
