"""``pluralign`` command line. Each subcommand lives in the module that owns the capability;
this file only dispatches, so ``pluralign --help`` stays fast (no torch import)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .config import run_module

# name -> (module, one-line help). Every command is a module with ``main(argv) -> int`` that raises a
# ValueError (naming the file, row or key) on bad input; ``run_module`` turns that into one line and
# exit status 2, here and under ``python -m``, so all commands fail the same way.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("pluralign.data.cli", "build, generate and validate intent-conditioned preference datasets"),
    "train": ("pluralign.train", "train a Diffusion-DPO LoRA adapter from a recipe"),
    "eval": ("pluralign.eval.cli", "measure prompt adherence before/after an adapter"),
    "audit": ("pluralign.eval.audit", "reward-model accuracy on anti-aesthetic triplets"),
    "demo": ("pluralign.toy.demo", "the embedded default: reversed alignment, fixed and measured"),
    "dial": ("pluralign.dial.app", "the aesthetic dial in a browser: one slider per category adapter"),
    "build-toy": ("pluralign.toy.build_checkpoints", "rebuild the shipped toy checkpoints"),
    "env": ("pluralign.env", "print versions of the stack and the compute device"),
    "tiny": ("pluralign.tiny", "write a tiny pipeline of a family to a directory (for tests and trials)"),
}
# (command, subcommand) -> module, for a subcommand that lives above its command's package: `data generate`
# samples images (eval's pipelines) and scores them (rewards), which pluralign.data may not import.
SUBCOMMANDS: dict[tuple[str, str], str] = {
    ("data", "generate"): "pluralign.onpolicy.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pluralign",
        description="Intent-conditioned Diffusion-DPO for text-to-image models.",
        epilog="Run `pluralign COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"pluralign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv or ["--help"])
        return 0
    if "--debug" in argv:  # anywhere: run_module shows the full traceback then
        argv.remove("--debug")
        os.environ["PLURALIGN_DEBUG"] = "1"
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}")
    module, _ = COMMANDS[name]
    prog = f"pluralign {name}"
    if rest and (name, rest[0]) in SUBCOMMANDS:
        module, prog, rest = SUBCOMMANDS[(name, rest[0])], f"{prog} {rest[0]}", rest[1:]
    return run_module(lambda: importlib.import_module(module).main(rest), prog)


if __name__ == "__main__":
    sys.exit(main())
