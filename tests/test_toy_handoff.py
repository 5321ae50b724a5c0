"""``toy.handoff``: sampling that switches denoisers after k steps."""

from __future__ import annotations

import copy

import numpy as np
import torch

from pluralign.toy.handoff import _Handoff


def _images(call):
    out = call("a red circle", num_inference_steps=3, guidance_scale=2.0, height=32, width=32,
               generator=torch.Generator().manual_seed(0), output_type="np")
    return out.images[0]


def test_handoff_runs_first_for_k_steps_then_the_other(tiny_pipeline_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_pipeline_dir("sd")), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    first = pipe.unet
    then = copy.deepcopy(first)
    with torch.no_grad():
        for p in then.parameters():
            p.add_(0.05 * torch.randn_like(p))
    only_first = _images(pipe)
    pipe.unet = then
    only_then = _images(pipe)
    pipe.unet = first
    handoff = _Handoff(pipe, first, then)
    out = {}
    for k in (0, 1, 2, 3):
        handoff.k = k
        out[k] = _images(handoff)
        assert pipe.unet is first  # the pipeline is left as it was
    np.testing.assert_array_equal(out[0], only_then)
    np.testing.assert_array_equal(out[3], only_first)
    for k in (1, 2):
        assert not np.array_equal(out[k], only_first) and not np.array_equal(out[k], only_then)
    assert not np.array_equal(out[1], out[2])
