"""``sampler:``: the scheduler eval, data generate and the demo sample with, built from the checkpoint's config."""

import json

import pytest
import torch

from pluralign.eval.samplers import SAMPLER_NAMES, use_sampler


@pytest.fixture(scope="module")
def sd_pipe(tiny_pipeline_dir):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(tiny_pipeline_dir("sd")))


def _image(pipe, steps):
    out = pipe(prompt=["a red circle"], generator=[torch.Generator().manual_seed(3)], num_inference_steps=steps,
               guidance_scale=2.0, output_type="np")
    return out.images[0]


def test_a_swap_keeps_the_checkpoints_noise_schedule_and_default_restores_its_scheduler(sd_pipe):
    original = sd_pipe.scheduler
    use_sampler(sd_pipe, "dpmsolver++")
    swapped = sd_pipe.scheduler
    assert type(swapped).__name__ == "DPMSolverMultistepScheduler"
    assert swapped.config.algorithm_type == "dpmsolver++" and swapped.config.solver_order == 2
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type"):
        assert swapped.config[key] == original.config[key], key
    use_sampler(sd_pipe, "dpmsolver++")  # idempotent: the same solver object stays
    assert sd_pipe.scheduler is swapped
    use_sampler(sd_pipe, "ddim")  # another swap still starts from the checkpoint's config, not from the last swap
    assert type(sd_pipe.scheduler).__name__ == "DDIMScheduler" and sd_pipe.scheduler is not original
    use_sampler(sd_pipe, "default")
    assert sd_pipe.scheduler is original


def test_the_sampler_changes_the_images_and_default_gives_the_checkpoints_images_back(sd_pipe):
    use_sampler(sd_pipe, "default")
    before = _image(sd_pipe, 4)
    use_sampler(sd_pipe, "dpmsolver++")
    other = _image(sd_pipe, 4)
    use_sampler(sd_pipe, "default")
    again = _image(sd_pipe, 4)
    assert abs(before - other).max() > 1e-3
    assert abs(before - again).max() == 0


def test_unknown_names_and_flow_matching_pipelines_are_refused(sd_pipe, tiny_pipeline_dir):
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match=r"sampler 'heun': unknown; choose one of default, ddim, dpmsolver\+\+"):
        use_sampler(sd_pipe, "heun")
    flux = DiffusionPipeline.from_pretrained(str(tiny_pipeline_dir("flux")))
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler, a flow-matching scheduler.*use sampler: "
                                         "default"):
        use_sampler(flux, "dpmsolver++")
    use_sampler(flux, "default")  # the checkpoint's own is always accepted
    assert set(SAMPLER_NAMES) == {"default", "ddim", "dpmsolver++", "euler", "unipc"}


def test_pluralign_eval_records_the_sampler_it_sampled_with(tiny_pipeline_dir, tmp_path, monkeypatch):
    from pluralign.cli import main
    from pluralign.eval import runner

    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"prompt_o": "a blue square", "prompt_a": "a blue square, blurry",
                                 "attributes": ["blurry"], "seed": 5}) + "\n")
    used = []
    swap = runner.use_sampler
    monkeypatch.setattr(runner, "use_sampler", lambda pipe, name: (swap(pipe, name), used.append(
        type(pipe.scheduler).__name__)))
    out = tmp_path / "eval"
    assert main(["eval", "--base", str(tiny_pipeline_dir("sd")), "--suite", str(suite), "--sampler", "dpmsolver++",
                 "--num_inference_steps", "3", "--batch_size", "1", "--bootstrap", "100", "--html_rows", "1",
                 "--output", str(out)]) == 0
    assert used == ["DPMSolverMultistepScheduler"]
    assert json.loads((out / "results.json").read_text())["config"]["sampler"] == "dpmsolver++"
    assert (out / "images" / "base" / "00000_a.png").is_file()


def test_an_unknown_sampler_is_refused_by_every_command_that_samples():
    from pluralign.config import ConfigError, parse
    from pluralign.eval.runner import EvalConfig
    from pluralign.onpolicy.config import GenerateConfig
    from pluralign.toy.demo import DemoConfig

    for cls in (EvalConfig, GenerateConfig, DemoConfig):
        with pytest.raises(ConfigError, match="sampler"):
            parse((cls,), ["--sampler", "heun"])
        (cfg,) = parse((cls,), ["--sampler", "dpmsolver++"])
        assert cfg.sampler == "dpmsolver++"


def test_load_pipeline_can_silence_the_per_call_progress_bar(tiny_pipeline_dir, capsys):
    from pluralign.eval.generate import load_pipeline

    def bar_output(pipe):
        pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="np")
        return capsys.readouterr().err

    capsys.readouterr()
    assert "2/2" in bar_output(load_pipeline(str(tiny_pipeline_dir("sd")), "cpu"))
    assert "2/2" not in bar_output(load_pipeline(str(tiny_pipeline_dir("sd")), "cpu", progress=False))
