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

import re
from dataclasses import dataclass

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


# ----------------------------------------------------------------------------------------------
# kohya/webui export: the original checkpoint's module names, as ComfyUI, Forge and sd-scripts load them


@dataclass(frozen=True)
class KohyaRule:
    """One diffusers module -> its module in the original (SAI MMDiT / BFL Flux) checkpoint.

    ``pattern`` full-matches the diffusers module path (PEFT key without ``.lora_A.weight``); its
    groups fill ``name`` (``{0}``: the block index), which is the original module path with dots
    as underscores, the part after ``lora_unet_`` (ComfyUI's rule: ``lora_unet_`` + the original
    key without ``.weight``, dots to underscores). Where the original fuses several diffusers
    linears into one (``qkv``, Flux's ``linear1``), ``slot`` is this module's place among the
    fused module's ``widths`` (each part's output width as a multiple of one unit). ``swap``
    marks AdaLayerNormContinuous projections, whose output halves diffusers stores as (scale,
    shift) and the original as (shift, scale). ``refuse`` says why a module that has a name is
    still not exported (a loader would drop it)."""

    pattern: str
    name: str
    slot: int = 0
    widths: tuple[int, ...] = (1,)
    swap: bool = False
    refuse: str = ""


def _fused(pattern: str, name: str, parts: tuple[str, ...], widths: tuple[int, ...] | None = None
           ) -> tuple[KohyaRule, ...]:
    return tuple(KohyaRule(pattern.format(part=re.escape(p)), name, i, widths or (1,) * len(parts))
                 for i, p in enumerate(parts))


_QKV, _ADD_QKV = ("to_q", "to_k", "to_v"), ("add_q_proj", "add_k_proj", "add_v_proj")
_BLOCK = r"transformer_blocks\.(\d+)\."
_SINGLE = r"single_transformer_blocks\.(\d+)\."

# diffusers' SD3Transformer2DModel -> SAI's MMDiT (sd3_medium*.safetensors, sd3.5_*.safetensors), the inverse of
# diffusers' convert_sd3_transformer_checkpoint_to_diffusers; what sd-scripts' SD3 LoRA writes (qkv unsplit)
SD3_KOHYA_RULES: tuple[KohyaRule, ...] = (
    *_fused(_BLOCK + r"attn\.{part}", "joint_blocks_{0}_x_block_attn_qkv", _QKV),
    *_fused(_BLOCK + r"attn\.{part}", "joint_blocks_{0}_context_block_attn_qkv", _ADD_QKV),
    *_fused(_BLOCK + r"attn2\.{part}", "joint_blocks_{0}_x_block_attn2_qkv", _QKV),  # SD3.5 dual attention
    KohyaRule(_BLOCK + r"attn\.to_out\.0", "joint_blocks_{0}_x_block_attn_proj"),
    KohyaRule(_BLOCK + r"attn\.to_add_out", "joint_blocks_{0}_context_block_attn_proj"),
    KohyaRule(_BLOCK + r"attn2\.to_out\.0", "joint_blocks_{0}_x_block_attn2_proj"),
    KohyaRule(_BLOCK + r"ff\.net\.0\.proj", "joint_blocks_{0}_x_block_mlp_fc1"),
    KohyaRule(_BLOCK + r"ff\.net\.2", "joint_blocks_{0}_x_block_mlp_fc2"),
    KohyaRule(_BLOCK + r"ff_context\.net\.0\.proj", "joint_blocks_{0}_context_block_mlp_fc1"),
    KohyaRule(_BLOCK + r"ff_context\.net\.2", "joint_blocks_{0}_context_block_mlp_fc2"),
    KohyaRule(_BLOCK + r"norm1\.linear", "joint_blocks_{0}_x_block_adaLN_modulation_1"),
    # AdaLayerNormZero in every block but the last, whose context norm is AdaLayerNormContinuous (swapped)
    KohyaRule(_BLOCK + r"norm1_context\.linear", "joint_blocks_{0}_context_block_adaLN_modulation_1", swap=True),
    KohyaRule(r"context_embedder", "context_embedder"),
    KohyaRule(r"time_text_embed\.timestep_embedder\.linear_1", "t_embedder_mlp_0"),
    KohyaRule(r"time_text_embed\.timestep_embedder\.linear_2", "t_embedder_mlp_2"),
    KohyaRule(r"time_text_embed\.text_embedder\.linear_1", "y_embedder_mlp_0"),
    KohyaRule(r"time_text_embed\.text_embedder\.linear_2", "y_embedder_mlp_2"),
    KohyaRule(r"proj_out", "final_layer_linear"),
    KohyaRule(r"norm_out\.linear", "final_layer_adaLN_modulation_1", swap=True),
)

