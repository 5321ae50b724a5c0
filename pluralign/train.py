"""``pluralign train`` / ``python -m pluralign.train`` / ``accelerate launch -m pluralign.train``.

Reads a YAML recipe of :class:`~pluralign.trainers.DPOTrainConfig` fields plus the optional
``eval_*`` keys of :class:`AfterTrainingEval` (``--config``), applies ``--key value`` overrides,
trains and exports the adapter(s), then, with ``eval_before_after: true``, measures the base model
against each adapter's dial with the built-in evaluation loop and writes the summary into the
adapter's model card. Training and evaluation stay separate packages; this entry point is where
they meet.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import option, parse, run_module
from .eval.runner import EvalConfig, run_eval
from .trainers.config import DPOTrainConfig
from .trainers.distributed import shutdown
from .trainers.export import attach_eval
from .trainers.trainer import NonFiniteLossError, TrainResult, train


@dataclass
class AfterTrainingEval:
    """The evaluation ``pluralign train`` runs after training (recipe keys ``eval_*``)."""

    eval_before_after: bool = option(False, "after training, evaluate the base model and the adapter dial with "
                                     "pluralign.eval and link the summary into the model card")
    eval_suite: str = option("toy", "eval suite: toy | a .jsonl/.csv prompt file | hf:REPO (anti-aesthetic schema)")
    eval_n_prompts: int = option(32, "eval prompt pairs", min=1, max=100_000)
    eval_weights: list[float] = option(factory=lambda: [0.0, 0.5, 1.0], help="adapter weights of the eval dial",
                                      min=0, max=4)
    eval_inference_steps: int = option(20, "sampler steps of eval images", min=1, max=1000)
    eval_guidance_scale: float = option(7.5, "classifier-free guidance scale of eval images", min=0, max=50)


def evaluate_adapter(c: DPOTrainConfig, result: TrainResult, ev: AfterTrainingEval, adapter_name: str,
                     adapter_dir: Path) -> dict[str, float]:
    """Base vs adapter dial; the summary goes into the model card and ``eval_summary.json``."""
    from accelerate import PartialState

    out = result.output_dir / "eval" / adapter_name
    results = run_eval(EvalConfig(
        base=result.base_model, adapter=str(adapter_dir), adapter_name=adapter_name, weights=list(ev.eval_weights),
        suite=ev.eval_suite, n_prompts=ev.eval_n_prompts, num_inference_steps=ev.eval_inference_steps,
        guidance_scale=ev.eval_guidance_scale, height=c.resolution, width=c.resolution, output=str(out),
        dtype={"no": "float32", "fp16": "float16", "bf16": "bfloat16"}[c.mixed_precision]))
    if not PartialState().is_main_process:
        return {}
    summary = eval_card_summary(results, out, adapter_dir)
    attach_eval(adapter_dir / "README.md", summary)
    (adapter_dir / "eval_summary.json").write_text(json.dumps(summary, indent=1))
    return {f"eval/{v}/adherence": s["adherence"] for v, s in summary["variants"].items() if s["adherence"] is not None}


def eval_card_summary(results: dict, eval_dir: Path, adapter_dir: Path) -> dict:
    """The few numbers a model card needs: adherence, leakage and content per variant (base, dial)."""
    variants = {}
    for name, v in results["variants"].items():
        adherence = v.get("adherence") or {}
        variants[name] = {"adherence": adherence.get("value"), "adherence_ci95": adherence.get("ci95"),
                          "leakage_max_abs_points": (v.get("leakage") or {}).get("max_abs_points"),
                          "content_fidelity": (v.get("content_fidelity") or {}).get("value")}
    return {"suite": results["suite"], "variants": variants,
            "report": os.path.relpath(eval_dir / "report.html", adapter_dir)}


def train_and_evaluate(config: DPOTrainConfig, ev: AfterTrainingEval):
    """Train; then, if asked, evaluate each adapter (its metrics join the result's)."""
    result = train(config)
    if ev.eval_before_after:
        for name, adapter_dir in result.adapter_dirs.items():
            metrics = evaluate_adapter(config, result, ev, name, adapter_dir)
            prefix = f"{name}/" if len(result.adapter_dirs) > 1 else ""
            result.metrics.update({prefix + k: v for k, v in metrics.items()})
    return result


def main(argv: list[str] | None = None) -> int:
    config, ev = parse((DPOTrainConfig, AfterTrainingEval), argv, prog="pluralign train",
                       description="Train an intent-conditioned Diffusion-DPO LoRA adapter from a recipe.")
    try:
        result = train_and_evaluate(config, ev)
    except NonFiniteLossError as exc:
        print(f"pluralign train: stopped: {exc}", file=sys.stderr)
        return 3
    shutdown()
    for name, path in result.adapter_dirs.items():
        print(f"adapter {name}: {path}")
    shown = {k: round(v, 5) for k, v in result.metrics.items() if "loss" in k or "acc" in k}
    print(f"final metrics: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "pluralign train"))
