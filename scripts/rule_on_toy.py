"""How often one verifier rule fires on the toy world's images: on renders, where the truth is known, and on the images
an eval saved.

The rules are calibrated on photographs; the toy world's 32 px scenes (one saturated subject on a pale ground) are
another domain, and the demo's headline numbers are read with the same rules. On renders this prints, for every
attribute the world draws, the share of (degraded, clean) pairs on which the rule fires: on its own attribute that is
its recall, on the others a confusion (`taxonomy.IMPLIES` marks the pairs physics explains). With sweep or demo run
folders it also reads the rule on their saved images, split into the rows that request the attribute, the rows whose
attribute implies it (read at the threshold the eval gives them) and the rest, for the aligned model (``images/base``)
and the adapter (``images/adapter_w1``):

    python scripts/rule_on_toy.py --rule muted [--thresholds FILE] [RUN_DIR ...] [--demo DIR]

Renders come from scenes of ``--seed`` (default 4242: not the base's training data, the suites' or the demo's
pairs). A run's suite size (and a demo's suite seed) come from its ``validation.json`` or ``results.json``. Nothing is
sampled, so it takes seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pluralign.data.taxonomy import IMPLIES
from pluralign.eval.suite import load_suite
from pluralign.rewards.rules import load_rules, paired_statistics
from pluralign.toy import world


def load_image(path: Path) -> np.ndarray:
    """A saved eval image as the rules read it (float32 HxWx3 in [0, 1])."""
    return world.to_array(Image.open(path))


def on_renders(rule, n: int, seed: int) -> dict[str, float]:
    """Share of render pairs (the attribute's render, the clean one) on which ``rule`` fires, per attribute."""
    scenes = world.sample_scenes(n, seed)
    clean = [world.to_array(world.variant(s, None)[0]) for s in scenes]
    out = {}
    for attr in world.ATTRIBUTES:
        degraded = [world.to_array(world.variant(s, attr, seed=seed + i)[0]) for i, s in enumerate(scenes)]
        stat = paired_statistics({rule.attribute: rule}, degraded, clean)[rule.attribute]
        out[attr] = float(np.mean(stat > rule.threshold))
    return out


def on_saved(rule, images: Path, seed: int, n: int) -> dict[str, tuple[float, int]]:
    """(share fired, rows) of one saved suite's rows that request the rule's attribute (``asked``), whose attribute
    implies it (``implied``, at :meth:`Rule.threshold_for` their attributes) and the rest (``other``)."""
    rows = load_suite("toy", n=n, seed=seed)
    a = [load_image(images / f"{i:05d}_a.png") for i in range(len(rows))]
    o = [load_image(images / f"{i:05d}_o.png") for i in range(len(rows))]
    stat = paired_statistics({rule.attribute: rule}, a, o)[rule.attribute]
    fired = np.array([s > rule.threshold_for(r.attributes) for s, r in zip(stat, rows)])
    group = np.array(["asked" if rule.attribute in r.attributes else
                      "implied" if any(rule.attribute in IMPLIES.get(x, ()) for x in r.attributes) else "other"
                      for r in rows])
    return {g: (float(fired[group == g].mean()) if (group == g).any() else float("nan"), int((group == g).sum()))
            for g in ("asked", "implied", "other")}


def run_config(run: Path) -> dict:
    """The demo options a sweep or demo run recorded (its suite's size and seed)."""
    for name in ("validation.json", "results.json"):
        if (run / name).is_file():
            return json.loads((run / name).read_text(encoding="utf-8"))["config"]
    raise FileNotFoundError(f"{run}: no validation.json or results.json (give a sweep or demo run's --output)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path, help="sweep output folders (eval_SEED/images)")
    ap.add_argument("--demo", type=Path, action="append", default=[], help="a demo output folder (seed-1000 suite)")
    ap.add_argument("--rule", required=True, help="the attribute whose rule is read")
    ap.add_argument("--thresholds", default=None, help="a calibration's JSON (default: the shipped thresholds)")
    ap.add_argument("--n", type=int, default=240, help="render pairs per attribute")
    ap.add_argument("--seed", type=int, default=4242, help="seed of the rendered scenes")
    args = ap.parse_args(argv)
    rules = load_rules(args.thresholds)
    if args.rule not in rules:
        ap.error(f"--rule {args.rule}: no verifier rule; rules: {', '.join(sorted(rules))}")
    rule = rules[args.rule]
    print(f"{rule.attribute}: statistic {rule.statistic}, threshold {rule.threshold:.4g}\n")
    print(f"| render of | share of pairs the {rule.attribute} rule fires on |\n|---|---:|")
    for attr, rate in on_renders(rule, args.n, args.seed).items():
        mark = " (own)" if attr == rule.attribute else (" (implied)" if rule.attribute in IMPLIES.get(attr, ()) else "")
        print(f"| {attr}{mark} | {rate:.3f} |")
    suites = []
    for d in args.demo:
        cfg = run_config(d)
        suites.append((d / "eval" / "intent_dpo" / "images", cfg["suite_seed"], cfg["n_prompts"], str(d)))
    for run in args.runs:
        n = run_config(run)["n_prompts"]
        suites += [(f / "images", int(f.name[5:]), n, f"{run.name} {f.name}") for f in sorted(run.glob("eval_*"))
                   if f.name[5:].isdigit() and (f / "images").is_dir()]
    if suites:
        print(f"\n| run, suite | model | rows asking {rule.attribute}: fired | rows implying it: fired | other rows: "
              "fired |\n|---|---|---:|---:|---:|")
    for images, seed, n, label in suites:
        for model, folder in (("aligned", "base"), ("adapter", "adapter_w1")):
            if (images / folder).is_dir():
                read = on_saved(rule, images / folder, seed, n)
                cells = " | ".join(f"{rate:.3f} of {count}" for rate, count in read.values())
                print(f"| {label} | {model} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
