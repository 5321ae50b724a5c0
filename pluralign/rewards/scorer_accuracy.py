"""How often does an intent scorer rank I_a above I_o on triplets whose label is known?

For each triplet (P_o, P_a, I_o, I_a) the scorer's ``attribute_score`` of I_a and of I_o is read under
the pair (both images in one call, so a combined scorer's z-scores share their statistics); accuracy is
the share with score(I_a) > score(I_o) (ties count one half; a triplet the scorer cannot score, NaN,
is left out and counted), overall and per attribute, each with a 95% CI (Wilson's score interval without ties, else the bootstrap). The mean content
score of I_a and I_o is reported beside it: a scorer that would drop the correct I_a for lost
content shows it there. Triplets come from :mod:`pluralign.rewards.triplets` (the toy world's pair
set, or a pair dataset on disk).

    python -m pluralign.rewards.scorer_accuracy --scorers verifiers --pairs toy --n 180
    python -m pluralign.rewards.scorer_accuracy --scorers verifiers,clip=/models/clip-vit-large-patch14,clip+verifiers

``--scorers`` is a comma list of scorer specs (:mod:`pluralign.rewards.intent_scorers`), each measured
on its own; ``a+b`` measures the combined scorer ``a,b``. Writes ``scorer_accuracy.json`` and
``scorer_accuracy.md`` under ``--output``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import option, parse, run_module, writable_dir
from ..env import check_device
from . import metrics as M
from .intent_scorers import IntentScorer, build_intent_scorer, with_references
from .triplets import Triplets, load_triplets


@dataclass
class ScorerAccuracyConfig:
    scorers: list[str] = option(None, "intent scorer specs to measure, each on its own (a+b: the combined scorer "
                                "a,b); e.g. verifiers,clip=/models/clip", factory=lambda: ["verifiers"])
    pairs: str = option("toy", "labelled pairs: a registered pair set (toy), module:function, or a pair dataset "
                        "(save_to_disk directory or .parquet in the pair schema)")
    n: int = option(180, "triplets to draw from a pair set, or the most to read from a dataset (0: all)", min=0)
    seed: int = option(1000, "seed of the pair set's draw (the toy world's eval suite uses 1000)", min=0)
    paired: bool = option(False, "pass I_o as every image's reference (the verifiers' paired rules); I_o then "
                          "scores as the rules' zero, so this measures whether I_a moves the statistic the "
                          "requested way")
    output: str = option("outputs/scorer_accuracy", "directory for scorer_accuracy.json and scorer_accuracy.md")
    device: str = option("auto", "torch device for model-based scorers")
    batch_size: int = option(16, "images per model forward pass", min=1, max=1024)
    n_boot: int = option(2000, "bootstrap resamples for the 95 percent CIs", min=100, max=1_000_000)
    boot_seed: int = option(0, "bootstrap seed", min=0, max=2**32 - 1)

    def __post_init__(self):
        check_device(self.device)


def accuracy(scorer: IntentScorer, t: Triplets, *, paired: bool = False, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of ``scorer`` on triplets ``t``: overall and per attribute (``rate``, ``ci95``, ``n``), the
    number of triplets it could not score, and the mean content score of I_a and I_o.

    ``t`` is anything with list fields ``prompt_o, prompt_a, image_o, image_a, attributes``
    (:class:`~pluralign.rewards.triplets.Triplets`, or the audit's triplets)."""
    n = len(t.prompt_a)
    images = list(t.image_a) + list(t.image_o)
    refs = list(t.image_o) * 2 if paired else None
    po, pa, attrs = t.prompt_o * 2, t.prompt_a * 2, t.attributes * 2
    s = with_references(scorer.attribute_score, images, po, pa, attrs, references=refs)
    c = with_references(scorer.content_score, images, po, references=refs)
    sa, so = s[:n], s[n:]
    wins = np.where(np.isnan(sa) | np.isnan(so), np.nan, (sa > so) + 0.5 * (sa == so))
    per: dict[str, list[int]] = {}
    for i, row in enumerate(t.attributes):
        for a in row:
            per.setdefault(a, []).append(i)
    return {
        "accuracy": M.rate_with_ci(wins, n_boot=n_boot, seed=seed),
        "per_attribute": {a: M.rate_with_ci(wins[idx], n_boot=n_boot, seed=seed) for a, idx in sorted(per.items())},
        "unscored": int(np.isnan(wins).sum()),
        "content": {"I_a": float(np.nanmean(c[:n])), "I_o": float(np.nanmean(c[n:]))},
    }


def _spec(entry: str) -> str:
    return entry.replace("+", ",")


def run(cfg: ScorerAccuracyConfig) -> dict:
    """Check every scorer, read the triplets and prove the output writable, load, then score; writes the report."""
    scorers = {entry: build_intent_scorer(_spec(entry), device=cfg.device, batch_size=cfg.batch_size)
               for entry in cfg.scorers}
    for scorer in scorers.values():
        scorer.check_available()
    t = load_triplets(cfg.pairs, cfg.n, cfg.seed)
    out = writable_dir(cfg.output, "output")
    for scorer in scorers.values():
        scorer.ensure_loaded()
    results = {entry: accuracy(scorer, t, paired=cfg.paired, n_boot=cfg.n_boot, seed=cfg.boot_seed)
               for entry, scorer in scorers.items()}
    payload = {"pairs": cfg.pairs, "seed": cfg.seed, "n": len(t), "skipped_pairs": t.skipped, "paired": cfg.paired,
               "scorers": results}
    (out / "scorer_accuracy.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "scorer_accuracy.md").write_text(markdown(payload), encoding="utf-8")
    return payload


def _cell(r: dict) -> str:
    if not r["n"]:
        return "–"
    return f"{r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] (n={r['n']})"


def markdown(payload: dict) -> str:
    res = payload["scorers"]
    mode = " with I_o as reference" if payload["paired"] else ""
    lines = [f"# Intent-scorer accuracy ({payload['n']} triplets from {payload['pairs']}, seed {payload['seed']}{mode})",
             "", "Accuracy = share of triplets with attribute_score(I_a) > attribute_score(I_o) (ties 1/2), "
             "95% CI: Wilson's score interval without ties, else the bootstrap.", "",
             "| scorer | accuracy [95% CI] (n) | unscored | content(I_a) | content(I_o) |", "|---|---|---:|---:|---:|"]
    for name, r in res.items():
        lines.append(f"| {name} | {_cell(r['accuracy'])} | {r['unscored']} | {r['content']['I_a']:.3f} | "
                     f"{r['content']['I_o']:.3f} |")
    attrs = sorted({a for r in res.values() for a in r["per_attribute"]})
    if attrs:
        lines += ["", "## Per attribute", "", "| attribute | " + " | ".join(res) + " |", "|---|" + "---|" * len(res)]
        for a in attrs:
            lines.append(f"| {a} | " + " | ".join(_cell(r["per_attribute"][a]) if a in r["per_attribute"] else "–"
                                                  for r in res.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    (cfg,) = parse((ScorerAccuracyConfig,), argv, prog="python -m pluralign.rewards.scorer_accuracy",
                   description="Intent-scorer accuracy P[score(I_a) > score(I_o)] on labelled triplets.")
    payload = run(cfg)
    print(markdown(payload))
    print(f"wrote {Path(cfg.output) / 'scorer_accuracy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "python -m pluralign.rewards.scorer_accuracy"))
