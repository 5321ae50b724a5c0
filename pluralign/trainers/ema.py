"""An exponential moving average (EMA) of trainable weights: the LoRA adapter's, or a whole model's.

With a constant learning rate the last iterate of a short preference run still jitters from step
to step, and which way it happens to point at the end is largely the training seed's doing. The
average of the last few hundred iterates is the usual remedy in diffusion fine-tuning (diffusers'
``EMAModel``); here it covers only the adapter's parameters, so it costs one extra copy of the
LoRA weights, not of the model. The trainer updates it after every optimizer step, saves it in
every checkpoint and exports it instead of the last iterate. The toy world's base model, trained
from scratch, averages all of its weights with the same class.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch


def ema_decay_at(step: int, decay: float) -> float:
    """Decay used for the update after optimizer step ``step`` (1-based).

    Warmed up as ``(1 + step) / (10 + step)``, capped at ``decay``, so that the zero-initialised
    adapter of the first steps does not dominate a short run's average.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


def steps_to_reach(decay: float) -> int:
    """The first optimizer step at which the warm-up ``(1 + step) / (10 + step)`` reaches ``decay``."""
    return max(1, math.ceil((10.0 * decay - 1.0) / (1.0 - decay) - 1e-9))


def warmup_note(decay: float, max_steps: int) -> str | None:
    """What a run of ``max_steps`` steps really averages when the warm-up never reaches ``decay`` (None when it
    does). The warm-up keeps a short run's average at about its last ``step / 9`` steps whatever the decay asks,
    so two decays above the last step's warm-up value train the same adapter."""
    reach = steps_to_reach(decay)
    if max_steps >= reach:
        return None
    end = ema_decay_at(max_steps, decay)
    return (f"ema_decay {decay:g} is reached at step {reach}, after max_steps {max_steps}: the average's decay warms up "
            f"as (1+step)/(10+step) and ends at {end:.4f}, an average of about the last {1 / (1 - end):.0f} steps")


class WeightEMA:
    """Shadow copies (float32) of ``params``, updated in place by :meth:`update`."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = [p.detach().float().clone() for p in params]

    @torch.no_grad()
    def update(self, params: list[torch.nn.Parameter], step: int) -> None:
        d = ema_decay_at(step, self.decay)
        # shadow += (1 - d) * (param - shadow), for every tensor in one call
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self, params: list[torch.nn.Parameter]) -> None:
        torch._foreach_copy_([p.data for p in params], [s.to(device=p.device, dtype=p.dtype)
                                                         for s, p in zip(self.shadow, params)])

    @contextmanager
    def applied(self, params: list[torch.nn.Parameter]):
        """Use the average inside the block (validation images), then restore the live weights."""
        live = [p.detach().clone() for p in params]
        self.copy_to(params)
        try:
            yield
        finally:
            with torch.no_grad():
                for keep, p in zip(live, params):
                    p.copy_(keep)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"ema.{i}": s.detach().cpu().contiguous() for i, s in enumerate(self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len(state) != len(self.shadow):
            raise ValueError(f"checkpoint holds {len(state)} EMA tensors, the adapter has {len(self.shadow)} "
                             "parameters: was it saved with another rank or target_modules?")
        for i, s in enumerate(self.shadow):
            s.copy_(state[f"ema.{i}"].to(s.device))
