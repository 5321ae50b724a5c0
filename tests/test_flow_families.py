"""SD3 and Flux end to end on the tiny factories: train, export, stock-pipeline reload, cache, guidance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_trainer_helpers import cfg

pytestmark = pytest.mark.slow

FLOW = ("sd3", "flux")


def _image(pipe, prompt="a blurry photo of a red circle", seed=0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=2, generator=g, height=32, width=32, output_type="np").images[0]


def _stock(model_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module", params=FLOW)
def run(request, tmp_path_factory):
    """Three optimizer steps from ``tiny:<family>`` (built by the trainer's resolver), alpha != rank."""
    from pluralign.trainers import train

    fam = request.param
    tmp = tmp_path_factory.mktemp(f"{fam}-run")
    config = cfg(tmp, f"tiny:{fam}", max_steps=3, learning_rate=2e-2, rank=4, alpha=8.0, checkpointing_steps=3,
                 beta=500.0, max_pairs=4)
    result = train(config)
    return {"fam": fam, "tmp": tmp, "config": config, "result": result,
            "model": tmp / "cache" / "models" / f"tiny-{fam}"}


def test_run_logs_finite_dpo_metrics(run):
    h = run["result"].history
    assert [x["step"] for x in h] == [1, 2, 3]
    for key in ("loss", "implicit_acc", "policy_err_chosen", "ref_err_chosen", "grad_norm"):
        assert all(np.isfinite(x[key]) for x in h), key
    # step 1: the adapter starts as the identity (B = 0), so policy == reference and the loss is ln 2
    assert abs(h[0]["loss"] - np.log(2)) < 1e-4
    assert any(x["policy_err_chosen"] != x["ref_err_chosen"] for x in h[1:])


def test_export_has_transformer_keys_and_metadata(run):
    adir = run["result"].adapter_dir
    path = adir / "pytorch_lora_weights.safetensors"
    keys = list(load_file(str(path)))
    assert keys and all(k.startswith("transformer.") for k in keys)
    assert any(".add_q_proj." in k for k in keys) and any(".to_q." in k for k in keys)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    lora_meta = json.loads(meta["lora_adapter_metadata"])
    assert (lora_meta["transformer.r"], lora_meta["transformer.lora_alpha"]) == (4, 8.0)
    card = (adir / "README.md").read_text()
    assert "transformer" not in card or "add_q_proj" in card


def test_stock_reload_reproduces_trained_model(run):
    """A stock pipeline + load_lora_weights gives the same image as the trained weights (PEFT checkpoint)."""
    from pluralign.trainers.adapters import add_lora, load_adapter_state_dict, lora_config
    from pluralign.trainers.families import get_family

    fam = get_family(run["fam"])
    trained = _stock(run["model"])
    lora = load_file(str(run["tmp"] / "run" / "checkpoints" / "checkpoint-3" / "lora.safetensors"))
    add_lora(trained.transformer, lora_config(4, 8.0, 0.0, fam.lora_targets), "intent")
    load_adapter_state_dict(trained.transformer, lora, "intent")
    im_trained = _image(trained)

    stock = _stock(run["model"])
    im_base = _image(stock)
    stock.load_lora_weights(str(run["result"].adapter_dir), adapter_name="intent")
    stock.set_adapters(["intent"], [1.0])
    im_stock = _image(stock)
    assert np.abs(im_stock - im_trained).max() <= 1e-5
    assert np.abs(im_stock - im_base).max() > 1e-4        # the adapter does change the output
    stock.set_adapters(["intent"], [0.0])
    assert np.abs(_image(stock) - im_base).max() <= 1e-5   # the dial at 0 is the base model


def test_second_run_reads_cache_only(run, monkeypatch):
    """The cache holds every conditioning tensor of the family; a rerun calls no encoder."""
    from diffusers import AutoencoderKL

    from pluralign.trainers import train
    from pluralign.trainers.cache import TensorCache

    prompt_dirs = list((run["tmp"] / "cache" / "prompts").iterdir())
    assert len(prompt_dirs) == 1
    row = TensorCache(run["tmp"] / "cache", "prompts", prompt_dirs[0].name).get(
        next(prompt_dirs[0].glob("*.safetensors")).stem)
    expected = {"sd3": {"prompt_embeds", "pooled_prompt_embeds"},
                "flux": {"prompt_embeds", "pooled_prompt_embeds", "text_ids"}}[run["fam"]]
    assert set(row) == expected
    pipe_cls = type(_stock(run["model"]))

    def boom(*a, **k):
        raise AssertionError("encoder called although everything is cached")

    monkeypatch.setattr(AutoencoderKL, "encode", boom)
    monkeypatch.setattr(pipe_cls, "encode_prompt", boom)
    config = cfg(run["tmp"], f"tiny:{run['fam']}", output_dir=str(run["tmp"] / "run2"), max_steps=1, max_pairs=4,
                 export_kohya=False)
    assert train(config).steps == 1


@pytest.mark.parametrize("fam", FLOW)
def test_denoise_matches_pipeline_call(fam, tiny_pipeline_dir):
    """The family's denoiser call equals the transformer call the stock pipeline makes at one step."""
    from diffusers import FluxPipeline

    from pluralign.trainers.config import DPOTrainConfig
    from pluralign.trainers.families import get_family

    pipe = _stock(tiny_pipeline_dir(fam))
    family = get_family(fam).configured(DPOTrainConfig(embedded_guidance_scale=2.0))
    cond = family.encode_prompts(pipe, ["a red circle", "a dark square"], 32)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([250.0, 800.0])
    with torch.no_grad():
        out = family.denoise(pipe.transformer, x, t, cond)
        if fam == "sd3":
            ref = pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=cond["prompt_embeds"],
                                   pooled_projections=cond["pooled_prompt_embeds"]).sample
        else:
            embeds, pooled, txt_ids = pipe.encode_prompt(["a red circle", "a dark square"], None)
            packed = FluxPipeline._pack_latents(x, 2, 4, 16, 16)
            ids = FluxPipeline._prepare_latent_image_ids(2, 8, 8, x.device, x.dtype)
            ref = pipe.transformer(hidden_states=packed, timestep=t / 1000, guidance=torch.full((2,), 2.0),
                                   pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=txt_ids,
                                   img_ids=ids).sample
            ref = FluxPipeline._unpack_latents(ref, 32, 32, pipe.vae_scale_factor)
            other = get_family(fam).configured(DPOTrainConfig(embedded_guidance_scale=5.0)).denoise(pipe.transformer, x, t, cond)
            assert (other - out).abs().max() > 1e-6              # the guidance embedding is used
    assert out.shape == x.shape
    assert torch.allclose(out, ref, atol=1e-6)
