"""The built-in evaluation loop: suites, paired generation with the adapter dial, metrics and reports.

Entry point: :func:`pluralign.eval.runner.run_eval` (``pluralign eval`` on the command line).
Submodules are imported lazily so ``import pluralign.eval`` stays cheap.
"""

from __future__ import annotations

__all__ = ["EvalConfig", "EvalRow", "load_suite", "run_eval"]


def __getattr__(name: str):
    if name in ("EvalConfig", "run_eval"):
        from . import runner

        return getattr(runner, name)
    if name in ("EvalRow", "load_suite"):
        from . import suite

        return getattr(suite, name)
    raise AttributeError(name)
