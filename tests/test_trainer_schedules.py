"""warmup_stable_decay: the full rate until the last lr_decay_steps, then linearly to zero, in the trainer too."""

from __future__ import annotations

import pytest
import torch
from test_trainer_helpers import cfg, one_torch_thread

from pluralign.trainers.schedules import WSD, make_scheduler, wsd_factor


def _rates(sched, opt, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_wsd_warms_up_holds_then_falls_linearly_to_zero():
    assert [wsd_factor(s, 2, 10, 4) for s in range(10)] == [0.5, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert wsd_factor(10, 2, 10, 4) == 0.0 and wsd_factor(12, 2, 10, 4) == 0.0  # past the end: never negative
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    rates = _rates(make_scheduler(WSD, opt, warmup_steps=0, total_steps=6, decay_steps=3), opt, 6)
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1 * 2 / 3, 0.1 / 3])
    # other names are diffusers' schedules, as before
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert _rates(make_scheduler("constant", opt, warmup_steps=0, total_steps=4), opt, 4) == [0.1] * 4


@pytest.mark.parametrize("decay", [0, 9])
def test_wsd_without_a_decay_that_fits_names_the_option(decay):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="lr_decay_steps"):
        make_scheduler(WSD, opt, warmup_steps=2, total_steps=10, decay_steps=decay)


def test_the_trainer_logs_the_wsd_rates(tiny_pipeline_dir, tmp_path):
    from pluralign.trainers import train

    with one_torch_thread():
        r = train(cfg(tmp_path, tiny_pipeline_dir("sd"), max_steps=5, lr_scheduler=WSD, lr_warmup_steps=1,
                      lr_decay_steps=2, max_pairs=4))
    # the rate logged after step k is the next step's: factors 1, 1, 1 (the tail's first step), 0.5, 0
    assert [h["lr"] for h in r.history] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 0.0])
