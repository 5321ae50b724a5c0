"""``DataConfig``: every field of a data recipe (``recipes/data_*.yaml``), with defaults that work."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from .taxonomy import CATEGORIES, degradable_categories

# An RGB image of MAX_PIXELS takes 1.5 GB decoded, and every worker holds a few: beyond that a
# "genuine" image is more likely a decompression bomb or a typo than a photo.
MAX_PIXELS = 500_000_000
MAX_SIDE = 16_384  # 16 times the 1024 px the largest models train at


@dataclass
class DataConfig:
    sources: list[str] = option(factory=list, help="source specs: local folder/parquet/save_to_disk dir or hub id[:split]")
    output_dir: str = option("outputs/data/pairs", "where the dataset (save_to_disk layout) and its README.md go")
    overwrite: bool = option(False, "replace an existing output_dir (the old one is kept until the new one is complete)")
    split: str = option("train", "split read from hub sources")
    streaming: bool = option(True, "stream hub sources instead of downloading them whole")
    anti_fraction: float = option(0.5, "share of anti+mirror rows in the mix (the rest are general preference rows)",
                                  min=0.0, max=1.0)
    pairs_fraction: float | None = option(None, "share of the anti+mirror rows taken from pair datasets already "
                                          "built by pluralign (`data generate` output, an earlier build); None: "
                                          "round-robin with the other (image, caption) and benchmark sources",
                                          min=0.0, max=1.0)
    max_rows: int | None = option(None, "stop after this many rows (None: until a needed source runs out)", min=1,
                                  max=10**9)
    categories: list[str] = option(factory=lambda: list(degradable_categories()),
                                   help="adapter categories to draw anti-aesthetic attributes from",
                                   choices=tuple(CATEGORIES))
    category_balance: bool = option(True, "cycle through the categories so each gets the same share of pairs")
    min_attributes: int = option(1, "fewest attributes requested per pair", min=1, max=4)
    max_attributes: int = option(4, "most attributes requested per pair", min=1, max=4)
    severity_min: float = option(0.3, "lowest degradation severity sampled", min=0.0, max=1.0)
    severity_max: float = option(1.0, "highest degradation severity sampled", min=0.0, max=1.0)
    seed: int = option(0, "seed for attribute choice, rewriting, severities and degradations", min=0, max=2**32 - 1)
    ties: str = option("drop", "Pick-a-Pic ties (label_0 = 0.5)", choices=("drop", "keep_both", "error"))
    on_error: str = option("stop", "bad rows: stop at the first (naming source/row/field) or skip and list them",
                           choices=("stop", "skip"))
    max_pixels: int = option(64_000_000, "refuse images with more pixels than this (decompression bombs)", min=1,
                             max=MAX_PIXELS)
    min_side: int = option(8, "refuse images with a side shorter than this", min=1, max=MAX_SIDE)
    max_side: int | None = option(512, "downscale clean images so the longer side is at most this (None: keep)", min=8,
                                  max=MAX_SIDE)
    num_proc: int = option(1, "worker processes for building rows", min=1, max=256)
    parquet: bool = option(False, "also write the rows as parquet under output_dir/parquet/")
    png_compress_level: int = option(1, "PNG compression of the stored images (0 fastest .. 9 smallest)", min=0, max=9)
    llm_rewriter: str | None = option(None, "text-generation model id/dir for rewriting P_o -> P_a (None: templates)")

    def __post_init__(self):
        if self.min_attributes > self.max_attributes:
            raise ValueError(f"min_attributes ({self.min_attributes}) is above max_attributes ({self.max_attributes})")
        if self.severity_min > self.severity_max:
            raise ValueError(f"severity_min ({self.severity_min}) is above severity_max ({self.severity_max})")
        bad = [c for c in self.categories if c not in degradable_categories()]
        if bad:
            raise ValueError(f"categories {bad} have no image degradation; programmatic pairs can only be built for "
                             f"{list(degradable_categories())} (use pre-rendered benchmark rows for the others)")
