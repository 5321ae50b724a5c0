"""Trainer extras: the output-preservation terms, guided SFT, the LoRA weight average and the built-in eval."""

import pytest
import torch
from test_trainer_helpers import cfg

from pluralign.trainers import train

pytestmark = pytest.mark.slow


def _drift(result_dir, model_dir, prompts):
    """Mean squared difference between adapter and base predictions on fixed noisy inputs."""
    from diffusers import StableDiffusionPipeline

    from pluralign.trainers.adapters import adapters_disabled

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir))
    pipe.load_lora_weights(str(result_dir), adapter_name="intent")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(prompts), 4, 16, 16, generator=g)
    t = torch.full((len(prompts),), 500)
    emb, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    with torch.no_grad():
        on = pipe.unet(x, t, encoder_hidden_states=emb).sample
        with adapters_disabled(pipe.unet):
            off = pipe.unet(x, t, encoder_hidden_states=emb).sample
    return (on - off).pow(2).mean().item()


def test_preserve_weight_anchors_ordinary_prompts(tiny_pipeline_dir, tmp_path):
    from pluralign.trainers.data import load_pairs

    model = tiny_pipeline_dir("sd")
    ds = load_pairs("builtin:shapes")
    ordinary = [p for p, k in zip(ds["prompt"], ds["kind"]) if k in ("mirror", "general")]
    common = dict(max_steps=6, learning_rate=3e-3, export_kohya=False, beta=5000.0)
    free = train(cfg(tmp_path / "free", model, **common))
    anchored = train(cfg(tmp_path / "anchored", model, preserve_weight=1e4, **common))
    assert "preserve_mse" in anchored.history[-1] and "preserve_mse" not in free.history[-1]
    d_free, d_anchored = _drift(free.adapter_dir, model, ordinary), _drift(anchored.adapter_dir, model, ordinary)
    assert d_anchored < 0.5 * d_free, (d_anchored, d_free)


def test_preserve_null_weight_anchors_the_unconditional_branch(tiny_pipeline_dir, tmp_path):
    """The null-prompt term keeps the prediction classifier-free guidance extrapolates from."""
    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=6, learning_rate=3e-3, export_kohya=False, beta=5000.0, sft_weight=1e3)
    free = train(cfg(tmp_path / "free", model, **common))
    anchored = train(cfg(tmp_path / "anchored", model, preserve_null_weight=1e5, **common))
    assert "preserve_null_mse" in anchored.history[-1] and "preserve_null_mse" not in free.history[-1]
    d_free, d_anchored = _drift(free.adapter_dir, model, [""] * 4), _drift(anchored.adapter_dir, model, [""] * 4)
    assert d_anchored < 0.5 * d_free, (d_anchored, d_free)
    card = (anchored.adapter_dir / "README.md").read_text()
    assert "preserve_null_weight" in card


def test_preserve_null_rows_chosen_anchors_on_the_chosen_half_at_three_quarters_of_the_latents(
        tiny_pipeline_dir, tmp_path, monkeypatch):
    """`chosen` runs the null prompt on the chosen latents only: both denoiser calls of a step shrink from 4B to
    3B latents, and the null branch is still held where the reference has it."""
    from diffusers import UNet2DConditionModel

    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=6, learning_rate=3e-3, export_kohya=False, beta=5000.0, sft_weight=1e3,
                  guided_sft_scale=3.0)
    sizes = []
    forward = UNet2DConditionModel.forward

    def counting(self, sample, *args, **kwargs):
        sizes.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counting)
    everything = train(cfg(tmp_path / "all", model, preserve_null_weight=1e5, **common))
    per_step_all, sizes[:] = list(sizes), []
    half = train(cfg(tmp_path / "chosen", model, preserve_null_weight=1e5, preserve_null_rows="chosen", **common))
    per_step_chosen = list(sizes)
    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    b = 2  # the helper's train_batch_size: a step holds 2B noisy latents
    assert set(per_step_all) == {4 * b} and set(per_step_chosen) == {3 * b}
    assert len(per_step_all) == len(per_step_chosen) == 2 * 6  # the policy's call and the reference's, every step
    free = train(cfg(tmp_path / "free", model, **common))
    d_free, d_half = _drift(free.adapter_dir, model, [""] * 4), _drift(half.adapter_dir, model, [""] * 4)
    assert d_half < 0.5 * d_free, (d_half, d_free)
    assert "preserve_null_mse" in half.history[-1] and everything.history[-1]["preserve_null_mse"] > 0
    assert "preserve_null_rows" in (half.adapter_dir / "README.md").read_text()


