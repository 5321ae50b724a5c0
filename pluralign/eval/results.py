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


def _curve_point(name: str, v: dict[str, Any]) -> dict[str, Any]:
    adh = v.get("adherence") or {}
    leak = v.get("leakage") or {}
    content = v.get("content_fidelity") or {}
    return {"variant": name, "weight": v["weight"], "adherence": adh.get("value"), "ci95": adh.get("ci95"),
            "leakage_max_abs_points": leak.get("max_abs_points"), "content_fidelity": content.get("value")}


def dial_curve(variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The adapter's weight sweep in weight order: adherence, leakage and content fidelity per weight.
    Empty for a per-category eval, whose curves are :func:`category_curve`'s."""
    points = [_curve_point(name, v) for name, v in variants.items()
              if v.get("weight") is not None and v.get("category") is None]
    return sorted(points, key=lambda p: p["weight"])


def category_curve(variants: dict[str, dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """One category adapter's sweep (the others at 0) in weight order, on its category's rows: the
    points of :func:`dial_curve` plus ``n`` (rows with a verifiable attribute of the category) and the
    paired adherence change vs the base on those rows."""
    points = []
    for name, v in variants.items():
        if v.get("category") != category:
            continue
        points.append({**_curve_point(name, v), "n": (v.get("adherence") or {}).get("n"),
                       "adherence_delta_vs_base": v.get("adherence_delta_vs_reference")})
    return sorted(points, key=lambda p: p["weight"])


def adapter_category_curves(variants: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A single adapter's dial read per taxonomy category: at each weight, its adherence on the rows that request
    the category (``adherence.by_category``), with the CI and ``n``, in weight order. The overall curve averages
    the categories, so a category the adapter never learnt (no pairs reached it) hides behind the others.
    Empty for a per-category eval, whose adapters have :func:`category_curve` each."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, v in variants.items():
        if v.get("weight") is None or v.get("category") is not None:
            continue
        for cat, a in ((v.get("adherence") or {}).get("by_category") or {}).items():
            curves.setdefault(cat, []).append({"variant": name, "weight": v["weight"], "adherence": a.get("value"),
                                               "ci95": a.get("ci95"), "n": a.get("n")})
    return {c: sorted(points, key=lambda p: p["weight"]) for c, points in sorted(curves.items())}


def build_results(*, config: dict[str, Any], suite: dict[str, Any], variants: dict[str, dict[str, Any]],
                  reference: str, checks: dict[str, Any], timing: dict[str, float], wall_seconds: float,
                  category_dials: dict[str, Any] | None = None, cross_effects: dict[str, Any] | None = None,
                  ) -> dict[str, Any]:
    """The results dict; ``category_dials`` and ``cross_effects`` for a per-category eval, ``category_curves``
    (:func:`adapter_category_curves`) otherwise."""
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "suite": suite,
        "reference": reference,
        "variants": variants,
        "dial_curve": dial_curve(variants),
    }
    if category_dials is None:
        out["category_curves"] = adapter_category_curves(variants)
    if category_dials is not None:
        out["category_dials"] = category_dials
    if cross_effects is not None:
        out["cross_effects"] = cross_effects
    out.update({"checks": checks, "timing": timing, "wall_seconds": wall_seconds})
    return _clean(out)


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
