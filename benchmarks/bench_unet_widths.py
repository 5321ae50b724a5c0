"""Milliseconds per latent of the toy UNet at other block widths, against the shipped one, in one process.

The demo's time is denoiser calls (docs/benchmarks.md). This times a no-grad call at the eval's batch (96 latents)
for the shipped UNet and untrained UNets of the same design at each width triple given, interleaved in rounds so
that the machine's drift falls on all of them alike, and prints the median per width and its ratio to the shipped.

    python benchmarks/bench_unet_widths.py --widths 24,48,64 16,48,64 16,32,64
"""

from __future__ import annotations

import argparse
import statistics
from types import SimpleNamespace

from pluralign.eval.generate import load_pipeline
from pluralign.toy import base_model, paths
from pluralign.toy.demo import denoiser_speed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", default=["24,48,64", "16,48,64", "16,32,64"])
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    shipped = load_pipeline(str(paths.base_dir()), device="cpu", progress=False).unet
    cfg = shipped.config
    unets = {"shipped " + ",".join(map(str, cfg.block_out_channels)): shipped}
    for w in a.widths:
        unets[w] = base_model.make_unet(cfg.in_channels, tuple(int(c) for c in w.split(",")), cfg.cross_attention_dim,
                                        0, cfg.sample_size).eval()
    times: dict[str, list[float]] = {k: [] for k in unets}
    for _ in range(a.rounds):
        for name, unet in unets.items():
            times[name].append(denoiser_speed(SimpleNamespace(unet=unet, tokenizer=SimpleNamespace(model_max_length=32)),
                                              a.batch))
    ref = statistics.median(next(iter(times.values())))
    print("| UNet widths | parameters | ms per latent (median of rounds) | ratio to shipped |")
    print("|---|---:|---:|---:|")
    for name, unet in unets.items():
        med = statistics.median(times[name])
        print(f"| {name} | {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M | {med:.3f} | {med / ref:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
