"""Every training recipe loads, and runs two optimizer steps through the training entry point
(``pluralign.train.main``, what ``accelerate launch -m pluralign.train`` runs) on CPU with the hub model
swapped for the tiny factory of its family and the hub data for ``builtin:shapes``. The launcher itself is
family-independent and runs once, in test_trainer_runs.py::test_accelerate_launch_recipe_with_offline_wandb;
here each recipe runs in the test process, which saves the launcher's two interpreter start-ups per recipe.

Every other setting of the recipe stays: LoRA rank/alpha, β, loss, learning rate and schedule,
8-bit Adam, gradient checkpointing, gradient accumulation, per-category mode, flow timestep
sampling, Flux guidance, W&B tracker (disabled by the environment). What changes is only what a
CPU without downloads cannot do: mixed precision (-> no), resolution (-> 32), batch (-> 2), the
categories (-> the one the toy data has) and the step counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pluralign.config import parse
from pluralign.trainers.config import DPOTrainConfig

ROOT = Path(__file__).resolve().parents[1]
REAL = {"sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd"),
        "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl"),
        "sd35_medium": ("stabilityai/stable-diffusion-3.5-medium", "sd3"),
        "flux1_dev": ("black-forest-labs/FLUX.1-dev", "flux")}
CPU_OVERRIDES = {"mixed_precision": "no", "resolution": "32", "train_batch_size": "2", "max_steps": "2",
                 "categories": "clarity_and_focus", "checkpointing_steps": "1", "validation_steps": "2",
                 "validation_inference_steps": "2", "dataloader_num_workers": "0"}


def _load(name: str, *overrides: str) -> DPOTrainConfig:
    (config,) = parse((DPOTrainConfig,), ["--config", str(ROOT / "recipes" / f"{name}_intent_dpo.yaml"), *overrides])
    return config


def all_recipes() -> list[str]:
    return sorted(p.name[: -len("_intent_dpo.yaml")] for p in (ROOT / "recipes").glob("*_intent_dpo.yaml"))


def test_every_real_family_has_a_recipe_with_its_hub_id():
    assert set(REAL) <= set(all_recipes())
    for name, (hub_id, family) in REAL.items():
        c = _load(name)
        assert (c.pretrained_model, c.family) == (hub_id, family)
        assert c.optimizer == "adamw8bit" and c.gradient_checkpointing and c.mixed_precision in ("fp16", "bf16")
        assert c.adapter_mode == "per_category" and c.report_to == "wandb"
        assert c.dataset == "outputs/data/intent_pairs"
        if family in ("sd3", "flux"):
            assert (c.prediction_type, c.weighting_scheme) == ("flow_matching", "logit_normal")
    assert _load("sdxl").rank == 8 and _load("sdxl").learning_rate == 1e-5 and _load("sdxl").beta == 5000
    assert _load("flux1_dev").embedded_guidance_scale == 3.5


def test_data_recipe_loads_and_mixes_pickapic():
    from pluralign.data.config import DataConfig

    (dc,) = parse((DataConfig,), ["--config", str(ROOT / "recipes" / "data_intent_pairs.yaml")])
    assert "yuvalkirstain/pickapic_v2" in dc.sources and 0 < dc.anti_fraction < 1 and dc.ties == "drop"


def _cpu_argv(name: str, tmp: Path) -> list[str]:
    c = _load(name)
    family = REAL[name][1] if name in REAL else c.pretrained_model.split(":", 1)[1]
    argv = ["--config", f"recipes/{name}_intent_dpo.yaml", "--pretrained_model", f"tiny:{family}",
            "--dataset", "builtin:shapes", "--output_dir", str(tmp / "out"), "--cache_dir", str(tmp / "cache")]
    for k, v in CPU_OVERRIDES.items():
        if k == "categories" and c.adapter_mode != "per_category":
            continue
        argv += [f"--{k}", v]
    return argv


@pytest.mark.parametrize("name", [n for n in all_recipes() if n != "tiny_sd"])  # tiny_sd: test_trainer_runs.py
def test_recipe_two_steps_through_the_training_entry_point(name, tmp_path, monkeypatch, capsys):
    argv = _cpu_argv(name, tmp_path)
    (config,) = parse((DPOTrainConfig,), argv[:1] + [str(ROOT / argv[1])] + argv[2:])
    kept = _load(name)
    for field in ("rank", "alpha", "beta", "loss_type", "learning_rate", "lr_scheduler", "optimizer",
                  "gradient_checkpointing", "gradient_accumulation_steps", "adapter_mode", "weighting_scheme",
                  "embedded_guidance_scale", "max_sequence_length", "report_to"):
        assert getattr(config, field) == getattr(kept, field), field
    from pluralign.train import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("PLURALIGN_CACHE", str(tmp_path / "cache"))
    rc = main(argv)
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr[-4000:]
    out = tmp_path / "out"
    adapters = ([out / "adapter" / "clarity_and_focus"] if config.adapter_mode == "per_category"
                else [out / "adapter"])
    for adir in adapters:
        assert (adir / "pytorch_lora_weights.safetensors").stat().st_size > 0
    run_dir = out / "runs" / "clarity_and_focus" if config.adapter_mode == "per_category" else out
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    assert "final metrics" in stdout


@pytest.mark.parametrize("name,kind,procs", [("cpu", "NO", 1), ("cpu_2proc", "MULTI_GPU", 2), ("single_gpu", "NO", 1),
                                             ("multi_gpu", "MULTI_GPU", 8), ("deepspeed_zero2", "DEEPSPEED", 8),
                                             ("fsdp", "FSDP", 8)])
def test_accelerate_configs_load_with_accelerates_own_loader(name, kind, procs):
    """accelerate's config loader (the one `accelerate launch --config_file` uses) accepts every file."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    c = load_config_from_file(str(ROOT / "recipes" / "accelerate" / f"{name}.yaml"))
    assert isinstance(c, ClusterConfig)
    assert str(c.distributed_type).endswith(kind) and c.num_processes == procs
    if name == "fsdp":
        assert c.fsdp_config["fsdp_use_orig_params"] is True      # only the LoRA parameters train
    if name == "deepspeed_zero2":
        assert c.deepspeed_config["zero_stage"] == 2


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd35_medium", "flux1_dev"])
def test_real_recipes_train_the_intent_objective(name):
    """A real-model recipe trains the demo's method, not plain Diffusion-DPO: the SFT and preservation
    terms are on, and the guidance-matched terms follow whether the family samples with CFG."""
    c = _load(name)
    assert c.sft_weight > 0 and c.preserve_weight > 0
    cfg_free = name == "flux1_dev"  # guidance is distilled into an input: nothing extrapolates from the null prompt
    assert (c.guided_sft_scale > 1) != cfg_free and (c.preserve_null_weight > 0) != cfg_free


