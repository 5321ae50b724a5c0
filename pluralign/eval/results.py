"""``results.json``: the one machine-readable artifact of an eval run (schema in docs/eval.md).

Assembled from the per-variant metric summaries; written with NaN/inf turned into ``null`` so
any JSON reader accepts it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _clean(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dial_curve(variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The adapter's weight sweep in weight order: adherence, leakage and content fidelity per weight."""
    points = []
    for name, v in variants.items():
        if v.get("weight") is None:
            continue
        adh = v.get("adherence") or {}
        leak = v.get("leakage") or {}
        content = v.get("content_fidelity") or {}
        points.append({
            "variant": name, "weight": v["weight"], "adherence": adh.get("value"), "ci95": adh.get("ci95"),
            "leakage_max_abs_points": leak.get("max_abs_points"), "content_fidelity": content.get("value"),
        })
    return sorted(points, key=lambda p: p["weight"])


def build_results(*, config: dict[str, Any], suite: dict[str, Any], variants: dict[str, dict[str, Any]],
                  reference: str, checks: dict[str, Any], timing: dict[str, float], wall_seconds: float) -> dict[str, Any]:
    return _clean({
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "suite": suite,
        "reference": reference,
        "variants": variants,
        "dial_curve": dial_curve(variants),
        "checks": checks,
        "timing": timing,
        "wall_seconds": wall_seconds,
    })


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
