"""``GenerateConfig``: every option of ``pluralign data generate`` (YAML keys and ``--flags``)."""

from __future__ import annotations

from dataclasses import dataclass

from pluralign.config import option
from pluralign.data.taxonomy import CATEGORIES, is_requestable
from pluralign.env import check_device
from pluralign.eval.samplers import SAMPLER_NAMES
from pluralign.onpolicy.select import CHOOSE_BY

# Options that do not change what a run generates: a resume may change them freely. Every other
# option is recorded with the finished shards, and a resume with another value is refused.
FREE_FIELDS = ("output_dir", "overwrite", "resume", "device")


@dataclass
class GenerateConfig:
    generator: str = option("", "the model that samples the candidates: a diffusers pipeline directory, a hub id or "
                            "tiny:FAMILY (sd, sdxl, sd3, flux)")
    generator_adapter: str | None = option(None, "a LoRA directory (or .safetensors file) applied to the generator")
    generator_adapter_weight: float = option(1.0, "weight of generator_adapter (set_adapters)", min=0.0, max=4.0)
    allow_other_base: bool = option(False, "apply generator_adapter to another checkpoint of the family it was "
                                    "trained for (its recorded base fingerprint differs)")
    suite: str = option("toy", "prompt pairs: a registered suite (toy) | a .jsonl/.csv of prompt_o, prompt_a, "
                        "attributes | hf:REPO (or a local copy) in the anti-aesthetic prompt-set schema | a .txt "
                        "(one caption a line) or .jsonl/.csv with only a caption column, rewritten to P_a | a curated "
                        "photo set (image, anti_aesthetic_caption, major_classes, objective_caption): each photo "
                        "paired with the generator's clean images")
    n_prompts: int = option(0, "prompt pairs to use (0 = the whole suite; a registered suite's own default size)",
                            min=0, max=10_000_000)
    suite_seed: int | None = option(None, "seed of the suite (toy scenes; rewriting and default seeds of captions)",
                                    min=0, max=2**32 - 1)
    categories: list[str] = option(factory=lambda: list(CATEGORIES), choices=tuple(CATEGORIES),
                                   help="plain captions: adapter categories to draw the requested attributes from "
                                   "(round-robin), prompt-only ones such as emotion_and_subject included")
    min_attributes: int = option(1, "plain captions: fewest attributes requested per prompt", min=1, max=4)
    max_attributes: int = option(2, "plain captions: most attributes requested per prompt", min=1, max=4)
    num_candidates: int = option(4, "K: images sampled under P_a and under P_o per prompt pair (shared seeds)",
                                 min=1, max=1024)
    scorer: str = option("toy", "intent-aware scorer: verifiers | clip[:MODEL] | blip[:MODEL] | judge:MODEL | a "
                         "plugin name (toy) | a comma list")
    min_margin: float | None = option(None, "drop pairs whose attribute-score margin (chosen - rejected) is below "
                                      "this, in the scorer's units (None: the scorer's own default, else 0); a pair "
                                      "whose chosen image does not out-score the rejected one is always dropped",
                                      min=0.0, max=1e6)
    min_chosen_score: float | None = option(None, "drop pairs whose chosen image scores below this for the requested "
                                            "attributes, in the scorer's units (None: no floor). The margin alone "
                                            "accepts an image that shows them only a little more than the clean "
                                            "one. 0 means 'shows them' for toy and verifiers (the calibrated rule "
                                            "fires) and for clip/blip (matches P_a better than P_o); judge scores "
                                            "are probabilities (0.5), comma lists z-scores", min=-1e6, max=1e6)
    pairs_per_prompt: int = option(1, "anti + mirror pairs an accepted prompt pair may give: its best P_a candidates "
                                   "that keep the content, each against the same cleanest P_o candidate, while each "
                                   "passes min_margin and min_chosen_score. More distinct pairs from the same samples",
                                   min=1, max=1024)
    content_pairs: bool = option(False, "also give an accepted prompt pair one more anti row under P_a: its chosen "
                                 "image over the P_a candidate that lost P_o's content and shows the attributes most. "
                                 "Both follow the request; only the chosen one kept the subject")
    choose_by: str = option("attribute", "which accepted P_a candidate becomes the chosen image: attribute (the one "
                            "the scorer rates highest for the request) | content (of the candidates that would be "
                            "accepted, the one that keeps P_o's content best: the request followed, not overdone)",
                            choices=CHOOSE_BY)
    min_content: float = option(0.5, "content score (0..1) a candidate needs to count as still showing P_o's "
                                "content", min=0.0, max=1.0)
    num_inference_steps: int = option(20, "denoising steps per image", min=1, max=1000)
    sampler: str = option("default", "scheduler to sample with: default (the checkpoint's own) | ddim | dpmsolver++ | "
                          "euler | unipc (SD3 and Flux: default only)", choices=SAMPLER_NAMES)
    guidance_scale: float = option(7.5, "classifier-free guidance scale (Flux: distilled guidance)", min=0, max=50)
    attribute_guidance: list[str] = option(
        factory=list, help="NAME=SCALE entries (NAME an attribute or dimension:NAME): a prompt pair that requests NAME "
        "is sampled, under P_a and "
        "under P_o, at SCALE instead of guidance_scale (a pair with several listed attributes takes the lowest). A "
        "teacher can draw a request best at a milder scale than the rest: strong guidance pushes a bleak or muted "
        "request toward saturated colour")
    height: int | None = option(None, "image height (default: the pipeline's)", min=8, max=4096, multiple_of=16)
    width: int | None = option(None, "image width (default: the pipeline's)", min=8, max=4096, multiple_of=16)
    batch_size: int = option(8, "images per pipeline call", min=1, max=4096)
    shard_size: int = option(16, "prompt pairs per shard: the unit of work that is saved, resumed and split "
                             "between processes", min=1, max=100_000)
    seed: int = option(0, "seed of the candidates' seeds (candidate k of a pair gets the same seed under P_a and P_o)",
                       min=0, max=2**32 - 1)
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps (under accelerate launch: each process's own)")
    dtype: str = option("float32", "pipeline dtype", choices=("float32", "float16", "bfloat16"))
    png_compress_level: int = option(1, "PNG compression of the stored images (0 fastest .. 9 smallest)", min=0, max=9)
    output_dir: str = option("outputs/data/generated", "where the dataset (save_to_disk layout) and its README.md go")
    overwrite: bool = option(False, "replace an existing output_dir (the old one is kept until the new one is complete)")
    resume: bool = option(True, "keep the finished shards of an interrupted run with the same settings and generate "
                          "only the rest (false: start over)")

    def __post_init__(self):
        attribute_scales(self.attribute_guidance)  # a malformed entry fails before anything is loaded
        check_device(self.device)
        if self.min_attributes > self.max_attributes:
            raise ValueError(f"min_attributes ({self.min_attributes}) is above max_attributes ({self.max_attributes})")
        if not self.categories:
            raise ValueError("categories: name at least one adapter category")

    def guidance_for(self, attributes) -> float:
        """The guidance scale of a prompt pair that requests ``attributes``: the lowest ``attribute_guidance`` entry
        among them (an entry exists because strong guidance washes that request out, so the milder scale is the
        one under which each listed request can show), else ``guidance_scale``."""
        scales = attribute_scales(self.attribute_guidance)
        listed = [scales[a] for a in attributes if a in scales]
        return min(listed) if listed else self.guidance_scale


def attribute_scales(entries: list[str], field: str = "attribute_guidance") -> dict[str, float]:
    """``NAME=SCALE`` entries as ``{name: scale}``, NAME a taxonomy attribute or a ``dimension:NAME`` request (what
    the rows of a suite list); ValueError naming ``field`` and the entry that is not one, has a scale outside
    [0, 50] (nan included) or repeats a name."""
    scales = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        try:
            scale = float(value)
        except ValueError:
            scale = float("nan")
        if not is_requestable(name) or not 0 <= scale <= 50:
            raise ValueError(f"{field}: {entry!r} is not NAME=SCALE with SCALE in [0, 50] and NAME a taxonomy "
                             "attribute or dimension:NAME (pluralign/data/taxonomy.py)")
        if name in scales:
            raise ValueError(f"{field}: {name} is listed twice")
        scales[name] = scale
    return scales
