"""Diffusion-DPO losses as pure tensor functions (Wallace et al. 2023, trl's loss names).

Inputs are per-sample mean squared denoising errors, shape ``[B]``: the policy (LoRA on) and the
frozen reference (LoRA off) on the winner ``w`` and the loser ``l`` of each pair, all computed with
the same noise and timestep. A lower error plays the role of a higher log-likelihood, so the
diffusion analogue of trl's ``logits`` (policy log-ratio minus reference log-ratio) is

    logits = -1/2 * [(m_w - m_l) - (r_w - r_l)]

and every loss below is trl's formula applied to it; ``inside = beta * logits`` is the argument of
the sigmoid. The ½ in ``logits`` is Wallace et al.'s convention, under which beta ~ 5000 suits
SD1.5/SDXL (diffusers' Diffusion-DPO example writes the same objective without the ½, with beta 2500):

- ``sigmoid``: ``-log σ(inside)``; with ``label_smoothing`` ε > 0 it is the conservative cDPO form
  ``-(1-ε) log σ(inside) - ε log σ(-inside)``.
- ``hinge``: ``relu(1 - inside)``.
- ``ipo``: ``(logits - 1/(2 beta))**2`` (trl's IPO on the unscaled ``logits``).
- ``robust``: ``(-(1-ε) log σ(inside) + ε log σ(-inside)) / (1 - 2ε)`` (requires ε < 0.5).

:func:`diffusion_dpo_loss` returns the batch mean and detached ``stats`` for logging; implicit
accuracy counts a tie (``inside == 0``) as 0.5, which is what a fresh adapter (policy == reference)
reports. :func:`intent_dpo_loss` is the whole objective pluralign trains: the DPO term plus the
SFT and preservation terms that make it intent-conditioned, each logged as ``loss/<name>``.
:func:`split_stats` and :func:`merge_split_stats` split its accuracy and DPO loss by row kind and
category, apart from the loss (which they leave bit-identical).
:func:`sft_loss` is the plain denoising objective of the SFT baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def diffusion_dpo_loss(policy_err_w: torch.Tensor, policy_err_l: torch.Tensor, ref_err_w: torch.Tensor,
                       ref_err_l: torch.Tensor, *, beta: float, loss_type: str = "sigmoid",
                       label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diffusion-DPO loss over a batch of pairs; returns ``(loss, stats)``."""
    losses, inside = dpo_pair_losses(policy_err_w, policy_err_l, ref_err_w, ref_err_l, beta=beta, loss_type=loss_type,
                                     label_smoothing=label_smoothing)
    ref_err_w, ref_err_l = ref_err_w.detach(), ref_err_l.detach()
    reward_w = (-0.5 * beta * (policy_err_w - ref_err_w)).detach()
    reward_l = (-0.5 * beta * (policy_err_l - ref_err_l)).detach()
    inside_d = inside.detach()
    stats = {
        "implicit_acc": implicit_accuracy(inside_d).mean(),
        "margin": inside_d.mean(),
        "reward_chosen": reward_w.mean(),
        "reward_rejected": reward_l.mean(),
        "policy_err_chosen": policy_err_w.detach().mean(),
        "policy_err_rejected": policy_err_l.detach().mean(),
        "ref_err_chosen": ref_err_w.mean(),
        "ref_err_rejected": ref_err_l.mean(),
    }
    return losses.mean(), stats