# diffusers' FluxTransformer2DModel -> BFL's Flux (flux1-dev.safetensors), the inverse of diffusers'
# _convert_kohya_flux_lora_to_diffusers; what sd-scripts' Flux LoRA writes. A single block's linear1 fuses
# q, k, v and the MLP input projection (mlp_ratio 4, fixed in diffusers' FluxSingleTransformerBlock)
FLUX_KOHYA_RULES: tuple[KohyaRule, ...] = (
    *_fused(_BLOCK + r"attn\.{part}", "double_blocks_{0}_img_attn_qkv", _QKV),
    *_fused(_BLOCK + r"attn\.{part}", "double_blocks_{0}_txt_attn_qkv", _ADD_QKV),
    KohyaRule(_BLOCK + r"attn\.to_out\.0", "double_blocks_{0}_img_attn_proj"),
    KohyaRule(_BLOCK + r"attn\.to_add_out", "double_blocks_{0}_txt_attn_proj"),
    KohyaRule(_BLOCK + r"ff\.net\.0\.proj", "double_blocks_{0}_img_mlp_0"),
    KohyaRule(_BLOCK + r"ff\.net\.2", "double_blocks_{0}_img_mlp_2"),
    KohyaRule(_BLOCK + r"ff_context\.net\.0\.proj", "double_blocks_{0}_txt_mlp_0"),
    KohyaRule(_BLOCK + r"ff_context\.net\.2", "double_blocks_{0}_txt_mlp_2"),
    KohyaRule(_BLOCK + r"norm1\.linear", "double_blocks_{0}_img_mod_lin"),
    KohyaRule(_BLOCK + r"norm1_context\.linear", "double_blocks_{0}_txt_mod_lin"),
    *_fused(_SINGLE + "{part}", "single_blocks_{0}_linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
            widths=(1, 1, 1, 4)),
    KohyaRule(_SINGLE + r"proj_out", "single_blocks_{0}_linear2"),
    KohyaRule(_SINGLE + r"norm\.linear", "single_blocks_{0}_modulation_lin"),
    # the top-level modules have BFL names too, but diffusers' kohya Flux loader (0.42) maps them without the
    # `transformer.` prefix and load_lora_weights then drops them: the file would load differently there and in
    # ComfyUI, so they are refused
    *(KohyaRule(pattern, name, refuse="diffusers' kohya Flux loader silently drops LoRA on the top-level modules "
                "(embedders, final layer), so such a file loads differently in diffusers and in ComfyUI")
      for pattern, name in ((r"x_embedder", "img_in"), (r"context_embedder", "txt_in"),
                            (r"time_text_embed\.timestep_embedder\.linear_1", "time_in_in_layer"),
                            (r"time_text_embed\.timestep_embedder\.linear_2", "time_in_out_layer"),
                            (r"time_text_embed\.text_embedder\.linear_1", "vector_in_in_layer"),
                            (r"time_text_embed\.text_embedder\.linear_2", "vector_in_out_layer"),
                            (r"time_text_embed\.guidance_embedder\.linear_1", "guidance_in_in_layer"),
                            (r"time_text_embed\.guidance_embedder\.linear_2", "guidance_in_out_layer"),
                            (r"proj_out", "final_layer_linear"), (r"norm_out\.linear", "final_layer_adaLN_modulation_1"))),
)

_LORA_KEY = re.compile(r"(.+)\.lora_([AB])\.weight")


def _rule_for(path: str, rules: tuple[KohyaRule, ...]) -> KohyaRule | None:
    return next((r for r in rules if re.fullmatch(r.pattern, path)), None)


def check_kohya_modules(paths: list[str], rules: tuple[KohyaRule, ...], family: str) -> None:
    """Raise ``ValueError`` naming the modules among ``paths`` (diffusers module paths) that the
    kohya file cannot hold: those the original checkpoint has no name for, and refused ones."""
    unmapped, refused = [], {}
    for path in sorted(paths):
        rule = _rule_for(path, rules)
        if rule is None:
            unmapped.append(path)
        elif rule.refuse:
            refused.setdefault(rule.refuse, []).append(path)
    fix = "leave them out of target_modules or set export_kohya: false (the diffusers directory holds every module)"
    if unmapped:
        raise ValueError(f"kohya export ({family}): no module of the original {family} checkpoint corresponds to "
                         f"LoRA module(s) {unmapped[:8]}{' ...' if len(unmapped) > 8 else ''}; {fix}")
    for why, bad in refused.items():
        raise ValueError(f"kohya export ({family}): LoRA module(s) {bad[:8]} are not exported: {why}; {fix}")


