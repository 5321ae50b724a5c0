"""Bad configurations fail with a clear message before any model weights are loaded."""

from __future__ import annotations

import json
import shutil

import pytest
from test_trainer_helpers import cfg


@pytest.fixture(autouse=True)
def no_weights(monkeypatch):
    from diffusers import DiffusionPipeline

    def boom(*a, **k):
        raise AssertionError("weights were loaded before the configuration was checked")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", boom)


def check(config, pattern):
    from pluralign.trainers import train

    with pytest.raises(ValueError, match=pattern):
        train(config)


def test_wrong_family(tiny_pipeline_dir, tmp_path):
    check(cfg(tmp_path, tiny_pipeline_dir("sd"), family="sdxl"), "family is set to 'sdxl'.*StableDiffusionPipeline")


def test_unsupported_pipeline(tiny_pipeline_dir, tmp_path):
    other = tmp_path / "pixart"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    check(cfg(tmp_path, other), "PixArtAlphaPipeline is not a family")


def test_missing_component(tiny_pipeline_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir("sd"), broken)
    index = json.loads((broken / "model_index.json").read_text())
    index["vae"] = [None, None]
    (broken / "model_index.json").write_text(json.dumps(index))
    check(cfg(tmp_path, broken), r"missing component\(s\) \['vae'\]")


def test_target_modules_match_nothing(tiny_pipeline_dir, tmp_path):
    check(cfg(tmp_path, tiny_pipeline_dir("sd"), target_modules=["to_qq"]), "'to_qq' matches no.*to_q")


def test_dataset_without_columns(tiny_pipeline_dir, tmp_path):
    import datasets

    datasets.Dataset.from_dict({"prompt": ["a"], "chosen": ["x"]}).to_parquet(str(tmp_path / "p.parquet"))
    check(cfg(tmp_path, tiny_pipeline_dir("sd"), dataset=str(tmp_path / "p.parquet")), r"missing column\(s\) \['rejected'\]")
    check(cfg(tmp_path, tiny_pipeline_dir("sd"), dataset=str(tmp_path / "nope")), "not found")


def test_output_dir_not_writable(tiny_pipeline_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    check(cfg(tmp_path, tiny_pipeline_dir("sd"), output_dir=str(tmp_path / "file" / "run")), "not writable")


def test_missing_category(tiny_pipeline_dir, tmp_path):
    check(cfg(tmp_path, tiny_pipeline_dir("sd"), adapter_mode="per_category", categories=["color_and_tone"]),
          "no rows of category 'color_and_tone'")


def test_cli_reports_config_errors(tmp_path, capsys):
    from pluralign.config import ConfigError, run_module
    from pluralign.train import main

    with pytest.raises(ConfigError, match="learning_rat"):
        main(["--learning_rat", "1"])
    # the one CLI convention: main() raises on bad input, run_module turns that into a line and exit 2
    assert run_module(lambda: main(["--pretrained_model", str(tmp_path / "missing"), "--output_dir",
                                    str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c")]), "pluralign train") == 2
    assert "no such file or directory" in capsys.readouterr().err
