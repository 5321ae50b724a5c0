"""Audit metrics: hand-computed four-way matrix and Δr, bootstrap coverage, known accuracy end to end."""

import json

import numpy as np
import pytest
from PIL import Image

from pluralign.cli import main as cli
from pluralign.data.sources import DataError
from pluralign.eval.audit import AuditConfig, audit_scores, load_triplets, main, run_audit
from pluralign.eval.fixtures import save_tiny_clip
from pluralign.rewards import metrics as M


def test_four_way_matrix_and_delta_r_by_hand():
    r_oo, r_oa = [1.0, 3.0], [0.0, 2.0]
    r_ao, r_aa = [0.5, 1.5], [4.0, 1.0]
    m = M.four_way_matrix(r_oo, r_oa, r_ao, r_aa)
    assert m == {"I_o|P_o": 2.0, "I_o|P_a": 1.0, "I_a|P_o": 1.0, "I_a|P_a": 2.5}
    assert M.delta_r(r_ao, r_oo) == pytest.approx(((0.5 - 1.0) + (1.5 - 3.0)) / 2)  # -1.0
    assert M.pairwise_accuracy(r_aa, r_oa) == 0.5  # 4 > 0 wins, 1 < 2 loses
    assert M.pairwise_accuracy([1.0, 2.0], [1.0, 1.0]) == 0.75  # a tie counts one half
    assert M.pairwise_accuracy([1.0, 2.0], [1.0, 1.0], ties="loss") == 0.5


def test_bootstrap_ci_covers_the_truth():
    rng = np.random.default_rng(0)
    p, n, covered = 0.7, 80, 0
    for i in range(200):
        wins = (rng.random(n) < p).astype(float)
        lo, hi = M.bootstrap_ci(wins, n_boot=500, seed=i)
        covered += lo <= p <= hi
    assert covered / 200 >= 0.9
    # paired: the difference of two correlated measurements
    covered = 0
    for i in range(200):
        base = rng.normal(0, 1, n)
        a, b = base + rng.normal(0.3, 0.5, n), base
        lo, hi = M.paired_bootstrap_ci(a, b, n_boot=500, seed=i)
        covered += lo <= 0.3 <= hi
    assert covered / 200 >= 0.9


def test_binary_rates_get_the_wilson_interval_that_never_collapses_at_the_ends():
    from scipy.stats import binomtest

    for k, n in [(24, 24), (0, 24), (14, 24), (9, 24), (276, 288), (1, 3)]:
        r = M.rate_with_ci([1.0] * k + [0.0] * (n - k) + [float("nan")])
        expected = binomtest(k, n).proportion_ci(method="wilson")
        assert r["n"] == n and r["rate"] == pytest.approx(k / n)
        assert r["ci95"] == pytest.approx([expected.low, expected.high], abs=1e-12)
    # 24 of 24 is not a proof of 100%: the bootstrap said [1, 1], the score interval leaves room below
    assert M.rate_with_ci([1.0] * 24)["ci95"] == pytest.approx([0.862, 1.0], abs=1e-3)
    assert M.rate_with_ci([0.0] * 24)["ci95"][0] == 0.0
    # fractional outcomes (ties as one half) keep the bootstrap: its interval is then the bootstrap's
    half = [1.0, 0.5, 0.0, 1.0] * 6
    assert M.rate_with_ci(half, n_boot=500, seed=3)["ci95"] == list(M.bootstrap_ci(half, n_boot=500, seed=3))
    # exact coverage at 24 rows (the demo's per-attribute cells): the score interval holds about 95% near the
    # ends, where the bootstrap, which reads k of 24 as certain at k = 24, covers 70% at a true rate of 95%
    from scipy.stats import binom

    def coverage(interval, p):
        return sum(binom.pmf(k, 24, p) for k in range(25) if interval(k)[0] <= p <= interval(k)[1])

    for p in (0.05, 0.3, 0.5, 0.9, 0.95, 0.98):
        assert coverage(lambda k: M.wilson_ci(k, 24), p) >= 0.91, p
    assert coverage(lambda k: M.bootstrap_ci([1.0] * k + [0.0] * (24 - k)), 0.95) < 0.75


