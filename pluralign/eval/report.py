"""Human-readable views of ``results.json``: a markdown summary, a self-contained HTML report
(image rows and plots embedded as base64 PNG data URIs, no external stylesheet, script or font, so the
file opens offline and can be mailed or attached as is) and the same tables and images sent to W&B when
a tracker is on.

Images: grouped by requested attribute, up to ``max_rows`` prompt pairs each; per pair one row with, for
each variant (base, then the adapter weights), I_o (ordinary prompt) and I_a (anti-aesthetic prompt) from
the same seed, and the prompts under it. Small images are enlarged by a whole factor with nearest
neighbour in the PNG itself (:func:`display_image`).

A per-category eval (``category_dials`` and ``cross_effects`` in the results) adds one dial table
per category, the cross-effect matrices and the ``category_dials.png`` plot; its image rows come from
every category, with an empty cell where a variant was not generated on a row. A single adapter's eval
shows its dial per taxonomy category (``category_curves``) as a table and ``category_curves.png``.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .suite import EvalRow

Pairs = dict[str, Sequence[tuple[Image.Image, Image.Image] | None]]


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _rate(d: dict[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "–"
    return f"{_pct(d['value'])}{_ci(d.get('ci95'))}"


def _delta(d: dict[str, Any] | None) -> str:
    """A paired difference to the reference, in points with its CI ("–" for the reference itself)."""
    if not d or d.get("value") is None:
        return "–"
    return f"{100 * d['value']:+.1f} pts{_ci(d.get('ci95'))}"


def _points(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f} pts"


def _judge_names(results: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for v in results["variants"].values():
        for j in v.get("judges") or {}:
            if j not in names:
                names.append(j)
    return names


def _attributes(results: dict[str, Any]) -> list[str]:
    names: set[str] = set()
    for v in results["variants"].values():
        names |= set((v.get("adherence") or {}).get("by_attribute") or {})
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# tables


def summary_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table: one row per variant."""
    judges = _judge_names(results)
    per_category = _per_category(results)
    header = ["variant", "adherence [95% CI]", "Δ vs base", "leakage (max |pts|)", "content fidelity",
              "content Δ vs base"]
    if per_category:  # each category variant is scored on its category's rows, the base on all of them
        header.insert(1, "rows")
    header += [f"{j} success" for j in judges] + [f"{j} Δr" for j in judges]
    rows = []
    for name, v in results["variants"].items():
        leak = (v.get("leakage") or {}).get("max_abs_points")
        row = [name, _rate(v.get("adherence")), _delta(v.get("adherence_delta_vs_reference")),
               "–" if leak is None else f"{leak:.1f}", _rate(v.get("content_fidelity")),
               _delta(v.get("content_fidelity_delta_vs_reference"))]
        if per_category:
            row.insert(1, f"{v['category']} ({v.get('n_rows', '?')})" if v.get("category")
                       else f"all ({(results.get('suite') or {}).get('n_rows', '?')})")
        jd = v.get("judges") or {}
        row += [_rate((jd.get(j) or {}).get("success")) for j in judges]
        for j in judges:
            dr = ((v.get("reward_matrix") or {}).get(j) or {}).get("delta_r")
            row.append("–" if dr is None else f"{dr:+.4g}")
        rows.append(row)
    return header, rows


