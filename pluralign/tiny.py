"""Tiny, structurally faithful pipelines for every family pluralign trains, built from config.

Tests and benchmarks cannot download weights, so each factory here builds the same component
classes a hub checkpoint uses (UNet/transformer, VAE, CLIP/T5 text encoders, tokenizers,
scheduler) at toy sizes, saves them with ``save_pretrained`` and returns the directory. Callers
then load it with ``DiffusionPipeline.from_pretrained(dir)``: exactly the code path of a user
with a hub id. Latents are 16x16 at the default 32x32 image size (VAE factor 2).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tokenizers import clip_tokenizer, copy_clip_license, t5_tokenizer

FAMILIES = ("sd", "sdxl", "sd3", "flux")


def _clip_text_encoder(hidden: int, projection: int | None, vocab_size: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection or hidden,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5_encoder(d_model: int, vocab_size: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=d_model * 2, num_layers=2, num_heads=2,
                   relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(cfg)


def _vae(latent_channels: int, seed: int, *, sd3_style: bool = False):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        shift_factor=0.0609 if sd3_style else None,
        scaling_factor=1.5035 if sd3_style else 0.18215,
        use_quant_conv=not sd3_style,
        use_post_quant_conv=not sd3_style,
    )


def build_sd(seed: int = 0, *, cross_attention_dim: int = 32, prediction_type: str = "epsilon"):
    """SD1.x-style: UNet2DConditionModel + CLIP text encoder + DDPM-family scheduler."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tok = clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    return StableDiffusionPipeline(
        vae=_vae(4, seed + 1), text_encoder=_clip_text_encoder(cross_attention_dim, None, len(tok), seed + 2),
        tokenizer=tok, unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(seed: int = 0):
    """SDXL-style: two CLIP encoders (second with projection -> pooled), add_time_ids conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tok = clip_tokenizer()
    h1, h2 = 16, 16
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=h1 + h2,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + h2,
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=_vae(4, seed + 1), text_encoder=_clip_text_encoder(h1, None, len(tok), seed + 2),
        text_encoder_2=_clip_text_encoder(h2, h2, len(tok), seed + 3), tokenizer=tok, tokenizer_2=clip_tokenizer(),
        unet=unet, scheduler=scheduler, add_watermarker=False,
    )


def build_sd3(seed: int = 0):
    """SD3-style: SD3Transformer2DModel (MMDiT), two CLIP + one T5 encoder, flow-matching scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    clip, t5 = clip_tokenizer(), t5_tokenizer()
    h = 16
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=2 * h,
        pos_embed_max_size=32,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(4, seed + 1, sd3_style=True),
        text_encoder=_clip_text_encoder(h, h, len(clip), seed + 2), tokenizer=clip,
        text_encoder_2=_clip_text_encoder(h, h, len(clip), seed + 3), tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5_encoder(32, len(t5), seed + 4), tokenizer_3=t5,
    )


def build_flux(seed: int = 0):
    """Flux-style: FluxTransformer2DModel with packed 2x2 latents, CLIP (pooled) + T5, guidance embedding."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    clip, t5 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=_vae(4, seed + 1, sd3_style=True),
        text_encoder=_clip_text_encoder(16, None, len(clip), seed + 2), tokenizer=clip,
        text_encoder_2=_t5_encoder(32, len(t5), seed + 3), tokenizer_2=t5,
        transformer=transformer,
    )


BUILDERS = {"sd": build_sd, "sdxl": build_sdxl, "sd3": build_sd3, "flux": build_flux}


def save_tiny_pipeline(family: str, path: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline of ``family`` and ``save_pretrained`` it to ``path``."""
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    path = Path(path)
    pipe = BUILDERS[family](seed)
    pipe.save_pretrained(path, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):
        if (path / sub / "vocab.json").exists():
            copy_clip_license(path / sub)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="pluralign tiny", description=save_tiny_pipeline.__doc__)
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(save_tiny_pipeline(args.family, args.output, args.seed))
    return 0
