"""Write a trained adapter as a diffusers LoRA directory, a kohya/webui file and a model card.

The diffusers directory holds ``pytorch_lora_weights.safetensors`` with the adapter's LoRA config
as metadata, so ``load_lora_weights`` restores alpha (and rsLoRA/DoRA) instead of assuming
alpha = rank. The kohya file gets a ``.alpha`` per module equal to the alpha that reproduces the
trained scale (``alpha`` for plain LoRA, ``alpha * sqrt(rank)`` for rsLoRA, since kohya scales
by alpha/rank). Its module names are the family's (:meth:`~.families.Family.kohya_state_dict`):
diffusers' UNet conversion for SD1.x/SDXL, the original checkpoints' names with q/k/v fused for
SD3 and Flux, where a fused module of ``n`` parts has rank ``n * rank`` and alpha ``n * alpha``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def export_diffusers(pipeline_cls, family, layers: dict[str, torch.Tensor], lora_cfg, out_dir: Path,
                     identity: dict[str, str] | None = None) -> Path:
    """The diffusers LoRA directory from PEFT-keyed ``layers`` and their ``LoraConfig``.

    It takes the weights, not the module, because under sharded training (FSDP, DeepSpeed ZeRO-3)
    only the gathered state dict holds whole tensors. ``identity``
    (:func:`~.identity.identity_metadata`) joins the file's metadata, so whoever loads it can
    check it against their base."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline_cls.save_lora_weights(str(out_dir), **family.save_lora_kwargs(layers, lora_cfg.to_dict()))
    path = out_dir / "pytorch_lora_weights.safetensors"
    if identity:
        add_metadata(path, identity)
    return path


def add_metadata(path: Path, extra: dict[str, str]) -> None:
    """Add string ``extra`` entries to a safetensors file's metadata (tensors unchanged), atomically."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={**meta, **extra})
    tmp.replace(path)


def kohya_alpha(lora_cfg) -> float:
    """The kohya ``alpha`` whose scale alpha/rank equals the trained LoRA scale."""
    r = lora_cfg.r
    return float(lora_cfg.lora_alpha * math.sqrt(r)) if lora_cfg.use_rslora else float(lora_cfg.lora_alpha)


def export_kohya(family, layers: dict[str, torch.Tensor], lora_cfg, path: Path) -> Path:
    """The kohya/webui file from PEFT-keyed ``layers`` (see :func:`export_diffusers`), in the module
    names the family's community tools load (:meth:`~.families.Family.kohya_state_dict`)."""
    if lora_cfg.use_dora:
        raise ValueError("kohya export of DoRA adapters is not supported; use the diffusers directory")
    alpha = kohya_alpha(lora_cfg)
    kohya = family.kohya_state_dict(layers, alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path),
              metadata={"ss_network_dim": str(lora_cfg.r), "ss_network_alpha": str(alpha)})
    return path


def model_card(*, base_model: str, family: str, adapter_name: str, data_mix: dict, hyper: dict,
               metrics: dict, eval_summary: dict | None = None, identity: dict | None = None) -> str:
    lines = [
        "---", "library_name: diffusers", f"base_model: {base_model}", "tags: [lora, diffusion-dpo, pluralign]",
        "---", "", f"# {adapter_name}: intent-conditioned Diffusion-DPO LoRA", "",
        f"A LoRA adapter for `{base_model}` ({family}) trained with pluralign so the model follows explicit "
        "anti-aesthetic requests (blur, darkness, muted colour, ...) instead of overriding them, while keeping "
        "its ordinary behaviour on plain prompts.", "", "## Use", "", "```python",
        "from diffusers import DiffusionPipeline", f'pipe = DiffusionPipeline.from_pretrained("{base_model}")',
        f'pipe.load_lora_weights("<this directory>", adapter_name="{adapter_name}")',
        f'pipe.set_adapters(["{adapter_name}"], [1.0])', "```", "",
        *(["## Base model", "", "| field | value |", "|---|---|",
           *[f"| {k} | {v} |" for k, v in identity.items() if v is not None], "",
           "`pluralign eval` refuses to load this adapter into a base of another family or other weights.", ""]
          if identity else []),
        "## Data mix", "",
        f"{data_mix.get('pairs', 0)} pairs.{_intent_share(data_mix)}", "", "| kind | pairs |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(data_mix.get("kind", {}).items())], "",
        "| category | pairs |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(data_mix.get("category", {}).items())], "",
        "## Training", "", "| option | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in hyper.items()], "", "## Final training metrics", "",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.6g} |" for k, v in metrics.items() if isinstance(v, (int, float))], "",
    ]
    if eval_summary:
        lines += ["## Evaluation", "", "```json", json.dumps(eval_summary, indent=1)[:4000], "```", ""]
    else:
        lines += ["## Evaluation", "", "No evaluation was attached to this export (run `pluralign eval`).", ""]
    return "\n".join(lines)


def _intent_share(mix: dict) -> str:
    """The data mix's intent share, achieved and requested, as a sentence (empty for an older mix)."""
    if mix.get("intent_fraction") is None:
        return ""
    text = (f" {mix['intent_rows']} intent rows (anti + mirror) and {mix['general_rows']} general rows: an intent "
            f"share of {100 * mix['intent_fraction']:.1f}%")
    asked = mix.get("requested_intent_fraction")
    if asked is None:
        return text + "."
    text += f" (requested {100 * asked:.1f}%"
    if mix["intent_fraction"] > asked + 1e-9 and mix["general_rows"] >= mix.get("general_available", 0):
        text += f"; the dataset has only {mix['general_available']} general rows"
    return text + ")."


def attach_eval(card: Path, summary: dict) -> None:
    """Replace the model card's Evaluation section with a table of ``summary`` (see trainer.eval_card_summary)."""
    text = Path(card).read_text(encoding="utf-8")
    head = text.split("## Evaluation")[0]
    rows = ["## Evaluation", "",
            f"Built-in eval (`pluralign.eval`), suite `{summary['suite'].get('source')}`, "
            f"{summary['suite'].get('n_rows')} prompt pairs (P_o, P_a, same seed). Full report: "
            f"[{summary['report']}]({summary['report']}).", "",
            "| variant | adherence to anti-aesthetic prompts | leakage on ordinary prompts (max pts) | content fidelity |",
            "|---|---|---|---|"]
    fmt = lambda x, pct=True: "–" if x is None else (f"{100 * x:.1f}%" if pct else f"{x:.1f}")  # noqa: E731
    for name, v in summary["variants"].items():
        rows.append(f"| {name} | {fmt(v['adherence'])} | {fmt(v['leakage_max_abs_points'], False)} | "
                    f"{fmt(v['content_fidelity'])} |")
    Path(card).write_text(head + "\n".join(rows) + "\n", encoding="utf-8")


def push_adapter(folder: Path, repo_id: str) -> str:
    """Upload an adapter directory to the hub (needs a token and network)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="pluralign adapter")
    return str(getattr(info, "commit_url", info))