def attribute_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per-attribute adherence (and leakage) for every variant."""
    variants = list(results["variants"])
    header = ["attribute", "measured / requested", "measured by"] + [f"{v} adherence" for v in variants] + \
        [f"{v} leakage" for v in variants[1:]]
    rows = []
    for attr in _attributes(results):
        by = [((results["variants"][v].get("adherence") or {}).get("by_attribute") or {}).get(attr) for v in variants]
        first = next((b for b in by if b), {})
        n, requested = first.get("n", 0), first.get("requested")
        source = first.get("measured_by") or ("not measured (no rule; configure attribute_judge)"
                                               if requested is not None else "rule")
        row = [attr, f"{n} / {requested}" if requested is not None else str(n), source] + [_rate(b) for b in by]
        for v in variants[1:]:
            leak = ((results["variants"][v].get("leakage") or {}).get("by_attribute") or {}).get(attr) or {}
            row.append(_points(leak.get("points")))
        rows.append(row)
    return header, rows


def _per_category(results: dict[str, Any]) -> bool:
    return bool(results.get("category_dials"))


def category_dial_rows(results: dict[str, Any], category: str) -> tuple[list[str], list[list[str]]]:
    """One category's dial: the base and each weight (the other adapters at 0), on the category's rows."""
    dial = results["category_dials"][category]
    header = ["weight", "n", "adherence [95% CI]", "Δ vs base", "leakage (max |pts|)", "content fidelity"]
    base = dial.get("base") or {}
    rows = [["base", str(base.get("n", 0)), _rate(base), "–", "–", "–"]]
    for p in dial.get("curve") or []:
        leak = p.get("leakage_max_abs_points")
        rows.append([f"{p['weight']:g}", str(p.get("n") or 0), _rate({"value": p.get("adherence"), "ci95": p.get("ci95")}),
                     _delta(p.get("adherence_delta_vs_base")), "–" if leak is None else f"{leak:.1f}",
                     _pct(p.get("content_fidelity"))])
    return header, rows


def cross_rows(results: dict[str, Any], by: str = "by_category") -> tuple[list[str], list[list[str]]]:
    """The cross-effect matrix: one row per category adapter at its top weight, one column per category
    (``by_category``) or attribute (``by_attribute``); a cell is the adherence and its change vs weight 0."""
    cross = results["cross_effects"]
    columns = cross["categories"] if by == "by_category" else cross["attributes"]
    header = [f"adapter @ {cross['top_weight']:g}"] + list(columns)
    rows = []
    for adapter in cross["adapters"]:
        cells = (cross[by] or {}).get(adapter) or {}
        row = [adapter]
        for col in columns:
            cell = cells.get(col) or {}
            adh = (cell.get("adherence") or {}).get("value")
            delta = (cell.get("adherence_delta_vs_weight0") or {}).get("value")
            row.append(f"{_pct(adh)} ({'–' if delta is None else f'{100 * delta:+.1f}'})")
        rows.append(row)
    return header, rows


def cross_leakage_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Leakage per attribute (points, every row) of each category adapter at its top weight."""
    cross = results["cross_effects"]
    header = [f"adapter @ {cross['top_weight']:g}"] + list(cross["attributes"])
    rows = []
    for adapter in cross["adapters"]:
        cells = (cross["by_attribute"] or {}).get(adapter) or {}
        rows.append([adapter] + [_points(((cells.get(a) or {}).get("leakage") or {}).get("points"))
                                 for a in cross["attributes"]])
    return header, rows


