"""Faults in recipes and data: every bad input is one clear error naming its file, line, row or key
(exit status 2 from the command line), and nothing already written is lost."""

import errno
import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pluralign.config import ConfigError, load_yaml, option, parse, run_module
from pluralign.data import build as B
from pluralign.data import cli as data_cli
from pluralign.data import pairs as P
from pluralign.data import sources as S
from pluralign.data.build import build_dataset
from pluralign.data.config import DataConfig
from pluralign.data.validate import validate_source


def png(i: int, size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def folder(d: Path, lines: list[str], n_images: int = 3, size: int = 24) -> Path:
    """An imagefolder whose metadata.jsonl holds exactly ``lines``; images 0.png .. are valid."""
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        (d / f"{i}.png").write_bytes(png(i, size))
    (d / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return d


def row(file_name: str, text: str = "a photo of a thing") -> str:
    return json.dumps({"file_name": file_name, "text": text})


def cli(capsys, *argv) -> tuple[int, str]:
    """``pluralign data ARGV`` in process, as the console script runs it: (exit status, stderr)."""
    code = run_module(lambda: data_cli.main(list(map(str, argv))), "pluralign data")
    return code, capsys.readouterr().err


def temp_folders(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------- 4: numbers and bounds
@dataclass
class _Bounds:
    beta: float = option(1.0, "temperature", gt=0)
    dropout: float = option(0.0, "dropout", min=0, lt=1)
    weights: list[float] = option(factory=lambda: [0.0, 1.0], help="dial", min=0, max=4)
    sizes: list[int] = option(factory=lambda: [32], help="sides", min=8, max=4096, multiple_of=8)
    scale: float | None = option(None, "optional number")
    wild: float = option(0.0, "a number that may be infinite", allow_nonfinite=True)


@pytest.mark.parametrize("text, key", [
    ("beta: .nan\n", "beta"), ("beta: .inf\n", "beta"), ("scale: -.inf\n", "scale"),
    ("weights: [0.5, .nan]\n", "weights', item 2"), ("dropout: .nan\n", "dropout"),
])
def test_nonfinite_numbers_in_a_recipe_name_key_and_file(tmp_path, text, key):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match="not a finite number") as err:
        parse((_Bounds,), ["--config", str(recipe)])
    assert str(err.value).startswith(f"{recipe}: key '{key}")


@pytest.mark.parametrize("flags, key", [
    (["--weights", "nan,inf"], "weights', item 1"), (["--beta", "inf"], "beta"), (["--scale=-inf"], "scale"),
    (["--beta", "1e999"], "beta"), (["--weights", "0,NaN"], "weights', item 2"),
])
def test_nonfinite_numbers_on_the_command_line_name_key(flags, key):
    with pytest.raises(ConfigError, match="not a finite number") as err:
        parse((_Bounds,), flags)
    assert str(err.value).startswith(f"command line: key '{key}")


@pytest.mark.parametrize("module, cls, flags, key", [
    ("pluralign.eval.runner", "EvalConfig", ["--weights", "nan,inf"], "weights', item 1"),
    ("pluralign.trainers.config", "DPOTrainConfig", ["--beta", "nan"], "beta"),
    ("pluralign.trainers.config", "DPOTrainConfig", ["--learning_rate", "inf"], "learning_rate"),
    ("pluralign.data.config", "DataConfig", ["--severity_min", "nan"], "severity_min"),
])
def test_every_command_refuses_nonfinite_numbers(module, cls, flags, key):
    import importlib

    with pytest.raises(ConfigError, match="is not a finite number") as err:
        parse((getattr(importlib.import_module(module), cls),), flags)
    assert str(err.value).startswith(f"command line: key '{key}")


def test_a_field_may_allow_nonfinite_values():
    (cfg,) = parse((_Bounds,), ["--wild", "inf"])
    assert cfg.wild == float("inf")


@pytest.mark.parametrize("flags, message", [
    (["--beta", "0"], "key 'beta': 0.0 must be above 0"),
    (["--dropout", "1"], "key 'dropout': 1.0 must be below 1"),
    (["--dropout", "-0.1"], "key 'dropout': -0.1 is below the minimum 0"),
    (["--weights", "0,5"], "key 'weights', item 2: 5.0 is above the maximum 4"),
    (["--weights", "-1"], "key 'weights', item 1: -1.0 is below the minimum 0"),
    (["--sizes", "32,100"], "key 'sizes', item 2: 100 is not a multiple of 8"),
    (["--sizes", "8192"], "key 'sizes', item 1: 8192 is above the maximum 4096"),
])
def test_exclusive_bounds_multiples_and_list_elements(flags, message):
    with pytest.raises(ConfigError) as err:
        parse((_Bounds,), flags)
    assert str(err.value) == f"command line: {message}"


def test_values_on_the_bounds_pass():
    (cfg,) = parse((_Bounds,), ["--beta", "1e-9", "--dropout", "0", "--weights", "0,4", "--sizes", "8,4096"])
    assert (cfg.beta, cfg.dropout, cfg.weights, cfg.sizes) == (1e-9, 0.0, [0.0, 4.0], [8, 4096])


@pytest.mark.parametrize("flag, value", [
    ("num_proc", "100000"), ("seed", "-1"), ("severity_max", "nan"), ("anti_fraction", "inf"),
    ("max_pixels", str(10**12)), ("max_side", "1000000"), ("max_rows", "0"),
])
def test_data_build_refuses_out_of_range_options_before_reading_data(tmp_path, capsys, monkeypatch, flag, value):
    monkeypatch.setattr(S, "open_source", lambda *a, **k: pytest.fail("read a source"))
    out = tmp_path / "out"
    code, err = cli(capsys, "build", "--sources", tmp_path, "--output_dir", out, f"--{flag}", value)
    assert code == 2 and f"command line: key '{flag}'" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("flag, value", [("max_rows", "0"), ("min_side", "-3"), ("max_pixels", "0")])
def test_data_validate_refuses_out_of_range_options(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        data_cli.main(["validate", str(tmp_path), f"--{flag}", value])
    assert exit_.value.code == 2 and f"--{flag}" in capsys.readouterr().err


# ---------------------------------------------------------------- 5, 11: broken lines, missing keys
def broken_folder(d: Path) -> Path:
    return folder(d, [
        row("0.png"),                             # row 0, line 1: fine
        json.dumps({"text": "no image key"}),     # row 1, line 2: no image key
        '{"file_name": "1.png", "text": "x"',     # row 2, line 3: broken JSON
        "",                                       # line 4: blank, not a row
        json.dumps(["a", "list"]),                # row 3, line 5: not an object
        json.dumps({"file_name": "2.png"}),       # row 4, line 6: no caption key
        row("1.png"),                             # row 5, line 7: fine
    ])


def test_missing_key_stops_the_build_naming_file_line_and_key(tmp_path, capsys):
    d = broken_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    code, err = cli(capsys, "build", "--sources", d, "--output_dir", out, "--anti_fraction", "1")
    assert code == 2 and "Traceback" not in err and "StopIteration" not in err
    assert f"row 1 ({d / 'metadata.jsonl'}, line 2): missing key: no image key (one of image, file_name" in err
    assert not out.exists() and temp_folders(tmp_path) == []


def test_skip_counts_broken_lines_and_missing_keys_and_goes_on(tmp_path):
    d = broken_folder(tmp_path / "imgs")
    out = build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out"),
                                   on_error="skip"))
    assert len(datasets.load_from_disk(str(out))) == 4  # rows 0 and 5: an anti and a mirror row each
    log = json.loads((out / "build_log.json").read_text())
    got = [(s["row"], s["line"], s["kind"]) for s in log["skipped"]]
    assert got == [(1, 2, "missing_field"), (2, 3, "bad_line"), (3, 5, "bad_line"), (4, 6, "missing_field")]
    assert all(s["file"] == str(d / "metadata.jsonl") for s in log["skipped"])
    card = (out / "README.md").read_text()
    assert "## Skipped rows (4)" in card and "| 2 (metadata.jsonl line 3) |" in card and "not valid JSON" in card
    assert "no caption key (one of caption, text, prompt)" in card


def test_validate_names_file_and_line_of_broken_rows(tmp_path):
    d = broken_folder(tmp_path / "imgs")
    report = validate_source(str(d), progress=False)
    assert report.rows == 6
    assert [(p["row"], p["line"], p["kind"]) for p in report.problems] == [
        (1, 2, "missing_field"), (2, 3, "bad_line"), (3, 5, "bad_line"), (4, 6, "missing_field")]
    assert f"row 2 ({d / 'metadata.jsonl'}, line 3): not valid JSON" in report.summary()
    assert not report.trainable and "a source for pluralign data build" in report.summary()


def test_undecodable_metadata_line_is_named_and_skippable(tmp_path):
    d = folder(tmp_path / "imgs", [row("0.png"), row("1.png")])
    with (d / "metadata.jsonl").open("ab") as f:
        f.write(b'{"file_name": "2.png", "text": "caf\xe9"}\n')
    report = validate_source(str(d), progress=False)
    assert [(p["row"], p["line"], p["kind"]) for p in report.problems] == [(2, 3, "bad_line")]
    assert "not UTF-8" in report.problems[0]["problem"]
    out = build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out"),
                                   on_error="skip"))
    assert len(datasets.load_from_disk(str(out))) == 4


