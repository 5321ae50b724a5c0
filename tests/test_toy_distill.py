"""`python -m pluralign.toy.distill`: a narrower UNet that starts from the teacher's shared-shape weights, learns the
teacher's noise prediction, and is saved as a pipeline with the teacher's other parts."""

import json

import pytest
import torch

from pluralign.toy import base_model, paths
from pluralign.toy.distill import main, transplant


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


def test_missing_teacher_or_output_is_a_clear_error():
    with pytest.raises(ValueError, match="--teacher.*--output"):
        main(["--output", "x"])
