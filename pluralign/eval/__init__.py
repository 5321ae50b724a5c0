"""The built-in evaluation loop: suites, paired generation with the adapter dial, metrics and reports.

Entry point: :func:`pluralign.eval.runner.run_eval` (``pluralign eval`` on the command line).
"""

from .runner import EvalConfig, run_eval
from .suite import EvalRow, SuiteSource, load_suite, register_suite

__all__ = ["EvalConfig", "EvalRow", "SuiteSource", "load_suite", "register_suite", "run_eval"]
