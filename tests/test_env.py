import pytest
import torch

from pluralign.env import check_device
from pluralign.trainers.trainer import wandb_can_log


def test_a_device_this_machine_cannot_run_on_is_named_before_any_model_loads(monkeypatch):
    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"device 'foo': not a torch device; use auto, cpu, cuda, cuda:N or mps"):
        check_device("foo")
    with pytest.raises(ValueError, match=r"generator_device meta: no meta device is available to this torch"):
        check_device("meta", "generator_device")  # a torch device, but not one to sample on
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device cuda:1: .*use --device cpu or auto"):
        check_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match=r"device cuda:1: this machine has 1 GPU\(s\), numbered from 0"):
        check_device("cuda:1")


def test_the_eval_config_checks_its_device():
    from pluralign.eval.runner import EvalConfig

    with pytest.raises(ValueError, match="device 'gpu0': not a torch device"):
        EvalConfig(device="gpu0")


def test_wandb_logging_is_possible_offline_with_a_key_or_with_a_netrc_entry(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_can_log()  # no netrc file at all
    (tmp_path / "netrc").write_text("machine example.com login user password secret\n")
    assert not wandb_can_log()
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")
    assert wandb_can_log()
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_can_log()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_can_log()


def test_wandb_settings_files_and_a_server_with_a_port_count(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.chdir(tmp_path)
    assert not wandb_can_log()
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")  # what `wandb offline` leaves
    assert wandb_can_log()
    (tmp_path / "wandb" / "settings").write_text("[default]\nbase_url = http://wandb.local:8080\n")
    (tmp_path / "netrc").write_text("machine wandb.local:8080 login user password secret\n")
    assert wandb_can_log()
