"""Faults of ``pluralign eval`` caught before any work, and output that is one run's or none.

Each test checks the exit status (or the exception), that the message names what is wrong and
where, and that nothing already on disk was lost: an adapter for another base, a missing adapter,
a base or judge that is not on this machine, a locked output, a full disk.
"""

import errno
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from pluralign.cli import main as cli
from pluralign.eval import generate, runner
from pluralign.eval.fixtures import save_random_lora, save_tiny_clip
from pluralign.eval.output import OutputDiskFull, OutputError, OutputLocked, output_transaction
from pluralign.eval.runner import EvalConfig, check_adapter_identity, run_eval
from pluralign.eval.suite import EvalRow
from pluralign.trainers.export import add_metadata
from pluralign.trainers.identity import AdapterMismatchError, base_identity, identity_metadata

ROWS = [EvalRow("a red circle on white", "a red circle on white, very dark", ["underexposed"], 11)]
FAST = ["--num_inference_steps", "1", "--batch_size", "2", "--bootstrap", "100", "--content_checker", "none"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "suite.jsonl"
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in ROWS))
    return path


@pytest.fixture(scope="module")
def sd_lora(tiny_pipeline_dir, tmp_path_factory):
    """A third-party-style LoRA for the tiny SD pipeline: no pluralign identity in its metadata."""
    return save_random_lora(tiny_pipeline_dir("sd"), tmp_path_factory.mktemp("sd-lora"), scale=30.0)


def _adapter_with_identity(base_dir, out_dir, **overrides):
    """A LoRA for ``base_dir`` carrying the base identity the trainer writes (as if trained on it)."""
    adapter = save_random_lora(base_dir, out_dir)
    identity = {**base_identity(str(base_dir)), **overrides}
    add_metadata(adapter / "pytorch_lora_weights.safetensors", identity_metadata(identity, "test-run"))
    return adapter


def _no_model_load(monkeypatch):
    monkeypatch.setattr(runner, "load_pipeline", lambda *a, **k: pytest.fail("loaded the base pipeline"))
    monkeypatch.setattr(generate, "generate_pairs", lambda *a, **k: pytest.fail("generated an image"))


def _siblings(out):
    """Temp, old and lock files a run leaves next to its output if it does not clean up."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith((out.name + ".", f".{out.name}.")))


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ item 3: an adapter for another base


def test_an_sd_adapter_is_refused_on_an_sdxl_base_before_any_image(tiny_pipeline_dir, suite, tmp_path, capsys,
                                                                   monkeypatch):
    sd, sdxl = tiny_pipeline_dir("sd"), tiny_pipeline_dir("sdxl")
    adapter = _adapter_with_identity(sd, tmp_path / "adapter")
    _no_model_load(monkeypatch)
    out = tmp_path / "eval"
    rc = cli(["eval", "--base", str(sdxl), "--adapter", str(adapter), "--suite", str(suite), "--output", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"adapter {adapter / 'pytorch_lora_weights.safetensors'} was trained for the sd family ({sd})" in err
    assert f"but the base {sdxl} is sdxl" in err
    assert not out.exists() and _siblings(out) == []  # no images/, no partial output, no lock


@pytest.mark.slow
def test_a_trained_sd_adapter_is_refused_on_an_sdxl_base(tiny_pipeline_dir, suite, tmp_path, capsys, monkeypatch):
    """The same with an adapter the trainer wrote (one step), not a hand-made identity."""
    from pluralign.trainers import DPOTrainConfig, train

    sd, sdxl = tiny_pipeline_dir("sd"), tiny_pipeline_dir("sdxl")
    result = train(DPOTrainConfig(pretrained_model=str(sd), dataset="builtin:shapes", output_dir=str(tmp_path / "run"),
                                  cache_dir=str(tmp_path / "cache"), max_steps=1, train_batch_size=2, report_to="none",
                                  export_kohya=False))
    _no_model_load(monkeypatch)
    out = tmp_path / "eval"
    rc = cli(["eval", "--base", str(sdxl), "--adapter", str(result.adapter_dir), "--suite", str(suite),
              "--output", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and f"trained for the sd family ({sd})" in err and f"the base {sdxl} is sdxl" in err
    assert not out.exists()


def test_a_third_party_sd_lora_on_sdxl_fails_on_its_unmatched_keys(tiny_pipeline_dir, sd_lora, tmp_path, monkeypatch):
    """Without identity metadata the LoRA loads, and most of its tensors match nothing: an error, not a warning."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(tiny_pipeline_dir("sdxl")))
    monkeypatch.setattr(generate, "generate_pairs", lambda *a, **k: pytest.fail("generated an image"))
    out = tmp_path / "eval"
    config = EvalConfig(adapter=str(sd_lora), output=str(out), weights=[1.0], content_checker="none", bootstrap=100)
    with pytest.raises(ValueError) as err:
        run_eval(config, pipe=pipe, rows=ROWS, judges={})
    msg = str(err.value)
    weight_file = sd_lora / "pytorch_lora_weights.safetensors"
    matched, total = map(int, re.search(rf"adapter {re.escape(str(weight_file))}: only (\d+) of its (\d+) LoRA tensors "
                                        "match modules of this StableDiffusionXLPipeline", msg).groups())
    assert matched < total
    assert "unmatched, e.g.: unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1." in msg
    assert not out.exists() and _siblings(out) == []
    assert not pipe.get_list_adapters()  # the partly loaded adapter is gone from the caller's pipeline


