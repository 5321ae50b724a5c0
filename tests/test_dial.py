"""pluralign dial: the model side (adapters that load or say why, renders and the snippet that reproduces
them) and the page itself, driven in a real browser."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from pluralign.dial.app import DialConfig, build_app, resolve_spec
from pluralign.dial.session import DialSession, default_spec, parse_adapters
from pluralign.eval.fixtures import save_random_lora
from pluralign.toy import paths


@pytest.fixture(scope="module")
def session():
    return DialSession(default_spec(), device="cpu")


def test_adapters_option_parses_and_names_a_bad_item():
    assert parse_adapters("a=x, b=y/z") == {"a": "x", "b": "y/z"}
    with pytest.raises(ValueError, match="'oops' is not name=DIR"):
        parse_adapters("a=x,oops")
    with pytest.raises(ValueError, match="'a' is given twice"):
        parse_adapters("a=x,a=y")
    with pytest.raises(ValueError, match="--adapters needs --base"):
        resolve_spec(DialConfig(adapters="a=x"))
    with pytest.raises(ValueError, match="--base needs --adapters"):
        resolve_spec(DialConfig(base="some/model"))


def test_default_dial_is_the_toy_aligned_model_with_one_adapter_per_category(session):
    from pluralign.data.taxonomy import category_of
    from pluralign.toy.world import ATTRIBUTES

    assert session.spec.base == str(paths.aligned_dir())
    assert session.names == sorted({category_of(a) for a in ATTRIBUTES})
    assert not session.errors
    assert any(e == e.split(",")[0] for e in session.spec.examples)      # ordinary prompts
    assert any("," in e for e in session.spec.examples)                  # and anti-aesthetic ones


def test_render_keeps_the_zero_image_and_the_snippet_reproduces_the_setting(session):
    prompt = "a blue square on a light blue background, overtaken by rust and rot"
    off0, on0 = session.render(prompt, {}, seed=3)
    assert np.array_equal(np.asarray(off0), np.asarray(on0))            # nothing turned up: the same image
    off, on = session.render(prompt, {"emotion_and_subject": 1.0}, seed=3)
    assert np.array_equal(np.asarray(off), np.asarray(off0))            # the reference does not move
    assert not np.array_equal(np.asarray(on), np.asarray(off))          # the slider does
    code = session.snippet(prompt, {"emotion_and_subject": 1.0, "clarity_and_focus": 0.0}, seed=3)
    assert "clarity_and_focus" not in code and "set_adapters(['emotion_and_subject'], adapter_weights=[1.0])" in code
    assert "fuse_lora(adapter_names=['emotion_and_subject']" in code
    scope: dict = {}
    exec(compile(code, "snippet", "exec"), scope)                         # stock diffusers, a fresh pipeline
    assert np.array_equal(np.asarray(scope["image"]), np.asarray(on))
    # after fused settings the base weights are back bit for bit: the all-zero image has not drifted
    session.sample(prompt, {n: 0.5 for n in session.names}, seed=3)
    assert np.array_equal(np.asarray(session.sample(prompt, {}, seed=3)), np.asarray(off0))
    with pytest.raises(ValueError, match="prompt is empty"):
        session.render("  ", {}, seed=0)
    with pytest.raises(ValueError, match="no adapter named nope"):
        session.render(prompt, {"nope": 1.0}, seed=0)


def test_missing_or_misfit_adapter_is_reported_in_page_and_log(tiny_pipeline_dir, tmp_path, caplog):
    good = paths.dial_dir() / "emotion_and_subject"
    misfit = tmp_path / "misfit"
    misfit.mkdir()
    # the same tensors under module names this base does not have: an adapter made for another model
    state = load_file(str(good / "pytorch_lora_weights.safetensors"))
    save_file({k.replace("down_blocks", "input_blocks"): v for k, v in state.items()},
              str(misfit / "pytorch_lora_weights.safetensors"))
    # a LoRA of the same architecture at other layer sizes (torch lists every tensor that differs)
    shapes = save_random_lora(tiny_pipeline_dir("sd"), tmp_path / "shapes")
    spec = resolve_spec(DialConfig(base=str(paths.aligned_dir()), adapters=f"emotion_and_subject={good},"
                                   f"gone={tmp_path / 'nowhere'},misfit={misfit},shapes={shapes}"))
    with caplog.at_level("ERROR", logger="pluralign.dial"):
        s = DialSession(spec, device="cpu")
    assert s.names == ["emotion_and_subject"]
    assert "no such file or directory" in s.errors["gone"] and "nowhere" in s.errors["gone"]
    assert "match modules of this" in s.errors["misfit"]
    assert "do not fit this model's layers (size mismatch for" in s.errors["shapes"]
    assert s.errors["shapes"].count("size mismatch") == 1  # one named, not the whole list
    assert "adapter gone not loaded" in caplog.text and "adapter misfit not loaded" in caplog.text
    app = build_app(s, DialConfig())
    shown = [c.get("props", {}).get("value", "") for c in app.config["components"] if c.get("type") == "markdown"]
    banner = next(v for v in shown if "Not loaded" in str(v))
    assert "`gone`" in banner and "`misfit`" in banner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dial_in_a_browser_slider_release_changes_the_image(chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="2")
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pluralign.dial.app", "--port", str(port), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the app did not serve within 120 s:\n" + (tmp_path / "app.log").read_text()[-3000:]
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            on, off = page.locator("#image-on img"), page.locator("#image-off img")
            expect(on).to_be_visible(timeout=60_000)                     # the first render, on page load
            expect(page.locator("#status")).to_contain_text("all adapters at 0", timeout=60_000)

            def pixels(locator) -> bytes:
                return page.request.get(locator.get_attribute("src")).body()

            on_before, off_before = pixels(on), pixels(off)
            assert on_before == off_before                               # every slider starts at 0
            rng = page.locator("#slider-emotion_and_subject input[type=range]")
            box = rng.bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + 3, y)                             # drag the slider to about half way
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=8)
            page.mouse.up()                                              # released: the page regenerates
            expect(page.locator("#status")).to_contain_text("emotion_and_subject", timeout=60_000)
            assert pixels(on) != on_before
            assert pixels(off) == off_before
            expect(page.locator("#snippet")).to_contain_text("set_adapters")
            page.screenshot(path=str(tmp_path / "dial.png"), full_page=True)
            browser.close()
        assert (tmp_path / "dial.png").stat().st_size > 10_000
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_a_dial_with_no_adapter_that_loads_is_refused(tmp_path, capsys):
    from pluralign.cli import main as cli

    rc = cli(["dial", "--base", str(paths.aligned_dir()), "--adapters", f"a={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "no adapter to load: adapter a=" in err and "Traceback" not in err