def test_csv_rows_with_missing_values_are_named_by_line(tmp_path):
    d = tmp_path / "imgs"
    folder(d, [])
    (d / "metadata.jsonl").unlink()
    (d / "metadata.csv").write_text("file_name,text\n0.png,a photo\n1.png\n2.png,x,extra\n")
    report = validate_source(str(d), progress=False)
    assert [(p["row"], p["line"], p["kind"]) for p in report.problems] == [(1, 3, "bad_line"), (2, 4, "bad_line")]
    assert "fewer values" in report.problems[0]["problem"] and "more values" in report.problems[1]["problem"]


def test_metadata_with_no_readable_row_names_the_first_broken_line(tmp_path):
    d = folder(tmp_path / "imgs", ["", "{not json"])
    with pytest.raises(S.DataError, match=r"metadata.jsonl \(line 2\): no readable row; the first: not valid JSON"):
        S.open_source(str(d))


def test_recipe_decode_and_syntax_errors_name_the_file_and_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"seed: 1\nrun_name: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"^{recipe}: not UTF-8 text"):
        load_yaml(recipe)
    recipe.write_text("seed: 1\nsources: [a,\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(recipe)
    assert str(err.value).startswith(f"{recipe}: not valid YAML: line 3") and "\n" not in str(err.value)


# ---------------------------------------------------------------- 6: what validate accepts, training reads
def test_trl_parquet_of_raw_bytes_validates_and_trains(tmp_path):
    from pluralign.trainers.data import load_pairs

    path = tmp_path / "trl.parquet"
    conversation = [[{"role": "user", "content": "a cat"}], [{"role": "user", "content": "a dog"}]]
    pq.write_table(pa.table({"prompt": conversation,
                             "chosen": [png(0), png(1)], "rejected": [png(2), png(3)]}), path)
    report = validate_source(str(path), progress=False)
    assert report.ok and report.trainable and "pluralign train reads it" in report.summary()
    ds = load_pairs(str(path))
    assert isinstance(ds[0]["chosen"], bytes)  # no Image feature: the trainer gets bytes, not pictures
    images = S.pair_images(ds, "chosen", source=str(path))
    assert [np.asarray(im).tobytes() for im in images] == [np.asarray(Image.open(io.BytesIO(png(i)))).tobytes()
                                                          for i in (0, 1)]
    assert S.pair_prompts(ds, source=str(path)) == ["a cat", "a dog"]


def test_validate_and_training_refuse_the_same_rows_with_the_same_words(tmp_path):
    """Every row validate accepts, training reads; every image training refuses, validate reported."""
    from pluralign.trainers.data import load_pairs

    truncated = png(5, 64)[:200]
    images = [png(1), truncated, b"", b"not an image", png(6, 4)]
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"prompt": [f"p{i}" for i in range(5)], "chosen": images,
                             "rejected": [png(10 + i) for i in range(5)]}), path)
    report = validate_source(str(path), progress=False)
    flagged = {p["row"]: p for p in report.problems}
    assert sorted(flagged) == [1, 2, 3, 4]  # 4: 4x4 is under validate's min_side, which training need not refuse
    ds = load_pairs(str(path))
    for i in range(len(ds)):
        try:
            S.pair_images(ds.select([i]), "chosen", source=str(path), rows=[i])
        except S.DataError as exc:
            assert i in flagged and flagged[i]["problem"] == exc.problem and exc.row == i and exc.field == "chosen"
        else:
            assert i not in flagged or flagged[i]["kind"] == "extreme_size"


