"""The kohya/webui file of every family, checked against diffusers' own loaders and converters.

SD1.x/SDXL files use diffusers' UNet naming, which a stock pipeline loads. SD3 and Flux files use
the original checkpoints' module names (SAI MMDiT ``joint_blocks``, BFL ``double_blocks`` /
``single_blocks``) with q, k, v fused, as ComfyUI, Forge and sd-scripts name them:

- Flux: a stock FluxPipeline loads the file through diffusers' kohya converter. That converter
  hard-codes FLUX.1's widths for a single block's ``linear1`` (3072 x 3 + 12288 rows), so the tiny
  pipeline's single blocks cannot go through it; they are checked as state dicts at FLUX.1's widths.
- SD3: diffusers (0.42) has no loader for non-diffusers SD3 LoRAs at all. The names and the fused
  layout are checked against diffusers' converter of the original SD3 checkpoint
  (``convert_sd3_transformer_checkpoint_to_diffusers``): each LoRA delta, added to the original
  key ComfyUI derives from the name (``lora_unet_`` + key, dots as underscores), must come out on
  the right diffusers weight.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

RANK, ALPHA = 4, 8.0


def _stock(model_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _random_lora(denoiser, targets, seed=1):
    """A LoRA on ``targets`` with random A and B (a fresh one has B = 0 and would prove nothing)."""
    from pluralign.trainers.adapters import adapter_state_dict, add_lora, lora_config

    add_lora(denoiser, lora_config(RANK, ALPHA, 0.0, targets), "intent")
    g = torch.Generator().manual_seed(seed)
    for name, p in denoiser.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.3
    return adapter_state_dict(denoiser, "intent"), denoiser.peft_config["intent"]


@torch.no_grad()
def _denoiser_output(pipe, fam):
    from pluralign.trainers.families import get_family

    f = get_family(fam)
    cond = f.encode_prompts(pipe, ["a blurry photo of a red circle"], 32)
    noisy = torch.randn((1, pipe.vae.config.latent_channels, 16, 16), generator=torch.Generator().manual_seed(0))
    return f.denoise(getattr(pipe, f.denoiser_attr), noisy, torch.tensor([500.0]), cond)


# Flux: only the double block, whose qkv diffusers' converter splits at any width (see the module docstring)
TARGETS = {"sd": None, "sdxl": None, "flux": [f"transformer_blocks.0.attn.{m}" for m in
                                              ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj",
                                               "add_v_proj", "to_add_out")]}


@pytest.mark.parametrize("fam", ["sd", "sdxl", "flux"])
def test_kohya_file_loads_in_stock_pipeline_like_the_diffusers_file(fam, tiny_pipeline_dir, tmp_path):
    from pluralign.trainers.export import export_diffusers, export_kohya
    from pluralign.trainers.families import get_family

    model, family = tiny_pipeline_dir(fam), get_family(fam)
    pipe = _stock(model)
    layers, lora_cfg = _random_lora(getattr(pipe, family.denoiser_attr), TARGETS[fam] or family.lora_targets)
    export_diffusers(type(pipe), family, layers, lora_cfg, tmp_path / "diffusers")
    kohya = export_kohya(family, layers, lora_cfg, tmp_path / "kohya.safetensors")
    keys = list(load_file(str(kohya)))
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    if fam == "flux":
        assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in keys

    outs = {}
    for name, path in (("diffusers", tmp_path / "diffusers"), ("kohya", kohya)):
        p = _stock(model)
        p.load_lora_weights(str(path), adapter_name="intent")
        n_lora = sum(1 for _, m in getattr(p, family.denoiser_attr).named_modules()
                     if "intent" in getattr(m, "lora_A", {}))
        assert n_lora >= len(layers) // 2, (name, n_lora)  # every trained module arrived (flux adds zero parts)
        outs[name] = _denoiser_output(p, fam)
    base = _denoiser_output(_stock(model), fam)
    assert (outs["kohya"] - outs["diffusers"]).abs().max() <= 1e-5
    assert (outs["diffusers"] - base).abs().max() > 1e-3  # the adapter does something


def _flux1_width_model():
    """FLUX.1's widths (24 heads x 128, MLP 4x) with one block of each kind, on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                      attention_head_dim=128, num_attention_heads=24, joint_attention_dim=64,
                                      pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def _layers_for(model, paths, seed=2):
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    layers = {}
    for path in paths:
        lin = mods[path]
        layers[f"{path}.lora_A.weight"] = torch.randn((RANK, lin.in_features), generator=g)
        layers[f"{path}.lora_B.weight"] = torch.randn((lin.out_features, RANK), generator=g)
    return layers


