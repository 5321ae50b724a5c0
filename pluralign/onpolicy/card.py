"""README.md of a generated dataset: what made it, how many prompt pairs became pairs, and per attribute."""

from __future__ import annotations

from collections import Counter

import numpy as np
import yaml

from .select import REASONS


def summarize(logs: list[dict]) -> dict:
    """Counts over every prompt pair of the run (from the shards' logs): accepted, dropped by reason,
    per attribute and per category, and the accepted margins."""
    decisions = [d for log in logs for d in log["decisions"]]
    n = len(decisions)
    accepted = [d for d in decisions if d["accepted"]]
    dropped = Counter(d["reason"] for d in decisions if not d["accepted"])
    per_attr: dict[str, Counter] = {}
    per_cat: dict[str, Counter] = {}
    for d in decisions:
        for a in d["attributes"] or ["(none)"]:
            c = per_attr.setdefault(a, Counter())
            c["pairs"] += 1
            c["accepted" if d["accepted"] else d["reason"]] += 1
        c = per_cat.setdefault(d["category"] or "(none)", Counter())
        c["pairs"] += 1
        c["accepted" if d["accepted"] else d["reason"]] += 1
    margins = [d["margin"] for d in accepted]
    content_rows = sum(d.get("content_rejected") is not None for d in accepted)
    return {
        "prompt_pairs": n, "accepted": len(accepted), "acceptance_rate": len(accepted) / n if n else 0.0,
        "rows": 2 * sum(1 + len(d.get("more_chosen", [])) for d in accepted) + content_rows,
        "content_rows": content_rows,
        "dropped": dict(sorted(dropped.items())),
        "per_attribute": {k: dict(v) for k, v in sorted(per_attr.items())},
        "per_category": {k: dict(v) for k, v in sorted(per_cat.items())},
        "margin": ({"mean": float(np.mean(margins)), "median": float(np.median(margins)), "min": float(min(margins)),
                    "max": float(max(margins))} if margins else None),
        "images": sum(log.get("images", 0) for log in logs),
        "generate_seconds": round(sum(log.get("seconds", 0.0) for log in logs), 1),
    }


def _rate(c: dict) -> str:
    return f"{c.get('accepted', 0) / c['pairs']:.1%}" if c.get("pairs") else "-"


def _breakdown(table: dict[str, dict], title: str) -> list[str]:
    reasons = [r for r in REASONS if any(r in c for c in table.values())]
    lines = [f"| {title} | prompt pairs | accepted | rate | " + " | ".join(reasons) + (" |" if reasons else ""),
             "|---|---:|---:|---:|" + "---:|" * len(reasons)]
    for name, c in table.items():
        lines.append(f"| {name} | {c['pairs']} | {c.get('accepted', 0)} | {_rate(c)} | "
                     + " | ".join(str(c.get(r, 0)) for r in reasons) + (" |" if reasons else ""))
    return lines


def _size(config: dict) -> str:
    if not config.get("height") and not config.get("width"):
        return "the pipeline's default"
    return f"{config.get('height') or 'default'} x {config.get('width') or 'default'}"


def dataset_card(summary: dict, config: dict, *, generator: str, scorer: str, min_margin: float,
                 min_chosen: float | None, notes: list[str]) -> str:
    s = summary
    m = s["margin"]
    margin_line = (f"mean {m['mean']:.3f}, median {m['median']:.3f}, min {m['min']:.3f}, max {m['max']:.3f}"
                   if m else "none accepted")
    parts = [
        "---", "tags: [pluralign, preference, diffusion-dpo, anti-aesthetic, on-policy]", "---", "",
        "# On-policy intent-conditioned preference pairs", "",
        "Made by `pluralign data generate`: for every prompt pair (P_o, P_a) the generator sampled "
        f"{config['num_candidates']} images under P_a and {config['num_candidates']} under P_o on shared seeds; the "
        "scorer rated each for P_a's requested attributes and for P_o's content. The *anti* row (prompt P_a) "
        + ("prefers the P_a image rated highest among those that keep the content"
           if config.get("choose_by", "attribute") == "attribute" else
           "prefers, of the P_a images that keep the content and pass the margin and floor below, the one whose "
           "content score is highest (`choose_by: content`)")
        + " over the P_o image that keeps the content and shows the attributes least; its *mirror* (prompt P_o, "
        "same `pair_id`) is the same two images with the labels swapped."
        + (f" An accepted prompt pair gives up to {config['pairs_per_prompt']} anti + mirror pairs: its next best P_a "
           "images that pass the same margin and floor, each against the same rejected image (`pair_id` "
           "`SOURCE#INDEX.K`)." if config.get("pairs_per_prompt", 1) > 1 else "")
        + (f" {s.get('content_rows', 0)} accepted prompt pairs also give one more *anti* row under the first pair's "
           "`pair_id`: the chosen image over the P_a image that lost the content and shows the attributes most "
           "(both follow the request; only the chosen one kept the subject)." if config.get("content_pairs") else ""),
        "",
        f"- **generator:** `{generator}`",
        f"- **scorer:** `{scorer}` (content kept: content score >= {config['min_content']}; min_margin {min_margin}; "
        f"min_chosen_score {'none' if min_chosen is None else min_chosen})",
        f"- **suite:** `{config['suite']}`",
        f"- **sampling:** {config['num_inference_steps']} steps ({config['sampler']} sampler), "
        f"guidance {config['guidance_scale']}"
        + (f" ({', '.join(config['attribute_guidance'])} for the pairs requesting them, the lowest of a pair's)"
           if config.get("attribute_guidance") else "") + ", "
        f"size {_size(config)}, seed {config['seed']}", "",
        f"**Prompt pairs:** {s['prompt_pairs']}  ·  **accepted:** {s['accepted']}  ·  **acceptance rate:** "
        f"{s['acceptance_rate']:.1%}  ·  **rows:** {s['rows']} (anti + mirror"
        f"{' + content' if config.get('content_pairs') else ''})  ·  **images sampled:** {s['images']}",
        "", f"Accepted margins (chosen - rejected attribute score): {margin_line}.", "",
        "## Dropped prompt pairs", "",
        "| reason | prompt pairs | meaning |", "|---|---:|---|",
        *[f"| {r} | {s['dropped'].get(r, 0)} | {text} |" for r, text in REASONS.items()], "",
        "## Per attribute", "", "A pair that requests several attributes counts under each.", "",
        *_breakdown(s["per_attribute"], "attribute"), "",
        "## Per category", "", *_breakdown(s["per_category"], "category"), "",
        "## Columns", "",
        "`prompt`, `chosen`, `rejected`, `kind` (anti / mirror), `attributes`, `category`, `source`, `severity` "
        "(1.0: a real effect, not a degradation), `pair_id`, as `pluralign data build` writes them, plus where each "
        "row came from: `generator`, `scorer`, `seeds` (the K shared seeds), `chosen_seed`, `rejected_seed`, "
        "`chosen_score`, `rejected_score` (attribute scores of the row's chosen and rejected image) and "
        "`chosen_content`, `rejected_content` (their content scores). On a mirror row the images, and so their "
        "seeds and scores, are the anti row's swapped. `generate_log.json` holds every prompt pair's decision with "
        "all candidates' scores.", "",
        "## Run notes", "", *([f"- {n}" for n in notes] or ["- none"]), "",
        "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", "",
    ]
    return "\n".join(parts)
