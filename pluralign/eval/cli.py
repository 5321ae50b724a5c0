"""``pluralign eval``: measure prompt adherence before/after an adapter.

    pluralign eval --base DIR --adapter DIR --weights 0,0.5,1 --suite toy --judges clip --output DIR
    pluralign eval --base DIR --adapters_dir RUN_DIR --weights 0,0.5,1 --suite prompts.jsonl --output DIR
    pluralign eval --base DIR --adapters clarity_and_focus=DIR,color_and_tone=DIR ... (one dial per category)

Options come from :class:`pluralign.eval.runner.EvalConfig` (YAML via ``--config``, flags override).
"""

from __future__ import annotations

from pluralign.config import parse

from .report import markdown_summary
from .runner import EvalConfig, run_eval


def main(argv: list[str] | None = None) -> int:
    (config,) = parse((EvalConfig,), argv, prog="pluralign eval", description=__doc__.splitlines()[0])
    results = run_eval(config)
    if results:
        from pathlib import Path

        print(markdown_summary(results))
        print(f"wrote {Path(config.output) / 'results.json'}, report.md, report.html")
    return 0
