"""Learning-rate schedules: diffusers' by name, plus warmup-stable-decay.

Why warmup-stable-decay: at a constant rate the last iterate carries the noise of its last steps, and an adapter's
per-attribute behaviour can then depend on where that noise left it. Annealing over the whole run (cosine) takes
rate from the steps that do the learning; an average of the last iterates lags what they taught. WSD keeps the full
rate until the last ``decay_steps`` and then lowers it linearly to zero, so the run ends settled at the point its
full-rate steps reached.
"""

from __future__ import annotations

from torch.optim.lr_scheduler import LambdaLR

WSD = "warmup_stable_decay"


def wsd_factor(step: int, warmup: int, total: int, decay: int) -> float:
    """The rate's multiplier at optimizer step ``step`` (0-based: the rate of the step about to be taken)."""
    if step < warmup:
        return (step + 1) / warmup
    start = total - decay
    if step < start:
        return 1.0
    return max(0.0, (total - step) / decay)


def make_scheduler(name: str, optimizer, *, warmup_steps: int, total_steps: int, decay_steps: int = 0):
    """The scheduler ``name`` over ``total_steps`` optimizer steps (``decay_steps``: WSD's annealed tail)."""
    if name != WSD:
        from diffusers.optimization import get_scheduler

        return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    if not 0 < decay_steps <= total_steps - warmup_steps:
        raise ValueError(f"lr_scheduler {WSD} needs 0 < lr_decay_steps <= max_steps - lr_warmup_steps; got "
                         f"lr_decay_steps {decay_steps}, max_steps - lr_warmup_steps {total_steps - warmup_steps}. "
                         "Set lr_decay_steps to the optimizer steps the rate should fall over (e.g. a fifth of max_steps).")
    return LambdaLR(optimizer, lambda step: wsd_factor(step, warmup_steps, total_steps, decay_steps))