def test_identity_comes_from_the_pipeline_object_or_its_class(tiny_pipeline_dir, tmp_path):
    from diffusers import DiffusionPipeline

    sd, sdxl = tiny_pipeline_dir("sd"), tiny_pipeline_dir("sdxl")
    adapter = _adapter_with_identity(sd, tmp_path / "adapter") / "pytorch_lora_weights.safetensors"
    config = EvalConfig(adapter=str(adapter))
    sd_pipe, sdxl_pipe = DiffusionPipeline.from_pretrained(str(sd)), DiffusionPipeline.from_pretrained(str(sdxl))
    assert check_adapter_identity(config, adapter, sd_pipe)  # its own base, found from the pipeline's directory
    with pytest.raises(AdapterMismatchError, match=f"the base {sdxl} is sdxl"):
        check_adapter_identity(config, adapter, sdxl_pipe)
    # a pipeline whose source is no local directory: the family still comes from its class
    sdxl_pipe.register_to_config(_name_or_path="org/somewhere-else")
    with pytest.raises(AdapterMismatchError, match=r"org/somewhere-else \(StableDiffusionXLPipeline\) is sdxl"):
        check_adapter_identity(config, adapter, sdxl_pipe)


def test_other_weights_of_the_same_family_need_allow_other_base(tiny_pipeline_dir, tmp_path):
    sd = tiny_pipeline_dir("sd")
    adapter = _adapter_with_identity(sd, tmp_path / "adapter", model="org/a-fine-tune", fingerprint="0" * 24)
    weight_file = adapter / "pytorch_lora_weights.safetensors"
    with pytest.raises(AdapterMismatchError, match=r"trained on org/a-fine-tune \(fingerprint 0+\), not on the base"):
        check_adapter_identity(EvalConfig(base=str(sd), adapter=str(adapter)), weight_file)
    assert check_adapter_identity(EvalConfig(base=str(sd), adapter=str(adapter), allow_other_base=True), weight_file)
    # a third-party LoRA carries no identity: nothing to compare (its keys are checked when it loads)
    plain = save_random_lora(sd, tmp_path / "plain") / "pytorch_lora_weights.safetensors"
    assert check_adapter_identity(EvalConfig(base=str(sd), adapter=str(plain)), plain)


# ------------------------------------------------------------------ item 7: input paths, checked first


