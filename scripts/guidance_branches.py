"""Which branch of classifier-free guidance makes a toy model follow a request.

Guidance samples ``null + g (cond - null)``: a request can come through because the prompted branch learnt it, or
because the null branch drifted and guidance amplifies the drift. This script measures one attribute's adherence on
the validation suite's rows of that attribute (the build's ``measure_pipeline``: paired rule or toy judge, same seeds)
at several guidance scales, then at the largest scale with the two branches taken from different models: a UNet
wrapper sends the null half of the guided batch to one model and the prompted half to the other.

    python scripts/guidance_branches.py --attribute color_cast \\
        --model_a pluralign/toy/checkpoints/aligned --model_b pluralign/toy/checkpoints/base

docs/toy.md ("Re-aligning the colour cast", seventh round) has what it showed for the colour cast.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager

import torch

from pluralign.eval.generate import load_pipeline
from pluralign.toy import paths, world
from pluralign.toy.measure import measure_pipeline


@contextmanager
def null_branch_from(pipe, null_unet):
    """Inside the block, the null half of every guided UNet call of ``pipe`` goes to ``null_unet`` (diffusers stacks
    [null; prompt]); ``pipe`` is itself again afterwards."""
    own = pipe.unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        h = sample.shape[0] // 2
        null = null_unet(sample[:h], timestep, encoder_hidden_states[:h], *args, **kwargs)[0]
        cond = own(sample[h:], timestep, encoder_hidden_states[h:], *args, **kwargs)[0]
        return (torch.cat([null, cond]),)

    pipe.unet.forward = forward
    try:
        yield pipe
    finally:
        del pipe.unet.forward  # back to the class's forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attribute", default="color_cast", choices=world.ATTRIBUTES)
    ap.add_argument("--model_a", default=str(paths.aligned_dir()))
    ap.add_argument("--model_b", default=str(paths.base_dir()))
    ap.add_argument("--suite_size", type=int, default=288)
    ap.add_argument("--suite_seed", type=int, default=5000)
    ap.add_argument("--scales", default="1,2,3,6")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = json.loads(paths.build_config().read_text())["sampling"]["num_inference_steps"]
    rows = [r for r in world.eval_suite(args.suite_size, seed=args.suite_seed) if r["attributes"] == [args.attribute]]
    scales = [float(s) for s in args.scales.split(",")]

    def rate(pipe, g):
        return measure_pipeline(pipe, rows, steps, g)["by_attribute"][args.attribute]

    print(f"{args.attribute}: {len(rows)} rows of eval_suite({args.suite_size}, seed={args.suite_seed}), {steps} steps")
    a, b = (load_pipeline(m, "cpu", progress=False) for m in (args.model_a, args.model_b))
    for name, path, pipe in (("A", args.model_a, a), ("B", args.model_b, b)):
        print(f"model {name} ({path}): " + ", ".join(f"guidance {g:g}: {rate(pipe, g):.3f}" for g in scales))
    g = max(scales)
    with null_branch_from(a, b.unet):
        print(f"guidance {g:g}, null branch B, prompted branch A: {rate(a, g):.3f}")
    with null_branch_from(b, a.unet):
        print(f"guidance {g:g}, null branch A, prompted branch B: {rate(b, g):.3f}")


if __name__ == "__main__":
    main()