def implicit_accuracy(inside: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 where the policy prefers the winner more than the reference does, 0.5 on a tie."""
    return (inside > 0).float() + 0.5 * (inside == 0).float()


def dpo_pair_losses(policy_err_w: torch.Tensor, policy_err_l: torch.Tensor, ref_err_w: torch.Tensor,
                    ref_err_l: torch.Tensor, *, beta: float, loss_type: str = "sigmoid",
                    label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair Diffusion-DPO losses ``[B]`` and ``inside`` (the sigmoid's argument, ``beta * logits``):
    what :func:`diffusion_dpo_loss` averages, and what :func:`split_stats` groups."""
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
    return losses, inside


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


GUIDED_SFT_ROWS = ("anti", "all")  # the rows the guided SFT term applies to (IntentLossConfig.guided_sft_rows)


@dataclass(frozen=True)
class IntentLossConfig:
    """The weights of the intent-DPO objective (the fields of the same names in ``DPOTrainConfig``).

    Every term but ``dpo`` is off at weight 0, which makes the objective plain Diffusion-DPO.
    """

    beta: float
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    sft_weight: float = 0.0
    guided_sft_scale: float = 0.0
    guided_sft_rows: str = "anti"
    preserve_weight: float = 0.0
    preserve_null_weight: float = 0.0

    def __post_init__(self):
        if self.guided_sft_rows not in GUIDED_SFT_ROWS:
            raise ValueError(f"guided_sft_rows {self.guided_sft_rows!r}: expected one of {GUIDED_SFT_ROWS}")

    @classmethod
    def from_config(cls, config) -> IntentLossConfig:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def guided_sft(self) -> bool:
        """The SFT term fits the guided prediction on anti rows, or on every row with ``guided_sft_rows`` all
        (scale 1 is the plain term)."""
        return bool(self.sft_weight) and self.guided_sft_scale > 1

    @property
    def needs_null_reference(self) -> bool:
        """Whether a step must run the frozen reference under the null prompt."""
        return self.guided_sft or bool(self.preserve_null_weight)

    @property
    def needs_null_policy(self) -> bool:
        """Whether a step must also run the policy under the null prompt (a forward with gradients)."""
        return bool(self.preserve_null_weight)


def intent_dpo_loss(pred: torch.Tensor, ref_pred: torch.Tensor, target: torch.Tensor, *, anti: torch.Tensor,
                    ordinary: torch.Tensor, terms: IntentLossConfig, null_pred: torch.Tensor | None = None,
                    null_ref: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The intent-conditioned Diffusion-DPO objective of one batch; returns ``(loss, stats)``.

    ``pred``, ``ref_pred`` and ``target`` are the policy's and the frozen reference's predictions
    and the training target for the stacked ``[winners; losers]`` batch (``2B`` rows, same noise and
    timestep for a pair). ``anti`` and ``ordinary`` are ``[B]`` masks of the pairs' kinds: ``anti``
    rows carry the anti-aesthetic request, ``ordinary`` rows (``mirror`` and ``general``) an
    ordinary prompt. ``null_pred``/``null_ref`` are the two networks' predictions under the null
    prompt on the same noisy latents, needed as :class:`IntentLossConfig` says.

    The loss is the sum of the terms below, each a batch mean in which a row the term does not
    apply to counts as 0, so a row's gradient does not depend on which other rows share its batch:

    - ``dpo``: :func:`diffusion_dpo_loss` on the per-pair errors;
    - ``sft``: ``sft_weight`` × the winner's denoising error, which keeps the policy on the data
      (DPO alone only moves the winner relative to the loser); on ``anti`` rows (every row with
      ``guided_sft_rows`` all), with ``guided_sft_scale`` > 1, the error of the guided prediction
      (:func:`guided_sft_error`);
    - ``preserve``: ``preserve_weight`` × the policy-reference drift on the ordinary rows (winners
      and losers), which keeps ordinary prompts where the reference had them;
    - ``preserve_null``: ``preserve_null_weight`` × the drift under the null prompt, the branch
      classifier-free guidance extrapolates from, so a drift there moves every prompt's samples.

    ``stats`` holds each weighted term as ``loss/<name>`` (they sum to the loss), the unweighted
    drifts ``preserve_mse``/``preserve_null_mse`` in the same normalisation, and the DPO health
    statistics of :func:`diffusion_dpo_loss`.
    """
    b = pred.shape[0] // 2
    if pred.shape[0] != 2 * b or ref_pred.shape != pred.shape or target.shape != pred.shape:
        raise ValueError(f"pred, ref_pred and target must share one shape [2B, ...], got {tuple(pred.shape)}, "
                         f"{tuple(ref_pred.shape)}, {tuple(target.shape)}")
    if anti.shape != (b,) or ordinary.shape != (b,):
        raise ValueError(f"anti and ordinary must be [B] = [{b}] masks, got {tuple(anti.shape)}, {tuple(ordinary.shape)}")
    if terms.needs_null_reference and null_ref is None:
        raise ValueError("guided_sft_scale > 1 and preserve_null_weight need null_ref, the reference's null-prompt "
                         "prediction")
    if terms.needs_null_policy and null_pred is None:
        raise ValueError("preserve_null_weight needs null_pred, the policy's null-prompt prediction")
    err = per_sample_mse(pred, target)
    ref = per_sample_mse(ref_pred.detach(), target)
    loss, stats = diffusion_dpo_loss(err[:b], err[b:], ref[:b], ref[b:], beta=terms.beta, loss_type=terms.loss_type,
                                     label_smoothing=terms.label_smoothing)
    parts = {"dpo": loss}
    if terms.sft_weight:
        sft = err[:b]
        if terms.guided_sft:
            guided = guided_sft_error(pred[:b], null_ref[:b].detach(), target[:b], terms.guided_sft_scale)
            sft = guided if terms.guided_sft_rows == "all" else torch.where(anti.to(sft.device), guided, sft)
        parts["sft"] = terms.sft_weight * sft.mean()
    if terms.preserve_weight:
        keep = ordinary.to(pred.device).repeat(2).float()
        preserve = (per_sample_mse(pred, ref_pred.detach()) * keep).sum() / keep.numel()
        stats["preserve_mse"] = preserve.detach()
        parts["preserve"] = terms.preserve_weight * preserve
    if terms.preserve_null_weight:
        null_drift = per_sample_mse(null_pred, null_ref.detach()).mean()
        stats["preserve_null_mse"] = null_drift.detach()
        parts["preserve_null"] = terms.preserve_null_weight * null_drift
    total = parts.pop("dpo")
    stats["loss/dpo"] = total.detach()
    for name, value in parts.items():
        total = total + value
        stats[f"loss/{name}"] = value.detach()
    return total, stats


KINDS = ("anti", "mirror", "general")


@torch.no_grad()
def split_stats(pred: torch.Tensor, ref_pred: torch.Tensor, target: torch.Tensor, *, kinds: Sequence[str],
                categories: Sequence[str], terms: IntentLossConfig) -> dict[str, float]:
    """The DPO health of one micro-batch split by row kind and by category: sums, not means.

    :func:`intent_dpo_loss` averages over the batch, which mixes anti, mirror and general rows (an
    adapter can fail its anti rows while the mean looks healthy). This takes the same inputs plus
    each pair's ``kind`` and ``category`` (``[B]`` lists) and returns, for every group present, its
    pair count and the *sums* of implicit accuracy and per-pair DPO loss, keyed ``<group>/n``,
    ``<group>/acc``, ``<group>/dpo_loss``; groups are ``anti``, ``mirror``, ``general`` and
    ``category/<name>`` (rows with a category: anti and mirror). Sums add up over micro-batches and
    processes; :func:`merge_split_stats` turns them into means. It runs apart from the loss, under
    ``no_grad``, so the loss and its gradient are untouched; the per-pair values are the ones
    :func:`diffusion_dpo_loss` averages (:func:`dpo_pair_losses`).
    """
    b = pred.shape[0] // 2
    if len(kinds) != b or len(categories) != b:
        raise ValueError(f"kinds and categories must name the batch's {b} pairs, got {len(kinds)} and {len(categories)}")
    err = per_sample_mse(pred, target)
    ref = per_sample_mse(ref_pred, target)
    losses, inside = dpo_pair_losses(err[:b], err[b:], ref[:b], ref[b:], beta=terms.beta, loss_type=terms.loss_type,
                                     label_smoothing=terms.label_smoothing)
    acc, losses = implicit_accuracy(inside).cpu().tolist(), losses.float().cpu().tolist()  # one transfer each
    out: dict[str, float] = {}
    for i, (kind, category) in enumerate(zip(kinds, categories)):
        for group in (kind, f"category/{category}" if category else None):
            if group is None:
                continue
            out[f"{group}/n"] = out.get(f"{group}/n", 0) + 1
            out[f"{group}/acc"] = out.get(f"{group}/acc", 0.0) + acc[i]
            out[f"{group}/dpo_loss"] = out.get(f"{group}/dpo_loss", 0.0) + losses[i]
    return out


def merge_split_stats(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means of :func:`split_stats` sums over ``parts`` (the micro-batches of one optimizer step, or
    of several steps): ``acc/<group>`` and ``dpo_loss/<group>`` averaged over every pair of that
    group in ``parts``, and ``pairs/<group>``, how many there were. A group no part holds is left
    out (no 0 or NaN stands in for "not measured"); weight means across steps by ``pairs/<group>``."""
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    out = {}
    for key in sorted(k for k in total if k.endswith("/n")):
        group, n = key[:-2], total[key]
        if n:
            out[f"acc/{group}"] = total[f"{group}/acc"] / n
            out[f"dpo_loss/{group}"] = total[f"{group}/dpo_loss"] / n
            out[f"pairs/{group}"] = n
    return out


def sft_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The plain denoising loss on the chosen images (``method: sft``); returns ``(loss, stats)``."""
    loss = per_sample_mse(pred, target).mean()
    return loss, {"loss/sft": loss.detach(), "policy_err_chosen": loss.detach()}
