"""Everything that differs between model families, in one place. The loop calls only this.

A :class:`Family` knows which pipeline classes it covers, where the denoiser lives, how to turn
prompts into conditioning tensors (one row per prompt, so they can be cached per prompt), how to
call the denoiser, which modules LoRA targets by default, and how the pipeline class wants its
LoRA layers saved. SD3 and Flux (flow matching, functions in :mod:`.flow_families`) plug in here
without touching the loop. A family that needs recipe options (Flux's guidance value, the T5
sequence length) names them in ``encode_options`` / ``denoise_options``;
:meth:`Family.configured` binds them once, so the loop still calls
``encode_prompts(pipe, prompts, resolution)`` and ``denoise(model, noisy, t, cond)``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import flow_families as flow

ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# MMDiT joint attention also projects the text stream (add_*_proj, to_add_out); diffusers' SD3/Flux
# LoRA training scripts adapt both streams. Names absent from some blocks (to_add_out in the last
# SD3 block, to_out in Flux single blocks) are simply skipped there.
JOINT_ATTENTION_TARGETS = ATTENTION_TARGETS + ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def _encode_sd(pipe, prompts: list[str], resolution: int) -> dict[str, torch.Tensor]:
    embeds, _ = pipe.encode_prompt(list(prompts), device=pipe.text_encoder.device, num_images_per_prompt=1,
                                   do_classifier_free_guidance=False)
    return {"prompt_embeds": embeds}


def _denoise_sd(denoiser, noisy, t, cond):
    return denoiser(noisy, t, encoder_hidden_states=cond["prompt_embeds"], return_dict=False)[0]


def _encode_sdxl(pipe, prompts: list[str], resolution: int) -> dict[str, torch.Tensor]:
    embeds, _, pooled, _ = pipe.encode_prompt(list(prompts), device=pipe.text_encoder_2.device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    # original size, crop top-left, target size: training images are resized + center-cropped to a square
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * len(prompts),
                            dtype=embeds.dtype)
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "time_ids": time_ids}


def _denoise_sdxl(denoiser, noisy, t, cond):
    added = {"text_embeds": cond["pooled_prompt_embeds"], "time_ids": cond["time_ids"]}
    return denoiser(noisy, t, encoder_hidden_states=cond["prompt_embeds"], added_cond_kwargs=added,
                    return_dict=False)[0]


@dataclass(frozen=True)
class Family:
    name: str
    pipeline_classes: tuple[str, ...]
    denoiser_attr: str
    components: tuple[str, ...]
    encode_prompts: Callable[[Any, list[str], int], dict[str, torch.Tensor]]
    denoise: Callable[[Any, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
    lora_targets: tuple[str, ...] = ATTENTION_TARGETS
    text_encoders: tuple[str, ...] = field(default=("text_encoder",))
    encode_options: tuple[str, ...] = ()   # DPOTrainConfig fields passed to encode_prompts (part of the cache key)
    denoise_options: tuple[str, ...] = ()  # DPOTrainConfig fields passed to denoise
    bound: tuple[tuple[str, Any], ...] = ()
    # UNet LoRAs are written in the diffusers key format (lora.down/up), as diffusers' SD/SDXL LoRA scripts
    # do; transformer LoRAs keep PEFT keys (lora_A/B), as its SD3/Flux scripts do. Converting a
    # transformer state dict would rename only the to_q/k/v/out keys and break load_lora_weights.
    diffusers_key_format: bool = True
    # kohya/webui export: None writes diffusers' UNet conversion (lora_unet_down_blocks_...), which A1111,
    # ComfyUI and diffusers load for SD1.x/SDXL. The transformers have no such names; their files use the
    # original checkpoint's (SAI MMDiT, BFL Flux) module names, with q/k/v fused (flow_families.KohyaRule)
    kohya_rules: tuple[flow.KohyaRule, ...] | None = None

    def configured(self, config) -> Family:
        """This family with its recipe options bound (call once per run, before encoding)."""
        enc = {k: getattr(config, k) for k in self.encode_options}
        den = {k: getattr(config, k) for k in self.denoise_options}
        return replace(self, encode_prompts=functools.partial(self.encode_prompts, **enc) if enc else self.encode_prompts,
                       denoise=functools.partial(self.denoise, **den) if den else self.denoise,
                       bound=tuple(sorted({**enc, **den}.items())))

    @property
    def cache_id(self) -> str:
        """Family part of the prompt/latent cache key: the name plus options that change the encoding."""
        return self.name + "".join(f":{k}={v}" for k, v in self.bound if k in self.encode_options)

    def save_lora_kwargs(self, layers: dict[str, torch.Tensor], metadata: dict) -> dict[str, Any]:
        """Keyword arguments for ``PipelineClass.save_lora_weights`` (unet_* or transformer_*) from
        PEFT-format ``layers`` (keys without ``base_model.model.``)."""
        if self.diffusers_key_format:
            from diffusers.utils import convert_state_dict_to_diffusers

            converted = convert_state_dict_to_diffusers(layers)
            # diffusers' mapping covers attention projections only: with other targets (ResNet convs,
            # time embedding) it returns a mix of `lora.down` and `lora_A` keys, and load_lora_weights
            # then silently drops the converted ones. PEFT keys load everywhere, so keep them then.
            if not any(".lora_A." in k or ".lora_B." in k for k in converted):
                layers = converted
        return {f"{self.denoiser_attr}_lora_layers": layers, f"{self.denoiser_attr}_lora_adapter_metadata": metadata}

    def kohya_state_dict(self, layers: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
        """The kohya/webui state dict of PEFT-format ``layers`` with kohya alpha ``alpha`` (alpha/rank
        is the LoRA scale): ``lora_unet_<module>.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``,
        named the way the community tools (A1111/Forge, ComfyUI, sd-scripts) name this family's modules."""
        if self.kohya_rules is not None:
            return flow.kohya_fused_state_dict(layers, alpha, self.kohya_rules, self.name)
        from diffusers.utils import convert_state_dict_to_kohya

        kohya = convert_state_dict_to_kohya({f"{self.denoiser_attr}.{k}": v for k, v in layers.items()})
        for k in [k for k in kohya if k.endswith(".alpha")]:
            kohya[k] = torch.tensor(alpha)
        return kohya

    def check_kohya_targets(self, denoiser, targets) -> None:
        """Before training: raise ``ValueError`` if LoRA on ``targets`` (module names as in
        ``target_modules``) of ``denoiser`` (weights may be on the meta device) could not be written
        to the kohya file, which :meth:`kohya_state_dict` would otherwise say only at export."""
        if self.kohya_rules is None:
            return
        paths = [n for n, m in denoiser.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
                 and any(n == t or n.endswith("." + t) for t in targets)]
        flow.check_kohya_modules(paths, self.kohya_rules, self.name)


