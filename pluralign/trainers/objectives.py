"""Training objectives: what the denoiser is asked to predict, and how noisy inputs are made.

An :class:`Objective` hides the scheduler family from the loop. The loop only calls
``sample_timesteps`` (in the units the denoiser is called with), ``add_noise`` and ``target``.
DDPM-family schedulers (DDPM/DDIM/Euler/... with ``alphas_cumprod``) give epsilon or
v-prediction; flow-matching schedulers (SD3, Flux) give the velocity ``noise - x0`` on the
straight path ``x_t = (1 - σ) x0 + σ noise``.

Diffusion-DPO needs the winner and the loser of a pair to see the *same* noise and timestep:
:func:`shared_noise` draws one noise tensor and one timestep per pair and repeats them for the
stacked ``[winners; losers]`` batch.
"""

from __future__ import annotations

import torch


class Objective:
    """Interface; subclasses bind a scheduler at construction."""

    name = "base"

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def error_scale(self, timesteps: torch.Tensor, loss_space: str, share: float = 1.0) -> torch.Tensor | None:
        """Per-sample factors ``[N]`` that turn a prediction error into an error in ``loss_space`` (``share``: see
        :class:`EpsilonObjective`), or None when the objective's own target already is that space (``native``, or a
        matching prediction type)."""
        if loss_space == "native":
            return None
        raise ValueError(f"loss_space {loss_space!r} is not available for the {self.name} objective; use native")


class _DDPMObjective(Objective):
    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)

    def sample_timesteps(self, n, generator):
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator).long()

    def add_noise(self, x0, noise, timesteps):
        return self.scheduler.add_noise(x0, noise, timesteps.to(x0.device))


class EpsilonObjective(_DDPMObjective):
    name = "epsilon"

    def target(self, x0, noise, timesteps):
        return noise

    def error_scale(self, timesteps, loss_space, share=1.0):
        """``velocity``: 1/sqrt(alpha_bar_t). The velocity ``v = sqrt(a) eps - sqrt(1-a) x0`` of a model that
        predicts eps is off by exactly ``eps_error / sqrt(a)``, so scaled errors are the errors of the
        v-prediction loss. Why it matters: measured on x0, an eps error weighs each timestep by its SNR,
        which is near 0 at the noisy steps that decide composition and global colour (SNR 0.01 at t = 650
        on a linear beta schedule against 2 at t = 200); the v loss weighs x0 errors by 1 + SNR, never
        below 1, so those steps are learnt as well.

        ``share`` c in [0, 1] weighs x0 errors by SNR + c instead, a scale of sqrt(1 + c / SNR): 1 is the v
        loss, 0 the eps loss, and values between give the noisiest steps a part of the v loss's weight."""
        if loss_space != "velocity":
            return super().error_scale(timesteps, loss_space, share)
        a = self.scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()].float()
        if share == 1.0:
            return a.rsqrt()
        return (1 + share * (1 - a) / a).sqrt()


class VPredictionObjective(_DDPMObjective):
    name = "v_prediction"

    def target(self, x0, noise, timesteps):
        return self.scheduler.get_velocity(x0, noise, timesteps.to(x0.device))

    def error_scale(self, timesteps, loss_space, share=1.0):
        if loss_space == "velocity" and share != 1.0:
            raise ValueError(f"velocity_share {share} needs an eps-prediction model; a v-prediction model's loss "
                             "already is the v loss (velocity_share 1)")
        return None if loss_space == "velocity" else super().error_scale(timesteps, loss_space, share)


FLOW_WEIGHTINGS = ("uniform", "logit_normal", "mode")


