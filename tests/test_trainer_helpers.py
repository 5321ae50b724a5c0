"""Shared helpers of the trainer tests (not a test module)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pluralign.trainers.config import DPOTrainConfig


@contextmanager
def one_torch_thread():
    """Run the block on one torch thread, as the tests' launched processes do (OMP_NUM_THREADS=1): the same
    arithmetic, so results compare bit for bit; the thread count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cfg(tmp: Path, model_dir, **kw) -> DPOTrainConfig:
    base = dict(pretrained_model=str(model_dir), dataset="builtin:shapes", output_dir=str(tmp / "run"),
                cache_dir=str(tmp / "cache"), max_steps=4, train_batch_size=2, learning_rate=1e-3, rank=4, alpha=4.0,
                report_to="none", export_kohya=True, lr_warmup_steps=0)
    base.update(kw)
    return DPOTrainConfig(**base)


def launch_argv(config) -> list[str]:
    """The command-line flags that reproduce ``config`` for a launched ``pluralign.train`` process."""
    out = []
    for k in ("pretrained_model", "dataset", "output_dir", "cache_dir", "max_steps", "train_batch_size",
              "learning_rate", "beta", "rank", "alpha", "report_to", "export_kohya", "checkpointing_steps",
              "max_pairs", "seed", "lr_warmup_steps"):
        out += [f"--{k}", str(getattr(config, k))]
    return out


def image(pipe, prompt="a blurry photo of a red circle", seed=0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    out = pipe(prompt, num_inference_steps=2, generator=g, height=32, width=32, output_type="np")
    return out.images[0]


@torch.no_grad()
def dpo_eval(pipe, prompts, chosen, rejected, n_t=6, seed=123):
    """Mean DPO loss and implicit accuracy of the loaded adapter vs. the base, on fixed noise/timesteps."""
    from pluralign.trainers.adapters import adapters_disabled
    from pluralign.trainers.cache import encode_pixels, to_pixels
    from pluralign.trainers.families import family_for_class
    from pluralign.trainers.loss import diffusion_dpo_loss, per_sample_mse
    from pluralign.trainers.objectives import objective_for, shared_noise

    fam = family_for_class(type(pipe).__name__)
    obj = objective_for(pipe.scheduler)
    xw = encode_pixels(pipe.vae, torch.stack([to_pixels(i, 32) for i in chosen]))
    xl = encode_pixels(pipe.vae, torch.stack([to_pixels(i, 32) for i in rejected]))
    cond = fam.encode_prompts(pipe, prompts, 32)
    cond2 = {k: torch.cat([v, v]) for k, v in cond.items()}
    g = torch.Generator().manual_seed(seed)
    unet = getattr(pipe, fam.denoiser_attr)
    losses, accs = [], []
    for _ in range(n_t):
        x0, noise, t = shared_noise(xw, xl, obj, g)
        noisy, target = obj.add_noise(x0, noise, t), obj.target(x0, noise, t)
        pol = per_sample_mse(fam.denoise(unet, noisy, t, cond2), target)
        with adapters_disabled(unet):
            ref = per_sample_mse(fam.denoise(unet, noisy, t, cond2), target)
        b = xw.shape[0]
        loss, st = diffusion_dpo_loss(pol[:b], pol[b:], ref[:b], ref[b:], beta=5000.0)
        losses.append(loss.item())
        accs.append(st["implicit_acc"].item())
    return sum(losses) / n_t, sum(accs) / n_t


LN2 = math.log(2)
