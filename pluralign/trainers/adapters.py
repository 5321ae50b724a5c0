"""LoRA adapters on the denoiser through diffusers' PEFT integration.

The reference model of Diffusion-DPO is the same network with its adapters switched off
(:func:`adapters_disabled`), so no second copy of the weights is held in memory.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager

import torch


def linear_module_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def check_target_modules(model: torch.nn.Module, targets) -> None:
    """Raise a clear error if a target module name matches no Linear/Conv layer of ``model``."""
    names = linear_module_names(model)
    suffixes = sorted({".".join(n.split(".")[-k:]) for n in names for k in (1, 2)})
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            near = difflib.get_close_matches(t, suffixes, n=5, cutoff=0.5)
            raise ValueError(f"LoRA target module {t!r} matches no Linear/Conv layer of {type(model).__name__}; "
                             f"near matches: {near or suffixes[:10]}. Fix target_modules in the recipe.")


def lora_config(rank: int, alpha: float, dropout: float, target_modules, use_rslora: bool = False,
                use_dora: bool = False):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      init_lora_weights="gaussian", use_rslora=use_rslora, use_dora=use_dora)


def add_lora(denoiser, config, adapter_name: str = "intent") -> list[torch.nn.Parameter]:
    """Freeze ``denoiser``, add a LoRA adapter and return its trainable parameters."""
    check_target_modules(denoiser, config.target_modules)
    denoiser.requires_grad_(False)
    denoiser.add_adapter(config, adapter_name=adapter_name)
    denoiser.set_adapter(adapter_name)
    params = [p for n, p in denoiser.named_parameters() if f".{adapter_name}." in n and "lora" in n]
    for p in params:
        p.requires_grad_(True)
        p.data = p.data.float()
    if not params:
        raise RuntimeError(f"adapter {adapter_name!r} added no trainable parameters")
    return params


@contextmanager
def adapters_disabled(denoiser):
    """Run the base (reference) model: adapters off inside the block, back on after."""
    denoiser.disable_adapters()
    try:
        yield denoiser
    finally:
        denoiser.enable_adapters()


def adapter_state_dict(denoiser, adapter_name: str) -> dict[str, torch.Tensor]:
    """PEFT-format LoRA weights of one adapter (keys without ``base_model.model.``)."""
    from peft.utils import get_peft_model_state_dict

    sd = get_peft_model_state_dict(denoiser, adapter_name=adapter_name)
    return {k.replace("base_model.model.", "", 1): v.detach().clone() for k, v in sd.items()}


def load_adapter_state_dict(denoiser, state: dict[str, torch.Tensor], adapter_name: str) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(denoiser, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"checkpoint has LoRA keys the model does not: {unexpected[:5]}")