class FlowMatchingObjective(Objective):
    """Rectified-flow velocity target for ``FlowMatchEulerDiscreteScheduler`` families.

    ``weighting`` picks how σ is drawn: ``uniform``, ``logit_normal`` (SD3 paper) or ``mode``
    (drawn with ``diffusers.training_utils.compute_density_for_timestep_sampling``); the drawn
    value indexes the scheduler's (shifted) training sigmas, as diffusers' SD3/Flux training
    examples do. The denoiser receives ``timesteps = σ * num_train_timesteps``; families whose
    transformer wants σ itself (Flux) divide in their denoiser call.
    """

    name = "flow_matching"

    def __init__(self, scheduler, weighting: str = "logit_normal", logit_mean: float = 0.0,
                 logit_std: float = 1.0, mode_scale: float = 1.29):
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.weighting, self.logit_mean, self.logit_std, self.mode_scale = weighting, logit_mean, logit_std, mode_scale
        self.sigmas = scheduler.sigmas[: self.num_train_timesteps].float().clone()
        self.timesteps = scheduler.timesteps[: self.num_train_timesteps].float().clone()

    def sample_timesteps(self, n, generator):
        from diffusers.training_utils import compute_density_for_timestep_sampling

        if self.weighting not in FLOW_WEIGHTINGS:
            raise ValueError(f"unknown flow timestep weighting {self.weighting!r}; expected one of {FLOW_WEIGHTINGS}")
        u = compute_density_for_timestep_sampling(self.weighting, n, logit_mean=self.logit_mean,
                                                  logit_std=self.logit_std, mode_scale=self.mode_scale,
                                                  generator=generator)
        idx = (u * len(self.timesteps)).long().clamp(0, len(self.timesteps) - 1)
        return self.timesteps[idx]

    def _sigma(self, timesteps, like):
        sigma = (timesteps.float() / self.num_train_timesteps).to(like.device, like.dtype)
        return sigma.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0, noise, timesteps):
        s = self._sigma(timesteps, x0)
        return (1 - s) * x0 + s * noise

    def target(self, x0, noise, timesteps):
        return noise - x0


def objective_for(scheduler, prediction_type: str = "auto", **kwargs) -> Objective:
    """The objective matching ``scheduler`` (``prediction_type='auto'`` reads its config)."""
    cls_name = type(scheduler).__name__
    if "FlowMatch" in cls_name:
        if prediction_type not in ("auto", "flow_matching"):
            raise ValueError(f"{cls_name} trains with flow matching, not {prediction_type!r}")
        return FlowMatchingObjective(scheduler, **kwargs)
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"scheduler {cls_name} has neither alphas_cumprod nor flow sigmas; cannot train on it")
    kind = scheduler.config.get("prediction_type", "epsilon") if prediction_type == "auto" else prediction_type
    # Train on the DDPM forward process of the same beta schedule: sampling schedulers such as Euler
    # implement add_noise in sigma space (unscaled x0 + sigma * noise), which is not the VP training input.
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(scheduler.config)
    if kind == "epsilon":
        return EpsilonObjective(scheduler)
    if kind == "v_prediction":
        return VPredictionObjective(scheduler)
    raise ValueError(f"prediction_type {kind!r} is not supported for {cls_name} (use epsilon or v_prediction)")


def objective_from_config(scheduler, config) -> Objective:
    """:func:`objective_for` with the flow-matching options of a ``DPOTrainConfig`` (ignored by DDPM families)."""
    flow = {"weighting": config.weighting_scheme, "logit_mean": config.logit_mean, "logit_std": config.logit_std,
            "mode_scale": config.mode_scale}
    return objective_for(scheduler, config.prediction_type, **(flow if "FlowMatch" in type(scheduler).__name__ else {}))


def pair_noise(x: torch.Tensor, objective: Objective, generator: torch.Generator, *, offset: int = 0,
               total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One noise tensor and one timestep per sample of ``x``: ``(noise, timesteps)``.

    Under data parallelism ``x`` is this process's slice ``[offset, offset + B)`` of a global batch
    of ``total`` samples: the draws are made for the whole global batch from ``generator`` (seeded
    the same on every process) and sliced, so N processes with B samples each see exactly the noise
    and timesteps of one process with N*B samples.
    """
    b = x.shape[0]
    total = b if total is None else total
    if not 0 <= offset <= total - b:
        raise ValueError(f"slice [{offset}, {offset + b}) is outside a global batch of {total}")
    noise = torch.randn((total, *x.shape[1:]), generator=generator, dtype=torch.float32)[offset:offset + b]
    t = objective.sample_timesteps(total, generator)[offset:offset + b]
    return noise.to(x.device, x.dtype), t.to(x.device)


def shared_noise(x_w: torch.Tensor, x_l: torch.Tensor, objective: Objective, generator: torch.Generator, *,
                 offset: int = 0, total: int | None = None):
    """Stack ``[x_w; x_l]`` and draw one noise tensor and timestep per pair, repeated for both halves.

    ``offset``/``total``: see :func:`pair_noise`. Returns ``(x0, noise, timesteps)`` with batch size ``2B``.
    """
    noise, t = pair_noise(x_w, objective, generator, offset=offset, total=total)
    return torch.cat([x_w, x_l]), noise.repeat(2, *([1] * (noise.ndim - 1))), t.repeat(2)