# ------------------------------------------------------------------------------ data generate recipes
TEACHERS = {"sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", 30, 7.0),
            "flux": ("black-forest-labs/FLUX.1-dev", 28, 3.5)}


def _load_generate(name: str, *overrides: str):
    from pluralign.onpolicy.config import GenerateConfig

    (config,) = parse((GenerateConfig,), ["--config", str(ROOT / "recipes" / f"data_generate_{name}.yaml"),
                                          *overrides])
    return config


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_generate_recipes_load_with_the_real_parser(name):
    """Every key is a GenerateConfig field (the parser refuses any other), and the scorer spec builds:
    CLIP-L directional plus a VLM judge, on the category no degradation reaches."""
    from pluralign.rewards.intent_scorers import CombinedScorer, JudgeScorer, PromptAwareScorer, build_intent_scorer

    hub_id, steps, guidance = TEACHERS[name]
    c = _load_generate(name)
    assert c.generator == hub_id
    assert (c.num_inference_steps, c.guidance_scale) == (steps, guidance)
    assert c.categories == ["emotion_and_subject"] and c.num_candidates >= 2 and c.dtype == "bfloat16"
    assert c.min_margin is not None and c.min_margin > 0
    scorer = build_intent_scorer(c.scorer, "cpu")  # constructs; reads no weights
    assert isinstance(scorer, CombinedScorer)
    clip, judge = scorer.scorers
    assert isinstance(clip, PromptAwareScorer) and clip.model.model_id == "openai/clip-vit-large-patch14"
    assert isinstance(judge, JudgeScorer) and judge.judge.model_id.count("/") == 1  # a hub id
    # both recipes share suite, scorer and thresholds: their pairs mix as one teacher set
    assert c.scorer == _load_generate("sdxl").scorer and c.suite == _load_generate("sdxl").suite


def test_generate_recipe_typo_is_refused(tmp_path):
    from pluralign.config import ConfigError
    from pluralign.onpolicy.config import GenerateConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "recipes" / "data_generate_sdxl.yaml").read_text().replace("num_candidates:",
                                                                                      "num_candidate:"))
    with pytest.raises(ConfigError, match="num_candidate"):
        parse((GenerateConfig,), ["--config", str(bad)])


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_generate_recipes_name_what_to_download_offline(name, tmp_path, monkeypatch):
    """Offline and not cached, the run stops before any work with the `hf download` command for the
    teacher (and the licence gate for FLUX.1-dev), then for the scorer's weights: what docs/data.md says."""
    from huggingface_hub import constants

    from pluralign.hub import ModelNotFound
    from pluralign.onpolicy.generate import prepare

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    captions = tmp_path / "captions.txt"
    captions.write_text("a portrait of an old fisherman at the harbour\na lighthouse on a rocky coast\n")
    c = _load_generate(name, "--suite", str(captions), "--output_dir", str(tmp_path / "out"), "--device", "cpu")
    hub_id = TEACHERS[name][0]
    with pytest.raises(ModelNotFound, match=f"hf download {hub_id}") as err:
        prepare(c)
    assert ("accept its licence" in str(err.value)) == (name == "flux")
    with pytest.raises(ModelNotFound, match="hf download openai/clip-vit-large-patch14"):
        prepare(c, pipe=object())  # a loaded generator: the scorer's weights are checked next


@pytest.mark.parametrize("path", sorted([*(ROOT / "recipes").glob("*_intent_dpo.yaml"),
                                         *(ROOT / "pluralign" / "toy" / "recipes").glob("*.yaml")]),
                         ids=lambda p: p.name)
def test_every_recipe_schedule_fits_its_own_steps(path):
    """A recipe's schedule is checked only when its run starts; a tail longer than the recipe's own steps (the toy
    intent recipe's 360 of 1800) must fail here rather than after the data and models have loaded."""
    from pluralign.trainers.schedules import check_schedule

    (config,) = parse((DPOTrainConfig,), ["--config", str(path)])
    check_schedule(config.lr_scheduler, config.lr_warmup_steps, config.max_steps, config.lr_decay_steps,
                   config.lr_decay_share)
    with pytest.raises(ValueError, match="lr_decay_steps"):  # the check is live for this recipe's scheduler
        check_schedule(config.lr_scheduler, config.lr_warmup_steps, config.max_steps, config.max_steps + 1)
