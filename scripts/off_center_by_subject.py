"""Which subjects the intent adapter leaves in place when it is asked to push them off-centre.

The off_center rule's statistic on an adapter's rows is not spread around its threshold: the adapter either moves the
subject well clear of the centre or leaves it where the aligned model drew it. This script re-reads the rule on the
images an eval saved (``images/adapter_w1/NNNNN_a.png`` against ``..._o.png``) and splits the rows by the scene's
subject, pooled over every run and suite given:

    python scripts/off_center_by_subject.py RUN_DIR [RUN_DIR ...]     # sweep runs: RUN_DIR/eval_SEED/images
    python scripts/off_center_by_subject.py --demo DEMO_DIR           # a demo run: DEMO_DIR/eval/intent_dpo/images
    python scripts/off_center_by_subject.py --eval EVAL_DIR           # a `pluralign eval` output: each adapter weight
                                                                      # (per-category: the composition adapter's)

A sweep run's suites are its ``eval_SEED`` folders; a demo's is its reporting suite. The suite's size (and a demo's
seed) are read from the run's ``validation.json`` or ``results.json``. Nothing is sampled, so it costs seconds.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from rule_on_toy import load_image, run_config  # this folder's sibling script: how saved runs are read

from pluralign.data.taxonomy import category_of
from pluralign.eval.suite import load_suite
from pluralign.rewards.rules import load_rules, paired_statistics


def read_suite(images: Path, seed: int, n: int, rule) -> list[tuple[str, float]]:
    """(subject, statistic) for each off_center row of the suite whose images are under ``images``."""
    rows = load_suite("toy", n=n, seed=seed)
    idx = [i for i, r in enumerate(rows) if list(r.attributes) == ["off_center"]]
    missing = [i for i in idx if not all((images / f"{i:05d}_{x}.png").is_file() for x in "ao")]
    if missing:
        raise FileNotFoundError(f"{images}: no image for off_center row {missing[0]} (is this a {n}-row suite of seed "
                                f"{seed}?)")
    a = [load_image(images / f"{i:05d}_a.png") for i in idx]
    o = [load_image(images / f"{i:05d}_o.png") for i in idx]
    values = paired_statistics({"off_center": rule}, a, o)["off_center"]
    return [(rows[i].meta["shape"], float(v)) for i, v in zip(idx, values)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path, help="sweep output folders (each with eval_SEED/images)")
    ap.add_argument("--demo", type=Path, action="append", default=[], help="a demo output folder")
    ap.add_argument("--eval", type=Path, action="append", default=[],
                    help="a `pluralign eval --save_images true` output folder: every adapter weight (images/adapter_w*, "
                         "or images/composition_and_structure_w* of --adapters_dir), apart")
    args = ap.parse_args(argv)
    suites = []
    for d in args.eval:
        cfg = run_config(d)
        # adapter_wW, or the composition category's CATEGORY_wW from a per-category eval: only it holds off_center,
        # and the other categories' folders hold their own rows at weights below 1
        for f in sorted([*d.glob("images/adapter_w*"), *d.glob(f"images/{category_of('off_center')}_w*")]):
            suites.append((f, cfg["suite_seed"], cfg["n_prompts"], f"{d.name} {f.name}"))
    for d in args.demo:
        cfg = run_config(d)
        suites.append((d / "eval" / "intent_dpo" / "images" / "adapter_w1", cfg["suite_seed"], cfg["n_prompts"], str(d)))
    for run in args.runs:
        found = sorted(f for f in run.glob("eval_*/images/adapter_w1") if f.parent.parent.name[5:].isdigit())
        if not found:
            ap.error(f"{run}: no eval_SEED/images/adapter_w1 folder (give a sweep run's --output)")
        n = run_config(run)["n_prompts"]
        suites += [(f, int(f.parent.parent.name[5:]), n, f"{run.name} {f.parent.parent.name}") for f in found]
    if not suites:
        ap.error("give sweep run folders, --demo DIR or --eval DIR")
    rule = load_rules()["off_center"]
    moved, total = Counter(), Counter()
    for images, seed, n, label in suites:
        read = read_suite(images, seed, n, rule)
        m, t = Counter(), Counter()
        for subject, value in read:
            t[subject] += 1
            m[subject] += value > rule.threshold
        moved.update(m)
        total.update(t)
        print(label, " ".join(f"{s} {m[s]}/{t[s]}" for s in sorted(t)))
    print(f"\n| subject | off_center rows moved (statistic > {rule.threshold:.3f}) |\n|---|---:|")
    for s in sorted(total):
        print(f"| {s} | {moved[s]} / {total[s]} ({moved[s] / total[s]:.2f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
