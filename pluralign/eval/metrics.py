"""What the eval loop measures, as pure functions of per-row arrays (plus thin wrappers that fill
those arrays from images with the verifier rules, reward models and content checkers).

Definitions (every rate carries a 95% CI over suite rows: Wilson's score interval for a rate of 0/1 outcomes,
the paired bootstrap for fractional ones and for differences; :func:`pluralign.rewards.metrics.rate_with_ci`):

- **Adherence** of a variant: per row, the share of its *measured* requested attributes for
  which ``I_a`` shows the attribute: relative to ``I_o`` from the same seed where a verifier rule
  exists (margin > 0, i.e. ``pluralign.rewards.rules.adheres(I_a, I_o, attribute)``), else by the
  attribute judge when one is configured (:class:`AttributeMeter`). The overall value is the mean
  over rows with at least one measured attribute; ``by_attribute`` is the rate over the rows that
  request the attribute, with ``n`` measured of ``requested`` and ``measured_by``; an attribute
  nothing measures is reported as unmeasured, never as a rate.
- **Leakage** of a variant on ordinary prompts, per measured attribute ``a`` of the suite (a judged
  attribute: the judge's decision on the variant's ``I_o`` minus that on the reference's):
  ``points(a) = 100 * (P[adheres(I_o^variant, I_o^ref, a)] - P[adheres(I_o^ref, I_o^ref, a)])``
  over all rows, where ``ref`` is the base model. The first term is how often the adapter's
  ordinary image looks as if ``a`` had been requested, judged against the base's image from the
  same seed; the second is the rule's firing rate on identical images (0 at any positive
  threshold), which is what an adapter with no effect on ordinary prompts scores.
  ``max_abs_points`` is the largest ``|points(a)|``.
- **Judge success** (the paper's generator metric): ``P[r(I_a, P_a) > r(I_o, P_a)]``.
- **Reward matrix**: mean ``r(I_x, P_y)`` for x, y in {o, a}, and ``delta_r = mean[r(I_a,P_o) - r(I_o,P_o)]``.
- **Judge win rate** vs the base on ordinary prompts: ``P[r(I_o^variant, P_o) > r(I_o^ref, P_o)]``
  (ties count one half; 0.5 = no change).
- **Content fidelity**: the share of ``I_a`` that still shows the requested content (a pluggable
  checker, e.g. the toy world's ``ContentChecker``); the same rate on ``I_o`` is reported beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pluralign.data.taxonomy import ATTRIBUTES, DIMENSION_MEASURES, phrase, requested_dimension
from pluralign.rewards.intent import structural_similarity
from pluralign.rewards.metrics import accuracy_report, paired_bootstrap_ci, rate_with_ci
from pluralign.rewards.rules import adherence_table, load_rules

from .suite import EvalRow

# ---------------------------------------------------------------------------------------------
# statistics (delegated to pluralign.rewards.metrics so the whole project shares one bootstrap)


def rate_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{value, ci95, n}`` of the mean of per-row values (NaN rows dropped) with a 95% CI (Wilson for 0/1 values)."""
    r = rate_with_ci(np.asarray(values, dtype=np.float64), n_boot=n_boot, seed=seed)
    if r["n"] == 0:
        return {"value": None, "ci95": None, "n": 0}
    return {"value": r["rate"], "ci95": [float(x) for x in r["ci95"]], "n": r["n"]}


