"""Stand-ins that tests and benchmarks of the eval loop load when no trained model is at hand.

:func:`save_random_lora`: a random, non-trivial LoRA adapter for a saved pipeline, written exactly
like a trained one (diffusers ``save_lora_weights`` with adapter metadata, but without pluralign's
base identity, like a third-party LoRA), so it exercises the real loading path.
:func:`save_tiny_clip`: a random 1-layer CLIP model and processor saved like a hub checkpoint, for
the judges (``clip=DIR``)."""

from __future__ import annotations

from pathlib import Path

import torch

from pluralign.tokenizers import clip_tokenizer

ATTENTION_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


def save_random_lora(pipeline_dir: str | Path, out_dir: str | Path, *, rank: int = 4, alpha: float | None = None,
                     seed: int = 0, target_modules: tuple[str, ...] = ATTENTION_MODULES, scale: float = 1.0) -> Path:
    """Add a random LoRA (``lora_B`` not zero, so it changes the output) to the pipeline's UNet/transformer
    and save it as a diffusers LoRA directory. ``scale`` multiplies ``lora_B`` to make the change larger."""
    from diffusers import DiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(str(pipeline_dir))
    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(target_modules), init_lora_weights=False)
    denoiser.add_adapter(config, adapter_name="random")
    with torch.no_grad():
        for name, p in denoiser.named_parameters():
            if "lora_B" in name:
                p.mul_(scale)
    layers = get_peft_model_state_dict(denoiser, adapter_name="random")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = config.to_dict()
    metadata = {k: (sorted(v) if isinstance(v, set) else v) for k, v in metadata.items()}
    kwargs = {f"{denoiser_name}_lora_layers": layers, f"{denoiser_name}_lora_adapter_metadata": metadata}
    type(pipe).save_lora_weights(str(out_dir), safe_serialization=True, **kwargs)
    return out_dir


def save_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """A random CLIP model (16-wide, 1 layer, 32x32 images) with its processor, saved to ``out_dir``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = clip_tokenizer()
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, projection_dim=16),
        projection_dim=16)
    out_dir = Path(out_dir)
    CLIPModel(cfg).save_pretrained(out_dir)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    proc.save_pretrained(out_dir)
    return out_dir
