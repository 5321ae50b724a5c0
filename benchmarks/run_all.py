"""Run every benchmark in turn (``make bench``); each prints its own markdown table.

Benchmarks are not timed tests: run them on an otherwise idle machine, since shared cores distort
every throughput figure.
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_data.py", "bench_verifiers.py", "bench_trainer.py", "bench_eval.py", "bench_dial.py")


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    failed = []
    for name in SCRIPTS:
        print(f"\n## {name}\n", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
