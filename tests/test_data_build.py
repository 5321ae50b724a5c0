"""`pluralign data build` end to end on a local image folder, through the command line."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
from PIL import Image
from skimage import data as skdata

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "data_local_folder.yaml"


def run(*args):
    return subprocess.run([sys.executable, "-m", "pluralign.data.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def folder(d: Path, n=8):
    d.mkdir()
    photos = [skdata.astronaut, skdata.coffee, skdata.chelsea, skdata.rocket]
    with (d / "metadata.jsonl").open("w") as f:
        for i in range(n):
            Image.fromarray(photos[i % 4]()).resize((64, 48)).save(d / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": f"a picture of thing {i}"}) + "\n")
    return d


def test_build_local_folder_with_recipe(tmp_path):
    src = folder(tmp_path / "imgs")
    out = tmp_path / "pairs"
    r = run("build", "--config", RECIPE, "--sources", src, "--output_dir", out, "--parquet", "true",
            "--on-error", "skip")
    assert r.returncode == 0, r.stderr
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 16
    assert list(ds.features) == ["prompt", "chosen", "rejected", "kind", "attributes", "category", "source",
                                 "severity", "pair_id"]
    assert isinstance(ds.features["chosen"], datasets.Image)
    row = ds[0]
    assert isinstance(row["chosen"], Image.Image) and row["chosen"].size == (64, 48)
    assert row["kind"] == "anti" and ds[1]["kind"] == "mirror" and row["pair_id"] == ds[1]["pair_id"]
    assert 0.4 <= row["severity"] <= 1.0 and 1 <= len(row["attributes"]) <= 3
    card = (out / "README.md").read_text()
    assert "| anti | 8 |" in card and "| mirror | 8 |" in card and "## Config" in card and "on_error: skip" in card
    pq = datasets.load_dataset("parquet", data_files=str(out / "parquet" / "*.parquet"), split="train")
    assert len(pq) == 16
    # same recipe and seed -> the same rows
    out2 = tmp_path / "pairs2"
    assert run("build", "--config", RECIPE, "--sources", src, "--output_dir", out2).returncode == 0
    ds2 = datasets.load_from_disk(str(out2))
    assert ds2["prompt"] == ds["prompt"] and ds2[5]["chosen"].tobytes() == ds[5]["chosen"].tobytes()


def test_build_errors_are_clear(tmp_path):
    r = run("build", "--config", RECIPE, "--sourcez", "x")
    assert r.returncode == 2 and "sources" in r.stderr
    r = run("build", "--config", RECIPE, "--sources", tmp_path / "nowhere" / "x.parquet", "--output_dir",
            tmp_path / "o", "--streaming", "false")
    assert r.returncode == 2 and "nowhere/x.parquet: no such local path" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("build", "--config", RECIPE, "--sources", empty, "--output_dir", tmp_path / "o")
    assert r.returncode == 2 and "metadata.jsonl" in r.stderr


def test_cli_help_and_unknown_command():
    assert run("--help").returncode == 0
    assert run("frobnicate").returncode == 2


def test_one_folder_gives_the_same_pairs_whatever_path_names_it(tmp_path, monkeypatch):
    from pluralign.data.build import build_dataset
    from pluralign.data.config import DataConfig

    d = folder(tmp_path / "photos", n=6)
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "photos"
    d.rename(moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    columns = ("prompt", "chosen", "rejected", "attributes", "severity")

    def rows(spec, out):
        ds = build_dataset(DataConfig(sources=[spec], anti_fraction=1.0, output_dir=str(tmp_path / out)))
        ds = datasets.load_from_disk(str(ds)).cast_column("chosen", datasets.Image(decode=False))
        ds = ds.cast_column("rejected", datasets.Image(decode=False))
        return [{k: (r[k]["bytes"] if k in ("chosen", "rejected") else r[k]) for k in columns} for r in ds]

    relative, absolute, dotted = rows("photos", "a"), rows(str(moved), "b"), rows("./photos/", "c")
    assert len(relative) == 12 and relative == absolute == dotted
    other = folder(tmp_path / "other", n=6)  # the same images under another name: other draws
    assert rows(str(other), "d") != relative
