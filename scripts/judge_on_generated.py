"""The toy world's judge of the semantic attributes on images the toy models generate, not on renders.

The checker is validated on the world's renders, where the truth is known. The eval applies it to the base's and the
aligned model's samples, which are rougher and lit differently (guidance 6 darkens a storm sky and tints it with the
background it replaced). This script samples both models on a validation suite once (cached under --images), then
for each checker given reports, per model:

- per semantic attribute, the share of its rows whose I_a the head accepts (the eval's adherence for it);
- per head, how often it fires on I_o (ordinary prompts: every firing there is a false positive) and on the I_a
  of the pixel attributes' rows (an underexposed or noisy image is not bleak);
- content on I_o and I_a (the checker's shape and colour heads).

    python scripts/judge_on_generated.py --images /tmp/judge_imgs --checkers shipped=pluralign/toy/checkpoints/checker

Rows whose acceptance differs between the first two checkers are listed (index, model, attribute), so their images
can be looked at. Never run it on the reporting suite (seed 1000).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pluralign.eval.generate import load_pipeline
from pluralign.toy import paths, world
from pluralign.toy.base_model import generate
from pluralign.toy.checker import ContentChecker

MODELS = {"base": paths.base_dir, "aligned": paths.aligned_dir}


def images_for(model: str, rows: list[dict], cache: Path, steps: int, guidance: float, suite_seed: int
               ) -> tuple[list, list]:
    folder = cache / model
    names = [(folder / f"{i:05d}_o.png", folder / f"{i:05d}_a.png") for i in range(len(rows))]
    made_for = {"suite_seed": suite_seed, "n": len(rows), "num_inference_steps": steps, "guidance_scale": guidance}
    manifest = folder / "made_for.json"
    if manifest.is_file() and json.loads(manifest.read_text()) != made_for:
        raise SystemExit(f"{folder} holds images of {json.loads(manifest.read_text())}, not {made_for}; "
                         "give another --images folder")
    if not all(o.is_file() and a.is_file() for o, a in names):
        pipe = load_pipeline(str(MODELS[model]()), progress=False)
        seeds = [r["seed"] for r in rows]
        io = generate(pipe, [r["prompt_o"] for r in rows], seeds, steps, guidance)
        ia = generate(pipe, [r["prompt_a"] for r in rows], seeds, steps, guidance)
        folder.mkdir(parents=True, exist_ok=True)
        for (po, pa), o, a in zip(names, io, ia):
            o.save(po)
            a.save(pa)
        manifest.write_text(json.dumps(made_for))
    return ([Image.open(o).convert("RGB") for o, _ in names], [Image.open(a).convert("RGB") for _, a in names])


def judge_record(checker: ContentChecker, rows: list[dict], io: list, ia: list) -> tuple[dict, dict]:
    po, pa = checker.attribute_probs(io), checker.attribute_probs(ia)
    attrs = [r["attributes"][0] for r in rows]
    pixel = np.array([a in world.PIXEL_ATTRIBUTES for a in attrs])
    accepted = {a: pa[a] > 0.5 for a in checker.attributes}
    rec = {
        "adherence": {a: round(float(accepted[a][[x == a for x in attrs]].mean()), 3) for a in checker.attributes},
        "fires_on_o": {a: round(float((po[a] > 0.5).mean()), 3) for a in checker.attributes},
        "fires_on_pixel_a": {a: round(float(accepted[a][pixel].mean()), 3) for a in checker.attributes},
        "content_o": round(float(checker.check(io, rows).mean()), 3),
        "content_a": round(float(checker.check(ia, rows).mean()), 3),
    }
    return rec, accepted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="cache folder for the generated images")
    ap.add_argument("--checkers", required=True, help="name=DIR,... (the first two are compared row by row)")
    ap.add_argument("--suite_seed", type=int, default=5000)
    ap.add_argument("--n", type=int, default=576, help="rows, round-robin over the twelve attributes")
    ap.add_argument("--output", help="write the records as JSON here")
    args = ap.parse_args(argv)
    if args.suite_seed == 1000:
        ap.error("--suite_seed 1000 is the reporting suite; use a validation seed")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    sampling = json.loads(paths.build_config().read_text())["sampling"]
    rows = world.eval_suite(args.n, seed=args.suite_seed)
    if any("=" not in item for item in args.checkers.split(",")):
        ap.error(f"--checkers {args.checkers!r}: give name=DIR pairs separated by commas")
    checkers = dict(item.split("=", 1) for item in args.checkers.split(","))
    out, accepted = {}, {}
    for model in MODELS:
        io, ia = images_for(model, rows, Path(args.images), sampling["num_inference_steps"], sampling["guidance_scale"],
                            args.suite_seed)
        for name, folder in checkers.items():
            rec, acc = judge_record(ContentChecker.from_pretrained(folder), rows, io, ia)
            out.setdefault(name, {})[model] = rec
            accepted[(name, model)] = acc
            print(name, model, json.dumps(rec))
    names = list(checkers)
    if len(names) > 1:
        for model in MODELS:
            for i, r in enumerate(rows):
                a = r["attributes"][0]
                if a in accepted[(names[0], model)] and a in accepted[(names[1], model)]:
                    x, y = accepted[(names[0], model)][a][i], accepted[(names[1], model)][a][i]
                    if x != y:
                        print(f"row {i} {model} {a}: {names[0]} {bool(x)} -> {names[1]} {bool(y)}")
    if args.output:
        Path(args.output).write_text(json.dumps({"suite_seed": args.suite_seed, "n": args.n, "records": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
