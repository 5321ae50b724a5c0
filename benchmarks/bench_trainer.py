"""Trainer throughput on the tiny SD1.x pipeline: s/step, peak memory and the ratio to the floor.

The floor is the unavoidable compute of a Diffusion-DPO step: one policy forward+backward on the
2B stacked samples plus one reference forward on the same samples. Everything else in a step
(data, noise, loss, logging, cache misses) shows up as the ratio DPO-step / floor.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 4] [--out benchmarks/results_trainer.md]

Peak memory is the peak resident set size above the level before the measured steps (CPU), or
``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import psutil  # noqa: E402
import torch  # noqa: E402


class PeakRSS:
    def __enter__(self):
        self.proc, self.base, self.peak, self.stop = psutil.Process(), psutil.Process().memory_info().rss, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.mib = max(0, self.peak - self.base) / 2**20


def floor_time(model_dir, resolution, pairs, reps, gradient_checkpointing=False):
    """Median seconds of policy fwd+bwd on 2B + reference fwd on 2B, with nothing else."""
    from diffusers import DiffusionPipeline

    from pluralign.trainers.adapters import adapters_disabled, add_lora, lora_config

    pipe = DiffusionPipeline.from_pretrained(model_dir)
    unet = pipe.unet
    add_lora(unet, lora_config(4, 4.0, 0.0, ("to_q", "to_k", "to_v", "to_out.0")), "intent")
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    h = resolution // 2
    x = torch.randn(2 * pairs, 4, h, h)
    t = torch.randint(0, 1000, (2 * pairs,))
    c = torch.randn(2 * pairs, 77, pipe.text_encoder.config.hidden_size)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        out = unet(x, t, encoder_hidden_states=c).sample
        out.float().pow(2).mean().backward()
        with torch.no_grad(), adapters_disabled(unet):
            unet(x, t, encoder_hidden_states=c)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def dpo_time(model_dir, tmp, resolution, pairs, steps, **kw):
    from pluralign.trainers import DPOTrainConfig, train

    config = DPOTrainConfig(pretrained_model=model_dir, output_dir=str(tmp / f"run-{resolution}-{pairs}-{len(kw)}"),
                            cache_dir=str(tmp / "cache"), resolution=resolution, train_batch_size=pairs,
                            max_steps=steps + 1, report_to="none", export_kohya=False, overwrite_output_dir=True,
                            lr_warmup_steps=0, **kw)
    with PeakRSS() as mem:
        r = train(config)
    return statistics.median(h["s_per_step"] for h in r.history[1:]), mem.mib


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from pluralign.tiny import save_tiny_pipeline

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = str(save_tiny_pipeline("sd", tmp / "tiny-sd"))
        variants = [(res, b, {"use_cache": cache}) for res in (32, 64) for b in (1, 4, 8) for cache in (True, False)]
        variants += [(32, 4, {"use_cache": True, "gradient_checkpointing": True}),
                     (32, 4, {"use_cache": True, "optimizer": "adamw8bit"})]
        for res, b, kw in variants:
            s, mib = dpo_time(model, tmp, res, b, args.steps, **kw)
            fl = floor_time(model, res, b, args.steps, kw.get("gradient_checkpointing", False))
            tag = ", ".join(f"{k}={v}" for k, v in kw.items())
            rows.append(f"| {res // 2}x{res // 2} | {b} | {tag} | {s:.3f} | {fl:.3f} | {s / fl:.2f} | {mib:.0f} |")
            print(rows[-1], flush=True)
    table = "\n".join(["| latents | pairs/step | variant | DPO s/step | floor s | ratio | peak RSS MiB |",
                       "|---|---|---|---|---|---|---|", *rows])
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
