"""A run directory holds one run: overwrite leaves nothing of the old one, a resume follows the
recorded trajectory or says what changed, damaged checkpoints are skipped by name, and an exported
adapter carries the identity of the base it was trained on."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open
from safetensors.torch import load_file
from test_trainer_helpers import cfg

from pluralign.trainers import checkpoint as ckpt
from pluralign.trainers import plan, train
from pluralign.trainers.identity import (
    AdapterMismatchError,
    base_identity,
    check_adapter_fits,
    fingerprint_dir,
    read_adapter_identity,
)
from pluralign.trainers.manifest import trajectory_changes

pytestmark = pytest.mark.slow


def _weights(result):
    return load_file(str(result.adapter_dir / "pytorch_lora_weights.safetensors"))


def test_overwrite_then_kill_then_resume_exports_the_new_run(tiny_pipeline_dir, tmp_path, capsys):
    """The data-loss case: an old run is overwritten, the new one is killed after a checkpoint, and
    ``resume_from_checkpoint: latest`` must continue the new run, never export the old adapter."""
    model = tiny_pipeline_dir("sd")
    old = train(cfg(tmp_path, model, max_steps=4, checkpointing_steps=2, seed=1, learning_rate=3e-3))
    old_id = json.loads((old.output_dir / "run.json").read_text())["run_id"]
    old_w = _weights(old)
    # a new run over it, "killed" after its first checkpoint: train 2 of 4 steps, then drop the export
    new_cfg = dict(max_steps=4, checkpointing_steps=2, seed=2, learning_rate=3e-3)
    train(cfg(tmp_path, model, overwrite_output_dir=True, **{**new_cfg, "max_steps": 2}))
    new_id = json.loads((old.output_dir / "run.json").read_text())["run_id"]
    assert new_id != old_id
    assert [ckpt.run_id_of(p) for p in ckpt.list_checkpoints(old.output_dir / "checkpoints")] == [new_id]
    shutil.rmtree(old.output_dir / "adapter")  # what a kill before the export leaves
    resumed = train(cfg(tmp_path, model, resume_from_checkpoint="latest", **new_cfg))
    assert "no checkpoint of this run" not in capsys.readouterr().out
    # nothing to resume in a new folder: the run starts from step 0, and says so
    straight = train(cfg(tmp_path / "straight", model, resume_from_checkpoint="latest", **new_cfg))
    assert "resume_from_checkpoint latest: no checkpoint of this run under" in capsys.readouterr().out
    got, want = _weights(resumed), _weights(straight)
    assert all((got[k] - want[k]).abs().max() <= 1e-6 for k in want)
    assert any((got[k] - old_w[k]).abs().max() > 1e-6 for k in old_w)
    assert read_adapter_identity(resumed.adapter_dir)["run_id"] == new_id


def test_starting_over_an_existing_run_needs_overwrite(tiny_pipeline_dir, tmp_path):
    model = tiny_pipeline_dir("sd")
    train(cfg(tmp_path, model, max_steps=1, export_kohya=False))
    with pytest.raises(ValueError, match="already holds a run; set overwrite_output_dir"):
        plan(cfg(tmp_path, model, max_steps=1))
    with pytest.raises(ValueError, match="set only one of them"):
        plan(cfg(tmp_path, model, overwrite_output_dir=True, resume_from_checkpoint="latest"))


def test_resume_refuses_a_changed_trajectory_and_names_each_field(tiny_pipeline_dir, tmp_path):
    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=2, checkpointing_steps=1, export_kohya=False)
    first = train(cfg(tmp_path, model, **common))
    run_json = first.output_dir / "run.json"
    manifest = json.loads(run_json.read_text())
    assert manifest["base"]["family"] == "sd" and manifest["base"]["fingerprint"]
    assert manifest["dataset"]["spec"] == "builtin:shapes" and manifest["config"]["learning_rate"] == 1e-3
    with pytest.raises(ValueError) as err:
        plan(cfg(tmp_path, model, resume_from_checkpoint="latest", learning_rate=5e-4, seed=3, loss_type="hinge",
                 **common))
    msg = str(err.value)
    assert str(run_json) in msg and "allow_config_change" in msg
    for line in ("learning_rate: 0.001 -> 0.0005", "seed: 0 -> 3", "loss_type: 'sigmoid' -> 'hinge'"):
        assert line in msg, line
    # logging, checkpointing, trackers and the step budget may change freely
    plan(cfg(tmp_path, model, resume_from_checkpoint="latest", **{**common, "max_steps": 5, "logging_steps": 3,
                                                                  "checkpointing_steps": 2, "report_to": "none"}))
    # and an explicit flag accepts the change, recording it in run.json
    train(cfg(tmp_path, model, resume_from_checkpoint="latest", allow_config_change=True, learning_rate=5e-4,
              **{**common, "max_steps": 3}))
    resumes = json.loads(run_json.read_text())["resumes"]
    assert resumes[-1]["accepted_changes"] == ["learning_rate: 0.001 -> 0.0005"]


def test_resume_skips_a_damaged_checkpoint_by_name(tiny_pipeline_dir, tmp_path):
    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=4, checkpointing_steps=2, checkpoints_total_limit=3, export_kohya=False)
    first = train(cfg(tmp_path, model, **common))
    root = first.output_dir / "checkpoints"
    newest = root / "checkpoint-4"
    (newest / "optimizer.pt").write_bytes(b"\x00not a torch file")
    run_id = json.loads((first.output_dir / "run.json").read_text())["run_id"]
    with pytest.warns(UserWarning, match=r"checkpoint-4 is damaged \(optimizer.pt: "):
        assert ckpt.resolve_resume("latest", root, run_id) == root / "checkpoint-2"
    with pytest.raises(ValueError, match=r"checkpoint-4: the checkpoint is damaged"):
        ckpt.resolve_resume(str(newest), root, run_id)
    with pytest.warns(UserWarning, match="belongs to run"):
        assert ckpt.resolve_resume("latest", root, "another-run") is None


def test_an_adapter_carries_its_base_and_refuses_another(tiny_pipeline_dir, tmp_path):
    sd, sdxl = tiny_pipeline_dir("sd"), tiny_pipeline_dir("sdxl")
    result = train(cfg(tmp_path, sd, max_steps=1, export_kohya=False))
    ident = read_adapter_identity(result.adapter_dir)
    assert ident["family"] == "sd" and ident["fingerprint"] == fingerprint_dir(sd / "unet")
    assert "| family | sd |" in (result.adapter_dir / "README.md").read_text()
    assert check_adapter_fits(result.adapter_dir, base_identity(sd))["family"] == "sd"
    with pytest.raises(AdapterMismatchError, match=r"trained for the sd family .* is sdxl"):
        check_adapter_fits(result.adapter_dir, base_identity(sdxl))
    # same family, other weights: refused unless asked for
    other = tmp_path / "other_sd"
    shutil.copytree(sd, other)
    w = other / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(w))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1.0
    from safetensors.torch import save_file

    save_file(tensors, str(w))
    with pytest.raises(AdapterMismatchError, match="allow_other_base"):
        check_adapter_fits(result.adapter_dir, base_identity(other))
    assert check_adapter_fits(result.adapter_dir, base_identity(other), allow_other_base=True)
    # the stock loader still reads the file: the identity is metadata beside diffusers' own
    with safe_open(str(result.adapter_dir / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert "pluralign.family" in f.metadata()


def test_trajectory_changes_ignore_free_fields():
    from pluralign.config import to_dict
    from pluralign.trainers import DPOTrainConfig

    old = {"config": to_dict(DPOTrainConfig()), "base": {"fingerprint": "a"}, "dataset": {"fingerprint": "d"}}
    new = DPOTrainConfig(max_steps=99, logging_steps=7, report_to="wandb", validation_steps=3)
    assert trajectory_changes(old, new, {"fingerprint": "a"}, {"fingerprint": "d"}) == []
    changed = trajectory_changes(old, DPOTrainConfig(rank=8), {"fingerprint": "b", "model": "m2"},
                                 {"fingerprint": "d"})
    assert changed[0] == "rank: 4 -> 8" and changed[1].startswith("base fingerprint: a -> b")


def test_an_option_added_after_the_run_started_changes_nothing_at_its_default():
    """A run recorded before an option existed resumes under a version that has it, left at its default (the
    default is what the code did before); set to anything else, it is a change like any other."""
    from pluralign.config import to_dict
    from pluralign.trainers import DPOTrainConfig

    recorded = to_dict(DPOTrainConfig(preserve_null_weight=1e5))
    del recorded["preserve_null_rows"]  # the manifest of a run that started before the option existed
    old = {"config": recorded, "base": {"fingerprint": "a"}, "dataset": {"fingerprint": "d"}}
    same, fp = DPOTrainConfig(preserve_null_weight=1e5), ({"fingerprint": "a"}, {"fingerprint": "d"})
    assert trajectory_changes(old, same, *fp) == []
    assert trajectory_changes(old, DPOTrainConfig(preserve_null_weight=1e5, preserve_null_rows="chosen"), *fp) == [
        "preserve_null_rows: None -> 'chosen'"]


def test_a_second_run_on_a_busy_output_dir_is_refused(tiny_pipeline_dir, tmp_path):
    from pluralign.locks import LockedError, directory_lock

    model = tiny_pipeline_dir("sd")
    config = cfg(tmp_path, model, max_steps=1, export_kohya=False)
    with directory_lock(tmp_path / "run", "output_dir"):  # as another run would hold it
        with pytest.raises(LockedError, match=r"output_dir .*run is in use by process \d+"):
            train(config)
    assert not (tmp_path / "run" / "run.json").exists()  # refused before it wrote anything
    train(config)  # the lock is released with its holder
    assert not (tmp_path / ".run.lock").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, capsys):
    import socket

    from pluralign.locks import directory_lock

    (tmp_path / ".out.lock").write_text(f"{socket.gethostname()} 999999999")
    with directory_lock(tmp_path / "out", "output"):
        pass
    assert "taking over the lock of a process that is gone" in capsys.readouterr().err


def test_an_uncached_base_offline_says_what_to_download(tmp_path, monkeypatch):
    from pluralign.hub import ModelNotFound
    from pluralign.trainers import DPOTrainConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(ModelNotFound) as err:
        plan(DPOTrainConfig(pretrained_model="black-forest-labs/FLUX.1-dev", output_dir=str(tmp_path / "o"),
                            cache_dir=str(tmp_path / "c")))
    msg = str(err.value)
    assert "pretrained_model black-forest-labs/FLUX.1-dev is not on this machine" in msg
    assert "hf download black-forest-labs/FLUX.1-dev" in msg and "licence" in msg and "--pretrained_model DIR" in msg


def test_a_full_disk_while_checkpointing_keeps_the_earlier_checkpoints(tiny_pipeline_dir, tmp_path, monkeypatch):
    import errno

    model = tiny_pipeline_dir("sd")
    calls = {"n": 0}
    real = ckpt.save_file

    def filling(tensors, path, *a, **k):
        calls["n"] += 1
        if "checkpoint-4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt, "save_file", filling)
    with pytest.raises(ckpt.CheckpointWriteError, match=r"checkpoint-4; the last intact checkpoint is .*checkpoint-2"):
        train(cfg(tmp_path, model, max_steps=4, checkpointing_steps=2, export_kohya=False))
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["checkpoint-2"] and ckpt.problem(root / "checkpoint-2") is None


def test_ctrl_c_is_one_line_and_status_130(capsys):
    from pluralign.config import EXIT_INTERRUPTED, run_module

    def interrupted():
        raise KeyboardInterrupt

    assert run_module(interrupted, "pluralign train") == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.startswith("pluralign train: interrupted")
