"""Diffusion-DPO training on the tiny SD1.x pipeline: learning, export round-trip, kohya alpha, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_trainer_helpers import LN2, cfg, dpo_eval, image

pytestmark = pytest.mark.slow


def _vae_counter(monkeypatch):
    from diffusers import AutoencoderKL

    calls = {"n": 0}
    orig = AutoencoderKL.encode

    def counted(self, *a, **k):
        calls["n"] += 1
        return orig(self, *a, **k)

    monkeypatch.setattr(AutoencoderKL, "encode", counted)
    return calls


@pytest.fixture(scope="module")
def run(tiny_pipeline_dir, tmp_path_factory):
    from pluralign.data.shapes import shape_pairs
    from pluralign.trainers import train

    tmp = tmp_path_factory.mktemp("sd-run")
    ds = shape_pairs().filter(lambda r: r["kind"] == "mirror").select(range(4))
    ds.save_to_disk(str(tmp / "pairs"))
    mp = pytest.MonkeyPatch()
    calls = _vae_counter(mp)
    config = cfg(tmp, tiny_pipeline_dir("sd"), dataset=str(tmp / "pairs"), max_steps=10, learning_rate=2e-3,
                 beta=1000.0, alpha=8.0, checkpointing_steps=5)
    result = train(config)
    first_calls = calls["n"]
    mp.undo()
    return {"tmp": tmp, "ds": ds, "config": config, "result": result, "vae_calls": first_calls,
            "model": tiny_pipeline_dir("sd")}


def _stock(model):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_dpo_moves_toward_chosen(run):
    r = run["result"]
    assert r.steps == 10 and len(r.history) == 10
    assert {"loss", "implicit_acc", "margin", "policy_err_chosen", "ref_err_rejected", "lr", "grad_norm",
            "pairs_per_s"} <= set(r.history[-1])
    pipe = _stock(run["model"])
    pipe.load_lora_weights(str(r.adapter_dir), adapter_name="intent")
    ds = run["ds"]
    loss, acc = dpo_eval(pipe, list(ds["prompt"]), list(ds["chosen"]), list(ds["rejected"]))
    assert loss < LN2 - 0.02 and acc > 0.6, (loss, acc)


def test_export_reproduces_trained_model_and_alpha_round_trips(run, tmp_path):
    from pluralign.trainers.adapters import add_lora, load_adapter_state_dict, lora_config

    r, model = run["result"], run["model"]
    trained = _stock(model)  # the trained network: base + the final checkpoint's LoRA weights
    add_lora(trained.unet, lora_config(4, 8.0, 0.0, ("to_q", "to_k", "to_v", "to_out.0")), "intent")
    last = r.output_dir / "checkpoints" / "checkpoint-10"
    load_adapter_state_dict(trained.unet, load_file(str(last / "lora.safetensors")), "intent")
    want = image(trained)

    stock = _stock(model)
    stock.load_lora_weights(str(r.adapter_dir), adapter_name="intent")
    got = image(stock)
    assert np.abs(got - want).max() <= 1e-5
    base = image(_stock(model))
    assert np.abs(got - base).max() > 1e-3  # the adapter does something

    # without the saved metadata, diffusers assumes alpha = rank (4): a different (halved) scale
    f = r.adapter_dir / "pytorch_lora_weights.safetensors"
    with safe_open(str(f), "pt") as h:
        assert json.loads(h.metadata()["lora_adapter_metadata"])["unet.lora_alpha"] == 8.0
    (tmp_path / "nometa").mkdir()
    save_file(load_file(str(f)), str(tmp_path / "nometa" / "pytorch_lora_weights.safetensors"))
    nometa = _stock(model)
    nometa.load_lora_weights(str(tmp_path / "nometa"), adapter_name="intent")
    assert np.abs(image(nometa) - want).max() > 1e-4


def test_conv_targets_export_and_reload(tiny_pipeline_dir, tmp_path):
    """LoRA on ResNet convs as well as attention: every module must survive export and reload."""
    from pluralign.trainers import train

    model = tiny_pipeline_dir("sd")
    targets = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]
    r = train(cfg(tmp_path, model, max_steps=2, learning_rate=1e-2, export_kohya=False, target_modules=targets))
    stock = _stock(model)
    stock.load_lora_weights(str(r.adapter_dir), adapter_name="intent")
    adapted = {n.rsplit(".", 1)[-1] if "conv" in n else "attn" for n, m in stock.unet.named_modules()
               if "intent" in getattr(m, "lora_A", {})}
    assert {"conv1", "conv2", "attn"} <= adapted, adapted
    keys = list(load_file(str(r.adapter_dir / "pytorch_lora_weights.safetensors")))
    # one key format only: diffusers decides how to read the file from its first key, so a mix of
    # `lora.down` and `lora_A` keys loads only part of the adapter when a conv key comes first
    peft_keys = [k for k in keys if ".lora_A." in k or ".lora_B." in k]
    assert len(peft_keys) in (0, len(keys)), keys[:4]
    n_saved = len(keys)
    n_loaded = sum(1 for _, m in stock.unet.named_modules() if "intent" in getattr(m, "lora_A", {}))
    assert n_saved == 2 * n_loaded


def test_kohya_file_has_trained_alpha(run):
    path = run["result"].kohya_files["intent"]
    sd = load_file(str(path))
    alphas = {k: v.item() for k, v in sd.items() if k.endswith(".alpha")}
    downs = [k for k in sd if k.endswith("lora_down.weight")]
    assert alphas and len(alphas) == len(downs)
    assert set(alphas.values()) == {8.0}
    assert all(k.startswith("lora_unet_") for k in sd)


def test_model_card_and_checkpoints(run):
    r = run["result"]
    card = (r.adapter_dir / "README.md").read_text()
    assert "base_model:" in card and "| mirror | 4 |" in card and "| loss_type | sigmoid |" in card
    assert "| alpha | 8.0 |" in card
    ckpts = sorted(p.name for p in (r.output_dir / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-10", "checkpoint-5"]  # atomic dirs only, no temp leftovers


def test_second_run_reuses_cache(run, monkeypatch):
    from pluralign.trainers import train
    from pluralign.trainers.trainer import replace

    assert run["vae_calls"] > 0
    calls = _vae_counter(monkeypatch)
    from pluralign.trainers import cache as cache_mod

    text_calls = {"n": 0}
    orig = cache_mod.cached_prompts

    def spy(encode, prompts, cache, **kw):
        def counted(ps):
            text_calls["n"] += 1
            return encode(ps)
        return orig(counted, prompts, cache, **kw)

    monkeypatch.setattr("pluralign.trainers.trainer.cached_prompts", spy)
    out = run["tmp"] / "again"
    train(replace(run["config"], output_dir=str(out), max_steps=1, checkpointing_steps=0, export_kohya=False))
    assert calls["n"] == 0 and text_calls["n"] == 0
    assert (out / "adapter" / "pytorch_lora_weights.safetensors").exists()


def test_non_finite_loss_stops_with_last_checkpoint_intact(run, monkeypatch):
    from pluralign.trainers import train, trainer
    from pluralign.trainers.trainer import NonFiniteLossError, replace

    real = trainer.intent_dpo_loss
    n = {"calls": 0}

    def poisoned(*a, **k):
        n["calls"] += 1
        loss, stats = real(*a, **k)
        return (loss * float("nan"), stats) if n["calls"] == 3 else (loss, stats)

    monkeypatch.setattr(trainer, "intent_dpo_loss", poisoned)
    out = run["tmp"] / "nan"
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*checkpoint-2"):
        train(replace(run["config"], output_dir=str(out), max_steps=5, checkpointing_steps=2))
    ck = out / "checkpoints"
    assert [p.name for p in ck.iterdir()] == ["checkpoint-2"]
    lora = load_file(str(ck / "checkpoint-2" / "lora.safetensors"))
    assert all(torch.isfinite(v).all() for v in lora.values())
    assert json.loads((ck / "checkpoint-2" / "state.json").read_text())["global_step"] == 2
    assert not (out / "adapter").exists()


def test_latent_cache_batches_and_keeps_rows_on_cpu(tmp_path, monkeypatch):
    """``encode_batch_size`` images per VAE call; fresh encodings sit on the CPU beside cache hits."""
    from PIL import Image

    from pluralign.trainers import cache as cache_mod

    calls = []

    def fake_encode(vae, pixels):
        calls.append(len(pixels))
        return pixels[:, :1, ::2, ::2] * 2  # one "latent" channel, half resolution

    monkeypatch.setattr(cache_mod, "encode_pixels", fake_encode)
    images = [Image.new("RGB", (16, 16), (40 * i, 0, 0)) for i in range(5)]
    store = cache_mod.TensorCache(tmp_path, "latents", "fake")
    first = cache_mod.cached_latents(None, images[:2], 16, store, batch_size=2)
    lat = cache_mod.cached_latents(None, images, 16, store, batch_size=2)  # 2 hits, 3 to encode
    assert calls == [2, 2, 1] and lat.shape == (5, 1, 8, 8) and lat.device.type == "cpu"
    assert torch.equal(lat[:2], first)