def test_corrupt_image_in_a_built_dataset_is_one_error_for_training(tmp_path):
    from pluralign.trainers.data import load_pairs

    d = folder(tmp_path / "imgs", [row("0.png"), row("1.png")])
    out = build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "built")))
    rows = datasets.load_from_disk(str(out)).cast_column("chosen", datasets.Image(decode=False)).to_list()
    rows[3]["chosen"] = {"bytes": rows[3]["chosen"]["bytes"][:120], "path": None}
    bad = tmp_path / "bad"
    datasets.Dataset.from_list(rows, features=P.FEATURES).save_to_disk(str(bad))
    problems = validate_source(str(bad), progress=False).problems
    assert len(problems) == 1, [(p["row"], p["field"], p["kind"], p["problem"]) for p in problems]
    problem = problems[0]
    assert (problem["row"], problem["field"], problem["kind"]) == (3, "chosen", "corrupt")
    with pytest.raises(S.DataError) as err:
        S.pair_images(load_pairs(str(bad)), "chosen", source=str(bad))
    assert str(err.value) == f"{bad}, row 3, field 'chosen': {problem['problem']}"


def test_a_degradation_that_leaves_an_image_under_min_side_is_an_error_for_its_row():
    # a careless crop keeps 1 - 0.6 * severity of each side: 12 px at severity 1 leaves 5 px, under min_side=8
    cfg = DataConfig(severity_min=1.0, severity_max=1.0, max_attributes=1, categories=["composition_and_structure"])
    img = Image.open(io.BytesIO(png(0, 12))).convert("RGB")
    outcomes = []
    for seed in range(40):
        try:
            anti, _ = P.intent_rows(img, "a thing", source="src", pair_id=f"p{seed}", category="composition_and_structure",
                                    seed=seed, cfg=cfg, row=7)
            outcomes.append(anti["attributes"])
        except S.DataError as exc:
            assert (exc.source, exc.row, exc.field, exc.kind) == ("src", 7, "image", "extreme_size")
            assert "cropped" in exc.problem and "leaves 5x5" in exc.problem and "min_side=8" in exc.problem
            outcomes.append("error")
    assert "error" in outcomes and ["cropped"] not in outcomes
    assert any(o != "error" for o in outcomes)  # the other composition edits keep the size