def _category_sections(results: dict[str, Any], table) -> list[str]:
    """The per-category parts of a report, each table rendered by ``table(header, rows)``."""
    cross = results["cross_effects"]
    parts = ["## Dial per category", "",
             "Each adapter turned up alone (every other category adapter at 0), scored on the suite rows that request "
             "an attribute of its category, on those attributes only.", ""]
    for c, dial in results["category_dials"].items():
        parts += [f"### {c}", "", f"Adapter `{dial.get('adapter')}`; {dial.get('n_rows')} rows; attributes: "
                  f"{', '.join(dial.get('attributes') or []) or '–'}.", "", table(*category_dial_rows(results, c)), ""]
    refs = ", ".join(f"{k}: {v}" for k, v in (cross.get("weight0_reference") or {}).items())
    parts += ["## Cross-effects", "",
              f"Each adapter at its top weight ({cross['top_weight']:g}, the others at 0) on every row. Cell: adherence "
              "on the column's rows (change vs weight 0 in points, paired). Weight 0 is every adapter at 0 "
              f"({refs}).", "", "### Adherence by category", "", table(*cross_rows(results, "by_category")), "",
              "### Adherence by attribute", "", table(*cross_rows(results, "by_attribute")), "",
              "### Leakage by attribute (points, ordinary prompts of every row vs the base)", "",
              table(*cross_leakage_rows(results)), ""]
    return parts


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (cells are inserted as they are: no bare ``|`` in them)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def category_curve_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A single adapter's adherence per taxonomy category at each weight (``category_curves``), one row per
    category with the rows it is scored on."""
    curves = results.get("category_curves") or {}
    weights = sorted({p["weight"] for points in curves.values() for p in points})
    header = ["category (rows)"] + [f"weight {w:g} [95% CI]" for w in weights]
    rows = []
    for c, points in curves.items():
        at = {p["weight"]: _rate({"value": p.get("adherence"), "ci95": p.get("ci95")}) for p in points}
        rows.append([f"{c} ({points[0].get('n') or 0})"] + [at.get(w, "–") for w in weights])
    return header, rows


def _weight0_line(results: dict[str, Any]) -> str | None:
    w0 = (results.get("checks") or {}).get("weight0_equals_base")
    if not w0:
        return None
    verdict = "yes" if w0.get("passed") else "NO"
    if "by_category" in w0:
        each = ", ".join(f"{c} {z.get('max_abs_diff')}" for c, z in w0["by_category"].items())
        return (f"Every category adapter at weight 0 reproduces the base: {verdict} (max pixel difference "
                f"{w0.get('max_abs_diff')}; {each}).")
    return f"Adapter at weight 0 reproduces the base: {verdict} (max pixel difference {w0.get('max_abs_diff')})."


_NOTES = ("Adherence: share of requested measured attributes shown by I_a: by a verifier rule relative to I_o "
          "(same seed), or by the attribute judge for attributes no rule measures. "
          "Leakage: percentage-point rate at which an attribute's rule fires on the variant's ordinary image "
          "against the base's. Brackets: 95% CI (Wilson's score interval for a rate of 0/1 outcomes, the paired bootstrap "
          "otherwise). See docs/eval.md.")
_CURVES_TEXT = "Adherence on the rows that request each taxonomy category, at each adapter weight."


def markdown_summary(results: dict[str, Any]) -> str:
    suite = results.get("suite", {})
    parts = [
        "# pluralign eval",
        "",
        f"Suite: `{suite.get('source', '?')}`, {suite.get('n_rows', '?')} prompt pairs; reference: "
        f"`{results.get('reference', 'base')}`; wall time {results.get('wall_seconds', 0):.1f} s.",
        "",
        md_table(*summary_rows(results)),
        "",
    ]
    if _per_category(results):
        parts += _category_sections(results, md_table)[:-1]
    else:
        parts += ["## Per attribute", "", md_table(*attribute_rows(results))]
        if results.get("category_curves"):
            parts += ["", "## Dial per category", "", _CURVES_TEXT, "", md_table(*category_curve_rows(results))]
    if _weight0_line(results):
        parts += ["", _weight0_line(results)]
    parts += ["", _NOTES, ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# images and plots

THUMB_MIN = 128  # a side shorter than this is scaled up by a whole factor: a 32 px toy render is unreadable at its size
THUMB_MAX = 256  # a side longer than this is scaled down: full-size SDXL renders would make the page hundreds of MB
NO_ATTRIBUTE = "(no attribute requested)"


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def display_image(image: Image.Image) -> Image.Image:
    """The image as the reports show it. Small ones are enlarged by a whole factor with nearest neighbour in the
    pixels themselves, so every viewer (a browser ignoring ``image-rendering``, W&B, an image viewer) shows the
    pixels the metrics saw rather than a blur the model did not make; large ones become thumbnails."""
    w, h = image.size
    if min(w, h) < THUMB_MIN:
        k = -(-THUMB_MIN // min(w, h))
        return image.resize((w * k, h * k), Image.NEAREST)
    if max(w, h) > THUMB_MAX:
        small = image.copy()
        small.thumbnail((THUMB_MAX, THUMB_MAX))
        return small
    return image


def attribute_groups(rows: Sequence[EvalRow], max_rows: int) -> list[tuple[str, list[int]]]:
    """Per requested attribute (by name), the positions in ``rows`` of up to ``max_rows`` rows that request it.
    The reports show images attribute by attribute because adherence is judged per attribute: the first rows of a
    suite are often all one attribute. A row that requests two attributes shows under both."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        for a in dict.fromkeys(r.attributes or [NO_ATTRIBUTE]):
            shown = groups.setdefault(a, [])
            if len(shown) < max_rows:
                shown.append(i)
    return sorted(groups.items())