def _write_folder(tmp_path, n_win=6, n_loss=2):
    """Triplets where the verifier reward must prefer I_a under 'blurry' exactly n_win times."""
    from skimage import data

    from pluralign.data.degradations import degrade

    photo = Image.fromarray(data.astronaut()).resize((64, 64))
    rows = []
    for i in range(n_win + n_loss):
        crop = photo.rotate(90 * (i % 4))
        blurred = degrade(crop, "gaussian_blur", 0.8, seed=i)
        a, o = (blurred, crop) if i < n_win else (crop, blurred)
        a.save(tmp_path / f"a{i}.png")
        o.save(tmp_path / f"o{i}.png")
        rows.append({"prompt_o": "an astronaut", "prompt_a": "a blurry photo of an astronaut",
                     "image_o": f"o{i}.png", "image_a": f"a{i}.png", "attributes": ["blurry"]})
    (tmp_path / "triplets.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path


def test_audit_reproduces_a_known_accuracy(tmp_path):
    folder = _write_folder(tmp_path)
    payload = run_audit(AuditConfig(data=str(folder), rewards=["verifier"], output=str(tmp_path / "out"), n_boot=200))
    res = payload["models"]["verifier"]
    assert res["accuracy"]["rate"] == 0.75 and res["accuracy"]["n"] == 8
    assert res["per_attribute"]["blurry"]["rate"] == 0.75
    assert res["per_dimension"]["clarity"]["rate"] == 0.75
    # the verifier reward ignores prompts without attribute words: r(., P_o) = 0
    assert res["matrix"]["I_o|P_o"] == 0.0 and res["delta_r"]["value"] == 0.0
    assert (tmp_path / "out" / "audit.md").read_text().count("verifier") >= 1


def test_audit_cli_and_parquet(tmp_path):
    from datasets import Dataset
    from datasets import Image as HFImage

    folder = _write_folder(tmp_path, n_win=3, n_loss=1)
    rows = [json.loads(line) for line in (folder / "triplets.jsonl").read_text().splitlines() if line]
    for r in rows:
        r["image_o"], r["image_a"] = str(folder / r["image_o"]), str(folder / r["image_a"])
    ds = Dataset.from_list(rows).cast_column("image_o", HFImage()).cast_column("image_a", HFImage())
    ds.to_parquet(str(tmp_path / "t.parquet"))
    assert main(["--data", str(tmp_path / "t.parquet"), "--rewards", "verifier", "--output", str(tmp_path / "o"),
                 "--n_boot", "200"]) == 0
    out = json.loads((tmp_path / "o" / "audit.json").read_text())
    assert out["models"]["verifier"]["accuracy"]["rate"] == 0.75


def test_audit_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_triplets(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "triplets.jsonl").write_text(json.dumps({"prompt_a": "x", "image_a": "a.png"}))
    with pytest.raises(DataError, match=r"triplets.jsonl, row 0 \(line 1\), field 'image_o': missing image_o"):
        load_triplets(tmp_path / "bad")


def _one_row_folder(tmp_path, **changes):
    """A valid two-row triplet folder, with ``changes`` applied to row 1 (a value of None removes the key), which
    is on line 3: a blank line separates the rows, so the row and the line an editor opens at differ."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "o.png")
    Image.new("RGB", (8, 8), (20, 30, 30)).save(tmp_path / "a.png")
    good = {"prompt_o": "a red square", "prompt_a": "a dark red square", "image_o": "o.png", "image_a": "a.png",
            "attributes": ["underexposed"]}
    bad = {k: v for k, v in {**good, **changes}.items() if v is not None}
    (tmp_path / "triplets.jsonl").write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    return tmp_path


@pytest.mark.parametrize("changes, field, problem", [
    ({"prompt_a": "  "}, "prompt_a", "empty prompt"),
    ({"prompt_a": None}, "prompt_a", "missing prompt_a"),
    ({"prompt_o": ""}, "prompt_o", "missing or empty, while other rows have one"),
    ({"image_a": "gone.png"}, "image_a", "image file not found"),
    ({"image_o": None}, "image_o", "missing image_o"),
    ({"attributes": ["underexposd"]}, "attributes", "unknown attribute 'underexposd'; did you mean 'underexposed'?"),
])
def test_audit_checks_every_row_and_names_file_row_and_field(tmp_path, capsys, changes, field, problem):
    folder = _one_row_folder(tmp_path, **changes)
    before = sorted(p.name for p in folder.iterdir())
    rc = cli(["audit", "--data", str(folder), "--rewards", "verifier", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"{folder / 'triplets.jsonl'}, row 1 (line 3), field '{field}'" in err and problem in err
    assert sorted(p.name for p in folder.iterdir()) == before and not (tmp_path / "out").exists()


def test_audit_names_a_line_that_is_not_json(tmp_path, capsys):
    folder = _one_row_folder(tmp_path)
    with (folder / "triplets.jsonl").open("a") as f:
        f.write("{not json\n")
    assert cli(["audit", "--data", str(folder), "--output", str(tmp_path / "out")]) == 2
    assert f"{folder / 'triplets.jsonl'}, row 2: line 4 is not valid JSON" in capsys.readouterr().err


def test_audit_refuses_an_image_over_max_pixels_before_decoding_it(tmp_path, capsys):
    folder = _one_row_folder(tmp_path)
    Image.new("RGB", (300, 200)).save(folder / "big.png")
    rows = [json.loads(line) for line in (folder / "triplets.jsonl").read_text().splitlines() if line]
    rows[1]["image_o"] = "big.png"
    (folder / "triplets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(["audit", "--data", str(folder), "--max_pixels", "10000", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"row 1 (line 2), field 'image_o': {folder / 'big.png'}: image is 300x200 = 60000 pixels, over max_pixels=10000" in err
    assert load_triplets(folder, max_pixels=60000).image_o[1].size == (300, 200)  # at the limit it is read


def test_audit_takes_a_reward_from_a_local_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "data").mkdir()
    folder = _write_folder(tmp_path / "data", n_win=2, n_loss=1)
    clip_dir = save_tiny_clip(tmp_path / "clip")
    payload = run_audit(AuditConfig(data=str(folder), rewards=[f"clip={clip_dir}", "verifier"],
                                    output=str(tmp_path / "out"), n_boot=100, device="cpu"))
    assert set(payload["models"]) == {"clip", "verifier"} and payload["models"]["clip"]["accuracy"]["n"] == 3
    # the default CLIP is not on this machine: the error says what to download, or which option takes a directory
    rc = cli(["audit", "--data", str(folder), "--rewards", "verifier,clip", "--output", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert rc == 2 and "clip: model openai/clip-vit-large-patch14 is not on this machine" in err
    assert "`hf download openai/clip-vit-large-patch14`" in err and "(--rewards clip=PATH)" in err
    assert not (tmp_path / "out2").exists()


def test_audit_scores_without_prompt_o():
    out = audit_scores({"aa": np.array([2.0, 0.0]), "oa": np.array([1.0, 1.0])}, [["muted"], ["grief"]], n_boot=200)
    assert out["accuracy"]["rate"] == 0.5 and "matrix" not in out
    assert out["per_attribute"] == {"grief": out["per_attribute"]["grief"], "muted": out["per_attribute"]["muted"]}


def test_a_folder_without_triplets_is_named_for_what_it_lacks(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "o.png")
    with pytest.raises(FileNotFoundError, match="no triplets.jsonl here and not a saved dataset"):
        load_triplets(tmp_path)


def test_a_local_reward_path_that_does_not_load_is_not_sent_to_the_hub(tmp_path):
    from pluralign.rewards.models import _hub_error

    (tmp_path / "clip").mkdir()
    local = str(_hub_error("clip", str(tmp_path / "clip"), OSError("no config")))
    assert "hf download" not in local and "clip=DIR" in local
    assert "hf download openai/clip-vit-large-patch14" in str(_hub_error("clip", "openai/clip-vit-large-patch14",
                                                                         OSError("offline")))