def test_exif_orientation_is_applied_as_datasets_applies_it():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 20, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    ours = S.open_image(buf.getvalue(), source="s", row=0, field="f")
    theirs = datasets.Image().decode_example({"bytes": buf.getvalue(), "path": None}).convert("RGB")
    assert ours.size == (10, 20) and np.array_equal(np.asarray(ours), np.asarray(theirs))


# ---------------------------------------------------------------- 12: validate's further gaps
def test_image_problems_name_the_image_file(tmp_path):
    d = folder(tmp_path / "imgs", [row("0.png"), row("truncated.png")])
    (d / "truncated.png").write_bytes(png(7, 64)[:300])
    (problem,) = validate_source(str(d), progress=False).problems
    assert problem["row"] == 1 and problem["kind"] == "corrupt"
    assert problem["problem"].startswith(f"{d / 'truncated.png'}: corrupt image data")


def test_paths_outside_the_folder_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(9))
    d = folder(tmp_path / "imgs", [row("0.png"), row("../secret.png"), row(str(secret)), row("link.png"),
                                    row("inner.png"), row(str(tmp_path / "imgs" / "1.png"), "absolute but inside")])
    os.symlink(secret, d / "link.png")
    os.symlink(d / "2.png", d / "inner.png")
    report = validate_source(str(d), progress=False)
    assert {p["row"]: p["kind"] for p in report.problems} == {1: "outside_folder", 2: "outside_folder",
                                                               3: "outside_folder"}
    assert "'../secret.png' leads outside the folder" in report.problems[0]["problem"]
    out = build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out"),
                                   on_error="skip"))
    assert len(datasets.load_from_disk(str(out))) == 6  # rows 0, 4 and 5; nothing of secret.png was copied
    with pytest.raises(S.DataError, match="leads outside the folder"):
        build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out2")))


