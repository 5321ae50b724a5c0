"""Eval wall time per 100 prompt pairs on the tiny SD pipeline with a LoRA adapter.

One full ``run_eval``: base + adapter at weights {0, 0.5, 1} (4 variants, i.e. 800 images per
100 pairs), verifier adherence, leakage, similarity content check, the model-free ``verifier``
judge, bootstrap CIs, results.json and both reports. Prints a markdown table.

    python benchmarks/bench_eval.py [--pairs 100] [--steps 2,20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def main() -> None:
    import torch

    from pluralign.eval.fixtures import save_random_lora
    from pluralign.eval.runner import EvalConfig, run_eval
    from pluralign.eval.suite import EvalRow
    from pluralign.tiny import save_tiny_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--steps", default="2,20")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()

    attrs = ["underexposed", "blurry", "muted", "noisy", "low_contrast", "overexposed"]
    rows = [EvalRow(f"a small red object number {i}", f"a small red object number {i}, {attrs[i % 6].replace('_', ' ')}",
                    [attrs[i % 6]], 1000 + i) for i in range(args.pairs)]
    lines = ["| steps | pairs | variants | images | generate s | metrics s | report s | total s | s per 100 pairs |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        base = save_tiny_pipeline("sd", f"{tmp}/sd")
        adapter = save_random_lora(base, f"{tmp}/lora", scale=30.0)
        for steps in [int(s) for s in args.steps.split(",")]:
            cfg = EvalConfig(base=str(base), adapter=str(adapter), weights=[0.0, 0.5, 1.0], suite="bench",
                             judges=["verifier"], num_inference_steps=steps, batch_size=args.batch_size,
                             output=f"{tmp}/out{steps}", bootstrap=1000)
            t0 = time.perf_counter()
            res = run_eval(cfg, rows=rows)
            total = time.perf_counter() - t0
            t = res["timing"]
            n_var = len(res["variants"])
            lines.append(f"| {steps} | {args.pairs} | {n_var} | {2 * n_var * args.pairs} | {t['generate_seconds']:.1f} | "
                         f"{t['metrics_seconds']:.1f} | {t['report_seconds']:.1f} | {total:.1f} | "
                         f"{100 * total / args.pairs:.1f} |")
    print(f"torch threads: {torch.get_num_threads()}, tiny SD pipeline (32x32 images, 16x16 latents), CPU")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
