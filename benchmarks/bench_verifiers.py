"""Verifier throughput: images/s scoring every verifier at 256x256, single process.

    python benchmarks/bench_verifiers.py [--n 256] [--repeats 3]

Prints a markdown table: all verifiers through ``measure`` (batched), the paired rules through
``adherence_table`` (pairs/s), and each verifier alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pluralign.rewards.rules import RULE_SPECS, adherence_table
from pluralign.rewards.verifiers import BATCH_VERIFIERS, CHUNK, Batch, measure


def _photos(n: int, side: int) -> list[np.ndarray]:
    from pluralign.rewards.calibrate import CALIBRATION_PHOTOS, load_photo, sample_view

    rng = np.random.default_rng(0)
    photos = [load_photo(p) for p in CALIBRATION_PHOTOS]
    out = []
    for i in range(n):
        v, _ = sample_view(photos[i % len(photos)], side, rng)
        out.append(np.ascontiguousarray(v[:side, :side]))
    return out


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    imgs = _photos(args.n, args.side)
    measure(imgs[:8])
    rows = []
    t = _best(lambda: measure(imgs), args.repeats)
    rows.append((f"all {len(BATCH_VERIFIERS)} verifiers (measure)", args.n / t))
    half = args.n // 2
    t = _best(lambda: adherence_table(imgs[:half], imgs[half:], [list(RULE_SPECS)] * half), args.repeats)
    rows.append((f"all {len(RULE_SPECS)} paired rules (adherence_table), pairs/s", half / t))
    x = np.stack(imgs)
    for name, fn in BATCH_VERIFIERS.items():
        def one(fn=fn):
            for s in range(0, len(x), CHUNK):
                fn(Batch(x[s : s + CHUNK]))
        rows.append((name, args.n / _best(one, args.repeats)))
    print(f"Verifier throughput at {args.side}x{args.side}, {args.n} images, single process (best of {args.repeats})\n")
    print("| what | images/s |\n|---|---:|")
    for what, rate in rows:
        print(f"| {what} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