@pytest.mark.parametrize("make, problem", [
    (lambda d: d / "nope", "no such file or directory"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no .safetensors LoRA weights in this directory"),
    (lambda d: (d / "w.bin").write_bytes(b"x") and d / "w.bin", "not a .safetensors file"),
])
def test_a_bad_adapter_path_stops_before_any_work(tiny_pipeline_dir, suite, tmp_path, capsys, monkeypatch, make,
                                                  problem):
    adapter = make(tmp_path)
    _no_model_load(monkeypatch)
    out = tmp_path / "eval"
    rc = cli(["eval", "--base", str(tiny_pipeline_dir("sd")), "--adapter", str(adapter), "--suite", str(suite),
              "--output", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and f"error: adapter {adapter}: {problem}" in err
    assert not out.exists() and _siblings(out) == []


# ------------------------------------------------------------------ items 13, 14: models checked and loaded first


def test_a_base_that_is_not_here_stops_before_any_work(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _no_model_load(monkeypatch)
    out = tmp_path / "eval"
    rc = cli(["eval", "--base", "black-forest-labs/FLUX.1-dev", "--suite", str(suite), "--output", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "error: base black-forest-labs/FLUX.1-dev is not on this machine and the hub is offline" in err
    assert "`hf download black-forest-labs/FLUX.1-dev`" in err and "https://huggingface.co/black-forest-labs/FLUX.1-dev" in err
    assert "(--base DIR)" in err and not out.exists()


def test_judges_are_checked_and_loaded_before_the_first_image(tiny_pipeline_dir, suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _no_model_load(monkeypatch)
    base, out = str(tiny_pipeline_dir("sd")), tmp_path / "eval"
    # a judge whose weights are not on this machine
    rc = cli(["eval", "--base", base, "--suite", str(suite), "--judges", "verifier,clip", "--output", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "clip: model openai/clip-vit-large-patch14 is not on this machine" in err
    assert "(--judges clip=PATH)" in err and not out.exists()
    # a judge directory that holds no model: its load fails, and it is loaded before any generation
    (tmp_path / "not-clip").mkdir()
    rc = cli(["eval", "--base", base, "--suite", str(suite), "--judges", f"clip={tmp_path / 'not-clip'}",
              "--output", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and f"clip: could not load weights '{tmp_path / 'not-clip'}'" in err
    assert not out.exists()


def test_a_judge_from_a_local_directory(tiny_pipeline_dir, suite, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = save_tiny_clip(tmp_path / "clip")
    out = tmp_path / "eval"
    assert cli(["eval", "--base", str(tiny_pipeline_dir("sd")), "--suite", str(suite), "--judges", f"clip={clip}",
                "--device", "cpu", "--output", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["judges"] == [f"clip={clip}"]
    assert set(results["variants"]["base"]["judges"]) == {"clip"}


# ------------------------------------------------------------------ item 9: one run's output, or the previous one


@pytest.fixture(scope="module")
def sd_pipe(tiny_pipeline_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(tiny_pipeline_dir("sd")))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, out, adapter=None, weights=(0.0,)):
    config = EvalConfig(adapter=str(adapter) if adapter else None, adapter_name="faults",
                        weights=list(weights) if adapter else [],
                        output=str(out), num_inference_steps=1, batch_size=2, bootstrap=100, content_checker="none")
    return run_eval(config, pipe=pipe, rows=ROWS, judges={})


def test_a_second_run_replaces_the_first_whole(sd_pipe, sd_lora, tmp_path):
    out = tmp_path / "eval"
    _run(sd_pipe, out, sd_lora, weights=[0.0, 1.0])
    assert sorted(p.name for p in (out / "images").iterdir()) == ["adapter_w0", "adapter_w1", "base"]
    _run(sd_pipe, out)  # base only: nothing of the first run may remain beside it
    assert sorted(p.name for p in (out / "images").iterdir()) == ["base"]
    assert list(json.loads((out / "results.json").read_text())["variants"]) == ["base"]
    assert _siblings(out) == []


def _previous_results(out):
    (out / "images" / "base").mkdir(parents=True)
    (out / "images" / "base" / "00000_o.png").write_bytes(b"previous image")
    (out / "results.json").write_text('{"previous": true}\n')
    return _snapshot(out)


def test_a_live_lock_stops_a_second_run(sd_pipe, tmp_path, monkeypatch):
    out, lock = tmp_path / "eval", tmp_path / ".eval.lock"
    before = _previous_results(out)
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")  # this process is alive
    monkeypatch.setattr(generate, "generate_pairs", lambda *a, **k: pytest.fail("generated an image"))
    with pytest.raises(OutputLocked, match=rf"output {re.escape(str(out))} is in use by process {os.getpid()} on "):
        _run(sd_pipe, out)
    assert _snapshot(out) == before and lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert issubclass(OutputLocked, ValueError)


def test_a_stale_lock_is_taken_over_and_what_its_run_left_is_removed(sd_pipe, tmp_path, capfd):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "eval"
    (tmp_path / ".eval.lock").write_text(f"{socket.gethostname()} {dead.pid}")
    (tmp_path / f"eval.tmp-{dead.pid}").mkdir()  # what the dead run left half written
    _run(sd_pipe, out)
    assert f"output {out}: taking over the lock of a process that is gone" in capfd.readouterr().err
    assert (out / "results.json").exists() and _siblings(out) == []


def test_results_a_run_moved_aside_before_it_died_come_back(tmp_path):
    """A run killed between the two renames of its swap leaves the previous results as <output>.old-<pid>."""
    out = tmp_path / "eval"
    before = _previous_results(tmp_path / "eval.old-12345")
    with pytest.raises(RuntimeError, match="stop"), output_transaction(out):
        raise RuntimeError("stop")
    assert _snapshot(out) == before and _siblings(out) == []


def test_a_full_disk_keeps_the_previous_results(tiny_pipeline_dir, suite, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    before = _previous_results(out)

    def disk_full(results, pairs, rows, output, max_rows=8):
        (output / "report.md").write_text("half a report")
        raise OSError(errno.ENOSPC, "No space left on device", str(output / "report.html"))

    monkeypatch.setattr(runner, "write_reports", disk_full)
    rc = cli(["eval", "--base", str(tiny_pipeline_dir("sd")), "--suite", str(suite), "--output", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"error: output {out}: the disk is full" in err and f"the previous results in {out} are intact" in err
    assert _snapshot(out) == before and _siblings(out) == []  # temp directory and lock removed
    assert issubclass(OutputDiskFull, ValueError)


def test_an_output_holding_other_files_is_not_replaced(sd_pipe, tmp_path, monkeypatch):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(generate, "generate_pairs", lambda *a, **k: pytest.fail("generated an image"))
    with pytest.raises(OutputError, match=rf"output {re.escape(str(out))} holds files that are not eval results "
                                          r"\(notes.txt\)"):
        _run(sd_pipe, out)
    assert (out / "notes.txt").read_text() == "mine" and _siblings(out) == []


def test_only_a_size_mismatch_is_called_an_adapter_for_another_model(tmp_path):
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from pluralign.eval.generate import load_adapter

    (tmp_path / "a").mkdir()
    save_file({"unet.x.lora_A.weight": torch.zeros(1, 1)}, str(tmp_path / "a" / "pytorch_lora_weights.safetensors"))

    def pipe_raising(message):
        def load(*args, **kwargs):
            raise RuntimeError(message)
        return SimpleNamespace(load_lora_weights=load, get_list_adapters=lambda: {})

    with pytest.raises(RuntimeError, match="out of memory"):  # not the adapter's fault: not relabelled
        load_adapter(pipe_raising("CUDA out of memory"), tmp_path / "a", "x")
    with pytest.raises(ValueError, match=r"do not fit this model's layers \(size mismatch for u.w: a\)"):
        load_adapter(pipe_raising("Error(s):\n\tsize mismatch for u.w: a\n\tsize mismatch for v.w: b"), tmp_path / "a", "x")


def test_a_hub_id_whose_cached_snapshot_is_partial_is_not_called_a_bad_folder(tmp_path, monkeypatch):
    import pluralign.eval.generate as G

    (tmp_path / "snapshot" / "vae").mkdir(parents=True)  # what loading one subfolder of a hub pipeline caches
    monkeypatch.setattr(G, "require_model", lambda *a, **k: str(tmp_path / "snapshot"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        G.load_pipeline("some-org/some-pipeline")
    assert "no model_index.json" not in str(err.value) and "cannot load a diffusers pipeline" in str(err.value)
    (tmp_path / "local").mkdir()  # a folder the user named: that one is checked
    with pytest.raises(ValueError, match="not a diffusers pipeline directory"):
        G.load_pipeline(str(tmp_path / "local"))
