"""warmup_stable_decay: the full rate until the last lr_decay_steps, then linearly toward zero, in the trainer too."""

from __future__ import annotations

import pytest
import torch
from test_trainer_helpers import cfg, one_torch_thread

from pluralign.trainers.schedules import WSD, check_schedule, make_scheduler, tail_steps, wsd_factor


def _rates(sched, opt, updates, steps_per_update=1):
    """The rate of each optimizer update, the scheduler stepped ``steps_per_update`` times after each (accelerate
    steps a prepared scheduler once per process)."""
    out = []
    for _ in range(updates):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        for _ in range(steps_per_update):
            sched.step()
    return out


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def test_wsd_warms_up_holds_then_lowers_every_tail_step():
    assert [wsd_factor(s, 2, 10, 4) for s in range(10)] == pytest.approx([0.5, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    assert wsd_factor(10, 2, 10, 4) == 0.0 and wsd_factor(12, 2, 10, 4) == 0.0  # past the end: never negative
    assert wsd_factor(9, 0, 10, 1) == 0.5  # a one-step tail still lowers its step
    opt = _opt()
    rates = _rates(make_scheduler(WSD, opt, warmup_steps=0, total_steps=6, decay_steps=3), opt, 6)
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.075, 0.05, 0.025])
    # other names are diffusers' schedules, as before
    opt = _opt()
    assert _rates(make_scheduler("constant", opt, warmup_steps=0, total_steps=4), opt, 4) == [0.1] * 4


@pytest.mark.parametrize("name", [WSD, "linear"])
def test_every_schedule_counts_optimizer_steps_under_several_processes(name):
    """Two processes step the scheduler twice per update; the rates per update are one process's, warmup included."""
    kw = dict(warmup_steps=2, total_steps=8, decay_steps=3 if name == WSD else 0)
    opt1, opt2 = _opt(), _opt()
    one = _rates(make_scheduler(name, opt1, **kw), opt1, 8)
    two = _rates(make_scheduler(name, opt2, **kw, num_processes=2), opt2, 8, steps_per_update=2)
    assert two == pytest.approx(one) and one[0] == pytest.approx(0.05 if name == WSD else 0.0)


@pytest.mark.parametrize(("name", "decay"), [(WSD, 0), (WSD, 9), ("cosine", 2)])
def test_a_decay_that_does_not_fit_names_the_option(name, decay):
    with pytest.raises(ValueError, match="lr_decay_steps"):
        make_scheduler(name, _opt(), warmup_steps=2, total_steps=10, decay_steps=decay)


def test_a_tail_given_as_a_share_scales_with_the_run():
    assert tail_steps(0, 0.2, 1800) == 360  # the toy recipe's tail, the same steps it ran with as a count
    assert tail_steps(0, 0.2, 200) == 40 and tail_steps(0, 0.2, 2) == 1  # at least one step
    assert tail_steps(7, 0.0, 1800) == 7 and tail_steps(0, 0.0, 1800) == 0
    assert tail_steps(0, 0.25, 10) == 3 and tail_steps(0, 0.25, 30) == 8  # halves up, not to even
    check_schedule(WSD, 0, 2, 0, 0.2)  # a two-step smoke run of a recipe tuned at 1800 fits
    with pytest.raises(ValueError, match="both set"):  # which of the two wins would be a silent choice
        tail_steps(360, 0.2, 1800)
    with pytest.raises(ValueError, match=r"lr_decay_share 0.2 \(4 of 20 steps\).*max_steps 20 - lr_warmup_steps 20 = 0"):
        check_schedule(WSD, 20, 20, 0, 0.2)  # the warm-up leaves no room for the tail
    with pytest.raises(ValueError, match="lr_decay_share 0.2 is read only by"):
        check_schedule("cosine", 0, 20, 0, 0.2)


def test_the_trainer_logs_the_wsd_rates_and_refuses_a_new_step_budget_on_resume(tiny_pipeline_dir, tmp_path):
    from pluralign.trainers import train
    from pluralign.trainers.trainer import plan

    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=5, lr_scheduler=WSD, lr_warmup_steps=1, lr_decay_steps=2, max_pairs=4,
                  checkpointing_steps=5, export_kohya=False)
    with pytest.raises(ValueError, match="lr_decay_steps"):  # before any weights load
        plan(cfg(tmp_path, model, **{**common, "lr_decay_steps": 5}))
    with one_torch_thread():
        r = train(cfg(tmp_path, model, **common))
    # the rate logged after step k is the next step's: 1, 1, then the tail's 2/3 and 1/3, then 0 past the end
    assert [h["lr"] for h in r.history] == pytest.approx([1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3, 0.0])
    assert "lr_decay_steps" in (r.adapter_dir / "README.md").read_text()
    # the same schedule given as a share (0.4 of 5 steps is 2): the same rates, and the card gives the steps run
    with one_torch_thread():
        shared = train(cfg(tmp_path / "share", model, **{**common, "lr_decay_steps": 0, "lr_decay_share": 0.4}))
    assert [h["lr"] for h in shared.history] == pytest.approx([h["lr"] for h in r.history])
    assert "| lr_decay_steps | 2 |" in (shared.adapter_dir / "README.md").read_text()
    # the rate at every step depends on max_steps, so a resume may not change it (a constant rate may)
    with pytest.raises(ValueError, match="max_steps: 5 -> 8"):
        plan(cfg(tmp_path, model, resume_from_checkpoint="latest", **{**common, "max_steps": 8}))


def test_a_run_recorded_with_the_tail_in_steps_resumes_under_the_same_tail_as_a_share():
    """360 steps and a share of 0.2 of 1800 are one schedule: a run.json written before lr_decay_share existed resumes
    under the recipe that now writes its tail as a share; a tail that really differs is named in steps."""
    from pluralign.trainers.config import DPOTrainConfig
    from pluralign.trainers.manifest import trajectory_changes

    old = {"config": {"lr_scheduler": WSD, "max_steps": 1800, "lr_decay_steps": 360}, "base": {}, "dataset": {}}
    same = DPOTrainConfig(lr_scheduler=WSD, max_steps=1800, lr_decay_share=0.2)
    assert trajectory_changes(old, same, {}, {}) == []
    other = DPOTrainConfig(lr_scheduler=WSD, max_steps=1800, lr_decay_share=0.1)
    assert trajectory_changes(old, other, {}, {}) == ["annealed tail (lr_decay_steps / lr_decay_share): 360 -> 180 steps"]