def kohya_fused_state_dict(layers: dict[str, torch.Tensor], alpha: float, rules: tuple[KohyaRule, ...],
                           family: str) -> dict[str, torch.Tensor]:
    """The kohya/webui state dict (``lora_unet_<original module>.lora_down/lora_up/alpha``) of
    PEFT-keyed ``layers`` trained with kohya alpha ``alpha`` (same alpha for every module).

    A fused original module (``qkv``, ``linear1``) of ``n`` parts gets one LoRA of rank ``n * r``:
    ``lora_down`` is the parts' ``lora_A`` stacked along the rank, ``lora_up`` block-diagonal in
    their ``lora_B``, and alpha ``n * alpha``, so alpha/rank (the kohya scale) is unchanged and
    ``up @ down`` is exactly the parts' ``B @ A`` stacked along the output. A part the adapter does
    not train (Flux's MLP input in ``linear1``, say) gets zero rows in both, which keeps every part
    at rank ``r``: diffusers' kohya converter then recognises the block-diagonal layout and splits
    it back into exactly the parts' ``lora_A``/``lora_B`` (its "sparse" case). The zero blocks make the
    file larger than the diffusers one (about 3x for Flux's default targets).

    Raises ``ValueError`` naming every module the original checkpoint has no name for, rather than
    writing a file a loader would silently skip."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    odd = []
    for key, value in layers.items():
        m = _LORA_KEY.fullmatch(key)
        if m is None:
            odd.append(key)
        else:
            modules.setdefault(m.group(1), {})[m.group(2)] = value
    if odd:
        raise ValueError(f"kohya export ({family}): only plain LoRA weights (lora_A/lora_B) can be written, "
                         f"not {odd[:5]}; use the diffusers directory (export_kohya: false)")
    incomplete = [path for path, ab in modules.items() if set(ab) != {"A", "B"}]
    if incomplete:
        raise ValueError(f"kohya export ({family}): LoRA module(s) {incomplete[:5]} lack lora_A or lora_B")
    check_kohya_modules(list(modules), rules, family)
    groups: dict[str, tuple[KohyaRule, dict[int, tuple[torch.Tensor, torch.Tensor]]]] = {}
    for path, ab in sorted(modules.items()):
        rule = _rule_for(path, rules)
        name = rule.name.format(*re.fullmatch(rule.pattern, path).groups())
        groups.setdefault(name, (rule, {}))[1][rule.slot] = (ab["A"], ab["B"])
    out: dict[str, torch.Tensor] = {}
    for name, (rule, parts) in sorted(groups.items()):
        (a0, b0) = next(iter(parts.values()))
        rank, fan_in = a0.shape[0], a0.shape[1]
        unit = b0.shape[0] // rule.widths[next(iter(parts))]
        for slot, (a, b) in parts.items():
            if a.shape != (rank, fan_in) or b.shape != (unit * rule.widths[slot], rank):
                raise ValueError(f"kohya export ({family}): the parts of fused module {name} do not line up "
                                 f"(lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)}; expected rank {rank}, input "
                                 f"{fan_in}, output {unit * rule.widths[slot]})")
        n = len(rule.widths)
        down = a0.new_zeros(n * rank, fan_in)
        up = b0.new_zeros(unit * sum(rule.widths), n * rank)
        row = 0
        for slot, width in enumerate(rule.widths):
            if slot in parts:
                a, b = parts[slot]
                down[slot * rank:(slot + 1) * rank] = a
                up[row:row + unit * width, slot * rank:(slot + 1) * rank] = b
            row += unit * width
        if rule.swap and up.shape[0] == 2 * fan_in:  # AdaLayerNormContinuous: (scale, shift) -> (shift, scale)
            scale, shift = up.chunk(2, dim=0)
            up = torch.cat([shift, scale], dim=0)
        key = f"lora_unet_{name}"
        out[f"{key}.lora_down.weight"] = down
        out[f"{key}.lora_up.weight"] = up
        out[f"{key}.alpha"] = torch.tensor(float(alpha) * n)
    return out