def shown_rows(rows: Sequence[EvalRow], max_rows: int) -> list[int]:
    """The positions of every row the reports show, in order: the runner generates only these when a
    variant does not cover every row."""
    return sorted({i for _, shown in attribute_groups(rows, max_rows) for i in shown})


def grid_image(pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 4, pad: int = 2) -> Image.Image:
    """The report's image rows in one PNG, attribute by attribute as in the HTML (rows = prompts, columns =
    I_o/I_a per variant), for W&B and anyone without a browser."""
    variants = list(pairs)
    shown = [i for _, idx in attribute_groups(rows, max_rows) for i in idx]
    first = next((p for v in variants for i in shown if (p := pairs[v][i]) is not None), None)
    if first is None:
        return Image.new("RGB", (1, 1), "white")
    w, h = display_image(first[0]).size
    grid = Image.new("RGB", (len(variants) * 2 * (w + pad) + pad, len(shown) * (h + pad) + pad), "white")
    for r, i in enumerate(shown):
        for c, v in enumerate(variants):
            if pairs[v][i] is None:  # a variant not generated on this row (per-category eval): left blank
                continue
            for k in range(2):
                cell = display_image(pairs[v][i][k])
                if cell.size != (w, h):
                    cell = cell.resize((w, h), Image.NEAREST)
                grid.paste(cell, (pad + (2 * c + k) * (w + pad), pad + r * (h + pad)))
    return grid


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _yerr(values: Sequence[float], cis: Sequence[Sequence[float] | None]) -> list[list[float]]:
    """Error bar lengths below and above each value from its 95% CI (0 without one). Clipped at 0: matplotlib
    refuses a negative length, which a CI that misses its point estimate by rounding would give."""
    lo = [max(0.0, v - c[0]) if c and not math.isnan(v) else 0.0 for v, c in zip(values, cis)]
    hi = [max(0.0, c[1] - v) if c and not math.isnan(v) else 0.0 for v, c in zip(values, cis)]
    return [lo, hi]


