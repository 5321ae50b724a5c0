"""Learning-rate schedules: diffusers' by name, plus warmup-stable-decay.

Why warmup-stable-decay: at a constant rate the last iterate carries the noise of its last steps, and an adapter's
per-attribute behaviour can then depend on where that noise left it. Annealing over the whole run (cosine) takes
rate from the steps that do the learning; an average of the last iterates lags what they taught. WSD keeps the full
rate until the last ``decay_steps`` and then lowers it linearly toward zero, so the run ends settled at the point its
full-rate steps reached. The tail can be given as a share of the run (``tail_steps``), so a recipe tuned at one length
still fits a shorter smoke run or a longer one without a second override.
"""

from __future__ import annotations

import math
from fractions import Fraction

from torch.optim.lr_scheduler import LambdaLR

WSD = "warmup_stable_decay"
# schedules whose rate does not depend on max_steps: a resume may change max_steps under them
STEP_FREE = ("constant", "constant_with_warmup")


def wsd_factor(step: int, warmup: int, total: int, decay: int) -> float:
    """The rate's multiplier at optimizer step ``step`` (0-based: the rate of the step about to be taken): warmup
    over the first ``warmup`` steps, 1, then ``D/(D+1) ... 1/(D+1)`` over the last ``D = decay`` steps, so every one
    of them runs lower than the one before and the line would reach zero one step after the last."""
    if step < warmup:
        return (step + 1) / warmup
    start = total - decay
    if step < start:
        return 1.0
    return max(0.0, (total - step) / (decay + 1))


def tail_steps(decay_steps: int, decay_share: float, total_steps: int) -> int:
    """WSD's tail in optimizer steps: ``decay_steps`` as given, or ``decay_share`` of ``total_steps`` rounded (halves
    up; at least 1), so the tail scales with the run. Giving both is refused: which one wins would be a silent choice."""
    if decay_steps and decay_share:
        raise ValueError(f"lr_decay_steps {decay_steps} and lr_decay_share {decay_share} are both set; give the tail "
                         "one way: as steps (--lr_decay_share 0 --lr_decay_steps N) or as a share of max_steps "
                         "(--lr_decay_steps 0 --lr_decay_share S)")
    if decay_share:  # as the decimal written, halves rounded up: 0.25 of 10 steps is 3
        return max(1, math.floor(Fraction(str(decay_share)) * total_steps + Fraction(1, 2)))
    return decay_steps


def check_schedule(name: str, warmup_steps: int, total_steps: int, decay_steps: int, decay_share: float = 0.0) -> None:
    """Raise ``ValueError`` naming the option when the decay does not fit the run (before any weights load)."""
    tail = tail_steps(decay_steps, decay_share, total_steps)
    given = f"lr_decay_share {decay_share} ({tail} of {total_steps} steps)" if decay_share else f"lr_decay_steps {decay_steps}"
    if name == WSD and not 0 < tail <= total_steps - warmup_steps:
        raise ValueError(f"lr_scheduler {WSD} needs a tail of 0 < lr_decay_steps <= max_steps - lr_warmup_steps; got "
                         f"{given}, and max_steps {total_steps} - lr_warmup_steps {warmup_steps} = "
                         f"{total_steps - warmup_steps}. Set lr_decay_steps to the optimizer steps the rate should "
                         "fall over, or lr_decay_share to a share of max_steps (e.g. 0.2), and lr_warmup_steps low "
                         "enough to leave room for it.")
    if name != WSD and tail:
        raise ValueError(f"{given.split(' (')[0]} is read only by lr_scheduler {WSD}, not {name}: set it to 0 "
                         f"or use lr_scheduler {WSD}")


def make_scheduler(name: str, optimizer, *, warmup_steps: int, total_steps: int, decay_steps: int = 0,
                   num_processes: int = 1):
    """The scheduler ``name`` over ``total_steps`` optimizer steps (``decay_steps``: WSD's annealed tail).

    Under accelerate the prepared scheduler is stepped ``num_processes`` times per optimizer step: diffusers'
    schedules get their counts multiplied by it, as diffusers' training scripts do; WSD counts optimizer steps."""
    check_schedule(name, warmup_steps, total_steps, decay_steps)
    if name != WSD:
        from diffusers.optimization import get_scheduler

        return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps * num_processes,
                             num_training_steps=total_steps * num_processes)
    return LambdaLR(optimizer, lambda s: wsd_factor(s // num_processes, warmup_steps, total_steps, decay_steps))