FAMILIES: dict[str, Family] = {
    "sd": Family("sd", ("StableDiffusionPipeline",), "unet", ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
                 _encode_sd, _denoise_sd),
    "sdxl": Family("sdxl", ("StableDiffusionXLPipeline",), "unet",
                   ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
                   _encode_sdxl, _denoise_sdxl, text_encoders=("text_encoder", "text_encoder_2")),
    "sd3": Family("sd3", ("StableDiffusion3Pipeline",), "transformer",
                  ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
                   "tokenizer_3", "scheduler"),
                  flow.encode_sd3, flow.denoise_sd3, lora_targets=JOINT_ATTENTION_TARGETS,
                  text_encoders=("text_encoder", "text_encoder_2", "text_encoder_3"),
                  encode_options=("max_sequence_length",), diffusers_key_format=False,
                  kohya_rules=flow.SD3_KOHYA_RULES),
    "flux": Family("flux", ("FluxPipeline",), "transformer",
                   ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
                   flow.encode_flux, flow.denoise_flux, lora_targets=JOINT_ATTENTION_TARGETS,
                   text_encoders=("text_encoder", "text_encoder_2"),
                   encode_options=("max_sequence_length",), denoise_options=("embedded_guidance_scale",),
                   diffusers_key_format=False, kohya_rules=flow.FLUX_KOHYA_RULES),
}


def family_for_class(class_name: str) -> Family:
    for fam in FAMILIES.values():
        if class_name in fam.pipeline_classes:
            return fam
    known = ", ".join(c for f in FAMILIES.values() for c in f.pipeline_classes)
    raise ValueError(f"pipeline class {class_name} is not a family the trainer supports (supported: {known})")


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {', '.join(FAMILIES)} (or auto)")
    return FAMILIES[name]


def read_model_index(model_dir: str | Path) -> dict | None:
    """``model_index.json`` of a local pipeline dir (or the hub cache), without loading weights."""
    path = Path(model_dir) / "model_index.json"
    if path.is_file():
        return json.loads(path.read_text())
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(str(model_dir), "model_index.json")).read_text())
    except Exception:
        return None


def detect_family(model_dir: str | Path, requested: str = "auto") -> Family:
    """Family from ``model_index.json``; checks a requested family and the needed components."""
    index = read_model_index(model_dir)
    if index is None:
        if requested == "auto":
            raise ValueError(f"{model_dir}: no model_index.json found (not a diffusers pipeline directory, or a hub "
                             "id that is not cached); pass a pipeline directory or set family explicitly")
        return get_family(requested)
    fam = family_for_class(index.get("_class_name", "?"))
    if requested != "auto" and requested != fam.name:
        raise ValueError(f"{model_dir}: family is set to {requested!r} but the pipeline is {index['_class_name']} "
                         f"(family {fam.name!r}); set family: auto or {fam.name}")
    missing = [c for c in fam.components if not index.get(c) or index[c] == [None, None]]
    if missing:
        raise ValueError(f"{model_dir}: pipeline is missing component(s) {missing} needed to train {fam.name}")
    return fam
