"""The LoRA weight average: its decay schedule and update are plain tensor arithmetic."""

import pytest
import torch

from pluralign.trainers.ema import WeightEMA, ema_decay_at, steps_to_reach, warmup_note


def test_decay_warms_up_then_caps():
    assert ema_decay_at(1, 0.995) == pytest.approx(2 / 11)
    assert ema_decay_at(8, 0.995) == pytest.approx(9 / 18)
    assert ema_decay_at(10_000, 0.995) == 0.995
    assert all(ema_decay_at(s, 0.99) <= ema_decay_at(s + 1, 0.99) for s in range(1, 2000))


def test_a_decay_the_warm_up_does_not_reach_is_said_with_what_the_run_averages():
    """Within 1800 steps 0.998 is never reached: the run averages about its last 200 steps, as 0.995 would, and the
    two decays differ only after step 1790. A run long enough to reach its decay gets no note."""
    assert steps_to_reach(0.995) == 1790 and steps_to_reach(0.998) == 4490
    assert ema_decay_at(1790, 0.995) == pytest.approx(0.995) and ema_decay_at(1789, 0.995) < 0.995
    assert ema_decay_at(4490, 0.998) == pytest.approx(0.998) and ema_decay_at(4489, 0.998) < 0.998
    assert all(ema_decay_at(s, 0.995) == ema_decay_at(s, 0.998) for s in range(1, 1791))
    note = warmup_note(0.998, 1800)
    assert "reached at step 4490" in note and "ends at 0.9950" in note and "last 201 steps" in note
    assert warmup_note(0.995, 1800) is None and warmup_note(0.998, 4490) is None


def test_update_is_the_exponential_average_of_the_iterates():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = WeightEMA([p], decay=0.5)
    expected = torch.zeros(3)
    for step, value in enumerate([4.0, 8.0, -2.0], start=1):
        with torch.no_grad():
            p.fill_(value)
        ema.update([p], step)
        d = min(0.5, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * value
    assert torch.allclose(ema.shadow[0], expected)
    assert not torch.allclose(ema.shadow[0], p.detach())


def test_applied_swaps_in_the_average_and_restores_the_live_weights():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ema = WeightEMA([p], decay=0.9)
    with torch.no_grad():
        p.fill_(5.0)
    with ema.applied([p]):
        assert torch.equal(p.detach(), torch.tensor([1.0, 2.0]))
    assert torch.equal(p.detach(), torch.tensor([5.0, 5.0]))
    ema.copy_to([p])
    assert torch.equal(p.detach(), torch.tensor([1.0, 2.0]))


def test_state_round_trips_and_a_mismatched_checkpoint_is_named():
    a = [torch.nn.Parameter(torch.randn(2, 2)), torch.nn.Parameter(torch.randn(4))]
    ema = WeightEMA(a, decay=0.99)
    other = WeightEMA([torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(4))], decay=0.99)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(ema.shadow, other.shadow))
    with pytest.raises(ValueError, match="rank or target_modules"):
        WeightEMA(a[:1], decay=0.99).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(a, decay=1.0)
