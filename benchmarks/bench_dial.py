"""Seconds per image of ``pluralign dial`` on the toy world: every slider at 0, one adapter up, all five up,
and a slider release (a new setting on the same prompt and seed, the all-zero image kept).

    python benchmarks/bench_dial.py [--repeats 5] [--threads 0]

Prints a markdown table with the load average before and after, as docs/dial.md quotes it.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    from pluralign.dial.session import DialSession, default_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    spec = default_spec()
    session = DialSession(spec, device="cpu")
    prompt, names = spec.examples[-1], session.names
    session.render(prompt, {names[0]: 1.0}, 0)  # warm-up
    settings = {"every slider at 0": {}, "one adapter at 1": {names[-1]: 1.0},
                "all five at 0.5": {n: 0.5 for n in names}}
    rows = []
    for label, weights in settings.items():
        times = []
        for seed in range(args.repeats):
            t = time.perf_counter()
            session.sample(prompt, weights, seed)
            times.append(time.perf_counter() - t)
        rows.append((label, times))
    times = []
    for k in range(args.repeats):  # a new setting each time, same prompt and seed: what a slider release does
        weights = {n: round(0.1 * (k + 1), 2) if i <= k % len(names) else 0.0 for i, n in enumerate(names)}
        session.render(prompt, {}, 1)
        t = time.perf_counter()
        session.render(prompt, weights, 1)
        times.append(time.perf_counter() - t)
    rows.append(("slider release", times))
    print(f"torch threads {torch.get_num_threads()}, {spec.num_inference_steps} steps, {args.repeats} calls each, "
          f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| setting | s per image: min | median | max |\n|---|---|---|---|")
    for label, ts in rows:
        ts = sorted(ts)
        print(f"| {label} | {ts[0]:.2f} | {ts[len(ts) // 2]:.2f} | {ts[-1]:.2f} |")


if __name__ == "__main__":
    main()