def paired_delta_ci(after: Sequence[float], before: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{value, ci95, n}`` of mean(after - before) over rows where both are defined (paired bootstrap)."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    if not keep.any():
        return {"value": None, "ci95": None, "n": 0}
    lo, hi = paired_bootstrap_ci(a[keep], b[keep], n_boot=n_boot, seed=seed)
    return {"value": float((a[keep] - b[keep]).mean()), "ci95": [float(lo), float(hi)], "n": int(keep.sum())}


# ---------------------------------------------------------------------------------------------
# adherence


def row_adherence(margins: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, the share of requested verifiable attributes with margin > 0 (NaN: none requested).

    ``margins`` maps attribute -> per-row verifier margin, NaN where the row did not request it
    (the layout of ``pluralign.rewards.rules.adherence_table``).
    """
    if not margins:
        return np.zeros(0)
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in margins.values()], axis=1)
    requested = ~np.isnan(stacked)
    hits = (np.nan_to_num(stacked, nan=-np.inf) > 0) & requested
    count = requested.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits.sum(axis=1) / np.maximum(count, 1), np.nan)


def attribute_hits(margin: Sequence[float]) -> np.ndarray:
    """Per row, 1 where the attribute shows (margin > 0), 0 where it does not, NaN where it was not requested."""
    m = np.asarray(margin, dtype=np.float64)
    return np.where(np.isnan(m), np.nan, (np.nan_to_num(m, nan=-np.inf) > 0).astype(np.float64))


def adherence_summary(margins: dict[str, np.ndarray], *, rows: Sequence[EvalRow] | None = None,
                      meter: AttributeMeter | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Overall and per-attribute adherence rates with CIs (see the module docstring).

    Given the suite ``rows`` (and the ``meter`` that measured them), every *requested* attribute gets an
    entry with ``requested`` (rows asking for it) beside ``n`` (rows measured) and ``measured_by``
    (``rule``, ``judge:NAME`` or None): an attribute nothing measures shows as unmeasured, value None,
    not as 0 or 100%. The overall value is over rows with at least one measured attribute
    (``rows_measured`` of ``rows``)."""
    by_attribute = {}
    requested = Counter(a for r in rows or () for a in r.attributes)
    for attr in sorted(set(margins) | set(requested)):
        entry = rate_ci(attribute_hits(margins[attr]), n_boot=n_boot, seed=seed) if attr in margins else \
            {"value": None, "ci95": None, "n": 0}
        if rows is not None:
            entry["requested"] = requested[attr]
            entry["measured_by"] = meter.source(attr) if meter is not None and attr in margins else None
        by_attribute[attr] = entry
    out = rate_ci(row_adherence(margins), n_boot=n_boot, seed=seed) if margins else {"value": None, "ci95": None, "n": 0}
    if rows is not None:
        out["rows"] = len(rows)
        out["rows_measured"] = out["n"]
    out["by_attribute"] = by_attribute
    out["by_category"] = category_adherence(margins, n_boot=n_boot, seed=seed)
    return out


def category_adherence(margins: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per taxonomy category, adherence over the rows that request one of its measured attributes, counting
    only those attributes (the category adapter's share of a multi-attribute row). Attributes outside the
    taxonomy have no category and are left out."""
    by_cat: dict[str, dict[str, np.ndarray]] = {}
    for attr, m in margins.items():
        if attr in ATTRIBUTES:
            by_cat.setdefault(ATTRIBUTES[attr].category, {})[attr] = m
    return {c: {**rate_ci(row_adherence(ms), n_boot=n_boot, seed=seed), "attributes": sorted(ms)}
            for c, ms in sorted(by_cat.items())}


class AttributeMeter:
    """How the eval measures each requested attribute: by its verifier rule when it has one (model-free,
    I_a against I_o from the same seed), else by the attribute judge when one is configured (an
    intent scorer, e.g. the toy world's checker or a local VLM; its score minus its
    ``decision_threshold`` is the margin, > 0 = shown), else not at all. Unmeasured attributes are
    reported as such by :func:`adherence_summary`, never as a rate.

    A whole-dimension request (``dimension:clarity``, from the paper's ``selected`` column) is shown when
    any of its rules in ``taxonomy.DIMENSION_MEASURES`` fires (its margin is the largest of theirs); a
    dimension with none goes to the judge, asked with the dimension's negative option."""

    def __init__(self, rules: dict | None = None, judge=None, judge_name: str | None = None):
        self.rules = load_rules() if rules is None else rules
        self.judge = judge
        self.judge_name = judge_name or (getattr(judge, "name", None) if judge is not None else None)

    def _members(self, attribute: str) -> list[str]:
        """The rules that measure ``attribute``: itself, or a dimension request's member attributes."""
        dim = requested_dimension(attribute)
        names = DIMENSION_MEASURES[dim] if dim is not None else (attribute,)
        return [a for a in names if a in self.rules]

    def source(self, attribute: str) -> str | None:
        """``rule``, ``rules:A|B`` (a dimension request), ``judge:NAME`` or None (nothing measures ``attribute``)."""
        members = self._members(attribute)
        if members:
            return "rule" if members == [attribute] else "rules:" + "|".join(members)
        if self.judge is not None and self.judge.measures(attribute):
            return f"judge:{self.judge_name}"
        return None

    def measurable(self, attributes) -> list[str]:
        return sorted(a for a in set(attributes) if self.source(a) is not None)

    def _judge_margin(self, images, references, prompts_o, prompts_a, attribute: str) -> np.ndarray:
        scores = self.judge.attribute_score(list(images), list(prompts_o), list(prompts_a), [[attribute]] * len(images),
                                            references=list(references))
        return np.asarray(scores, dtype=np.float64) - float(getattr(self.judge, "decision_threshold", 0.0))

    def _rule_margins(self, images_a, images_o, wanted: list[list[str]]) -> dict[str, np.ndarray]:
        """Per requested rule-measured name, per-row margins (NaN where not requested): a dimension request
        takes the largest margin of its member rules on its rows."""
        expanded = [sorted({m for a in w for m in self._members(a)}) for w in wanted]
        table = adherence_table(images_a, images_o, expanded, self.rules) if any(expanded) else {}
        out = {}
        for name in sorted({a for w in wanted for a in w if self._members(a)}):
            rows = np.array([name in w for w in wanted])
            stacked = np.stack([table[m] for m in self._members(name)], axis=1)
            out[name] = np.where(rows, np.nanmax(np.where(rows[:, None], stacked, -np.inf), axis=1), np.nan)
        return out

    def margins(self, pairs: Sequence[tuple[Any, Any]], rows: Sequence[EvalRow]) -> dict[str, np.ndarray]:
        """Attribute -> per-row margin of I_a (NaN where the row did not request it), for every requested
        attribute that is measured."""
        images_o, images_a = [o for o, _ in pairs], [a for _, a in pairs]
        wanted = [list(r.attributes) for r in rows]
        out = self._rule_margins(images_a, images_o, wanted)
        for attr in sorted({a for w in wanted for a in w if not self._members(a) and self.source(a)}):
            idx = [i for i, w in enumerate(wanted) if attr in w]
            m = np.full(len(rows), np.nan)
            m[idx] = self._judge_margin([images_a[i] for i in idx], [images_o[i] for i in idx],
                                        [rows[i].prompt_o for i in idx], [rows[i].prompt_a for i in idx], attr)
            out[attr] = m
        return out

    def fired(self, images: Sequence[Any], references: Sequence[Any], attributes: Sequence[str],
              rows: Sequence[EvalRow]) -> dict[str, np.ndarray]:
        """Attribute -> per-row bool: does ``images[i]`` (an ordinary-prompt image) show the attribute, judged
        against ``references[i]`` (a rule's paired comparison; a judge gets the row's P_o and P_o plus the
        attribute's phrasing)."""
        attributes = [a for a in attributes if self.source(a)]
        ruled = [a for a in attributes if self._members(a)]
        out = {}
        if ruled:
            table = self._rule_margins(list(images), list(references), [ruled] * len(images))
            out.update({a: table[a] > 0 for a in table})
        for attr in attributes:
            if attr in out:
                continue
            prompts_o = [r.prompt_o for r in rows]
            out[attr] = self._judge_margin(images, references, prompts_o, [f"{p}, {phrase(attr)}" for p in prompts_o],
                                           attr) > 0
        return out


def adherence_margins(pairs: Sequence[tuple[Any, Any]], rows: Sequence[EvalRow], rules=None,
                      meter: AttributeMeter | None = None) -> dict[str, np.ndarray]:
    """Margins of I_a vs I_o for each row's requested attributes that are measured: by verifier rules
    alone, or by ``meter`` (rules, then its attribute judge)."""
    return (meter or AttributeMeter(rules)).margins(pairs, rows)


# ---------------------------------------------------------------------------------------------
# leakage


def leakage_summary(fired: dict[str, np.ndarray], baseline: dict[str, np.ndarray], *, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Per attribute drift in percentage points: ``100 * (mean(fired) - mean(baseline))``.

    ``fired[a][i]``: the rule for ``a`` fires on the variant's I_o against the reference's I_o of row i;
    ``baseline[a][i]``: it fires on the reference's I_o against itself. The CI is a paired bootstrap over rows.
    """
    by_attribute = {}
    for attr in sorted(fired):
        f = np.asarray(fired[attr], dtype=np.float64)
        b = np.asarray(baseline[attr], dtype=np.float64)
        d = paired_delta_ci(f, b, n_boot=n_boot, seed=seed)
        by_attribute[attr] = {
            "points": None if d["value"] is None else 100.0 * d["value"],
            "ci95": None if d["ci95"] is None else [100.0 * d["ci95"][0], 100.0 * d["ci95"][1]],
            "rate": float(f.mean()) if f.size else None,
            "baseline_rate": float(b.mean()) if b.size else None,
            "n": d["n"],
        }
    values = [abs(v["points"]) for v in by_attribute.values() if v["points"] is not None]
    return {"by_attribute": by_attribute, "max_abs_points": max(values) if values else None}


def leakage_fired(variant_o: Sequence[Any], reference_o: Sequence[Any], attributes: Sequence[str],
                  rules=None, *, meter: AttributeMeter | None = None, rows: Sequence[EvalRow] | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(fired, baseline)`` boolean arrays per attribute for :func:`leakage_summary`; judge-measured
    attributes (through ``meter``) need the suite ``rows`` for their prompts."""
    attributes = list(attributes)
    if not attributes:
        return {}, {}
    meter = meter or AttributeMeter(rules)
    if rows is None:
        if any(not meter._members(a) for a in attributes):
            raise ValueError("leakage_fired: judge-measured attributes need the suite rows")
        rows = [None] * len(variant_o)
    return (meter.fired(variant_o, reference_o, attributes, rows),
            meter.fired(reference_o, reference_o, attributes, rows))


def cross_effects(margins: dict[str, np.ndarray], zero_margins: dict[str, np.ndarray], leakage: dict[str, Any],
                  columns: dict[str, Sequence[str]], *, n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """One adapter's row of the cross-effect matrix, at its top weight, over every row of the suite.

    ``margins``/``zero_margins``: attribute -> per-row verifier margins (NaN where not requested) at the
    top weight and at weight 0; ``leakage``: :func:`leakage_summary`'s ``by_attribute`` at the top
    weight; ``columns``: category -> its attributes (the matrix's columns). Returns ``(by_attribute,
    by_category)``: per attribute, its adherence, the paired change vs weight 0 and its leakage; per
    category, the adherence over the rows that request its attributes (a row's share of them, as
    :func:`row_adherence`), the paired change vs weight 0 and the largest |leakage| of its attributes.
    """
    kw = {"n_boot": n_boot, "seed": seed}
    by_attribute: dict[str, Any] = {}
    by_category: dict[str, Any] = {}
    for category, attrs in columns.items():
        for a in attrs:
            hits, zero = attribute_hits(margins[a]), attribute_hits(zero_margins[a])
            by_attribute[a] = {"adherence": rate_ci(hits, **kw), "adherence_delta_vs_weight0": paired_delta_ci(hits, zero, **kw),
                               "leakage": leakage.get(a)}
        top = row_adherence({a: margins[a] for a in attrs})
        zero = row_adherence({a: zero_margins[a] for a in attrs})
        points = [abs(leakage[a]["points"]) for a in attrs if (leakage.get(a) or {}).get("points") is not None]
        by_category[category] = {"adherence": rate_ci(top, **kw), "adherence_delta_vs_weight0": paired_delta_ci(top, zero, **kw),
                                 "leakage_max_abs_points": max(points) if points else None}
    return by_attribute, by_category


# ---------------------------------------------------------------------------------------------
# judges and reward models


def score_matrix(score: Callable[[list, list[str]], Any], pairs: Sequence[tuple[Any, Any]],
                 rows: Sequence[EvalRow]) -> dict[str, np.ndarray]:
    """The four score vectors ``r(I_x, P_y)`` keyed ``oo, oa, ao, aa`` (image first, prompt second)."""
    io, ia = [o for o, _ in pairs], [a for _, a in pairs]
    po, pa = [r.prompt_o for r in rows], [r.prompt_a for r in rows]

    def s(images, prompts):
        out = score(images, prompts)
        return np.asarray(out.detach().cpu().float() if hasattr(out, "detach") else out, dtype=np.float64)

    return {"oo": s(io, po), "oa": s(io, pa), "ao": s(ia, po), "aa": s(ia, pa)}


def judge_summary(scores: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Judge success ``P[r(I_a,P_a) > r(I_o,P_a)]`` (ties count one half), the four-way reward matrix
    (keys ``I_o|P_o, I_o|P_a, I_a|P_o, I_a|P_a``) and Δr with its CI, via ``pluralign.rewards.metrics``."""
    rep = accuracy_report(scores["oo"], scores["oa"], scores["ao"], scores["aa"], n_boot=n_boot, seed=seed)
    acc = rep["accuracy"]
    return {
        "success": {"value": acc["rate"], "ci95": [float(x) for x in acc["ci95"]], "n": acc["n"]},
        "reward_matrix": dict(rep["matrix"]),
        "delta_r": rep["delta_r"],
    }


def win_rate(after: Sequence[float], before: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``P[after > before]`` with ties as one half (0.5 = no change), with a bootstrap CI."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    wins = (a > b).astype(np.float64) + 0.5 * (a == b)
    return rate_ci(wins, n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------------------------
# content fidelity


def content_summary(kept_a: Sequence[bool], kept_o: Sequence[bool] | None = None, *, n_boot: int = 1000,
                    seed: int = 0, attributes: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """Share of I_a that keep the requested content (and the same for I_o under ``ordinary``).

    With ``attributes`` (each row's requested attributes), ``by_attribute`` gives the I_a share per
    attribute, which shows which requests cost the subject (a row counts for each of its attributes).
    """
    kept_a = np.asarray(kept_a, dtype=np.float64)
    out = rate_ci(kept_a, n_boot=n_boot, seed=seed)
    if kept_o is not None:
        out["ordinary"] = rate_ci(np.asarray(kept_o, dtype=np.float64), n_boot=n_boot, seed=seed)
    if attributes is not None:
        if len(attributes) != len(kept_a):
            raise ValueError(f"content_summary: {len(kept_a)} rows but {len(attributes)} attribute lists")
        names = sorted({a for attrs in attributes for a in attrs})
        out["by_attribute"] = {a: rate_ci(kept_a[[a in attrs for attrs in attributes]], n_boot=n_boot, seed=seed)
                               for a in names}
    return out


def check_content(checker, images: Sequence[Any], rows: Sequence[EvalRow]) -> np.ndarray:
    """Run a checker with ``.check(images, rows) -> bool array``; rows are given as dicts of the
    row's fields plus its ``meta`` (the toy world's scene fields live there)."""
    dict_rows = [{**r.meta, **{k: v for k, v in r.to_dict().items() if k != "meta"}} for r in rows]
    return np.asarray(checker.check(list(images), dict_rows), dtype=bool)


class SimilarityContent:
    """Model-free content check for any model: two images show the same content when their
    structural similarity (``pluralign.rewards.intent.structural_similarity``: standardised, blurred
    32-px luminance, so exposure/noise/blur changes cost little) is at least ``threshold``.

    It compares pairs rather than images against a description: I_a against I_o of the same row
    (the anti-aesthetic image kept the scene), and a variant's I_o against the base's I_o.
    """

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)

    def similarity(self, images: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        return np.asarray(structural_similarity(list(images), list(references)), dtype=np.float64)

    def check_pairs(self, images: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        return self.similarity(images, references) >= self.threshold
