"""The toy world as an eval suite: ``pluralign eval --suite toy`` and the demo's rows.

Registered through the ``pluralign.suites`` entry point (pyproject.toml), so the eval loop finds
the world's prompt pairs and its content checker without importing the toy package.
"""

from __future__ import annotations

from pluralign.eval.suite import EvalRow, SuiteSource, from_source

from . import world
from .checker import ContentChecker

REPORTING_SEED = 1000  # the suite every reported number uses; tuning runs on other seeds (toy.sweep)


def source() -> SuiteSource:
    return SuiteSource(records=world.eval_suite, default_n=72, default_seed=REPORTING_SEED,
                       content_checker=ContentChecker.from_pretrained, attribute_judge="toy")


def toy_rows(n: int = 72, seed: int = REPORTING_SEED) -> list[EvalRow]:
    """``n`` rows of the toy suite (balanced over the world's attributes); scenes go to ``meta``."""
    return from_source("toy", n, seed)
