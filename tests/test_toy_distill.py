"""`python -m pluralign.toy.distill`: a narrower UNet that starts from the teacher's shared-shape weights, learns the
teacher's noise prediction, and is saved as a pipeline with the teacher's other parts."""

import json

import pytest
import torch

from pluralign.toy import base_model, paths
from pluralign.toy.distill import DistillConfig, _trajectory_loss, main, trajectories, transplant


def test_transplant_copies_exactly_the_tensors_of_the_same_name_and_shape():
    teacher = base_model.make_unet(12, (32, 48, 64), 64, seed=0)
    student = base_model.make_unet(12, (16, 48, 64), 64, seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    copied, total = transplant(student, teacher)
    t, s = teacher.state_dict(), student.state_dict()
    same = [k for k in s if k in t and t[k].shape == before[k].shape]
    assert copied == len(same) and total == len(s) and 0 < copied < total
    assert all(torch.equal(s[k], t[k]) for k in same)
    assert all(torch.equal(s[k], before[k]) for k in s if k not in same)  # the rest keeps its fresh initialisation


@pytest.mark.slow
def test_a_short_distillation_writes_a_pipeline_that_samples(tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "student"
    assert main(["--teacher", str(paths.base_dir()), "--output", str(out), "--channels", "16,48,64", "--steps", "3",
                 "--batch_size", "4", "--n_scenes", "6", "--warmup_steps", "1", "--progress", "false"]) == 0
    record = json.loads((out / "distill.json").read_text())
    assert record["student_parameters"] < record["teacher_parameters"] and record["final_loss"] > 0
    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    teacher = StableDiffusionPipeline.from_pretrained(str(paths.base_dir()))
    assert tuple(pipe.unet.config.block_out_channels) == (16, 48, 64)
    assert all(torch.equal(a, b) for a, b in zip(pipe.text_encoder.state_dict().values(),
                                                  teacher.text_encoder.state_dict().values()))
    assert pipe.vae.config.scaling_factor == teacher.vae.config.scaling_factor
    image = pipe(["a red circle"], num_inference_steps=2, guidance_scale=6.0, height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


def test_the_trajectory_loss_is_zero_for_the_teacher_itself_and_weighs_the_guided_error():
    """States from a teacher's own guided sampling: the teacher as student has no error on either branch, and a
    student off by a constant on the prompted branch only pays the guided term guidance_scale**2 times over."""
    from types import SimpleNamespace

    from pluralign.eval.generate import load_pipeline

    pipe = load_pipeline(str(paths.base_dir()), device="cpu", progress=False)
    with torch.no_grad():
        cond_all = pipe.text_encoder(base_model.tokenize(pipe.tokenizer, ["a red circle", "a blurry blue square"]))[0]
        empty = pipe.text_encoder(base_model.tokenize(pipe.tokenizer, [""]))[0]
    cfg = DistillConfig(trajectory_prompts=2, num_inference_steps=3, guidance_scale=6.0, batch_size=4, seed=1)
    states = trajectories(pipe, cond_all, empty, cfg)
    assert len(states["x"]) == 2 * 3 and set(states["caption"].tolist()) == {0, 1}
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        assert _trajectory_loss(pipe.unet, states, cond_all, empty, cfg, g()) < 1e-8

        def shifted(x, t, cond):  # the prompted half (second) off by 0.1 everywhere
            out = pipe.unet(x, t, cond).sample
            return SimpleNamespace(sample=out + torch.cat([torch.zeros_like(out[:len(out) // 2]),
                                                           torch.full_like(out[len(out) // 2:], 0.1)]))

        plain = _trajectory_loss(shifted, states, cond_all, empty, cfg, g())
        weighted = _trajectory_loss(shifted, states, cond_all, empty,
                                    DistillConfig(**{**cfg.__dict__, "guided_weight": 0.5}), g())
    assert plain == pytest.approx(0.01, rel=1e-3)
    assert weighted == pytest.approx(0.01 + 0.5 * 0.36, rel=1e-3)  # the guided prediction is off by 6 x 0.1


def test_missing_teacher_or_output_is_a_clear_error():
    with pytest.raises(ValueError, match="--teacher.*--output"):
        main(["--output", "x"])
