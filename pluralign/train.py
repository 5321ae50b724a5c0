"""``pluralign train`` / ``python -m pluralign.train`` / ``accelerate launch -m pluralign.train``.

Reads a YAML recipe of :class:`~pluralign.trainers.DPOTrainConfig` fields (``--config``), applies
``--key value`` overrides, trains and exports the adapter(s).
"""

from __future__ import annotations

import sys

from .config import parse
from .trainers.config import DPOTrainConfig


def main(argv: list[str] | None = None) -> int:
    (config,) = parse((DPOTrainConfig,), argv, prog="pluralign train",
                      description="Train an intent-conditioned Diffusion-DPO LoRA adapter from a recipe.")
    from .trainers.trainer import NonFiniteLossError, train

    try:
        result = train(config)
    except NonFiniteLossError as exc:
        print(f"pluralign train: stopped: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"pluralign train: error: {exc}", file=sys.stderr)
        return 2
    for name, path in result.adapter_dirs.items():
        print(f"adapter {name}: {path}")
    shown = {k: round(v, 5) for k, v in result.metrics.items() if "loss" in k or "acc" in k}
    print(f"final metrics: {shown}")
    return 0


if __name__ == "__main__":
    from .config import run_module

    sys.exit(run_module(main, "pluralign train"))
