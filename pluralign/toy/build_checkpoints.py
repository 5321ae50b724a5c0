"""``pluralign build-toy``: rebuild the shipped toy checkpoints from scratch, on CPU, with fixed seeds.

    python -m pluralign.toy.build_checkpoints --output pluralign/toy/checkpoints

writes ``checker/`` (content checker, and the judge of the semantic attributes), ``base/`` (StableDiffusionPipeline trained on the world),
``aligned/`` (the base after universal-aesthetic Diffusion-DPO, LoRA fused) and
``build_config.json`` (every option, wall times, and the measured adherence and content accuracy
of base and aligned on a held-out suite). ``--stages`` rebuilds a subset (e.g. ``align`` reuses
an existing ``base/``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pluralign.config import run_module

from ..config import option, parse, to_dict
from . import paths, world
from .align import AlignConfig, align
from .base_model import BaseModelConfig, save_pipeline, train_base
from .checker import JUDGE_WEIGHTS, ContentChecker, save_judge, train_checker, train_judge
from .dial_adapters import build_dial_adapters
from .measure import measure_pipeline


@dataclass
class BuildConfig:
    output: str = option(str(paths.SHIPPED), "directory of the toy checkpoints (default: the shipped ones)")
    stages: list[str] = option(None, "stages to run (dial: the per-category adapters pluralign dial opens on)",
                               choices=("checker", "judge", "base", "align", "measure", "dial"),
                               factory=lambda: ["checker", "judge", "base", "align", "measure", "dial"])
    checker_scenes: int = option(6000, "training scenes of the content checker", min=1)
    checker_steps: int = option(1500, "training steps of the content checker", min=1)
    checker_eval_scenes: int = option(450, "held-out scenes the checker's accuracy is measured on", min=1)
    suite_size: int = option(72, "rows of the held-out suite the build measures (balanced over attributes)", min=1)
    suite_seed: int = option(1000, "seed of that suite (world.eval_suite's default)")
    dial_max_steps: int = option(450, "dial stage: optimizer steps per category adapter (0: the demo recipe's "
                                 "max_steps). Each adapter trains on one category's rows, a fifth of the demo's or "
                                 "fewer, so it draws each row far more often than the demo's single adapter does: "
                                 "at 900 the emotion_and_subject slider overdid its category and lost its subject "
                                 "on a third of its rows (docs/dial.md, 'Half the steps')", min=0)
    dial_validation_seed: int = option(5000, "dial stage: seed of the validation suite each adapter is measured on "
                                       "(never the demo's reporting suite)", min=0)
    dial_validation_size: int = option(288, "dial stage: rows of that suite (each adapter is measured on its own "
                                       "category's rows)", min=1)
    dial_overrides: str = option("", "dial stage: pluralign demo options for the adapters' data and recipe, e.g. "
                                 "'--semantic_prompts 16 --learning_rate 5e-4' (default: the demo's own)")
    progress: bool = option(True, "show progress bars")
    threads: int = option(1, "torch CPU threads; 1 is fastest on a shared machine (OpenMP spin-waits when "
                          "cores are oversubscribed) and keeps the build bit-reproducible; 0 keeps torch's default",
                          min=0)


def _measure(pipe_dir: Path, rows, base_cfg: dict, checker) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(pipe_dir), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    t = time.time()
    out = measure_pipeline(pipe, rows, base_cfg["num_inference_steps"], base_cfg["guidance_scale"], checker)
    out["seconds"] = round(time.time() - t, 1)
    return out


def base_lineage(init_from: str, command: str | None) -> list[str]:
    """The build commands that made the base, oldest first: a base continued from another (``init_from``)
    inherits that one's lineage from the ``build_config.json`` beside it, so the chain of commands that
    rebuilds it from scratch stays on record (each command's output is the next one's ``--init_from``)."""
    prior: list[str] = []
    if init_from:
        previous = Path(init_from).parent / "build_config.json"
        if previous.is_file():
            rec = json.loads(previous.read_text())
            prior = list(rec.get("base_lineage") or ([rec["command"]] if rec.get("command") else []))
        else:
            prior = [f"(unrecorded: the base at {init_from} has no build_config.json beside it)"]
    return prior + [command or "(command not recorded)"]


def build(cfg: BuildConfig, base: BaseModelConfig, al: AlignConfig, command: str | None = None) -> dict:
    import torch

    if "align" in cfg.stages:
        al.weights()  # a malformed align_weights entry fails here, before hours of earlier stages
        al.onpolicy()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "build_config.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record.setdefault("config", {})
    record.setdefault("wall_seconds", {})
    if "base" in record["config"]:  # sampling settings may change without retraining the base
        record["config"]["base"].update(num_inference_steps=base.num_inference_steps,
                                        guidance_scale=base.guidance_scale)
    record["sampling"] = {"num_inference_steps": base.num_inference_steps, "guidance_scale": base.guidance_scale,
                          "height": world.SIZE, "width": world.SIZE}
    record["world"] = {"size": world.SIZE, "shapes": list(world.SHAPES), "colours": list(world.COLOURS),
                       "backgrounds": list(world.BACKGROUNDS), "attributes": list(world.ATTRIBUTES),
                       "severity": world.SEVERITY}
    t_all = time.time()

    def save():
        record_path.write_text(json.dumps(record, indent=1, default=str))

    if "checker" in cfg.stages:
        t = time.time()
        checker, rec = train_checker(cfg.checker_scenes, cfg.checker_steps, progress=cfg.progress,
                                     eval_scenes=cfg.checker_eval_scenes)
        if "judge" not in cfg.stages and (out / "checker" / JUDGE_WEIGHTS).is_file():
            # the judge shares nothing with the content network: a new content network keeps the judge beside it
            old = ContentChecker.from_pretrained(out / "checker")
            checker.judge, checker.config["judge"] = old.judge, old.config["judge"]
        checker.save_pretrained(out / "checker")
        record["checker"] = rec
        record["config"]["checker"] = {"n_scenes": cfg.checker_scenes, "steps": cfg.checker_steps,
                                       "eval_scenes": cfg.checker_eval_scenes}
        record["wall_seconds"]["checker"] = round(time.time() - t, 1)
        save()
    if "judge" in cfg.stages:  # the semantic attributes' judge; the content checker's files stay as they are
        t = time.time()
        checker = ContentChecker.from_pretrained(out / "checker")
        record["judge"] = train_judge(checker, cfg.checker_scenes, cfg.checker_steps, progress=cfg.progress,
                                      eval_scenes=cfg.checker_eval_scenes)
        save_judge(checker, out / "checker")
        record["config"]["judge"] = {"n_scenes": cfg.checker_scenes, "steps": cfg.checker_steps,
                                     "eval_scenes": cfg.checker_eval_scenes, "light_views": True}
        record["judge"]["command"] = command
        record["wall_seconds"]["judge"] = round(time.time() - t, 1)
        save()
    if "base" in cfg.stages:
        t = time.time()
        pipe, rec = train_base(base, cfg.progress)
        if (out / "base").exists():
            shutil.rmtree(out / "base")
        save_pipeline(pipe, out / "base")
        record["base"] = rec
        record["config"]["base"] = to_dict(base)
        record["wall_seconds"]["base"] = round(time.time() - t, 1)
        record["base_lineage"] = base_lineage(base.init_from, command)
        save()
    if "align" in cfg.stages:
        t = time.time()
        with tempfile.TemporaryDirectory(prefix="pluralign-align-") as work:
            if (out / "aligned").exists():
                shutil.rmtree(out / "aligned")
            record["align"] = align(out / "base", out / "aligned", work, al, sampling=record["sampling"])
        record["align"].pop("adapter_dir", None)
        record["config"]["align"] = {**to_dict(al), "train": to_dict(al.train_config())}
        record["wall_seconds"]["align"] = round(time.time() - t, 1)
        save()
    if "measure" in cfg.stages:
        t = time.time()
        rows = world.eval_suite(cfg.suite_size, cfg.suite_seed)
        checker = ContentChecker.from_pretrained(out / "checker")
        record["measured"] = {"suite": {"n": cfg.suite_size, "seed": cfg.suite_seed}, "sampling": dict(record["sampling"]),
                              "command": command}
        for name in ("base", "aligned"):
            if (out / name / "model_index.json").exists():
                record["measured"][name] = _measure(out / name, rows, record["sampling"], checker)
        record["wall_seconds"]["measure"] = round(time.time() - t, 1)
    if "dial" in cfg.stages:
        t = time.time()
        record["dial"] = build_dial_adapters(out, cfg.dial_max_steps, cfg.dial_validation_seed,
                                             cfg.dial_validation_size, shlex.split(cfg.dial_overrides))
        record["dial"]["command"] = command
        record["wall_seconds"]["dial"] = round(time.time() - t, 1)
        save()
    record["wall_seconds"]["total_this_run"] = round(time.time() - t_all, 1)
    # the stage configs above are the full record; the command line says how the models were made. Measuring (at
    # other sampling settings, say), the judge and the dial adapters record their own command and leave the models'
    # alone.
    if set(cfg.stages) & {"checker", "base", "align"}:
        record["command"] = command or "python -m pluralign.toy.build_checkpoints --output " + str(cfg.output)
    save()
    return record


def main(argv: list[str] | None = None) -> int:
    cfg, base, al = parse((BuildConfig, BaseModelConfig, AlignConfig), argv, prog="pluralign build-toy",
                          description=__doc__.split("\n\n")[0])
    args = sys.argv[1:] if argv is None else argv
    record = build(cfg, base, al, command=shlex.join(["python", "-m", "pluralign.toy.build_checkpoints", *args]))
    print(json.dumps({k: record.get(k) for k in ("wall_seconds", "checker", "measured")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_module(main, "python -m pluralign.toy.build_checkpoints"))