@pytest.mark.parametrize("extra", [False, True], ids=["attention", "attention+mlp+modulation"])
def test_flux_kohya_round_trips_through_diffusers_converter_at_flux1_widths(extra):
    """Every block module, single blocks' fused linear1 included, comes back from diffusers' kohya
    converter as exactly the trained lora_A (times alpha/rank, which it bakes in) and lora_B."""
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    from pluralign.trainers.families import JOINT_ATTENTION_TARGETS, get_family

    model = _flux1_width_model()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    suffixes = JOINT_ATTENTION_TARGETS + (("proj_mlp", "ff.net.0.proj", "ff_context.net.2", "norm1.linear",
                                           "norm1_context.linear", "norm.linear") if extra else ())
    paths = [n for n in names if "blocks." in n and any(n.endswith("." + s) for s in suffixes)]
    if extra:
        paths.append("single_transformer_blocks.0.proj_out")
    layers = _layers_for(model, paths)
    kohya = get_family("flux").kohya_state_dict(layers, ALPHA)
    assert kohya["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (3 * 3072 + 12288, 4 * RANK)
    assert kohya["lora_unet_single_blocks_0_linear1.alpha"].item() == 4 * ALPHA

    back = _convert_kohya_flux_lora_to_diffusers(dict(kohya))
    for path in paths:
        a, b = layers[f"{path}.lora_A.weight"], layers[f"{path}.lora_B.weight"]
        assert torch.equal(back.pop(f"transformer.{path}.lora_A.weight"), a * (ALPHA / RANK)), path
        assert torch.equal(back.pop(f"transformer.{path}.lora_B.weight"), b), path
    # what is left are the parts the adapter did not train (proj_mlp in linear1): zero, so they change nothing
    assert all(not v.any() for v in back.values()), [k for k, v in back.items() if v.any()]
    assert set(back) == ({"transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight",
                          "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight"} if not extra else set())


class _Original(dict):
    """An original checkpoint in which a key that is not there reads as zeros; records what is read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def pop(self, key, *default):
        self.read.add(key)
        return super().pop(key) if key in self else torch.zeros(6)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key) if key in self else torch.zeros(6)


def _sd3_model(dual: bool):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    extra = {"dual_attention_layers": (0,), "qk_norm": "rms_norm"} if dual else {}  # SD3.5 medium's layout
    return SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                 caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=32, **extra)


@pytest.mark.parametrize("dual", [False, True], ids=["sd3", "sd3.5-dual-attention"])
def test_sd3_kohya_names_and_fused_qkv_match_the_original_checkpoint(dual):
    """Adding each kohya module's delta (alpha/rank * up @ down) to the original key ComfyUI derives
    from its name, then converting with diffusers' SD3 checkpoint converter, gives exactly the
    per-module LoRA deltas on the diffusers weights (q, k, v split out of qkv, the last block's
    context modulation and the final layer's modulation swapped back)."""
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    from pluralign.trainers.families import get_family

    model = _sd3_model(dual)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    paths = [n for n in linears if n != "pos_embed.proj"]  # every linear the original checkpoint has a name for
    layers = _layers_for(model, paths)
    kohya = get_family("sd3").kohya_state_dict(layers, ALPHA)
    assert "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight" in kohya
    assert ("lora_unet_joint_blocks_0_x_block_attn2_qkv.lora_down.weight" in kohya) == dual

    # the original key names, as the converter reads them
    n_layers = model.config.num_layers
    probe = _Original({f"joint_blocks.{i}.x_block.attn.qkv.weight": torch.zeros(6) for i in range(n_layers)}
                      | {f"joint_blocks.{i}.x_block.attn2.qkv.weight": torch.zeros(6)
                         for i in model.config.dual_attention_layers})
    convert_sd3_transformer_checkpoint_to_diffusers(probe)
    comfy = {"lora_unet_" + k.removesuffix(".weight").replace(".", "_"): k for k in probe.read if k.endswith(".weight")}

    modules = sorted({k.split(".")[0] for k in kohya})
    assert set(modules) <= set(comfy), sorted(set(modules) - set(comfy))
    original = _Original({comfy[m]: kohya[f"{m}.alpha"] / kohya[f"{m}.lora_down.weight"].shape[0]
                          * kohya[f"{m}.lora_up.weight"] @ kohya[f"{m}.lora_down.weight"] for m in modules})
    given = set(original)
    converted = convert_sd3_transformer_checkpoint_to_diffusers(original)
    assert given <= original.read and not original  # every delta was taken

    for path in paths:
        want = (ALPHA / RANK) * layers[f"{path}.lora_B.weight"] @ layers[f"{path}.lora_A.weight"]
        got = converted.pop(f"{path}.weight")
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5), path
    assert all(not v.any() for v in converted.values())  # nothing landed anywhere else


def test_unmappable_or_refused_modules_raise_before_writing(tmp_path):
    from pluralign.trainers.families import get_family

    lin = {"lora_A.weight": torch.ones(RANK, 8), "lora_B.weight": torch.ones(8, RANK)}
    odd = {f"transformer_blocks.0.attn.norm_q.{k}": v for k, v in lin.items()}
    with pytest.raises(ValueError, match=r"no module of the original sd3 checkpoint.*norm_q.*target_modules"):
        get_family("sd3").kohya_state_dict(odd, ALPHA)
    embed = {f"x_embedder.{k}": v for k, v in lin.items()}
    with pytest.raises(ValueError, match=r"x_embedder.*drops.*export_kohya: false"):
        get_family("flux").kohya_state_dict(embed, ALPHA)
    bias = {"transformer_blocks.0.attn.to_q.lora_B.bias": torch.ones(8)}
    with pytest.raises(ValueError, match="only plain LoRA weights"):
        get_family("flux").kohya_state_dict(bias, ALPHA)


def test_check_kohya_targets_says_before_training():
    """What the trainer can call in plan(), on the meta-device denoiser, so a refused module fails before training."""
    from pluralign.trainers.families import get_family

    flux = get_family("flux")
    model = _flux1_width_model()
    flux.check_kohya_targets(model, flux.lora_targets)  # the defaults are all exportable
    flux.check_kohya_targets(model, ["proj_mlp", "ff.net.0.proj", "norm1.linear"])
    with pytest.raises(ValueError, match=r"context_embedder.*export_kohya: false"):
        flux.check_kohya_targets(model, ["to_q", "context_embedder"])
    sd3 = get_family("sd3")
    sd3.check_kohya_targets(_sd3_model(dual=True), sd3.lora_targets)
    get_family("sd").check_kohya_targets(model, ["anything"])  # UNet families: diffusers' conversion, no check
