"""Per-category adapters keep the requested intent share: general rows are sampled, not all shared."""

from __future__ import annotations

import json

import pytest

from pluralign.trainers.data import data_mix, mix_counts, select_rows
from pluralign.trainers.export import model_card


def _pairs(n_a=2, n_b=20, n_general=14):
    """Rows of the pair schema's kind/category columns: category a, category b and general rows, interleaved."""
    import datasets

    rows = [("anti" if i % 2 == 0 else "mirror", "clarity_and_focus") for i in range(n_a)]
    rows += [("anti" if i % 2 == 0 else "mirror", "color_and_tone") for i in range(n_b)]
    rows += [("general", "") for _ in range(n_general)]
    order = sorted(range(len(rows)), key=lambda i: (i * 7919) % len(rows))  # mix them through the file
    rows = [rows[i] for i in order]
    return datasets.Dataset.from_dict({"prompt": [f"p{i}" for i in range(len(rows))], "kind": [k for k, _ in rows],
                                       "category": [c for _, c in rows]})


def _kinds(ds, idx):
    mix = data_mix(ds, idx)
    return mix["intent_rows"], mix["general_rows"]


def test_small_category_gets_the_requested_share_not_every_general_row():
    ds = _pairs()
    diluted = select_rows(ds, "clarity_and_focus", True, None)  # the old behaviour: 2 intent + all 14 general
    assert _kinds(ds, diluted) == (2, 14)
    idx = select_rows(ds, "clarity_and_focus", True, None, intent_fraction=0.5, seed=0)
    assert _kinds(ds, idx) == (2, 2) and idx == sorted(idx)
    assert select_rows(ds, "clarity_and_focus", True, None, intent_fraction=0.5, seed=0) == idx  # deterministic
    draws = {tuple(select_rows(ds, "clarity_and_focus", True, None, intent_fraction=0.5, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed picks which general rows
    assert _kinds(ds, select_rows(ds, "clarity_and_focus", True, None, intent_fraction=0.2, seed=0)) == (2, 8)
    assert _kinds(ds, select_rows(ds, "clarity_and_focus", True, None, intent_fraction=1.0, seed=0)) == (2, 0)
    assert _kinds(ds, select_rows(ds, "clarity_and_focus", False, None, intent_fraction=0.5, seed=0)) == (2, 0)


def test_large_category_uses_every_general_row_when_there_are_too_few():
    ds = _pairs()
    idx = select_rows(ds, "color_and_tone", True, None, intent_fraction=0.5, seed=0)
    assert _kinds(ds, idx) == (20, 14)
    mix = data_mix(ds, idx, intent_fraction=0.5)
    assert mix["intent_fraction"] == pytest.approx(20 / 34, abs=1e-6) and mix["general_available"] == 14


def test_max_pairs_keeps_the_ratio():
    ds = _pairs()
    assert _kinds(ds, select_rows(ds, "color_and_tone", True, 8, intent_fraction=0.5, seed=0)) == (4, 4)
    assert _kinds(ds, select_rows(ds, "color_and_tone", True, 8, intent_fraction=0.25, seed=0)) == (2, 6)
    # general rows run short: intent rows fill the budget
    assert mix_counts(20, 3, 0.5, 10) == (7, 3)
    assert mix_counts(2, 14, 0.5, 3) == (2, 1)


@pytest.mark.parametrize("f", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_share_is_the_request_within_rounding(f):
    for n_own in range(1, 40):
        n_i, n_g = mix_counts(n_own, 10_000, f)
        assert n_i == n_own and abs(n_g - n_own * (1 - f) / f) <= 0.5
        assert abs(n_i / (n_i + n_g) - f) <= 0.5 / (n_i + n_g) / f + 1e-12


def test_single_mode_and_no_fraction_are_unchanged():
    ds = _pairs()
    assert select_rows(ds, None, True, None, intent_fraction=0.5) == list(range(len(ds)))
    assert select_rows(ds, None, True, 5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="intent_fraction"):
        select_rows(ds, "color_and_tone", True, None, intent_fraction=0.0)


def test_data_mix_and_model_card_record_the_share():
    ds = _pairs()
    idx = select_rows(ds, "clarity_and_focus", True, None, intent_fraction=0.5, seed=0)
    mix = data_mix(ds, idx, intent_fraction=0.5)
    assert json.loads(json.dumps(mix)) == mix
    assert (mix["pairs"], mix["intent_rows"], mix["general_rows"]) == (4, 2, 2)
    assert mix["intent_fraction"] == 0.5 and mix["requested_intent_fraction"] == 0.5
    assert mix["category"] == {"clarity_and_focus": 2, "(none)": 2}
    card = model_card(base_model="m", family="sd", adapter_name="clarity_and_focus", data_mix=mix, hyper={},
                      metrics={})
    assert "2 intent rows (anti + mirror) and 2 general rows: an intent share of 50.0% (requested 50.0%)." in card
    short = data_mix(ds, select_rows(ds, "color_and_tone", True, None, intent_fraction=0.5), intent_fraction=0.5)
    card = model_card(base_model="m", family="sd", adapter_name="c", data_mix=short, hyper={}, metrics={})
    assert "intent share of 58.8% (requested 50.0%; the dataset has only 14 general rows)" in card
    old = {"pairs": 3, "kind": {"anti": 3}, "category": {"c": 3}}  # a mix written before the share was recorded
    assert "3 pairs.\n" in model_card(base_model="m", family="sd", adapter_name="c", data_mix=old, hyper={},
                                      metrics={})


@pytest.mark.slow
def test_per_category_run_trains_at_the_share_and_logs_split_metrics(tiny_pipeline_dir, tmp_path):
    """End to end on the tiny SD pipeline: each adapter's rows, data_mix.json and card carry the share; the
    history holds accuracy and DPO loss per kind and category, pooled over the step's pairs."""
    from test_trainer_helpers import cfg

    from pluralign.data.shapes import shape_pairs
    from pluralign.trainers import train

    ds = shape_pairs(n_general=12)
    clarity = [i for i, c in enumerate(ds["category"]) if c == "clarity_and_focus"][:4]
    lighting = [i for i, c in enumerate(ds["category"]) if c == "lighting_and_exposure"][:2]
    general = [i for i, k in enumerate(ds["kind"]) if k == "general"]
    ds.select(clarity + lighting + general).save_to_disk(str(tmp_path / "pairs"))
    cats = ["clarity_and_focus", "lighting_and_exposure"]
    r = train(cfg(tmp_path, tiny_pipeline_dir("sd"), dataset=str(tmp_path / "pairs"), adapter_mode="per_category",
                  categories=cats, intent_fraction=0.5, max_steps=2, train_batch_size=2,
                  gradient_accumulation_steps=2, export_kohya=False))
    for cat, n in zip(cats, (4, 2)):
        mix = json.loads((r.adapter_dirs[cat] / "data_mix.json").read_text())
        assert (mix["intent_rows"], mix["general_rows"], mix["pairs"]) == (n, n, 2 * n)
        assert mix["intent_fraction"] == 0.5 and mix["requested_intent_fraction"] == 0.5
        assert "an intent share of 50.0% (requested 50.0%)" in (r.adapter_dirs[cat] / "README.md").read_text()
    for h in (h for h in r.history if h["adapter"] == "clarity_and_focus"):
        kinds = [k for k in ("anti", "mirror", "general") if f"pairs/{k}" in h]
        assert sum(h[f"pairs/{k}"] for k in kinds) == 4  # 2 micro-batches of 2 pairs
        assert all(0 <= h[f"acc/{k}"] <= 1 for k in kinds)
        assert h.get("pairs/category/clarity_and_focus", 0) == sum(h.get(f"pairs/{k}", 0) for k in ("anti", "mirror"))
        assert not any("lighting" in k for k in h)
