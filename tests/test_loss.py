"""Diffusion-DPO loss values computed by hand for every loss_type."""

import math

import pytest
import torch

from pluralign.trainers.loss import (
    LOSS_TYPES,
    IntentLossConfig,
    diffusion_dpo_loss,
    guided_sft_error,
    intent_dpo_loss,
    per_sample_mse,
    sft_loss,
)

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



# --- intent_dpo_loss: the whole objective, term by term, on plain tensors -------------------------


def _batch(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(2 * b, 2, 2, 2, generator=g)
    ref = pred + 0.1 * torch.randn(2 * b, 2, 2, 2, generator=g)
    target = torch.randn(2 * b, 2, 2, 2, generator=g)
    null_pred = torch.randn(2 * b, 2, 2, 2, generator=g)
    null_ref = null_pred + 0.1 * torch.randn(2 * b, 2, 2, 2, generator=g)
    anti = torch.tensor([True, False, False][:b])
    ordinary = ~anti
    return pred, ref, target, null_pred, null_ref, anti, ordinary


def test_intent_loss_with_no_extra_terms_is_diffusion_dpo():
    pred, ref, target, _, _, anti, ordinary = _batch()
    loss, stats = intent_dpo_loss(pred, ref, target, anti=anti, ordinary=ordinary,
                                  terms=IntentLossConfig(beta=100.0, loss_type="hinge"))
    e, r = per_sample_mse(pred, target), per_sample_mse(ref, target)
    want, _ = diffusion_dpo_loss(e[:3], e[3:], r[:3], r[3:], beta=100.0, loss_type="hinge")
    assert torch.equal(loss, want)
    assert [k for k in stats if k.startswith("loss/")] == ["loss/dpo"]


def test_sft_term_is_the_winners_error_and_guided_on_anti_rows_only():
    pred, ref, target, null_pred, null_ref, anti, ordinary = _batch()
    base = IntentLossConfig(beta=100.0)
    plain = IntentLossConfig(beta=100.0, sft_weight=7.0)
    guided = IntentLossConfig(beta=100.0, sft_weight=7.0, guided_sft_scale=3.0)
    kw = dict(anti=anti, ordinary=ordinary, null_pred=null_pred, null_ref=null_ref)
    l0, _ = intent_dpo_loss(pred, ref, target, terms=base, **kw)
    l1, s1 = intent_dpo_loss(pred, ref, target, terms=plain, **kw)
    winners = per_sample_mse(pred[:3], target[:3])
    assert torch.allclose(s1["loss/sft"], 7.0 * winners.mean())
    assert torch.allclose(l1, l0 + 7.0 * winners.mean())
    _, s2 = intent_dpo_loss(pred, ref, target, terms=guided, **kw)
    g = guided_sft_error(pred[:1], null_ref[:1], target[:1], 3.0)
    want = 7.0 * torch.cat([g, winners[1:]]).mean()
    assert torch.allclose(s2["loss/sft"], want)
    assert not torch.allclose(s2["loss/sft"], s1["loss/sft"])


def test_guided_sft_on_every_row_fits_each_winners_guided_prediction():
    """A universal preference (every prompt keeps the clean image) uses the guided term on every row, since guidance
    multiplies whatever conditional change is left under any prompt."""
    pred, ref, target, null_pred, null_ref, anti, ordinary = _batch()
    kw = dict(anti=anti, ordinary=ordinary, null_pred=null_pred, null_ref=null_ref)
    every = IntentLossConfig(beta=100.0, sft_weight=7.0, guided_sft_scale=3.0, guided_sft_rows="all")
    _, s = intent_dpo_loss(pred, ref, target, terms=every, **kw)
    want = 7.0 * guided_sft_error(pred[:3], null_ref[:3], target[:3], 3.0).mean()
    assert torch.allclose(s["loss/sft"], want)
    _, s_anti = intent_dpo_loss(pred, ref, target, terms=IntentLossConfig(beta=100.0, sft_weight=7.0,
                                                                           guided_sft_scale=3.0), **kw)
    assert not torch.allclose(s["loss/sft"], s_anti["loss/sft"])  # rows 1 and 2 are not anti


def test_an_unknown_guided_sft_rows_value_is_refused():
    with pytest.raises(ValueError, match="guided_sft_rows 'All'"):
        IntentLossConfig(beta=1.0, guided_sft_rows="All")


def test_preserve_term_counts_ordinary_winners_and_losers_over_the_whole_batch():
    pred, ref, target, _, _, anti, ordinary = _batch()
    loss, stats = intent_dpo_loss(pred, ref, target, anti=anti, ordinary=ordinary,
                                  terms=IntentLossConfig(beta=100.0, preserve_weight=5.0))
    drift = per_sample_mse(pred, ref)
    keep = torch.tensor([0.0, 1, 1, 0, 1, 1])  # row 0 is anti: its winner (0) and loser (3) do not count
    want = (drift * keep).sum() / 6
    assert torch.allclose(stats["preserve_mse"], want)  # logged as it enters the loss (the old log divided by 4)
    assert torch.allclose(stats["loss/preserve"], 5.0 * want)
    # a row the term does not apply to gets no gradient from it
    p = pred.clone().requires_grad_(True)
    kw = dict(anti=anti, ordinary=ordinary)
    with_term, _ = intent_dpo_loss(p, ref, target, terms=IntentLossConfig(beta=100.0, preserve_weight=5.0), **kw)
    without, _ = intent_dpo_loss(p, ref, target, terms=IntentLossConfig(beta=100.0), **kw)
    (g,) = torch.autograd.grad(with_term - without, p)
    assert g[0].abs().sum() == 0 and g[3].abs().sum() == 0 and g[1].abs().sum() > 0


def test_preserve_null_term_is_the_null_prompt_drift():
    pred, ref, target, null_pred, null_ref, anti, ordinary = _batch()
    _, stats = intent_dpo_loss(pred, ref, target, anti=anti, ordinary=ordinary, null_pred=null_pred,
                               null_ref=null_ref, terms=IntentLossConfig(beta=100.0, preserve_null_weight=2.0))
    want = per_sample_mse(null_pred, null_ref).mean()
    assert torch.allclose(stats["preserve_null_mse"], want)
    assert torch.allclose(stats["loss/preserve_null"], 2.0 * want)


def test_logged_terms_sum_to_the_loss_and_reference_gets_no_gradient():
    pred, ref, target, null_pred, null_ref, anti, ordinary = _batch()
    terms = IntentLossConfig(beta=100.0, sft_weight=3.0, guided_sft_scale=2.0, preserve_weight=4.0,
                             preserve_null_weight=5.0)
    ref, null_ref = ref.clone().requires_grad_(True), null_ref.clone().requires_grad_(True)
    pred = pred.clone().requires_grad_(True)
    loss, stats = intent_dpo_loss(pred, ref, target, anti=anti, ordinary=ordinary, null_pred=null_pred,
                                  null_ref=null_ref, terms=terms)
    parts = sum(v for k, v in stats.items() if k.startswith("loss/"))
    assert torch.allclose(parts, loss.detach())
    assert set(k for k in stats if k.startswith("loss/")) == {"loss/dpo", "loss/sft", "loss/preserve",
                                                              "loss/preserve_null"}
    loss.backward()
    assert ref.grad is None and null_ref.grad is None and pred.grad is not None


def test_forward_passes_follow_the_weights():
    assert not IntentLossConfig(beta=1.0, guided_sft_scale=3.0).needs_null_reference  # no SFT term to reshape
    assert IntentLossConfig(beta=1.0, sft_weight=1.0, guided_sft_scale=3.0).needs_null_reference
    assert not IntentLossConfig(beta=1.0, sft_weight=1.0, guided_sft_scale=1.0).needs_null_reference
    c = IntentLossConfig(beta=1.0, preserve_null_weight=1.0)
    assert c.needs_null_reference and c.needs_null_policy


def test_intent_loss_names_what_is_missing_or_misshapen():
    pred, ref, target, null_pred, null_ref, anti, ordinary = _batch()
    with pytest.raises(ValueError, match="null_ref"):
        intent_dpo_loss(pred, ref, target, anti=anti, ordinary=ordinary,
                        terms=IntentLossConfig(beta=1.0, preserve_null_weight=1.0))
    with pytest.raises(ValueError, match=r"\[B\] = \[3\]"):
        intent_dpo_loss(pred, ref, target, anti=anti[:2], ordinary=ordinary, terms=IntentLossConfig(beta=1.0))
    with pytest.raises(ValueError, match="one shape"):
        intent_dpo_loss(pred, ref[:4], target, anti=anti, ordinary=ordinary, terms=IntentLossConfig(beta=1.0))


def test_intent_loss_config_reads_the_train_config():
    from pluralign.trainers import DPOTrainConfig

    c = IntentLossConfig.from_config(DPOTrainConfig(beta=42.0, sft_weight=3.0, preserve_weight=2.0))
    assert (c.beta, c.sft_weight, c.preserve_weight, c.loss_type) == (42.0, 3.0, 2.0, "sigmoid")


def test_sft_loss_is_the_mean_error():
    pred, _, target, *_ = _batch()
    loss, stats = sft_loss(pred, target)
    assert torch.allclose(loss, per_sample_mse(pred, target).mean()) and stats["loss/sft"] == loss


# ---- split_stats: accuracy and DPO loss per kind and category, apart from the loss -------------

def _old_diffusion_dpo_loss(policy_err_w, policy_err_l, ref_err_w, ref_err_l, *, beta, loss_type="sigmoid",
                            label_smoothing=0.0):
    """diffusion_dpo_loss as it was before dpo_pair_losses was split out of it (commit 6a5d7f3), verbatim."""
    import torch.nn.functional as F

    ref_err_w, ref_err_l = ref_err_w.detach(), ref_err_l.detach()
    logits = -0.5 * ((policy_err_w - policy_err_l) - (ref_err_w - ref_err_l))
    inside = beta * logits
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(inside) - eps * F.logsigmoid(-inside)
    elif loss_type == "hinge":
        losses = torch.relu(1 - inside)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:  # robust
        losses = (-(1 - eps) * F.logsigmoid(inside) + eps * F.logsigmoid(-inside)) / (1 - 2 * eps)
    reward_w = (-0.5 * beta * (policy_err_w - ref_err_w)).detach()
    reward_l = (-0.5 * beta * (policy_err_l - ref_err_l)).detach()
    inside_d = inside.detach()
    acc = (inside_d > 0).float() + 0.5 * (inside_d == 0).float()
    stats = {"implicit_acc": acc.mean(), "margin": inside_d.mean(), "reward_chosen": reward_w.mean(),
             "reward_rejected": reward_l.mean(), "policy_err_chosen": policy_err_w.detach().mean(),
             "policy_err_rejected": policy_err_l.detach().mean(), "ref_err_chosen": ref_err_w.mean(),
             "ref_err_rejected": ref_err_l.mean()}
    return losses.mean(), stats


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpo_loss_is_bit_identical_to_before_the_split(loss_type, dtype):
    g = torch.Generator().manual_seed(3)
    for eps in (0.0, 0.1):
        errs = [torch.rand(16, generator=g, dtype=torch.float64).to(dtype) for _ in range(4)]
        new_in = [e.clone().requires_grad_(True) for e in errs[:2]] + errs[2:]
        old_in = [e.clone().requires_grad_(True) for e in errs[:2]] + errs[2:]
        new, new_stats = diffusion_dpo_loss(*new_in, beta=500.0, loss_type=loss_type, label_smoothing=eps)
        old, old_stats = _old_diffusion_dpo_loss(*old_in, beta=500.0, loss_type=loss_type, label_smoothing=eps)
        assert torch.equal(new, old)
        assert new_stats.keys() == old_stats.keys()
        assert all(torch.equal(new_stats[k], old_stats[k]) for k in new_stats)
        new.backward()
        old.backward()
        assert torch.equal(new_in[0].grad, old_in[0].grad) and torch.equal(new_in[1].grad, old_in[1].grad)


KINDS4 = ["anti", "mirror", "general", "anti"]
CATS4 = ["clarity_and_focus", "clarity_and_focus", "", "color_and_tone"]


def test_split_stats_groups_the_pairs_the_loss_averages():
    from pluralign.trainers.loss import split_stats

    pred, ref, target, _, _, _, _ = _batch(b=4, seed=5)
    terms = IntentLossConfig(beta=100.0, sft_weight=2.0)
    loss, stats = intent_dpo_loss(pred, ref, target, anti=torch.tensor([True, False, False, True]),
                                  ordinary=torch.tensor([False, True, True, False]), terms=terms)
    split = split_stats(pred, ref, target, kinds=KINDS4, categories=CATS4, terms=terms)
    e, r = per_sample_mse(pred, target), per_sample_mse(ref, target)
    for group, rows in {"anti": [0, 3], "mirror": [1], "general": [2], "category/clarity_and_focus": [0, 1],
                        "category/color_and_tone": [3]}.items():
        rows_t = torch.tensor(rows)
        want_loss, want = diffusion_dpo_loss(e[:4][rows_t], e[4:][rows_t], r[:4][rows_t], r[4:][rows_t], beta=100.0)
        assert split[f"{group}/n"] == len(rows)
        assert split[f"{group}/acc"] == pytest.approx(want["implicit_acc"].item() * len(rows), abs=1e-12)
        assert split[f"{group}/dpo_loss"] == pytest.approx(want_loss.item() * len(rows), rel=1e-6)
    assert not any(k.startswith("category//") for k in split)  # general rows have no category group
    # the kinds cover the batch: their sums give back the batch means intent_dpo_loss logs
    assert sum(split[f"{k}/acc"] for k in ("anti", "mirror", "general")) / 4 == stats["implicit_acc"].item()
    assert sum(split[f"{k}/dpo_loss"] for k in ("anti", "mirror", "general")) / 4 == pytest.approx(
        stats["loss/dpo"].item(), rel=1e-6)


def test_split_stats_leaves_the_loss_and_gradient_untouched():
    from pluralign.trainers.loss import split_stats

    pred, ref, target, _, _, anti, ordinary = _batch(seed=7)
    terms = IntentLossConfig(beta=100.0, sft_weight=2.0, preserve_weight=3.0)

    def loss_and_grad(with_split):
        p = pred.clone().requires_grad_(True)
        loss, stats = intent_dpo_loss(p, ref, target, anti=anti, ordinary=ordinary, terms=terms)
        if with_split:
            split_stats(p, ref, target, kinds=["anti", "mirror", "general"], categories=["c", "c", ""], terms=terms)
        (g,) = torch.autograd.grad(loss, p)
        return loss, stats, g

    (l0, s0, g0), (l1, s1, g1) = loss_and_grad(False), loss_and_grad(True)
    assert torch.equal(l0, l1) and torch.equal(g0, g1) and all(torch.equal(s0[k], s1[k]) for k in s0)


def test_merge_split_stats_pools_pairs_over_micro_batches():
    from pluralign.trainers.loss import merge_split_stats

    # micro-batch 1 holds one anti pair (right), micro-batch 2 three anti pairs (one right, one tie) and a mirror
    parts = [{"anti/n": 1, "anti/acc": 1.0, "anti/dpo_loss": 0.5},
             {"anti/n": 3, "anti/acc": 1.5, "anti/dpo_loss": 2.1, "mirror/n": 1, "mirror/acc": 0.0,
              "mirror/dpo_loss": 0.9}]
    out = merge_split_stats(parts)
    assert out["acc/anti"] == pytest.approx(2.5 / 4)  # per pair; the mean of the micro-batch means would say 0.75
    assert out["dpo_loss/anti"] == pytest.approx(2.6 / 4) and out["pairs/anti"] == 4
    assert out["acc/mirror"] == 0.0 and out["pairs/mirror"] == 1
    assert not any("general" in k for k in out)  # not measured in this step: absent, not 0
    assert merge_split_stats([]) == {}


def test_split_stats_needs_a_kind_and_category_per_pair():
    from pluralign.trainers.loss import split_stats

    pred, ref, target, *_ = _batch()
    with pytest.raises(ValueError, match="3 pairs"):
        split_stats(pred, ref, target, kinds=["anti"], categories=["c"], terms=IntentLossConfig(beta=1.0))
