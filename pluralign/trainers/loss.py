"""Diffusion-DPO losses as pure tensor functions (Wallace et al. 2023, trl's loss names).

Inputs are per-sample mean squared denoising errors, shape ``[B]``: the policy (LoRA on) and the
frozen reference (LoRA off) on the winner ``w`` and the loser ``l`` of each pair, all computed with
the same noise and timestep. A lower error plays the role of a higher log-likelihood, so the
diffusion analogue of trl's ``logits`` (policy log-ratio minus reference log-ratio) is

    logits = -1/2 * [(m_w - m_l) - (r_w - r_l)]

and every loss below is trl's formula applied to it; ``inside = beta * logits`` is the argument of
the sigmoid in the ½β convention of DESIGN.md (beta ~ 5000 for SD1.5/SDXL):

- ``sigmoid``: ``-log σ(inside)``; with ``label_smoothing`` ε > 0 it is the conservative cDPO form
  ``-(1-ε) log σ(inside) - ε log σ(-inside)``.
- ``hinge``: ``relu(1 - inside)``.
- ``ipo``: ``(logits - 1/(2 beta))**2`` (trl's IPO on the unscaled ``logits``).
- ``robust``: ``(-(1-ε) log σ(inside) + ε log σ(-inside)) / (1 - 2ε)`` (requires ε < 0.5).

:func:`guided_sft_error` is the SFT term's error on the classifier-free-guided prediction (the
trainer's ``guided_sft_scale``). The returned loss is the batch mean. ``stats`` are detached scalars for logging; implicit accuracy
counts a tie (``inside == 0``) as 0.5, which is what a fresh adapter (policy == reference) reports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def diffusion_dpo_loss(policy_err_w: torch.Tensor, policy_err_l: torch.Tensor, ref_err_w: torch.Tensor,
                       ref_err_l: torch.Tensor, *, beta: float, loss_type: str = "sigmoid",
                       label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diffusion-DPO loss over a batch of pairs; returns ``(loss, stats)``."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type {loss_type!r} is not one of {LOSS_TYPES}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    shapes = {t.shape for t in (policy_err_w, policy_err_l, ref_err_w, ref_err_l)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"all four errors must share one shape [B], got {sorted(map(tuple, shapes))}")
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
    stats = {
        "implicit_acc": acc.mean(),
        "margin": inside_d.mean(),
        "reward_chosen": reward_w.mean(),
        "reward_rejected": reward_l.mean(),
        "policy_err_chosen": policy_err_w.detach().mean(),
        "policy_err_rejected": policy_err_l.detach().mean(),
        "ref_err_chosen": ref_err_w.mean(),
        "ref_err_rejected": ref_err_l.mean(),
    }
    return losses.mean(), stats


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every non-batch dimension, in float32: shape ``[N]``."""
    return (pred.float() - target.float()).pow(2).reshape(pred.shape[0], -1).mean(dim=1)


def guided_sft_error(pred: torch.Tensor, uncond_ref: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-sample squared error of the classifier-free-guided prediction ``u + s (pred - u)``, divided
    by ``s**2`` so its gradient in ``pred`` has the plain SFT term's scale.

    Fitting the guided prediction to the data means an adapter trained this way reproduces its
    training images when sampled at guidance ``s``; fitting the conditional prediction alone lets
    guidance multiply the adapter's change by about ``s`` (exaggerated degradations)."""
    guided = uncond_ref + scale * (pred - uncond_ref)
    return per_sample_mse(guided, target) / scale ** 2
