"""``loss_space``: prediction errors measured as v-prediction errors on epsilon families."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from test_trainer_helpers import cfg

from pluralign.trainers.objectives import objective_for


def test_velocity_scale_turns_an_eps_error_into_the_v_error():
    sched = DDPMScheduler(beta_schedule="linear")
    obj = objective_for(sched)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 200, 650, 999])
    noisy = obj.add_noise(x0, noise, t)
    eps_hat = noise + 0.1 * torch.randn(4, 3, 8, 8, generator=g)
    a = sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x0_hat = (noisy - (1 - a).sqrt() * eps_hat) / a.sqrt()
    v_hat = a.sqrt() * eps_hat - (1 - a).sqrt() * x0_hat  # the velocity this eps prediction implies
    v = sched.get_velocity(x0, noise, t)
    scale = obj.error_scale(t, "velocity").reshape(-1, 1, 1, 1)
    torch.testing.assert_close((eps_hat - noise) * scale, v_hat - v, rtol=1e-4, atol=1e-4)
    # the noisy steps weigh far more than in eps space (x0 errors there count ~SNR, near 0)
    assert obj.error_scale(t, "velocity")[3] > 100 * obj.error_scale(t, "velocity")[0]


def test_native_is_no_scale_and_other_spaces_are_refused_where_they_do_not_exist():
    eps = objective_for(DDPMScheduler())
    assert eps.error_scale(torch.tensor([5]), "native") is None
    assert objective_for(DDPMScheduler(prediction_type="v_prediction")).error_scale(torch.tensor([5]), "velocity") is None
    flow = objective_for(FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="flow_matching objective; use native"):
        flow.error_scale(torch.tensor([5.0]), "velocity")


@pytest.mark.slow
def test_trainer_hands_every_term_its_errors_in_velocity_space(tiny_pipeline_dir, tmp_path, monkeypatch):
    """One step in each space from the same seed: the loss receives the native tensors times 1/sqrt(alpha_bar_t),
    the null-prompt rows of the chosen half included."""
    import pluralign.trainers.trainer as trainer_mod
    from pluralign.trainers import train

    seen: dict[str, dict] = {}
    real = trainer_mod.intent_dpo_loss

    def spy(space):
        def loss(pred, ref_pred, target, **kw):
            seen[space] = {"pred": pred.detach().clone(), "ref": ref_pred.clone(), "target": target.clone(),
                           "null_pred": kw["null_pred"].detach().clone(), "null_ref": kw["null_ref"].clone()}
            return real(pred, ref_pred, target, **kw)
        return loss

    runs = {}
    for space in ("native", "velocity"):
        monkeypatch.setattr(trainer_mod, "intent_dpo_loss", spy(space))
        runs[space] = train(cfg(tmp_path / space, tiny_pipeline_dir("sd"), max_steps=1, loss_space=space,
                                sft_weight=10.0, guided_sft_scale=3.0, preserve_weight=10.0, preserve_null_weight=10.0,
                                preserve_null_rows="chosen", export_kohya=False,
                                cache_dir=str(tmp_path / "cache")))  # the second run reuses the first one's latents
    nat, vel = seen["native"], seen["velocity"]
    ratio = vel["target"] / nat["target"]  # per row: the scale, the same in every element
    per_row = ratio.reshape(ratio.shape[0], -1)
    torch.testing.assert_close(per_row, per_row[:, :1].expand_as(per_row))
    assert (per_row[:, 0] >= 1).all() and not torch.allclose(per_row[:, 0], torch.ones(per_row.shape[0]))
    shape = (-1, 1, 1, 1)
    for key in ("pred", "ref"):
        torch.testing.assert_close(vel[key], nat[key] * per_row[:, 0].reshape(shape))
    m = nat["null_pred"].shape[0]
    assert m == nat["pred"].shape[0] // 2
    for key in ("null_pred", "null_ref"):
        torch.testing.assert_close(vel[key], nat[key] * per_row[:m, 0].reshape(shape))
    assert runs["native"].metrics["loss"] != runs["velocity"].metrics["loss"]


def test_velocity_share_sits_between_the_eps_and_the_v_loss():
    sched = DDPMScheduler(beta_schedule="linear")
    obj = objective_for(sched)
    t = torch.tensor([0, 200, 650, 999])
    a = sched.alphas_cumprod[t]
    snr = a / (1 - a)
    for share in (0.0, 0.25, 1.0):
        # x0 errors count SNR * scale^2 times: SNR + share
        torch.testing.assert_close(snr * obj.error_scale(t, "velocity", share) ** 2, snr + share, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(obj.error_scale(t, "velocity", 0.0), torch.ones(4))
    with pytest.raises(ValueError, match="velocity_share 0.5 needs an eps-prediction model"):
        objective_for(DDPMScheduler(prediction_type="v_prediction")).error_scale(t, "velocity", 0.5)
