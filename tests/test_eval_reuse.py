"""``base_images_from``: an eval takes the base's images from an earlier eval of the same base, rows and sampling,
and refuses them, naming the difference, when anything that decides them differs."""

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from pluralign.eval import generate as G
from pluralign.eval.fixtures import save_random_lora
from pluralign.eval.runner import EvalConfig, run_eval
from pluralign.eval.suite import EvalRow

ROWS = [EvalRow("a red circle on white", "a red circle on white, very dark", ["underexposed"], 21),
        EvalRow("a blue square", "a blue square, blurry", ["blurry"], 22),
        EvalRow("a green triangle", "a green triangle, muted colours", ["muted"], 23)]


@pytest.fixture(scope="module")
def setup(tiny_pipeline_dir, tmp_path_factory):
    base = tiny_pipeline_dir("sd")
    root = tmp_path_factory.mktemp("reuse")
    _suite(root / "suite.jsonl", ROWS)
    first = root / "first"
    run_eval(_config(base, save_random_lora(base, root / "lora_a", scale=30.0), first))
    return base, root, first


def _suite(path, rows):
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    return path


def _config(base, adapter, output, **changes) -> EvalConfig:
    settings = dict(base=str(base), adapter=str(adapter), weights=[1.0], suite=str(output.parent / "suite.jsonl"),
                    n_prompts=0, num_inference_steps=2, batch_size=2, bootstrap=100, content_checker="none",
                    attribute_judge="none", output=str(output))
    return EvalConfig(**{**settings, **changes})


def _pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_a_second_adapter_reuses_the_base_images_and_measures_the_same_base(setup, monkeypatch):
    base, root, first = setup
    calls = []
    real = G.generate_pairs

    def counting(pipe, rows, **kw):
        calls.append((kw.get("desc"), len(rows)))
        return real(pipe, rows, **kw)

    monkeypatch.setattr(G, "generate_pairs", counting)
    second = root / "second"
    res = run_eval(_config(base, save_random_lora(base, root / "lora_b", scale=30.0, seed=1), second,
                           base_images_from=str(first)))
    # the base was sampled again on its first batch only (the check), the adapter on every row
    assert calls == [("generate base", 2), ("generate adapter@1", 3)]
    assert res["generation"]["base_images_from"] == str(first)
    assert _pngs(second / "images" / "base").keys() == _pngs(first / "images" / "base").keys()
    for name, img in _pngs(second / "images" / "base").items():
        assert np.array_equal(img, _pngs(first / "images" / "base")[name]), name
    before = json.loads((first / "results.json").read_text())
    assert res["variants"]["base"]["adherence"] == before["variants"]["base"]["adherence"]
    # and the adapter's images are the new adapter's own
    assert not np.array_equal(_pngs(second / "images" / "adapter_w1")["00000_a.png"],
                              _pngs(first / "images" / "adapter_w1")["00000_a.png"])


def test_reused_images_equal_a_fresh_base_pass(setup):
    """Reuse is exact: an eval of the second adapter that samples its base afresh saves the pixels the reusing eval
    took from the first."""
    base, root, first = setup
    reusing, fresh = root / "reusing", root / "fresh"
    run_eval(_config(base, root / "lora_a", reusing, base_images_from=str(first)))
    run_eval(_config(base, root / "lora_a", fresh))
    saved, again = _pngs(reusing / "images" / "base"), _pngs(fresh / "images" / "base")
    assert len(saved) == 2 * len(ROWS) and saved.keys() == again.keys()
    for name, img in again.items():
        assert np.array_equal(img, saved[name]), name


def test_weight_zero_with_reused_base_images_still_checks_against_them(setup):
    base, root, first = setup
    res = run_eval(_config(base, root / "lora_a", root / "zero", weights=[0.0, 1.0], weight_zero_rows=2,
                           base_images_from=str(first)))
    assert res["checks"]["weight0_equals_base"] == {"max_abs_diff": 0, "passed": True, "rows_generated": 2}


def test_saved_images_that_a_fresh_first_batch_does_not_reproduce_are_refused(setup, tmp_path):
    """What the record cannot see (a VAE replaced in place) shows in the first batch, sampled again."""
    base, root, first = setup
    changed = tmp_path / "changed"
    shutil.copytree(first, changed)
    png = changed / "images" / "base" / "00001_o.png"
    arr = np.asarray(Image.open(png)).copy()
    arr[0, 0] = (arr[0, 0].astype(int) + 9) % 256
    Image.fromarray(arr).save(png)
    _suite(tmp_path / "suite.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"first 2 rows differs from the saved images by up to 9/255"):
        run_eval(_config(base, root / "lora_a", tmp_path / "out", base_images_from=str(changed)))
    assert not (tmp_path / "out").exists()


def test_a_pipeline_built_in_memory_is_never_matched(setup, tmp_path):
    from pluralign.tiny import build_sd

    base, root, first = setup
    _suite(tmp_path / "suite.jsonl", ROWS)
    with pytest.raises(ValueError, match="no weight fingerprint"):
        run_eval(_config(base, root / "lora_a", tmp_path / "out", base_images_from=str(first)),
                 pipe=build_sd())


@pytest.mark.parametrize("change, needle", [
    ({"num_inference_steps": 3}, "num_inference_steps differs (2 there, 3 here)"),
    ({"batch_size": 3}, "batch_size differs (2 there, 3 here)"),
    ({"guidance_scale": 5.0}, "guidance_scale differs (7.5 there, 5.0 here)"),
    ({"sampler": "euler"}, "sampler differs ('default' there, 'euler' here)"),
])
def test_a_difference_that_decides_the_base_images_is_refused_by_name(setup, change, needle):
    base, root, first = setup
    out = root / f"refused_{next(iter(change))}"
    with pytest.raises(ValueError, match=re.escape(f"base_images_from {first}: {needle}")):
        run_eval(_config(base, root / "lora_a", out, base_images_from=str(first), **change))
    assert not out.exists(), "a refused eval writes nothing"


def test_other_rows_or_another_base_are_refused(setup, tmp_path):
    base, root, first = setup
    other_rows = _suite(tmp_path / "other.jsonl", [*ROWS[:2], EvalRow("a blue square", "x", ["blurry"], 99)])
    with pytest.raises(ValueError, match="rows_sha256 differs"):
        run_eval(_config(base, root / "lora_a", tmp_path / "rows", suite=str(other_rows), base_images_from=str(first)))
    _suite(tmp_path / "suite.jsonl", ROWS)
    other = tmp_path / "other_base"
    shutil.copytree(base, other)
    with pytest.raises(ValueError, match="base_model differs"):
        run_eval(_config(other, root / "lora_a", tmp_path / "base", base_images_from=str(first)))


def test_an_eval_without_a_generation_record_or_images_is_named(setup, tmp_path):
    base, root, first = setup
    _suite(tmp_path / "suite.jsonl", ROWS)
    old = tmp_path / "old"
    old.mkdir()
    data = json.loads((first / "results.json").read_text())
    data.pop("generation")
    (old / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="records no generation settings"):
        run_eval(_config(base, root / "lora_a", tmp_path / "a", base_images_from=str(old)))
    with pytest.raises(ValueError, match="no results.json there"):
        run_eval(_config(base, root / "lora_a", tmp_path / "b", base_images_from=str(tmp_path / "nowhere")))
    gone = tmp_path / "gone"
    shutil.copytree(first, gone)
    (gone / "images" / "base" / "00001_a.png").unlink()
    with pytest.raises(ValueError, match="00001_a.png is missing"):
        run_eval(_config(base, root / "lora_a", tmp_path / "c", base_images_from=str(gone)))
