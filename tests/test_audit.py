"""Audit metrics: hand-computed four-way matrix and Δr, bootstrap coverage, known accuracy end to end."""

import json

import numpy as np
import pytest
from PIL import Image

from pluralign.eval.audit import AuditConfig, audit_scores, load_triplets, main, run_audit
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
    rows = [json.loads(line) for line in (folder / "triplets.jsonl").read_text().splitlines()]
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
    with pytest.raises(ValueError, match="image_o"):
        load_triplets(tmp_path / "bad")


def test_audit_scores_without_prompt_o():
    out = audit_scores({"aa": np.array([2.0, 0.0]), "oa": np.array([1.0, 1.0])}, [["muted"], ["grief"]], n_boot=200)
    assert out["accuracy"]["rate"] == 0.5 and "matrix" not in out
    assert out["per_attribute"] == {"grief": out["per_attribute"]["grief"], "muted": out["per_attribute"]["muted"]}
