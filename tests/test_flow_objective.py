"""Flow-matching objective and the Flux/SD3 family helpers, checked by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from pluralign.trainers.config import DPOTrainConfig
from pluralign.trainers.objectives import FlowMatchingObjective, objective_for, objective_from_config, shared_noise


def _scheduler(shift=3.0):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=shift)


def test_velocity_target_and_interpolation_by_hand():
    obj = objective_for(_scheduler())
    assert isinstance(obj, FlowMatchingObjective)
    x0 = torch.tensor([[[[1.0, -2.0]]], [[[0.5, 0.25]]]])       # [2, 1, 1, 2]
    noise = torch.tensor([[[[0.0, 4.0]]], [[[-1.0, 3.0]]]])
    sigmas = torch.tensor([0.25, 0.9])
    t = sigmas * 1000
    noisy = obj.add_noise(x0, noise, t)
    expect = torch.tensor([[[[0.75 * 1.0 + 0.25 * 0.0, 0.75 * -2.0 + 0.25 * 4.0]]],
                           [[[0.1 * 0.5 + 0.9 * -1.0, 0.1 * 0.25 + 0.9 * 3.0]]]])
    assert torch.allclose(noisy, expect, atol=1e-6)
    assert torch.allclose(obj.target(x0, noise, t), torch.tensor([[[[-1.0, 6.0]]], [[[-1.5, 2.75]]]]))
    # the endpoints: σ=0 is the clean latent, σ=1 pure noise
    assert torch.allclose(obj.add_noise(x0, noise, torch.tensor([0.0, 1000.0])), torch.cat([x0[:1], noise[1:]]))


@pytest.mark.parametrize("weighting", ["uniform", "logit_normal", "mode"])
def test_timesteps_follow_compute_density_on_shifted_sigmas(weighting):
    from diffusers.training_utils import compute_density_for_timestep_sampling

    sched = _scheduler(shift=3.0)
    obj = FlowMatchingObjective(sched, weighting=weighting, logit_mean=0.3, logit_std=0.7, mode_scale=1.29)
    t = obj.sample_timesteps(512, torch.Generator().manual_seed(5))
    u = compute_density_for_timestep_sampling(weighting, 512, logit_mean=0.3, logit_std=0.7, mode_scale=1.29,
                                              generator=torch.Generator().manual_seed(5))
    idx = (u * 1000).long().clamp(0, 999)
    assert torch.equal(t, sched.timesteps[idx].float())
    sig = t / 1000
    # shifted sigmas: σ = shift·s / (1 + (shift-1)·s) with s uniform on (0, 1]
    assert torch.allclose(sig, torch.tensor([s for s in sched.sigmas[idx].tolist()]), atol=1e-6)
    assert sig.min() > 0 and sig.max() <= 1


def test_logit_normal_concentrates_mid_sigmas():
    obj = FlowMatchingObjective(_scheduler(shift=1.0), weighting="logit_normal")
    uni = FlowMatchingObjective(_scheduler(shift=1.0), weighting="uniform")
    s_ln = obj.sample_timesteps(4000, torch.Generator().manual_seed(0)) / 1000
    s_u = uni.sample_timesteps(4000, torch.Generator().manual_seed(0)) / 1000
    mid = lambda s: ((s > 0.25) & (s < 0.75)).float().mean().item()  # noqa: E731
    # logit-normal(0,1): P(0.25 < σ < 0.75) = P(|z| < ln 3) ≈ 0.727; uniform: 0.5
    assert abs(mid(s_ln) - (math.erf(math.log(3) / math.sqrt(2)))) < 0.03
    assert abs(mid(s_u) - 0.5) < 0.03


def test_objective_from_config_passes_flow_options_and_ignores_them_for_ddpm():
    from diffusers import DDPMScheduler

    c = DPOTrainConfig(weighting_scheme="mode", mode_scale=0.5)
    obj = objective_from_config(_scheduler(), c)
    assert (obj.weighting, obj.mode_scale) == ("mode", 0.5)
    assert objective_from_config(DDPMScheduler(), c).name == "epsilon"
    with pytest.raises(ValueError, match="flow matching"):
        objective_for(_scheduler(), "epsilon")
    bad = FlowMatchingObjective(_scheduler(), weighting="cosine")
    with pytest.raises(ValueError, match="cosine"):
        bad.sample_timesteps(2, torch.Generator())


def test_winner_and_loser_share_noise_and_timestep():
    obj = objective_for(_scheduler())
    g = torch.Generator().manual_seed(1)
    xw, xl = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    x0, noise, t = shared_noise(xw, xl, obj, torch.Generator().manual_seed(0))
    assert torch.equal(x0, torch.cat([xw, xl]))
    assert torch.equal(noise[:3], noise[3:]) and torch.equal(t[:3], t[3:])
    assert not torch.equal(noise[0], noise[1])                    # pairs differ from each other
    noisy = obj.add_noise(x0, noise, t)
    s = (t / 1000).view(-1, 1, 1, 1)
    assert torch.allclose(noisy, (1 - s) * x0 + s * noise, atol=1e-6)
    assert torch.allclose(obj.target(x0, noise, t)[:3] - obj.target(x0, noise, t)[3:], xl - xw, atol=1e-6)


def test_flux_pack_roundtrip_and_ids():
    from diffusers import FluxPipeline

    from pluralign.trainers.flow_families import pack, unpack

    x = torch.randn(2, 4, 6, 8)
    packed, ids = pack(x)
    assert packed.shape == (2, 12, 16) and ids.shape == (12, 3)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 4, 6, 8))
    assert torch.equal(unpack(packed, 6, 8), x)
    assert ids[:, 1].tolist() == [r for r in range(3) for _ in range(4)] and ids[:4, 2].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="multiple of"):
        pack(torch.randn(1, 4, 5, 6))


def test_family_registry_and_configured_options():
    from pluralign.trainers.families import family_for_class, get_family

    assert family_for_class("StableDiffusion3Pipeline").name == "sd3"
    assert family_for_class("FluxPipeline").name == "flux"
    flux = get_family("flux")
    assert "add_q_proj" in flux.lora_targets and "to_out.0" in flux.lora_targets
    kw = flux.save_lora_kwargs({"a.to_q.lora_A.weight": torch.zeros(1)}, {"r": 4})
    assert list(kw["transformer_lora_layers"]) == ["a.to_q.lora_A.weight"]   # PEFT keys kept
    assert set(kw) == {"transformer_lora_layers", "transformer_lora_adapter_metadata"}
    a = flux.configured(DPOTrainConfig(embedded_guidance_scale=1.0, max_sequence_length=64))
    b = flux.configured(DPOTrainConfig(embedded_guidance_scale=3.5, max_sequence_length=128))
    assert a.denoise.keywords == {"embedded_guidance_scale": 1.0}
    # the T5 length changes the embeddings, so it is part of the cache key; guidance is not
    assert a.cache_id != b.cache_id and "guidance" not in a.cache_id
    sd = get_family("sd").configured(DPOTrainConfig())
    assert sd.cache_id == "sd"                                  # SD1.x cache keys unchanged


def test_unsupported_pipeline_class_is_named(tmp_path):
    from pluralign.trainers.families import detect_family

    (tmp_path / "model_index.json").write_text('{"_class_name": "PixArtAlphaPipeline"}')
    with pytest.raises(ValueError, match="PixArtAlphaPipeline is not a family.*FluxPipeline"):
        detect_family(tmp_path)


def test_process_slices_of_the_global_draw_equal_one_big_batch():
    """N processes x B pairs draw exactly what 1 process x N*B pairs draws (same generator seed)."""
    from pluralign.trainers.objectives import pair_noise

    obj = objective_for(_scheduler())
    x = torch.zeros(6, 4, 8, 8)
    full_n, full_t = pair_noise(x, obj, torch.Generator().manual_seed(9))
    for rank in range(3):
        n, t = pair_noise(x[:2], obj, torch.Generator().manual_seed(9), offset=2 * rank, total=6)
        assert torch.equal(n, full_n[2 * rank:2 * rank + 2]) and torch.equal(t, full_t[2 * rank:2 * rank + 2])
    with pytest.raises(ValueError, match="outside"):
        pair_noise(x[:2], obj, torch.Generator(), offset=5, total=6)
