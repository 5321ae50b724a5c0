"""Prompt encoding and denoiser calls of the flow-matching families: SD3/3.5 and Flux.1.

Both train on the velocity ``noise - x0`` (see :class:`.objectives.FlowMatchingObjective`) with
latents ``(z - shift_factor) * scaling_factor`` from the VAE. The loop hands these functions
unpacked latents ``[B, C, h, w]`` and timesteps in ``[0, 1000]``; everything else that differs
lives here:

- SD3: two CLIP encoders with projection give ``pooled_projections``; CLIP hidden states and T5
  are joined into one ``encoder_hidden_states`` sequence (the pipeline's ``encode_prompt``).
- Flux: latents are packed into 2x2 patches (``FluxPipeline._pack_latents``) with positional
  ids per patch, the transformer takes ``timestep = σ`` (not σ·1000), T5 tokens with their
  ``txt_ids``, the pooled CLIP embedding, and, for guidance-distilled checkpoints (FLUX.1-dev),
  a guidance embedding. The prediction is unpacked again, so the loss is the same MSE over the
  same latent elements as in every other family.
"""

from __future__ import annotations

import torch


def unwrap(model):
    """The module under DDP/FSDP/DeepSpeed/compile wrappers (for reading ``config``)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _seq_kwargs(max_sequence_length):
    return {} if max_sequence_length is None else {"max_sequence_length": int(max_sequence_length)}


def encode_sd3(pipe, prompts: list[str], resolution: int, max_sequence_length=None) -> dict[str, torch.Tensor]:
    prompts = list(prompts)
    embeds, _, pooled, _ = pipe.encode_prompt(prompts, prompts, prompts, device=pipe.text_encoder.device,
                                              num_images_per_prompt=1, do_classifier_free_guidance=False,
                                              **_seq_kwargs(max_sequence_length))
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def denoise_sd3(denoiser, noisy, t, cond):
    return denoiser(hidden_states=noisy, timestep=t, encoder_hidden_states=cond["prompt_embeds"],
                    pooled_projections=cond["pooled_prompt_embeds"], return_dict=False)[0]


def encode_flux(pipe, prompts: list[str], resolution: int, max_sequence_length=None) -> dict[str, torch.Tensor]:
    embeds, pooled, text_ids = pipe.encode_prompt(list(prompts), list(prompts), device=pipe.text_encoder.device,
                                                  num_images_per_prompt=1, **_seq_kwargs(max_sequence_length))
    # txt_ids are the same for every prompt; one row per prompt keeps the cache layout uniform
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled,
            "text_ids": text_ids.unsqueeze(0).expand(len(prompts), -1, -1)}


def pack(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, C, h, w]`` -> packed ``[B, h/2 * w/2, 4C]`` and image ids ``[h/2 * w/2, 3]``."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"Flux packs 2x2 latent patches but the latents are {h}x{w}; choose a resolution that is a "
                         "multiple of 2 x the VAE factor (16 for FLUX.1)")
    ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latents.device, latents.dtype)
    return FluxPipeline._pack_latents(latents, b, c, h, w), ids


def unpack(packed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`pack` at latent size ``h x w``."""
    from diffusers import FluxPipeline

    return FluxPipeline._unpack_latents(packed, h, w, vae_scale_factor=1)


def denoise_flux(denoiser, noisy, t, cond, embedded_guidance_scale: float = 3.5):
    b, _, h, w = noisy.shape
    packed, img_ids = pack(noisy)
    guidance = None
    if unwrap(denoiser).config.guidance_embeds:
        guidance = torch.full((b,), float(embedded_guidance_scale), device=noisy.device, dtype=torch.float32)
    out = denoiser(hidden_states=packed, timestep=t / 1000, guidance=guidance,
                   pooled_projections=cond["pooled_prompt_embeds"], encoder_hidden_states=cond["prompt_embeds"],
                   txt_ids=cond["text_ids"][0], img_ids=img_ids, return_dict=False)[0]
    return unpack(out, h, w)
