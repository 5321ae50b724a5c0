"""Where the demo's time goes, by stage and by operation.

    .venv/bin/python benchmarks/profile_demo.py [--output /tmp/profile_demo] [--json FILE] [demo flags...]

Runs ``pluralign demo`` (a short one by default: 48 eval prompt pairs, 4 on-policy prompt pairs per
semantic attribute, 40 adapter steps; any demo flag overrides these) with the torch profiler on, one
profile per stage, and prints per stage:

* wall seconds, the number of images or steps it made and the cost of one;
* the share of the stage spent inside torch operators (the sum of their self times) and outside them
  (Python: diffusers module calls, the scheduler, data handling, metrics, PNG and report writing);
* the operators grouped (convolution, matmul, attention, normalisation, elementwise, copies,
  optimizer, other), and the top operators by self time.

The profiler adds overhead to every operator call, so absolute seconds here are higher than an
unprofiled demo's; the shares are what to read. The full demo's per-stage wall times are in its
``results.json`` (``stage_seconds``); multiply this script's per-image and per-step costs by the
full demo's counts to see where a full run's time goes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

GROUPS = [  # (group, substrings of aten op names), first match wins
    ("convolution", ("conv",)),
    ("attention", ("scaled_dot_product", "softmax", "_flash", "_efficient_attention")),
    ("matmul", ("addmm", "aten::mm", "bmm", "linear", "matmul")),
    ("normalisation", ("group_norm", "layer_norm", "batch_norm")),
    ("optimizer", ("_foreach", "adam")),
    ("copies and layout", ("copy_", "cat", "contiguous", "clone", "to_copy", "_to", "empty", "view", "reshape",
                           "permute", "transpose", "expand", "slice", "select", "stack", "index", "zeros", "fill_")),
    ("elementwise", ("add", "mul", "sub", "div", "silu", "gelu", "sigmoid", "exp", "pow", "sqrt", "neg", "clamp",
                     "mean", "sum", "where", "threshold", "tanh", "rsub", "lerp", "square", "abs")),
]


def group_of(op: str) -> str:
    for name, keys in GROUPS:
        if any(k in op for k in keys):
            return name
    return "other"


class StageProfiles:
    """One torch profiler per demo stage, started and stopped by the demo's own stage markers."""

    def __init__(self) -> None:
        self.stages: dict[str, dict] = {}
        self._prof = None
        self._stage = None
        self._t0 = 0.0

    def start(self, stage: str) -> None:
        import torch

        self.stop()
        self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self._prof.__enter__()
        self._stage, self._t0 = stage, time.perf_counter()

    def stop(self) -> None:
        if self._prof is None:
            return
        wall = time.perf_counter() - self._t0
        self._prof.__exit__(None, None, None)
        # operators only: the optimizer's own range would count its operators a second time
        ops = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in self._prof.key_averages()
               if e.key.startswith(("aten::", "mkldnn"))]
        groups: dict[str, float] = defaultdict(float)
        for key, s, _ in ops:
            groups[group_of(key)] += s
        self.stages[self._stage] = {
            "wall_seconds": wall, "inside_ops_seconds": sum(s for _, s, _ in ops),
            "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "top_ops": sorted(ops, key=lambda x: -x[1])[:12],
        }
        self._prof = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default="/tmp/profile_demo", help="the demo's output directory")
    ap.add_argument("--json", default=None, help="also write the per-stage tables here")
    args, demo_flags = ap.parse_known_args(argv)

    from pluralign.toy import demo, world

    profiles = StageProfiles()

    class ProfiledSteps(demo._Steps):
        def __call__(self, what: str, stage: str) -> None:
            super().__call__(what, stage)
            profiles.start(stage)

        def close_stage(self) -> None:
            profiles.stop()
            super().close_stage()

    demo._Steps = ProfiledSteps
    short = ["--n_prompts", "48", "--semantic_prompts", "4", "--max_steps", "40", "--logging_steps", "10",
             "--bootstrap", "200", "--report_to", "none"]
    cfg, train_cfg = demo.parse_demo(["--output", args.output, *short, *demo_flags])
    results = demo.run_demo(cfg, train_cfg)

    weights = len(cfg.weights)
    counts = {  # what each stage made: eval rows give an I_o and an I_a image each
        "eval_base": ("image", 2 * cfg.n_prompts),
        "onpolicy_pairs": ("image", 2 * cfg.semantic_prompts * len(world.SEMANTIC_ATTRIBUTES) * cfg.semantic_candidates),
        "train_intent": ("step", train_cfg.max_steps),
        "eval_dial": ("image", 2 * cfg.n_prompts * (1 + weights)),
    }
    print(f"\nprofiled demo: {results['wall_seconds']:.0f} s wall with the profiler on\n")
    for stage, p in profiles.stages.items():
        unit, n = counts.get(stage, (None, 0))
        per = f", {p['wall_seconds'] / n:.3f} s per {unit} ({n} {unit}s)" if n else ""
        inside = p["inside_ops_seconds"] / p["wall_seconds"] if p["wall_seconds"] else 0.0
        print(f"## {stage}: {p['wall_seconds']:.1f} s{per}; inside torch operators {100 * inside:.0f}%, "
              f"outside (Python, I/O, metrics) {100 * (1 - inside):.0f}%")
        total = p["inside_ops_seconds"] or 1.0
        print("   groups: " + ", ".join(f"{g} {100 * s / total:.0f}%" for g, s in p["groups"].items()))
        for key, s, c in p["top_ops"][:8]:
            print(f"   {s:8.2f} s  {c:8d} calls  {key}")
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": profiles.stages, "counts": counts,
                                               "stage_seconds": results["stage_seconds"]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