def plot_attributes(results: dict[str, Any]) -> bytes:
    """Grouped bars: adherence per attribute for every variant (base first), the 95% CI as whiskers."""
    from matplotlib.figure import Figure

    attrs = _attributes(results)
    series = {v: (results["variants"][v].get("adherence") or {}).get("by_attribute") or {} for v in results["variants"]}
    if _per_category(results):  # the base and each category adapter at its top weight, on every attribute
        cross = results["cross_effects"]
        attrs = list(cross["attributes"])
        series = {results.get("reference", "base"): series.get(results.get("reference", "base"), {})}
        for c in cross["adapters"]:
            cells = cross["by_attribute"].get(c) or {}
            series[f"{c}@{cross['top_weight']:g}"] = {a: (cells.get(a) or {}).get("adherence") for a in attrs}
    variants = list(series)
    fig = Figure(figsize=(max(5.0, 0.9 * len(attrs) + 2), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(variants))
    for k, v in enumerate(variants):
        points = [series[v].get(a) or {} for a in attrs]
        vals = [p.get("value") or 0.0 for p in points]
        xs = [i + (k - (len(variants) - 1) / 2) * width for i in range(len(attrs))]
        ax.bar(xs, vals, width, label=v, yerr=_yerr(vals, [p.get("ci95") for p in points]), capsize=2,
               error_kw={"elinewidth": 1, "ecolor": "#333"})
    ax.set_xticks(range(len(attrs)))
    ax.set_xticklabels(attrs, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("adherence rate")
    ax.set_title("Adherence per attribute (whiskers: 95% CI)")
    ax.legend(fontsize=8)
    return _figure_png(fig)


def _curve_values(curve: Sequence[dict[str, Any]]) -> list[float]:
    return [p["adherence"] if p.get("adherence") is not None else float("nan") for p in curve]


def plot_dial(results: dict[str, Any]) -> bytes:
    """Adapter weight vs adherence (with CI) and leakage; the base as a dashed line."""
    from matplotlib.figure import Figure

    curve = results.get("dial_curve") or []
    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot()
    ws = [p["weight"] for p in curve]
    adh = _curve_values(curve)
    ax.errorbar(ws, adh, yerr=_yerr(adh, [p.get("ci95") for p in curve]), marker="o", capsize=3, label="adherence")
    base = (results["variants"].get(results.get("reference", "base"), {}).get("adherence") or {}).get("value")
    if base is not None:
        ax.axhline(base, linestyle="--", color="gray", label="base adherence")
    ax.set_xlabel("adapter weight")
    ax.set_ylabel("adherence rate")
    ax.set_ylim(0, 1.05)
    ax2 = ax.twinx()
    leak = [p["leakage_max_abs_points"] if p.get("leakage_max_abs_points") is not None else float("nan") for p in curve]
    ax2.plot(ws, leak, marker="s", color="tab:red", label="leakage max |pts|")
    ax2.set_ylabel("leakage (max |pts|)", color="tab:red")
    ax.set_title("Dial curve")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    return _figure_png(fig)


def _plot_curves(curves: dict[str, Sequence[dict[str, Any]]], xlabel: str, ylabel: str) -> bytes:
    """One line per category: weight vs adherence, the 95% CI as error bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for c, curve in curves.items():
        adh = _curve_values(curve)
        ax.errorbar([p["weight"] for p in curve], adh, yerr=_yerr(adh, [p.get("ci95") for p in curve]), marker="o",
                    capsize=3, label=c)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.set_title("Dial per category (error bars: 95% CI)")
    ax.legend(fontsize=8, loc="lower right")
    return _figure_png(fig)


def plot_category_dials(results: dict[str, Any]) -> bytes:
    """Per-category eval: one dial curve per category adapter (the others at 0), on its category's rows."""
    return _plot_curves({c: dial.get("curve") or [] for c, dial in results["category_dials"].items()},
                        "adapter weight (the other category adapters at 0)", "adherence on the category's rows")


def plot_category_curves(results: dict[str, Any]) -> bytes:
    """Single adapter: its dial read per taxonomy category (``category_curves``)."""
    return _plot_curves(results["category_curves"], "adapter weight", "adherence on the category's rows")


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body{margin:0;background:#fff;color:#1f2328;
  font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
main{box-sizing:border-box;max-width:1280px;margin:0 auto;padding:32px 28px 64px}
h1{font-size:28px;line-height:1.25;margin:0 0 6px}
h2{font-size:21px;line-height:1.3;margin:44px 0 12px;padding-bottom:6px;border-bottom:1px solid #d8dee4}
h3{font-size:17px;margin:28px 0 6px}
p{margin:8px 0;max-width:90ch}
a{color:#0969da}
.meta,figcaption{color:#59636e;font-size:13px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;background:#f6f8fa;
  padding:1px 5px;border-radius:4px}
.scroll{overflow-x:auto;margin:12px 0}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e1e4e8;padding:6px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
figure{margin:18px 0}
figure img{max-width:100%;height:auto}
.plots{display:flex;flex-wrap:wrap;align-items:flex-start;gap:8px 40px}
.plots figure{max-width:100%}
table.images th{text-align:center}
table.images td{padding:4px;text-align:center;vertical-align:middle}
table.images td.missing{color:#8c959f;min-width:60px}
table.images img{display:block;margin:0 auto;image-rendering:pixelated}
table.images tr.pair td:nth-child(odd),table.images thead tr+tr th:nth-child(odd){border-left:2px solid #c8d1da}
table.images tr.prompt td{text-align:left;vertical-align:top;padding:6px 10px 12px;border-top:0;
  background:#fcfcfd;max-width:0}
tr.prompt .tag{display:inline-block;min-width:2.6em;font-weight:600;color:#59636e}
ul.toc{display:flex;flex-wrap:wrap;gap:4px 16px;padding:0;list-style:none}
"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table as HTML, every cell escaped (in a box that scrolls sideways when the table is wide)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def html_figure(png: bytes, alt: str, caption: str) -> str:
    return (f"<figure><img alt='{html.escape(alt)}' src='{data_uri(png)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_plots(figures: Sequence[str]) -> str:
    """Figures side by side where the page is wide enough."""
    return "<div class='plots'>" + "".join(figures) + "</div>"


def html_page(title: str, body: Sequence[str]) -> str:
    """A complete page; self-contained (no external stylesheet, script or font) so it opens offline and
    survives being mailed or attached."""
    return "\n".join([
        "<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>", "<body><main>", *body,
        "</main></body></html>"])


def _anchor(attribute: str) -> str:
    return "images-" + re.sub(r"[^A-Za-z0-9_-]+", "-", attribute)


def attribute_counts(rows: Sequence[EvalRow]) -> dict[str, int]:
    """How many of ``rows`` request each attribute (the "of N" under each attribute's images)."""
    return dict(Counter(a for r in rows for a in dict.fromkeys(r.attributes or [NO_ATTRIBUTE])))


def html_images(pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 4, row_ids: Sequence[int] | None = None,
                requested: dict[str, int] | None = None) -> list[str]:
    """The image rows, one heading and table per attribute: per prompt pair a row of I_o/I_a for every variant
    with the prompts right under it, so each image is read against the text that asked for it.

    ``row_ids``: the suite index of each of ``rows`` when they are a selection (per-category eval, the demo);
    ``requested``: the suite's rows per attribute then (:func:`attribute_counts` of every row), when known."""
    variants = list(pairs)
    groups = attribute_groups(rows, max_rows)
    if requested is None and row_ids is None:
        requested = attribute_counts(rows)
    missing = any(p is None for v in variants for p in pairs[v])
    uris: dict[tuple[str, int, int], str] = {}  # a row shown under two attributes is encoded once

    def cell(v: str, i: int, k: int, shown: int) -> str:
        if (v, i, k) not in uris:
            uris[v, i, k] = data_uri(png_bytes(display_image(pairs[v][i][k])))
        which = ("I_o", "I_a")[k]
        return f"<td><img alt='{html.escape(v)} row {shown} {which}' src='{uris[v, i, k]}'></td>"

    head = ("<thead><tr>" + "".join(f"<th colspan='2'>{html.escape(v)}</th>" for v in variants) + "</tr><tr>"
            + "<th>I_o</th><th>I_a</th>" * len(variants) + "</tr></thead>")
    parts = ["<h2>Images</h2>",
             f"<p>Up to {max_rows} prompt pairs per requested attribute (a pair that requests two attributes shows "
             "under both). Each row: I_o from the ordinary prompt P_o and I_a from the anti-aesthetic prompt P_a, from "
             "the same seed, for every variant; the prompts are under the images. Small images are enlarged by a "
             f"whole factor without smoothing (to at least {THUMB_MIN} px), large ones shown as thumbnails."
             + (" A dash: the variant was not generated on that row (a category adapter below its top weight runs on "
                "its category's rows only)." if missing else "") + "</p>",
             "<ul class='toc'>" + "".join(f"<li><a href='#{_anchor(a)}'>{html.escape(a)}</a></li>" for a, _ in groups)
             + "</ul>"]
    for attr, idx in groups:
        total = (requested or {}).get(attr)
        parts.append(f"<h3 id='{_anchor(attr)}'>{html.escape(attr)}</h3>")
        count = f"Prompt pairs shown: {len(idx)}" if total is None else f"{len(idx)} of {total} prompt pairs that request it"
        parts.append(f"<p class='meta'>{count}.</p>")
        body = []
        for i in idx:
            r, shown = rows[i], i if row_ids is None else row_ids[i]
            cells = "".join("<td class='missing'>–</td><td class='missing'>–</td>" if pairs[v][i] is None
                            else cell(v, i, 0, shown) + cell(v, i, 1, shown) for v in variants)
            body.append(f"<tr class='pair'>{cells}</tr>")
            body.append(f"<tr class='prompt'><td colspan='{2 * len(variants)}'>"
                        f"<div><span class='tag'>P_o</span> <span>{html.escape(r.prompt_o)}</span></div>"
                        f"<div><span class='tag'>P_a</span> <span>{html.escape(r.prompt_a)}</span></div>"
                        f"<div class='meta'>attributes: {html.escape(', '.join(r.attributes) or '–')} · seed {r.seed}"
                        f" · suite row {shown}</div></td></tr>")
        parts.append(f"<div class='scroll'><table class='images'>{head}<tbody>{''.join(body)}</tbody></table></div>")
    return parts


PLOT_CAPTIONS = {
    "attributes": "Adherence per attribute for each variant; whiskers: 95% CI (Wilson's score interval).",
    "dial": "Adapter weight vs adherence (error bars: 95% CI) and the largest leakage; dashed: the base's adherence.",
    "category_curves": "Adapter weight vs adherence on the rows that request each taxonomy category.",
    "category_dials": "Each category adapter turned up alone vs adherence on its category's rows.",
}


def html_result_plots(results: dict[str, Any], captions: dict[str, str] | None = None) -> str:
    """Every plot ``results`` has data for, side by side with its caption. One place decides which plots a
    results dict gets, for the eval report and the demo's; ``captions`` overrides :data:`PLOT_CAPTIONS` by key."""
    cap = {**PLOT_CAPTIONS, **(captions or {})}
    plots = [html_figure(plot_attributes(results), "adherence per attribute", cap["attributes"])]
    if results.get("dial_curve"):
        plots.append(html_figure(plot_dial(results), "dial curve", cap["dial"]))
    if results.get("category_curves"):
        plots.append(html_figure(plot_category_curves(results), "dial per category", cap["category_curves"]))
    if _per_category(results):
        plots.append(html_figure(plot_category_dials(results), "dial per category", cap["category_dials"]))
    return html_plots(plots)


def html_report(results: dict[str, Any], pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 4,
                row_ids: Sequence[int] | None = None) -> str:
    """A self-contained HTML page: tables, plots and the images by attribute, every image a PNG data URI.

    ``row_ids``: the suite index of each of ``rows`` when they are a selection (per-category eval)."""
    suite = results.get("suite", {})
    body = [
        "<h1>pluralign eval</h1>",
        f"<p class='meta'>Suite <code>{html.escape(str(suite.get('source', '?')))}</code>, {suite.get('n_rows', '?')} "
        f"prompt pairs; reference <code>{html.escape(str(results.get('reference', 'base')))}</code>; wall time "
        f"{results.get('wall_seconds') or 0:.1f} s.</p>",
        "<h2>Summary</h2>", html_table(*summary_rows(results)),
    ]
    if _weight0_line(results):
        body.append(f"<p>{html.escape(_weight0_line(results))}</p>")
    if _per_category(results):
        for part in _category_sections(results, html_table):
            if part.startswith("### "):
                body.append(f"<h3>{html.escape(part[4:])}</h3>")
            elif part.startswith("## "):
                body.append(f"<h2>{html.escape(part[3:])}</h2>")
            elif part.startswith("<div class='scroll'>"):
                body.append(part)
            elif part:
                body.append(f"<p>{html.escape(part)}</p>")
    else:
        body += ["<h2>Per attribute</h2>", html_table(*attribute_rows(results))]
        if results.get("category_curves"):
            body += ["<h2>Dial per category</h2>", f"<p>{_CURVES_TEXT}</p>", html_table(*category_curve_rows(results))]
    body += ["<h2>Plots</h2>", html_result_plots(results)]
    reference = ((results["variants"].get(results.get("reference", "base")) or {}).get("adherence") or {})
    requested = {a: d["requested"] for a, d in (reference.get("by_attribute") or {}).items()
                 if d.get("requested") is not None}  # a per-category eval's rows are a selection: the base saw all
    body += html_images(pairs, rows, max_rows, row_ids, requested if row_ids is not None else None)
    body.append(f"<p class='meta'>{html.escape(_NOTES)}</p>")
    return html_page("pluralign eval", body)


def write_reports(results: dict[str, Any], pairs: Pairs, rows: Sequence[EvalRow], output: str | Path,
                  max_rows: int = 4, row_ids: Sequence[int] | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``grid.png`` and the plot PNGs under ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report_md": out / "report.md", "report_html": out / "report.html", "grid": out / "grid.png",
             "plot_attributes": out / "adherence_by_attribute.png"}
    paths["report_md"].write_text(markdown_summary(results), encoding="utf-8")
    paths["report_html"].write_text(html_report(results, pairs, rows, max_rows, row_ids), encoding="utf-8")
    grid_image(pairs, rows, max_rows).save(paths["grid"])
    paths["plot_attributes"].write_bytes(plot_attributes(results))
    if results.get("dial_curve"):
        paths["plot_dial"] = out / "dial_curve.png"
        paths["plot_dial"].write_bytes(plot_dial(results))
    if results.get("category_curves"):
        paths["plot_category_curves"] = out / "category_curves.png"
        paths["plot_category_curves"].write_bytes(plot_category_curves(results))
    if _per_category(results):
        paths["plot_category_dials"] = out / "category_dials.png"
        paths["plot_category_dials"].write_bytes(plot_category_dials(results))
    return paths


# ---------------------------------------------------------------------------------------------
# W&B


def wandb_image_table(pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 4,
                      row_ids: Sequence[int] | None = None):
    """The HTML's image rows as a W&B table: one row per shown prompt pair (attribute by attribute), its
    prompts and seed, and I_o/I_a of every variant (empty where a variant was not generated on the row)."""
    import wandb

    variants = list(pairs)
    columns = ["attribute", "row", "prompt_o", "prompt_a", "seed"] + [f"{v} {k}" for v in variants for k in ("I_o", "I_a")]
    table = wandb.Table(columns=columns)
    for attr, idx in attribute_groups(rows, max_rows):
        for i in idx:
            r = rows[i]
            cells: list[Any] = [attr, i if row_ids is None else row_ids[i], r.prompt_o, r.prompt_a, r.seed]
            for v in variants:
                pair = pairs[v][i]
                cells += [None, None] if pair is None else [wandb.Image(display_image(im)) for im in pair]
            table.add_data(*cells)
    return table


def log_wandb(run, results: dict[str, Any], pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 4,
              prefix: str = "eval", row_ids: Sequence[int] | None = None) -> None:
    """Send the summary and per-attribute tables, the images (a table with prompts, and the grid) and the plots
    to a W&B run (works the same in ``offline`` and ``disabled`` mode: nothing here needs the network).
    A per-category eval adds ``<prefix>/category_dial/<category>``, the cross-effect tables and the
    per-category dial plot."""
    import wandb

    header, body = summary_rows(results)
    a_header, a_body = attribute_rows(results)
    log: dict[str, Any] = {
        f"{prefix}/summary": wandb.Table(columns=header, data=body),
        f"{prefix}/by_attribute": wandb.Table(columns=a_header, data=a_body),
        f"{prefix}/images": wandb_image_table(pairs, rows, max_rows, row_ids),
        f"{prefix}/grid": wandb.Image(grid_image(pairs, rows, max_rows),
                                      caption=f"rows: up to {max_rows} prompts per attribute; columns: I_o, I_a per "
                                      "variant" + ("" if row_ids is None else " (blank: not generated on that row)")),
        f"{prefix}/adherence_by_attribute": wandb.Image(Image.open(io.BytesIO(plot_attributes(results)))),
    }
    if results.get("dial_curve"):
        log[f"{prefix}/dial_curve"] = wandb.Image(Image.open(io.BytesIO(plot_dial(results))))
    if results.get("category_curves"):
        h, b = category_curve_rows(results)
        log[f"{prefix}/by_category"] = wandb.Table(columns=h, data=b)
        log[f"{prefix}/category_curves"] = wandb.Image(Image.open(io.BytesIO(plot_category_curves(results))))
    if _per_category(results):
        for c in results["category_dials"]:
            h, b = category_dial_rows(results, c)
            log[f"{prefix}/category_dial/{c}"] = wandb.Table(columns=h, data=b)
        for key, (h, b) in {"by_category": cross_rows(results, "by_category"),
                            "by_attribute": cross_rows(results, "by_attribute"),
                            "leakage_by_attribute": cross_leakage_rows(results)}.items():
            log[f"{prefix}/cross_effects/{key}"] = wandb.Table(columns=h, data=b)
        log[f"{prefix}/category_dials"] = wandb.Image(Image.open(io.BytesIO(plot_category_dials(results))))
    for name, v in results["variants"].items():
        adh = (v.get("adherence") or {}).get("value")
        if adh is not None:
            log[f"{prefix}/{name}/adherence"] = adh
        leak = (v.get("leakage") or {}).get("max_abs_points")
        if leak is not None:
            log[f"{prefix}/{name}/leakage_max_abs_points"] = leak
    run.log(log)
