"""At which sampling step is each attribute decided? Sample with one denoiser, hand over to another.

The toy base and aligned models share their autoencoder, text encoder and scheduler, so a sampling run can
switch UNets partway: the ``first`` model denoises the first k of the steps, the ``then`` model (optionally
with a LoRA adapter at weight 1) the rest. Adherence as a function of k says where a model follows or undoes
a request: composition that only the first steps can set, or detail the last steps repair. That tells an
objective which timesteps it must learn (docs/toy.md, round 13)::

    python -m pluralign.toy.handoff --steps_first 0,4,7,12,20
    python -m pluralign.toy.handoff --first aligned --then aligned --then_adapter outputs/demo/runs/intent/adapter

Each line of output is one k, as JSON: overall adherence, content on the anti-aesthetic images and
adherence per attribute (``toy.measure.measure_pipeline``, the build's measurement).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from pluralign.config import option, parse, run_module
from pluralign.eval.generate import load_pipeline

from . import paths, world
from .checker import ContentChecker
from .measure import measure_pipeline


@dataclass
class HandoffConfig:
    first: str = option("base", "model of the first k steps: base, aligned or a pipeline dir")
    then: str = option("aligned", "model of the remaining steps: base, aligned or a pipeline dir")
    then_adapter: str = option("", "a diffusers LoRA dir loaded into the `then` model at weight 1")
    steps_first: list[int] = option(factory=lambda: [0, 4, 7, 12, 20], help="values of k, comma-separated",
                                    min=0, max=1000)
    suite_seed: int = option(5000, "eval suite seed (the validation suites are 5000, 6000, 7000)", min=0)
    n_prompts: int = option(144, "suite rows (round-robin over the attributes)", min=1)
    num_inference_steps: int = option(20, "sampling steps (DDIM, the checkpoints' scheduler)", min=1, max=1000)
    guidance_scale: float = option(6.0, "classifier-free guidance", min=0, max=50)
    threads: int = option(2, "torch threads", min=1, max=256)


def _pipeline(name: str):
    path = {"base": paths.base_dir(), "aligned": paths.aligned_dir()}.get(name, name)
    return load_pipeline(str(path), progress=False)  # the eval's loader: a missing or broken directory gets its clear error


class _Handoff:
    """Calls ``pipe`` with its UNet set to ``first`` for the first ``k`` steps and ``then`` after them."""

    def __init__(self, pipe, first, then):
        self.pipe, self.first, self.then, self.k = pipe, first, then, 0

    def _switch(self, pipe, i, t, kwargs):
        if i + 1 == self.k:
            pipe.unet = self.then
        return kwargs

    def __call__(self, *args, **kwargs):
        self.pipe.unet = self.first if self.k > 0 else self.then
        try:
            return self.pipe(*args, callback_on_step_end=self._switch, **kwargs)
        finally:
            self.pipe.unet = self.first


def run(cfg: HandoffConfig):
    """Yields one result dict per k of ``cfg.steps_first``."""
    import torch

    torch.set_num_threads(cfg.threads)
    first, then = _pipeline(cfg.first), _pipeline(cfg.then)
    if cfg.then_adapter:
        then.load_lora_weights(cfg.then_adapter, adapter_name="then")
    handoff = _Handoff(first, first.unet, then.unet)
    checker = ContentChecker.from_pretrained()
    rows = world.eval_suite(cfg.n_prompts, seed=cfg.suite_seed)
    for k in cfg.steps_first:
        handoff.k = min(k, cfg.num_inference_steps)
        out = measure_pipeline(handoff, rows, cfg.num_inference_steps, cfg.guidance_scale, checker)
        yield {"steps_first": k, "adherence": out["adherence"], "content_a": out["content_a"],
               "by_attribute": out["by_attribute"]}


def main(argv: list[str] | None = None) -> int:
    (cfg,) = parse((HandoffConfig,), sys.argv[1:] if argv is None else argv, prog="python -m pluralign.toy.handoff")
    for result in run(cfg):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_module(main, "python -m pluralign.toy.handoff"))
