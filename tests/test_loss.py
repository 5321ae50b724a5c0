"""Diffusion-DPO loss values computed by hand for every loss_type."""

import math

import pytest
import torch

from pluralign.trainers.loss import LOSS_TYPES, diffusion_dpo_loss, guided_sft_error, per_sample_mse

# one pair: policy errors w=0.10, l=0.30; reference w=0.20, l=0.20
PW, PL, RW, RL = 0.10, 0.30, 0.20, 0.20
LOGITS = -0.5 * ((PW - PL) - (RW - RL))  # = 0.1
T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


def logsig(x):
    return -math.log1p(math.exp(-x))


def run(loss_type, beta=10.0, eps=0.0):
    return diffusion_dpo_loss(T(PW), T(PL), T(RW), T(RL), beta=beta, loss_type=loss_type, label_smoothing=eps)


def test_sigmoid_by_hand():
    loss, stats = run("sigmoid", beta=10.0)
    inside = 10.0 * LOGITS  # 1.0
    assert loss.item() == pytest.approx(-logsig(inside), abs=1e-12)
    assert loss.item() == pytest.approx(0.31326168751822286, abs=1e-12)
    assert stats["implicit_acc"].item() == 1.0
    assert stats["margin"].item() == pytest.approx(1.0)
    assert stats["reward_chosen"].item() == pytest.approx(-5 * (PW - RW))  # +0.5
    assert stats["reward_rejected"].item() == pytest.approx(-5 * (PL - RL))  # -0.5
    assert stats["policy_err_chosen"].item() == pytest.approx(PW)
    assert stats["ref_err_rejected"].item() == pytest.approx(RL)


def test_sigmoid_label_smoothing_is_cdpo():
    loss, _ = run("sigmoid", beta=10.0, eps=0.1)
    assert loss.item() == pytest.approx(-0.9 * logsig(1.0) - 0.1 * logsig(-1.0), abs=1e-12)


def test_hinge_by_hand():
    assert run("hinge", beta=10.0)[0].item() == pytest.approx(0.0)  # relu(1 - 1)
    assert run("hinge", beta=4.0)[0].item() == pytest.approx(1 - 0.4)


def test_ipo_by_hand():
    loss, _ = run("ipo", beta=10.0)
    assert loss.item() == pytest.approx((0.1 - 1 / 20) ** 2, abs=1e-12)  # 0.0025


def test_robust_by_hand():
    loss, _ = run("robust", beta=10.0, eps=0.2)
    assert loss.item() == pytest.approx((-0.8 * logsig(1.0) + 0.2 * logsig(-1.0)) / 0.6, abs=1e-12)


def test_equal_policy_and_reference_is_ln2_and_tie():
    z = T(0.3, 0.7)
    loss, stats = diffusion_dpo_loss(z, z + 0.1, z, z + 0.1, beta=5000.0)
    assert loss.item() == pytest.approx(math.log(2))
    assert stats["implicit_acc"].item() == 0.5  # ties count one half


def test_batch_mean_and_accuracy():
    loss, stats = diffusion_dpo_loss(T(0.1, 0.3), T(0.3, 0.1), T(0.2, 0.2), T(0.2, 0.2), beta=10.0)
    assert loss.item() == pytest.approx((-logsig(1.0) - logsig(-1.0)) / 2)
    assert stats["implicit_acc"].item() == 0.5


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_pushes_winner_error_down(loss_type):
    pw = T(0.25).requires_grad_()
    pl = T(0.25).requires_grad_()
    loss, _ = diffusion_dpo_loss(pw, pl, T(0.25), T(0.25), beta=10.0, loss_type=loss_type, label_smoothing=0.1 if loss_type == "robust" else 0.0)
    loss.backward()
    assert pw.grad.item() > 0 and pl.grad.item() < 0  # descent lowers m_w, raises m_l


def test_reference_gets_no_gradient_and_bad_args():
    rw = T(0.2).requires_grad_()
    loss, _ = diffusion_dpo_loss(T(0.1), T(0.3), rw, T(0.2), beta=1.0)
    assert not loss.requires_grad
    with pytest.raises(ValueError, match="loss_type"):
        diffusion_dpo_loss(T(0.1), T(0.3), T(0.2), T(0.2), beta=1.0, loss_type="kto")
    with pytest.raises(ValueError, match="shape"):
        diffusion_dpo_loss(T(0.1, 0.2), T(0.3), T(0.2), T(0.2), beta=1.0)


def test_per_sample_mse():
    a = torch.zeros(2, 4, 2, 2)
    b = torch.ones(2, 4, 2, 2)
    b[1] *= 2
    assert per_sample_mse(a, b).tolist() == [1.0, 4.0]


def test_guided_sft_error_by_hand():
    u, p, y = T(0.5, -1.0), T(1.0, 0.0), T(2.0, 1.0)  # one sample with 2 elements
    u, p, y = u[None], p[None], y[None]
    # guided = u + 3 (p - u) = (2.0, 2.0); squared error vs y = (0, 1), mean 0.5, divided by 9
    assert guided_sft_error(p, u, y, 3.0).item() == pytest.approx(0.5 / 9)
    assert torch.equal(guided_sft_error(p, u, y, 1.0), per_sample_mse(p, y))  # scale 1: the plain SFT error


def test_guided_sft_error_is_plain_mse_towards_the_shrunk_target():
    """Zero at p* = u + (y - u) / s, and its gradient equals plain MSE's towards p* (same scale)."""
    g = torch.Generator().manual_seed(0)
    u, y = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    s = 6.0
    p_star = u + (y - u) / s
    assert guided_sft_error(p_star, u, y, s).abs().max().item() < 1e-24
    p = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    (grad_guided,) = torch.autograd.grad(guided_sft_error(p, u, y, s).sum(), p)
    (grad_plain,) = torch.autograd.grad(per_sample_mse(p, p_star).sum(), p)
    assert torch.allclose(grad_guided, grad_plain)

