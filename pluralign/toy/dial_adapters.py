"""The toy world's aesthetic dial: one intent adapter per taxonomy category, shipped beside the models.

``pluralign dial`` opens on these. They are trained exactly as the demo trains its single adapter
(the same recipe, the same degradation and on-policy pairs, the same mix with ordinary pairs) except
that ``adapter_mode: per_category`` gives each category its own LoRA, trained on that category's
intent rows and an equal share of ordinary rows. Each adapter is then measured on a validation
suite (never the demo's reporting suite): adherence on its own category's rows at weight 0 and 1,
so the build record says what each slider does.

    python -m pluralign.toy.build_checkpoints --stages dial          # writes checkpoints/dial/<category>/
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from pluralign.config import to_dict
from pluralign.data.taxonomy import category_of
from pluralign.dial.session import DialSpec
from pluralign.eval.generate import load_pipeline
from pluralign.trainers import train

from . import paths, world
from .align import save_pairs
from .demo import _evaluate, _sampling, generate_onpolicy, parse_demo, training_config, training_rows
from .scorer import ToyScorer
from .suite import toy_rows

# the demo options that decide the dial adapters' training rows (training_rows and the on-policy stage)
DATA_OPTIONS = ("intent_items", "semantic_prompts", "semantic_repeat", "semantic_candidates", "semantic_pairs_per_prompt",
                "semantic_content_pairs", "semantic_choose_by", "onpolicy_guidance_scale", "onpolicy_attribute_guidance",
                "onpolicy_items", "over_severity", "over_attributes", "over_twice", "extra_items", "anti_fraction", "data_seed")

# what each adapter directory keeps: the weights diffusers loads, the model card and the data mix it saw
KEEP = ("pytorch_lora_weights.safetensors", "README.md", "data_mix.json")


def build_dial_adapters(out: Path, max_steps: int, validation_seed: int, n_validation: int,
                        recipe_overrides: list[str] | None = None) -> dict:
    """Train the per-category adapters into ``out/dial/<category>`` and measure each; returns the record."""
    t0 = time.perf_counter()
    # the dial's steps go in with the overrides, so parse_demo's schedule check reads the steps it will train
    cfg, train_cfg = parse_demo([*(recipe_overrides or []), *(["--max_steps", str(max_steps)] if max_steps else [])])
    base_dir, aligned_dir = out / "base", out / "aligned"
    judge = ToyScorer(str(out / "checker")).ensure_loaded()
    sampling = _sampling(cfg)
    dial = out / "dial"
    with tempfile.TemporaryDirectory(prefix="pluralign-dial-") as tmp:
        work = Path(tmp)
        onpolicy, _ = generate_onpolicy(cfg, load_pipeline(str(base_dir), progress=False), judge, sampling, work, 0, base_dir)
        rows = training_rows(cfg, "intent", onpolicy)
        data_dir = save_pairs(rows, work / "data" / "intent")
        tc = training_config(train_cfg, "intent", data_dir, work, "none")
        tc = dataclasses.replace(tc, pretrained_model=str(aligned_dir), adapter_mode="per_category",
                                 run_name="toy-dial")
        result = train(tc)
        if dial.exists():
            shutil.rmtree(dial)
        for name, src in sorted(result.adapter_dirs.items()):
            (dial / name).mkdir(parents=True)
            for f in KEEP:
                if (src / f).is_file():
                    shutil.copy2(src / f, dial / name / f)
        train_s = time.perf_counter() - t0
        # what each slider does: adherence on the adapter's own category at weight 0 (the aligned model) and 1
        pipe, suite = load_pipeline(str(aligned_dir), progress=False), toy_rows(n_validation, validation_seed)
        measured = {}
        for name in sorted(result.adapter_dirs):
            own = [r for r in suite if any(category_of(a) == name for a in r.attributes)]
            if not own:  # a suite too small to hold the category: nothing to measure, and said so
                measured[name] = {"rows": 0}
                continue
            res = _evaluate(pipe, own, judge.checker, judge, work / "eval" / name, cfg, sampling, dial / name, [1.0],
                            adapter_name=name)
            v0, v1 = res["variants"]["base"], res["variants"]["adapter@1"]
            measured[name] = {"rows": len(own),
                              "adherence_weight0": v0["adherence"]["value"],
                              "adherence_weight1": v1["adherence"]["value"],
                              "adherence_weight1_ci95": v1["adherence"].get("ci95"),
                              "content_weight1": v1["content_fidelity"]["value"],
                              "adherence_weight1_by_attribute": {a: d["value"] for a, d in
                                                                 v1["adherence"]["by_attribute"].items()}}
    return {"adapters": sorted(result.adapter_dirs), "rows": len(rows), "max_steps": train_cfg.max_steps,
            "recipe": paths.recipe("intent_dpo").relative_to(paths.HERE.parent.parent).as_posix(), "recipe_overrides": list(recipe_overrides or []),
            # the demo's data options the rows were built with: a changed default shows here, not only in the rows
            "data": {k: v for k, v in to_dict(cfg).items() if k in DATA_OPTIONS},
            "validation": {"suite_seed": validation_seed, "n": n_validation}, "measured": measured,
            "train_seconds": round(train_s, 1), "wall_seconds": round(time.perf_counter() - t0, 1)}


def default_dial():
    """The dial a plain ``pluralign dial`` opens on (entry point ``pluralign.dials: toy``): the aligned model,
    one shipped adapter per category, and example prompts from the world: ordinary captions and, per
    category, a caption asking for one of its attributes."""
    dial = paths.dial_dir()
    adapters = {d.name: str(d) for d in sorted(dial.iterdir()) if d.is_dir()} if dial.is_dir() else {}
    if not adapters:
        raise FileNotFoundError(f"{dial}: no per-category adapters; they ship with the repository, rebuild them with "
                                "`python -m pluralign.toy.build_checkpoints --stages dial`")
    rows = world.eval_suite(len(world.ATTRIBUTES), seed=42)
    examples = [rows[0]["prompt_o"], rows[1]["prompt_o"]]
    seen = set()
    for r in rows:  # one anti-aesthetic example per category
        cat = category_of(r["attributes"][0])
        if cat not in seen:
            seen.add(cat)
            examples.append(r["prompt_a"])
    recorded = json.loads(paths.build_config().read_text()).get("sampling", {}) if paths.build_config().is_file() else {}
    return DialSpec(base=str(paths.aligned_dir()), adapters=adapters, examples=examples,
                    num_inference_steps=int(recorded.get("num_inference_steps", 20)),
                    guidance_scale=float(recorded.get("guidance_scale", 6.0)),
                    title="The toy world's aligned model with one intent adapter per category "
                          f"({world.SIZE} px images, shown enlarged). Turn a category up and ask for it.")
