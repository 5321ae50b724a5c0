"""Data-building throughput and memory.

    .venv/bin/python benchmarks/bench_data.py [--pairs 1000] [--memory_pairs 10000]

Makes a folder of 256x256 photos (crops of scikit-image's sample photos) with a metadata.jsonl, then
measures, for anti+mirror pairs (one pair = one anti row + its mirror row = one degraded image and
two PNG encodes):

* the pair generator alone (decode, rewrite, degrade, encode) in one process;
* ``build_dataset`` end to end (generator + Arrow writing + save_to_disk + card) with num_proc 1 and 2;
* peak resident memory of a process building ``--memory_pairs`` pairs (the build streams rows, so
  this should stay flat as the count grows).

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(d: Path, n_images: int = 200, repeat: int = 1) -> Path:
    from skimage import data as skdata

    d.mkdir(parents=True, exist_ok=True)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(), skdata.immunohistochemistry(),
              np.stack([skdata.camera()] * 3, axis=2)]
    rng = np.random.default_rng(0)
    for i in range(n_images):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        Image.fromarray(p[y:y + side, x:x + side]).resize((256, 256), Image.Resampling.BILINEAR).save(d / f"{i}.png")
    with (d / "metadata.jsonl").open("w") as f:
        for r in range(repeat):
            for i in range(n_images):
                f.write(json.dumps({"file_name": f"{i}.png", "text": f"a photograph, sample {i} take {r}"}) + "\n")
    return d


def bench_generator(folder: Path, pairs: int, png_level: int = 1) -> tuple[float, float]:
    """(pairs per wall second, pairs per CPU second of this process)."""
    from pluralign.data.config import DataConfig
    from pluralign.data.pairs import generate_rows

    cfg = DataConfig(sources=[str(folder)], anti_fraction=1.0, max_rows=2 * pairs, max_side=None,
                     png_compress_level=png_level)
    with tempfile.TemporaryDirectory() as logs:
        t, c = time.perf_counter(), time.process_time()
        n = sum(1 for _ in generate_rows([0], 1, cfg.__dict__, logs))
        dt, dc = time.perf_counter() - t, time.process_time() - c
    assert n == 2 * pairs, n
    return pairs / dt, pairs / dc


def bench_build(folder: Path, pairs: int, num_proc: int, work: Path) -> tuple[float, None]:
    from pluralign.data.build import build_dataset
    from pluralign.data.config import DataConfig

    out = work / f"build-{num_proc}"
    cfg = DataConfig(sources=[str(folder)], anti_fraction=1.0, max_rows=2 * pairs, max_side=None, num_proc=num_proc,
                     output_dir=str(out), overwrite=True)
    t = time.perf_counter()
    build_dataset(cfg)
    dt = time.perf_counter() - t
    shutil.rmtree(out)
    return pairs / dt, None


_MEMORY_SCRIPT = """
import resource, sys, threading, time
from pluralign.data.build import build_dataset
from pluralign.data.config import DataConfig

peak = {"RssAnon": 0, "RssFile": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in peak:
                peak[k] = max(peak[k], int(v.split()[0]) / 1024)
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
cfg = DataConfig(sources=[sys.argv[1]], anti_fraction=1.0, max_rows=2 * int(sys.argv[2]), max_side=None,
                 output_dir=sys.argv[3], overwrite=True)
t = time.perf_counter()
build_dataset(cfg)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak["RssAnon"],
      peak["RssFile"])
"""


def bench_memory(folder_spec: Path, pairs: int, work: Path) -> tuple[float, float, float, float, float]:
    """(seconds, peak RSS MiB, peak anonymous RSS MiB, peak file-backed RSS MiB, output GB). File-backed
    pages are the memory-mapped Arrow files datasets reads back when saving: the kernel can drop them."""
    out = work / "memory"
    r = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(folder_spec), str(pairs), str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    seconds, rss_mb, anon_mb, file_mb = map(float, r.stdout.split()[-4:])
    size_gb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9
    shutil.rmtree(out)
    return seconds, rss_mb, anon_mb, file_mb, size_gb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000, help="anti+mirror pairs for the speed runs")
    ap.add_argument("--memory_pairs", type=int, default=10000, help="anti+mirror pairs for the memory run (0: skip)")
    ap.add_argument("--memory_pairs_small", type=int, default=1000, help="a smaller memory run to compare against")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        work = Path(tmp)
        reps = max(1, -(-max(args.pairs, args.memory_pairs) // 200))
        folder = make_folder(work / "images", 200, reps)
        rows = [("pair generator, 1 process", bench_generator(folder, args.pairs)),
                ("pair generator, 1 process, png_compress_level=0", bench_generator(folder, args.pairs, 0))]
        rows.append(("build_dataset, num_proc=1", bench_build(folder, args.pairs, 1, work)))
        rows.append(("build_dataset, num_proc=2", bench_build(folder, args.pairs, 2, work)))
        print(f"\n256x256 images, {args.pairs} anti+mirror pairs (= {2 * args.pairs} rows), anti_fraction=1\n")
        print("| measurement | anti+mirror pairs/s | rows/s | pairs per CPU-second |")
        print("|---|---:|---:|---:|")
        for name, (pps, cpu) in rows:
            print(f"| {name} | {pps:.0f} | {2 * pps:.0f} | {'' if cpu is None else f'{cpu:.0f}'} |")
        print(f"\n(CPU cores: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f})")
        mem = []
        for n in (args.memory_pairs_small, args.memory_pairs):
            if n:
                mem.append((n, *bench_memory(folder, n, work)))
        if mem:
            print("\n| streamed build | seconds | pairs/s | peak RSS (MiB) | peak anonymous RSS (MiB) "
                  "| peak file-backed RSS (MiB) | output size (GB) |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for n, sec, rss, anon, fil, gb in mem:
                print(f"| {n} pairs ({2 * n} rows), num_proc=1 | {sec:.0f} | {n / sec:.0f} | {rss:.0f} | {anon:.0f} "
                      f"| {fil:.0f} | {gb:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