def test_validate_flags_unknown_names_and_bad_severities_in_built_datasets(tmp_path):
    base = {"prompt": "p", "kind": "anti", "attributes": ["blurry"], "category": "clarity_and_focus",
            "source": "s", "severity": 0.5, "pair_id": "x"}
    changes = [{}, {"attributes": ["blury"]}, {"category": "colour_and_tone"}, {"severity": float("nan")},
               {"severity": 1.5}, {"kind": "antii"}, {"kind": "general", "category": "", "attributes": []}]
    rows = [{**base, **c, "prompt": f"p{i}", "chosen": {"bytes": png(2 * i), "path": None},
             "rejected": {"bytes": png(2 * i + 1), "path": None}} for i, c in enumerate(changes)]
    path = tmp_path / "pairs"
    datasets.Dataset.from_list(rows, features=P.FEATURES).save_to_disk(str(path))
    report = validate_source(str(path), progress=False)
    got = {p["row"]: (p["field"], p["kind"], p["problem"]) for p in report.problems}
    assert got[1] == ("attributes", "unknown_name", "unknown attribute 'blury' (did you mean 'blurry'?)")
    assert got[2] == ("category", "unknown_name", "unknown category 'colour_and_tone' (did you mean 'color_and_tone'?)")
    assert got[3][:2] == ("severity", "bad_number") and "nan" in got[3][2]
    assert got[4][:2] == ("severity", "bad_number")
    assert got[5][:2] == ("kind", "unknown_name") and "did you mean 'anti'" in got[5][2]
    assert sorted(got) == [1, 2, 3, 4, 5] and report.trainable


def test_validate_flags_unknown_attributes_of_prerendered_rows(tmp_path):
    d = folder(tmp_path / "bench", [json.dumps({"P_o": "a car", "I_o": "0.png", "P_a": "a dark car", "I_a": "1.png",
                                                "attributes": a}) for a in ("underexposed", "underexposd, muted")])
    (problem,) = validate_source(str(d), progress=False).problems
    assert problem["row"] == 1 and problem["line"] == 2 and "did you mean 'underexposed'" in problem["problem"]


