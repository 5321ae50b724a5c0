import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
import torch

from pluralign import __version__
from pluralign.config import ConfigError, option, parse
from pluralign.tiny import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_family_roundtrips_through_from_pretrained(family, tiny_pipeline_dir):
    from diffusers import DiffusionPipeline

    expected = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
                "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}[family]
    path = tiny_pipeline_dir(family)
    assert (path / "model_index.json").is_file()
    assert not list(path.rglob("*.bin")), "weights must be safetensors"
    pipe = DiffusionPipeline.from_pretrained(path)
    assert type(pipe).__name__ == expected
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a red circle on grass", "a blue square"], num_inference_steps=2, height=32, width=32,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (2, 32, 32, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    again = pipe(["a red circle on grass", "a blue square"], num_inference_steps=2, height=32, width=32,
                 generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(out, again)


def test_clip_tokenizer_matches_reference_ids():
    from pluralign.tokenizers import clip_tokenizer

    tok = clip_tokenizer()
    ids = tok("a photo of a red dog", padding="max_length", max_length=77).input_ids
    # ids of OpenAI's CLIP tokenizer for these words
    assert ids[:8] == [len(tok) - 2, 320, 1125, 539, 320, 736, 1929, len(tok) - 1]
    assert len(ids) == 77 and tok.model_max_length == 77


def test_t5_tokenizer_is_deterministic_and_has_no_unk():
    from pluralign.tokenizers import t5_tokenizer

    a, b = t5_tokenizer(), t5_tokenizer()
    text = "A grainy, underexposed photo of two cats!"
    assert a(text).input_ids == b(text).input_ids
    assert a.unk_token_id not in a(text).input_ids
    assert a(text).input_ids[-1] == a.eos_token_id


@dataclass
class _Cfg:
    learning_rate: float = option(1e-4, "step size", min=0)
    rank: int = option(4, "LoRA rank", min=1, max=256)
    loss_type: Literal["sigmoid", "hinge"] = option("sigmoid", "loss")
    mixed_precision: str = option("no", "precision", choices=("no", "fp16", "bf16"))
    targets: list[str] = option(factory=lambda: ["to_q"], help="modules")
    use_8bit: bool = option(False, "8-bit Adam")


def test_config_yaml_then_flags_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 3.0e-4\nrank: 8\ntargets: [to_k, to_v]\nuse_8bit: true\n")
    (cfg,) = parse((_Cfg,), ["--config", str(recipe), "--rank", "16", "--loss_type", "hinge"])
    assert cfg == _Cfg(learning_rate=3e-4, rank=16, loss_type="hinge", targets=["to_k", "to_v"], use_8bit=True)


@pytest.mark.parametrize(
    "yaml_text, flags, fragment",
    [
        ("lerning_rate: 1.0\n", [], "key 'lerning_rate' is not a known option (did you mean 'learning_rate'?)"),
        ("rank: four\n", [], "key 'rank': expected an integer"),
        ("rank: 0\n", [], "key 'rank': 0 is below the minimum 1"),
        ("mixed_precision: fp8\n", [], "key 'mixed_precision': 'fp8' is not one of"),
        ("loss_type: ipo\n", [], "key 'loss_type': 'ipo' is not one of"),
        ("use_8bit: maybe\n", [], "key 'use_8bit': expected true/false"),
        ("", ["--rank", "1000"], "command line: key 'rank': 1000 is above the maximum 256"),
        ("", ["--rnak", "3"], "command line: key 'rnak' is not a known option"),
        ("- a\n- b\n", [], "a recipe must be a mapping"),
    ],
)
def test_config_errors_name_key_and_source(tmp_path, yaml_text, flags, fragment):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml_text)
    config = ["--config", str(recipe)] if yaml_text else []  # an empty recipe is an error of its own
    with pytest.raises(ConfigError) as err:
        parse((_Cfg,), [*config, *flags])
    assert fragment in str(err.value)
    if not flags:
        assert str(recipe) in str(err.value)


def test_cli_help_version_env():
    run = lambda *a: subprocess.run([sys.executable, "-m", "pluralign.cli", *a], capture_output=True, text=True)  # noqa: E731
    assert __version__ in run("--version").stdout
    assert "COMMAND" in run("--help").stdout
    env = run("env")
    assert env.returncode == 0
    for name in ("torch", "diffusers", "peft", "device"):
        assert name in env.stdout


def test_every_command_prints_its_help(capsys):
    """argparse %-formats help text, so an option whose help says "95%" must not break ``--help``."""
    from pluralign.cli import COMMANDS, main

    def help_of(*argv) -> str:
        try:
            code = main([*argv, "--help"])
        except SystemExit as exit_:
            code = exit_.code
        assert code in (0, None), argv
        return capsys.readouterr().out

    for name in COMMANDS:
        assert "usage: pluralign" in help_of(name), name
    for step in ("build", "validate"):
        assert "--" in help_of("data", step), step

    @dataclass
    class _Pct:
        share: float = option(0.5, "share of rows, e.g. 50% of them")

    with pytest.raises(SystemExit):
        parse((_Pct,), ["--help"])
    assert "50% of them" in capsys.readouterr().out


def test_bad_input_is_one_line_not_a_traceback(tmp_path, capsys):
    """Under ``pluralign`` and under ``python -m``: a wrong option or a missing input names itself, exit 2."""
    from pluralign.cli import main
    from pluralign.config import run_module

    missing = tmp_path / "no_such_pipeline"
    assert main(["eval", "--base", str(missing), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pluralign eval: error: base") and str(missing) in err and "Traceback" not in err

    def bad():
        raise ConfigError("key 'x': expected an integer")

    assert run_module(bad, "python -m pluralign.toy.ceiling") == 2
    first, hint = capsys.readouterr().err.strip().split("\n")
    assert first == "python -m pluralign.toy.ceiling: error: key 'x': expected an integer" and "--debug" in hint and "PLURALIGN_DEBUG" in hint
    assert run_module(lambda: None, "prog") == 0
    # a row error from a suite file (a ValueError subclass) reads the same; the traceback is one variable away
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"prompt_o": "a cat"}\n')
    assert main(["eval", "--base", str(tmp_path), "--suite", str(suite), "--output", str(tmp_path / "o")]) == 2
    assert f"{suite}: line 1: field 'prompt_a'" in capsys.readouterr().err


def test_hub_ids_are_not_taken_for_missing_paths():
    from pluralign.hub import looks_local as _looks_local

    assert not _looks_local("stable-diffusion-v1-5/stable-diffusion-v1-5") and not _looks_local("tiny")
    assert all(_looks_local(p) for p in ("/abs/dir", "./rel", "../up", "~/home", "a/b/c"))


def test_output_dirs_are_proved_writable_before_any_work(tmp_path, monkeypatch):
    from pluralign.config import writable_dir
    from pluralign.eval import runner

    assert writable_dir(tmp_path / "a" / "b", "output") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"output .*file/run is not writable .*choose another output"):
        writable_dir(blocker / "run", "output")

    # eval stops on an unwritable output before it loads a model or generates an image
    monkeypatch.setattr(runner, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(ConfigError, match="output"):
        runner.run_eval(runner.EvalConfig(base="unused", output=str(blocker / "eval"), n_prompts=2))
