"""Human-readable views of ``results.json``: a markdown summary, a self-contained HTML report
(image grids and plots embedded as base64 PNG data URIs, so the file can be mailed or attached
as is) and the same tables and images sent to W&B when a tracker is on.

Grid layout: one row per prompt pair; for each variant (base, then the adapter weights) two
columns, I_o (ordinary prompt) and I_a (anti-aesthetic prompt), from the same seed.

A per-category eval (``category_dials`` and ``cross_effects`` in the results) adds one dial table
per category, the cross-effect matrices and the ``category_dials.png`` plot; its grid shows rows of
every category, with an empty cell where a variant was not generated on a row.
"""

from __future__ import annotations

import base64
import html
import io
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
    w0 = (results.get("checks") or {}).get("weight0_equals_base")
    if w0 and "by_category" in w0:
        verdict = "yes" if w0.get("passed") else "NO"
        each = ", ".join(f"{c} {z.get('max_abs_diff')}" for c, z in w0["by_category"].items())
        parts += ["", f"Every category adapter at weight 0 reproduces the base: {verdict} (max pixel difference "
                  f"{w0.get('max_abs_diff')}; {each})."]
    elif w0:
        verdict = "yes" if w0.get("passed") else "NO"
        parts += ["", f"Adapter at weight 0 reproduces the base: {verdict} (max pixel difference {w0.get('max_abs_diff')})."]
    parts += ["", "Adherence: share of requested measured attributes shown by I_a: by a verifier rule relative to I_o "
              "(same seed), or by the attribute judge for attributes no rule measures. "
              "Leakage: percentage-point rate at which an attribute's rule fires on the variant's ordinary image "
              "against the base's. Brackets: paired bootstrap 95% CI. See docs/eval.md.", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# images and plots


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def grid_image(pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 8, pad: int = 2) -> Image.Image:
    """One PIL image of the grid (rows = prompts, columns = I_o/I_a per variant), for W&B and users."""
    variants = list(pairs)
    n = min(max_rows, len(rows))
    if not variants or n == 0:
        return Image.new("RGB", (1, 1), "white")
    w, h = next(p for p in pairs[variants[0]] if p is not None)[0].size
    grid = Image.new("RGB", (len(variants) * 2 * (w + pad) + pad, n * (h + pad) + pad), "white")
    for r in range(n):
        for c, v in enumerate(variants):
            if pairs[v][r] is None:  # a variant not generated on this row (per-category eval): left blank
                continue
            for k in range(2):
                grid.paste(pairs[v][r][k].resize((w, h)), (pad + (2 * c + k) * (w + pad), pad + r * (h + pad)))
    return grid


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def plot_attributes(results: dict[str, Any]) -> bytes:
    """Grouped bars: adherence per attribute for every variant (base first)."""
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
        by = series[v]
        vals = [((by.get(a) or {}).get("value") or 0.0) for a in attrs]
        err_lo = [max(0.0, (by.get(a) or {}).get("value") or 0.0) - ((by.get(a) or {}).get("ci95") or [0, 0])[0]
                  if (by.get(a) or {}).get("ci95") else 0.0 for a in attrs]
        err_hi = [((by.get(a) or {}).get("ci95") or [0, 0])[1] - ((by.get(a) or {}).get("value") or 0.0)
                  if (by.get(a) or {}).get("ci95") else 0.0 for a in attrs]
        xs = [i + (k - (len(variants) - 1) / 2) * width for i in range(len(attrs))]
        ax.bar(xs, vals, width, label=v, yerr=[err_lo, err_hi], capsize=2)
    ax.set_xticks(range(len(attrs)))
    ax.set_xticklabels(attrs, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("adherence rate")
    ax.set_title("Adherence per attribute, before/after")
    ax.legend(fontsize=8)
    return _figure_png(fig)


def plot_dial(results: dict[str, Any]) -> bytes:
    """Adapter weight vs adherence (with CI) and leakage; the base as a dashed line."""
    from matplotlib.figure import Figure

    curve = results.get("dial_curve") or []
    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot()
    ws = [p["weight"] for p in curve]
    adh = [p["adherence"] if p["adherence"] is not None else float("nan") for p in curve]
    lo = [a - p["ci95"][0] if p.get("ci95") else 0.0 for a, p in zip(adh, curve)]
    hi = [p["ci95"][1] - a if p.get("ci95") else 0.0 for a, p in zip(adh, curve)]
    ax.errorbar(ws, adh, yerr=[lo, hi], marker="o", capsize=3, label="adherence")
    base = (results["variants"].get(results.get("reference", "base"), {}).get("adherence") or {}).get("value")
    if base is not None:
        ax.axhline(base, linestyle="--", color="gray", label="base adherence")
    ax.set_xlabel("adapter weight")
    ax.set_ylabel("adherence rate")
    ax.set_ylim(0, 1.05)
    ax2 = ax.twinx()
    leak = [p["leakage_max_abs_points"] if p["leakage_max_abs_points"] is not None else float("nan") for p in curve]
    ax2.plot(ws, leak, marker="s", color="tab:red", label="leakage max |pts|")
    ax2.set_ylabel("leakage (max |pts|)", color="tab:red")
    ax.set_title("Dial curve")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    return _figure_png(fig)


def plot_category_dials(results: dict[str, Any]) -> bytes:
    """One dial curve per category adapter (the others at 0): weight vs adherence on its rows, with the CI."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for c, dial in results["category_dials"].items():
        curve = dial.get("curve") or []
        ws = [p["weight"] for p in curve]
        adh = [p["adherence"] if p["adherence"] is not None else float("nan") for p in curve]
        lo = [a - p["ci95"][0] if p.get("ci95") else 0.0 for a, p in zip(adh, curve)]
        hi = [p["ci95"][1] - a if p.get("ci95") else 0.0 for a, p in zip(adh, curve)]
        ax.errorbar(ws, adh, yerr=[lo, hi], marker="o", capsize=3, label=c)
    ax.set_xlabel("adapter weight (the other category adapters at 0)")
    ax.set_ylabel("adherence on the category's rows")
    ax.set_ylim(0, 1.05)
    ax.set_title("Dial per category")
    ax.legend(fontsize=8, loc="lower right")
    return _figure_png(fig)


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}
th{background:#f3f3f3}
img.cell{width:128px;height:auto;image-rendering:pixelated;display:block}
td.prompt{max-width:280px;font-size:12px}
"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table as HTML, every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(results: dict[str, Any], pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 8,
                row_ids: Sequence[int] | None = None) -> str:
    """A self-contained HTML page: tables, plots and the image grid, every image a PNG data URI.

    ``row_ids``: the suite index of each of ``rows`` when they are a selection (per-category eval)."""
    variants = list(pairs)
    n = min(max_rows, len(rows))
    suite = results.get("suite", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pluralign eval</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>pluralign eval</h1>",
        f"<p>Suite <code>{html.escape(str(suite.get('source', '?')))}</code>, {suite.get('n_rows', '?')} prompt pairs; "
        f"wall time {results.get('wall_seconds', 0):.1f} s.</p>",
        "<h2>Summary</h2>", html_table(*summary_rows(results)),
    ]
    if _per_category(results):
        for part in _category_sections(results, html_table):
            if part.startswith("### "):
                parts.append(f"<h3>{html.escape(part[4:])}</h3>")
            elif part.startswith("## "):
                parts.append(f"<h2>{html.escape(part[3:])}</h2>")
            elif part.startswith("<table>"):
                parts.append(part)
            elif part:
                parts.append(f"<p>{html.escape(part)}</p>")
    else:
        parts += ["<h2>Per attribute</h2>", html_table(*attribute_rows(results))]
    parts += ["<h2>Plots</h2>", f"<img alt='adherence per attribute' src='{data_uri(plot_attributes(results))}'>"]
    if results.get("dial_curve"):
        parts.append(f"<img alt='dial curve' src='{data_uri(plot_dial(results))}'>")
    if _per_category(results):
        parts.append(f"<img alt='dial per category' src='{data_uri(plot_category_dials(results))}'>")
    which = "first" if row_ids is None else "a selection"
    parts.append(f"<h2>Images ({which} {n} of {suite.get('n_rows', len(rows)) if row_ids is not None else len(rows)} "
                 "prompt pairs)</h2><table><tr><th>#</th><th>prompts</th>")
    for v in variants:
        parts.append(f"<th>{html.escape(v)}<br>I_o</th><th>{html.escape(v)}<br>I_a</th>")
    parts.append("</tr>")
    for i in range(n):
        r = rows[i]
        shown = i if row_ids is None else row_ids[i]
        cells = [f"<td>{shown}</td><td class='prompt'><b>P_o</b> {html.escape(r.prompt_o)}<br><b>P_a</b> "
                 f"{html.escape(r.prompt_a)}<br><i>{html.escape(', '.join(r.attributes))}</i> · seed {r.seed}</td>"]
        for v in variants:
            if pairs[v][i] is None:  # not generated on this row (per-category eval)
                cells.append("<td>–</td><td>–</td>")
                continue
            o, a = pairs[v][i]
            cells.append(f"<td><img class='cell' alt='{html.escape(v)} {shown} o' src='{data_uri(png_bytes(o))}'></td>")
            cells.append(f"<td><img class='cell' alt='{html.escape(v)} {shown} a' src='{data_uri(png_bytes(a))}'></td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_reports(results: dict[str, Any], pairs: Pairs, rows: Sequence[EvalRow], output: str | Path,
                  max_rows: int = 8, row_ids: Sequence[int] | None = None) -> dict[str, Path]:
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
    if _per_category(results):
        paths["plot_category_dials"] = out / "category_dials.png"
        paths["plot_category_dials"].write_bytes(plot_category_dials(results))
    return paths


# ---------------------------------------------------------------------------------------------
# W&B


def log_wandb(run, results: dict[str, Any], pairs: Pairs, rows: Sequence[EvalRow], max_rows: int = 8,
              prefix: str = "eval", row_ids: Sequence[int] | None = None) -> None:
    """Send the summary and per-attribute tables, the grid and the plots to a W&B run
    (works the same in ``offline`` and ``disabled`` mode: nothing here needs the network).
    A per-category eval adds ``<prefix>/category_dial/<category>``, the cross-effect tables and the
    per-category dial plot."""
    import wandb

    header, body = summary_rows(results)
    a_header, a_body = attribute_rows(results)
    log: dict[str, Any] = {
        f"{prefix}/summary": wandb.Table(columns=header, data=body),
        f"{prefix}/by_attribute": wandb.Table(columns=a_header, data=a_body),
        f"{prefix}/grid": wandb.Image(grid_image(pairs, rows, max_rows),
                                      caption="rows: prompts; columns: I_o, I_a per variant" if row_ids is None else
                                      f"rows: suite prompts {', '.join(map(str, row_ids[:max_rows]))}; columns: I_o, "
                                      "I_a per variant (blank: not generated on that row)"),
        f"{prefix}/adherence_by_attribute": wandb.Image(Image.open(io.BytesIO(plot_attributes(results)))),
    }
    if results.get("dial_curve"):
        log[f"{prefix}/dial_curve"] = wandb.Image(Image.open(io.BytesIO(plot_dial(results))))
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