# ---------------------------------------------------------------- 12: leftovers, full disk, recipes
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_build_removes_what_killed_builds_left_and_says_so(tmp_path, capsys):
    d = folder(tmp_path / "imgs", [row("0.png")])
    host, dead = B._host(), dead_pid()
    stale = tmp_path / f".ds.tmp-{host}-{dead}-0123abcd"
    (stale / "cache").mkdir(parents=True)
    live = tmp_path / f".ds.tmp-{host}-{os.getpid()}-0123abcd"  # a build still running: not ours to remove
    live.mkdir()
    elsewhere = tmp_path / f".ds.tmp-otherhost-{dead}-0123abcd"  # another machine's build on a shared disk
    elsewhere.mkdir()
    moved_aside = tmp_path / f".kept.old-{host}-{dead}-0123abcd"  # killed between the two renames of a swap
    moved_aside.mkdir()
    (moved_aside / "marker").write_text("previous dataset")
    build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "new")))
    err = capsys.readouterr().err
    assert f"removed {stale}" in err and f"restored {tmp_path / 'kept'}" in err and f"process {dead}" in err
    assert temp_folders(tmp_path) == sorted([live.name, elsewhere.name])
    assert (tmp_path / "kept" / "marker").read_text() == "previous dataset"
    assert len(datasets.load_from_disk(str(tmp_path / "new"))) == 2


def test_full_disk_while_saving_keeps_the_previous_dataset(tmp_path, capsys, monkeypatch):
    d = folder(tmp_path / "imgs", [row("0.png")])
    out = tmp_path / "out"
    build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(out)))
    before = sorted(p.name for p in out.iterdir())

    def full(ds, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    # the dataset's files are put in place by adopt_cache_files, or save_to_disk where it declines
    monkeypatch.setattr(B, "adopt_cache_files", full)
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    folder(d, [row("0.png"), row("1.png")])
    code, err = cli(capsys, "build", "--sources", d, "--output_dir", out, "--anti_fraction", "1", "--overwrite", "true")
    assert code == 2 and "Traceback" not in err
    assert f"error: {out}: no space left on the device" in err and "previous dataset there is untouched" in err
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == before and len(datasets.load_from_disk(str(out))) == 2
    assert temp_folders(tmp_path) == []


def test_full_disk_while_generating_is_a_data_error(tmp_path, monkeypatch):
    d = folder(tmp_path / "imgs", [row("0.png")])

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(P, "encode_png", full)
    with pytest.raises(S.DataError, match="no space left on the device.*nothing was written there") as err:
        build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out")))
    assert err.value.kind == "disk_full" and err.value.source == str(tmp_path / "out")
    assert not (tmp_path / "out").exists() and temp_folders(tmp_path) == []


def test_empty_recipe_is_an_error_naming_the_file(tmp_path, capsys):
    recipe = tmp_path / "empty.yaml"
    for text in ("", "# nothing but a comment\n", "{}\n"):
        recipe.write_text(text)
        code, err = cli(capsys, "build", "--config", recipe, "--output_dir", tmp_path / "out")
        assert code == 2 and f"error: {recipe}: the recipe is empty" in err
    assert not (tmp_path / "out").exists()


def test_duplicate_recipe_key_names_key_file_and_line(tmp_path, capsys):
    recipe = tmp_path / "dup.yaml"
    recipe.write_text("seed: 1\nanti_fraction: 1.0\n# later edit\nseed: 2\n")
    code, err = cli(capsys, "build", "--config", recipe)
    assert code == 2 and f"error: {recipe}: line 4: key 'seed' is given twice (first on line 1)" in err
    recipe.write_text("base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n")  # a merge key overrides on purpose
    assert load_yaml(recipe)["other"] == {"x": 2}


def test_a_file_that_is_not_a_pair_dataset_is_named_as_such(tmp_path):
    from pluralign.trainers.data import load_pairs

    f = tmp_path / "pairs.jsonl"
    f.write_text('{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl: a \.jsonl file is not a pair dataset; build one with "):
        load_pairs(str(f))
    with pytest.raises(ValueError, match="not found"):
        load_pairs(str(tmp_path / "nothere"))
