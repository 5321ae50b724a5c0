"""``pluralign data build --config recipes/data_x.yaml [--key value ...]`` and
``pluralign data validate PATH``."""

from __future__ import annotations

import argparse
import sys

from ..config import parse, run_module, underscored
from .build import build_dataset
from .config import MAX_PIXELS, MAX_SIDE, DataConfig
from .validate import validate_source

USAGE = """usage: pluralign data {build,generate,validate} ...

  build     --config recipes/data_local_folder.yaml [--key value ...]   build a pairs dataset
  generate  --generator DIR --suite toy --scorer toy [--key value ...]  on-policy pairs sampled from a generator
  validate  PATH [--max_pixels N] [--min_side N] [--max_rows N]        check a source or a built dataset

(`pluralign data generate --help` lists generate's options; it lives in pluralign.onpolicy.cli.)
"""


def _int_in(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi] (argparse reports anything else as a usage error, exit 2)."""
    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}]")
        return value
    return parse_int


def build_main(argv: list[str]) -> int:
    (cfg,) = parse((DataConfig,), underscored(argv), prog="pluralign data build",
                   description="Build intent-conditioned (anti/mirror) and general preference pairs.")
    out = build_dataset(cfg)
    print(f"wrote {out} (card: {out / 'README.md'})")
    return 0


def validate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="pluralign data validate", description="Report every problem of a data source.")
    p.add_argument("path", help="folder, parquet, save_to_disk dir or hub id")
    p.add_argument("--max_pixels", type=_int_in(1, MAX_PIXELS), default=64_000_000)
    p.add_argument("--min_side", type=_int_in(1, MAX_SIDE), default=8)
    p.add_argument("--max_rows", type=_int_in(1, 10**9), default=None)
    p.add_argument("--split", default="train")
    args = p.parse_args(underscored(argv))
    report = validate_source(args.path, max_pixels=args.max_pixels, min_side=args.min_side, split=args.split,
                             max_rows=args.max_rows)
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "build":
        return build_main(rest)
    if cmd == "validate":
        return validate_main(rest)
    if cmd == "generate":  # it samples images and scores them: a package above this one runs it
        print("pluralign data generate runs from the pluralign command (or `python -m pluralign.onpolicy.cli`); "
              "this module builds and validates only", file=sys.stderr)
        return 2
    print(f"pluralign data: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(run_module(main, "pluralign data"))
