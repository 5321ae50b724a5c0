"""``pluralign`` command line. Each subcommand lives in the module that owns the capability;
this file only dispatches, so ``pluralign --help`` stays fast (no torch import)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from . import __version__

# name -> (module, function, one-line help). The function takes the remaining argv.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "env": ("pluralign.env", "main", "print versions of the stack and the compute device"),
    "tiny": ("pluralign.tiny", "main", "write a tiny pipeline of a family to a directory (for tests and trials)"),
}


def register(name: str, module: str, func: str, help: str) -> None:
    COMMANDS[name] = (module, func, help)


def _optional_commands() -> None:
    # Subcommands that exist once their capability is built.
    candidates = {
        "data": ("pluralign.data.cli", "main", "build and validate intent-conditioned preference datasets"),
        "train": ("pluralign.train", "main", "train a Diffusion-DPO LoRA adapter from a recipe"),
        "eval": ("pluralign.eval.cli", "main", "measure prompt adherence before/after an adapter"),
        "audit": ("pluralign.eval.audit", "main", "reward-model accuracy on anti-aesthetic triplets"),
        "demo": ("pluralign.toy.demo", "main", "the embedded default: reversed alignment, fixed and measured"),
        "build-toy": ("pluralign.toy.build", "main", "rebuild the shipped toy checkpoints"),
    }
    for name, spec in candidates.items():
        if importlib.util.find_spec(spec[0]) is not None:
            COMMANDS.setdefault(name, spec)


def main(argv: list[str] | None = None) -> int:

    _optional_commands()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pluralign",
        description="Intent-conditioned Diffusion-DPO for text-to-image models.",
        epilog="Run `pluralign COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"pluralign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}")
    module, func, _ = COMMANDS[name]
    from .config import run_module

    return run_module(lambda: getattr(importlib.import_module(module), func)(rest), f"pluralign {name}")


if __name__ == "__main__":
    sys.exit(main())
