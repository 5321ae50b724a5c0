"""Training runs with subnormal floats flushed to zero (``trainer.subnormals_flushed``), and only while it runs."""

import pytest
import torch
from test_trainer_helpers import cfg

from pluralign.trainers import train
from pluralign.trainers import trainer as T


def _cpu_can_flush() -> bool:
    supported = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    return supported


needs_flush = pytest.mark.skipif(not _cpu_can_flush(), reason="this CPU cannot flush subnormals (no SSE3 or AArch64)")


def _subnormal_survives() -> bool:
    # 1e-40 is below float32's smallest normal number (1.18e-38): kept as a subnormal, or flushed to zero
    return bool((torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() != 0.0)


def test_a_saturated_dpo_factor_is_subnormal_without_the_flush():
    """The case the flush is for: the sigmoid loss's gradient factor at beta * logits = 95."""
    inside = torch.tensor([95.0], requires_grad=True)
    torch.nn.functional.logsigmoid(inside).sum().backward()
    g = abs(inside.grad.item())
    assert 0.0 < g < torch.finfo(torch.float32).tiny


@needs_flush
def test_training_flushes_subnormals_and_restores_them(tiny_pipeline_dir, tmp_path, monkeypatch):
    seen = []
    micro = T._micro_step

    def recording(*a, **k):
        seen.append(_subnormal_survives())
        return micro(*a, **k)

    monkeypatch.setattr(T, "_micro_step", recording)
    assert _subnormal_survives()
    train(cfg(tmp_path, tiny_pipeline_dir("sd"), max_steps=2, export_kohya=False))
    assert seen == [False, False]
    assert _subnormal_survives()  # the process's default is back after training


@needs_flush
def test_the_flush_is_restored_when_training_fails():
    with pytest.raises(KeyboardInterrupt), T.subnormals_flushed():
        assert not _subnormal_survives()
        raise KeyboardInterrupt
    assert _subnormal_survives()