def test_guided_sft_scale_acts_on_anti_rows_only(tiny_pipeline_dir, tmp_path):
    """Mirror-only data: the guided term changes nothing; with anti rows it changes the adapter."""
    from safetensors.torch import load_file

    from pluralign.data.shapes import shape_pairs

    model = tiny_pipeline_dir("sd")
    ds = shape_pairs()
    for kind in ("mirror", "anti"):
        ds.filter(lambda r, k=kind: r["kind"] == k).select(range(4)).save_to_disk(str(tmp_path / kind))
    common = dict(max_steps=3, learning_rate=3e-3, export_kohya=False, sft_weight=1e3)

    def weights(name, data, **kw):
        r = train(cfg(tmp_path / name, model, dataset=str(tmp_path / data), **common, **kw))
        return load_file(str(r.adapter_dir / "pytorch_lora_weights.safetensors")), r

    plain_m, _ = weights("plain_m", "mirror")
    guided_m, r = weights("guided_m", "mirror", guided_sft_scale=6.0)
    # the same up to float rounding: with the guided term on, the reference runs its null-prompt rows in the
    # same call, a batch of 2B may round differently from one of B, and Adam scales each update by the
    # gradient's own size (measured 2.5e-7 on two threads, 1.5e-5 on one; the anti rows below move 1.8e-2)
    d_mirror = max((plain_m[k] - guided_m[k]).abs().max().item() for k in plain_m)
    assert d_mirror < 1e-3
    assert "guided_sft_scale" in (r.adapter_dir / "README.md").read_text()
    plain_a, _ = weights("plain_a", "anti")
    guided_a, _ = weights("guided_a", "anti", guided_sft_scale=6.0)
    d_anti = max((plain_a[k] - guided_a[k]).abs().max().item() for k in plain_a)
    assert d_anti > 5e-3 and d_anti > 100 * d_mirror


def test_guided_scale_without_sft_term_skips_the_null_pass(tiny_pipeline_dir, tmp_path, monkeypatch):
    """``guided_sft_scale`` reshapes the SFT term; with ``sft_weight`` 0 there is nothing to reshape,
    so the step runs no null-prompt forward for it."""
    from pluralign.trainers import trainer

    calls = {"n": 0}
    real = trainer._reference_predictions

    def counted(*a, **k):
        out = real(*a, **k)
        calls["n"] += sum(null_ref is not None for _, null_ref in out)
        return out

    monkeypatch.setattr(trainer, "_reference_predictions", counted)
    model = tiny_pipeline_dir("sd")
    train(cfg(tmp_path / "off", model, max_steps=1, export_kohya=False, guided_sft_scale=6.0))
    assert calls["n"] == 0
    train(cfg(tmp_path / "on", model, max_steps=1, export_kohya=False, guided_sft_scale=6.0, sft_weight=1e3))
    assert calls["n"] >= 1


def test_eval_before_after_links_summary_into_model_card(tiny_pipeline_dir, tmp_path):
    from pluralign.train import AfterTrainingEval, train_and_evaluate

    model = tiny_pipeline_dir("sd")
    result = train_and_evaluate(cfg(tmp_path, model, max_steps=1, export_kohya=False),
                                AfterTrainingEval(eval_before_after=True, eval_n_prompts=3, eval_inference_steps=2,
                                                  eval_weights=[0.0, 1.0]))
    card = (result.adapter_dir / "README.md").read_text()
    section = card.split("## Evaluation")[1]
    assert "| base |" in section and "| adapter@1 |" in section and "3 prompt pairs" in section
    report = (result.adapter_dir / "../eval/intent/report.html").resolve()
    assert report.is_file() and "data:image/png;base64," in report.read_text()
    assert "eval/adapter@1/adherence" in result.metrics


def test_ema_decay_exports_the_average_and_resumes_exactly(tiny_pipeline_dir, tmp_path):
    """A vanishing decay exports the last iterate (the wiring adds nothing of its own); a real decay
    exports something else, and a run resumed from a checkpoint continues the same average."""
    from safetensors.torch import load_file

    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=4, learning_rate=3e-3, export_kohya=False, sft_weight=1e3)

    def weights(r):
        return load_file(str(r.adapter_dir / "pytorch_lora_weights.safetensors"))

    plain = weights(train(cfg(tmp_path / "plain", model, **common)))
    last = weights(train(cfg(tmp_path / "last", model, ema_decay=1e-9, **common)))
    assert max((plain[k] - last[k]).abs().max().item() for k in plain) <= 1e-6

    straight = train(cfg(tmp_path / "straight", model, ema_decay=0.9, checkpointing_steps=2, **common))
    averaged = weights(straight)
    assert max((plain[k] - averaged[k]).abs().max().item() for k in plain) > 1e-4
    assert (straight.output_dir / "checkpoints" / "checkpoint-2" / "ema.safetensors").exists()
    assert "ema_decay" in (straight.adapter_dir / "README.md").read_text()

    part = dict(common, max_steps=2)
    train(cfg(tmp_path / "resumed", model, ema_decay=0.9, checkpointing_steps=2, **part))
    resumed = weights(train(cfg(tmp_path / "resumed", model, ema_decay=0.9, checkpointing_steps=2,
                                resume_from_checkpoint="latest", **common)))
    assert max((averaged[k] - resumed[k]).abs().max().item() for k in averaged) <= 1e-6

    train(cfg(tmp_path / "no_ema", model, checkpointing_steps=2, **part))
    resume = dict(ema_decay=0.9, checkpointing_steps=2, resume_from_checkpoint="latest", **common)
    with pytest.raises(ValueError, match=r"ema_decay: 0.0 -> 0.9"):  # the run's recorded trajectory had no EMA
        train(cfg(tmp_path / "no_ema", model, **resume))
    with pytest.raises(ValueError, match="saved without ema_decay"):
        train(cfg(tmp_path / "no_ema", model, allow_config_change=True, **resume))
