"""num_train_epochs: each adapter trains passes over its own rows, so a small category trains fewer steps."""

from __future__ import annotations

import math

import pytest
from test_trainer_helpers import cfg, one_torch_thread

from pluralign.trainers.trainer import plan, run_config

CATS = ["clarity_and_focus", "lighting_and_exposure"]


def test_epochs_resolve_to_steps_per_adapter_from_its_own_rows(tiny_pipeline_dir, tmp_path):
    model = tiny_pipeline_dir("sd")
    p = plan(cfg(tmp_path, model, adapter_mode="per_category", categories=CATS, num_train_epochs=2,
                 train_batch_size=3, gradient_accumulation_steps=2, max_steps=999))
    rows = {r.name: len(r.indices) for r in p.runs}
    for r in p.runs:
        assert r.config.max_steps == math.ceil(2 * rows[r.name] / 6)  # 3 pairs x 2 micro-steps a step
        assert r.config.max_steps != 999 and p.config.max_steps == 999  # the plan's own config is left as given
    # two processes take twice the pairs a step, so half the steps
    c = cfg(tmp_path, model, num_train_epochs=2, train_batch_size=3, gradient_accumulation_steps=2)
    assert run_config(c, 24, processes=2).max_steps == 4 and run_config(c, 1).max_steps == 1  # at least one
    assert run_config(c, 6).max_steps == 2 < run_config(c, 60).max_steps == 20  # a small category: fewer steps
    one = cfg(tmp_path, model, num_train_epochs=1.1, train_batch_size=1)
    assert run_config(one, 100).max_steps == 110  # the decimal written, not float's 110.00000000000001 rounded up
    assert run_config(cfg(tmp_path, model, max_steps=7), 24).max_steps == 7  # without epochs: max_steps


def test_a_schedule_that_does_not_fit_an_adapters_steps_names_the_adapter(tiny_pipeline_dir, tmp_path):
    model = tiny_pipeline_dir("sd")
    with pytest.raises(ValueError, match=r"adapter '.*' \(\d+ rows, num_train_epochs 1: \d+ steps\).*lr_warmup_steps"):
        plan(cfg(tmp_path, model, adapter_mode="per_category", categories=CATS, num_train_epochs=1,
                 lr_scheduler="warmup_stable_decay", lr_warmup_steps=50, lr_decay_share=0.2))


def test_an_epoch_run_trains_the_resolved_steps_and_says_so_on_its_card(tiny_pipeline_dir, tmp_path):
    from pluralign.trainers import train

    model = tiny_pipeline_dir("sd")
    with one_torch_thread():
        r = train(cfg(tmp_path, model, num_train_epochs=1, max_pairs=4, train_batch_size=2, export_kohya=False))
    assert r.steps == 2 and len(r.history) == 2
    card = (r.adapter_dir / "README.md").read_text()
    assert "| max_steps | 2 |" in card and "| num_train_epochs | 1 |" in card


def test_a_resume_that_would_change_the_epoch_runs_steps_is_refused(tiny_pipeline_dir, tmp_path):
    """The steps an epoch run resolves to are part of its trajectory: a resume with another batch size would change
    them (and the annealed tail), so it is refused naming both, before any weights load."""
    from pluralign.trainers import train

    model = tiny_pipeline_dir("sd")
    common = dict(num_train_epochs=1, max_pairs=4, train_batch_size=2, export_kohya=False, checkpointing_steps=1,
                  lr_scheduler="warmup_stable_decay", lr_decay_share=0.5)
    with one_torch_thread():
        train(cfg(tmp_path, model, **common))
    with pytest.raises(ValueError, match=r"(?s)max_steps: 2 -> 4.*train_batch_size: 2 -> 1"):
        plan(cfg(tmp_path, model, resume_from_checkpoint="latest", **{**common, "train_batch_size": 1}))
    p = plan(cfg(tmp_path, model, resume_from_checkpoint="latest", **common))  # the same settings resume
    assert p.runs[0].config.max_steps == 2
