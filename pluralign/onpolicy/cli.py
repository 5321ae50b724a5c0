"""``pluralign data generate``: on-policy anti/mirror pairs from a generator, picked by an intent-aware scorer.

    pluralign data generate --generator DIR|HUB_ID|tiny:FAMILY --suite toy --num_candidates 4 --scorer toy \\
        --output_dir outputs/data/generated

Options come from :class:`pluralign.onpolicy.config.GenerateConfig` (YAML via ``--config``, flags override).
Under ``accelerate launch`` each process generates its own shards and the main process writes the dataset.
"""

from __future__ import annotations

import sys

from pluralign.config import parse, run_module, underscored
from pluralign.trainers.distributed import shutdown

from .config import GenerateConfig
from .generate import generate_dataset


def main(argv: list[str] | None = None) -> int:
    argv = underscored(list(sys.argv[1:] if argv is None else argv))
    (cfg,) = parse((GenerateConfig,), argv, prog="pluralign data generate",
                   description="On-policy intent pairs: sample K candidates under P_a and P_o per prompt pair, keep "
                   "the best-of-n anti pair and its mirror.")
    out = generate_dataset(cfg)
    shutdown()
    if out is not None:  # the main process
        print(f"wrote {out} (card: {out / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "pluralign data generate"))
