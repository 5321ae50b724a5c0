"""Validation finds every kind of bad input; building stops at the first bad row (naming source,
row and field) or skips and lists them; outputs are never left half-written."""

import io
import json
import struct
import subprocess
import sys
import zlib

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pluralign.data import sources as S
from pluralign.data.build import build_dataset
from pluralign.data.config import DataConfig
from pluralign.data.validate import validate_source


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def good(i=0, size=24):
    return Image.fromarray(np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8))


def bomb_png(w, h):
    """A tiny file whose header claims a huge image (a decompression bomb)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bad_folder(d):
    d.mkdir()
    good(0).save(d / "ok.png")
    good(1).save(d / "ok2.png")
    (d / "zero.png").write_bytes(b"")
    (d / "junk.png").write_bytes(b"this is not an image at all")
    (d / "trunc.png").write_bytes(png_bytes(good(2, 64))[:300])
    (d / "bomb.png").write_bytes(bomb_png(20000, 20000))
    (d / "big.png").write_bytes(bomb_png(9000, 9000))
    good(3, 4).save(d / "tiny.png")
    rows = [
        ("ok.png", "a fine photo"),        # 0 ok
        ("zero.png", "zero"),              # 1 zero_byte
        ("junk.png", "junk"),              # 2 corrupt
        ("trunc.png", "truncated"),        # 3 corrupt
        ("bomb.png", "bomb"),              # 4 extreme_size (PIL's own guard)
        ("big.png", "big"),                # 5 extreme_size (max_pixels)
        ("ok2.png", "   "),                # 6 empty_prompt
        ("missing.png", "gone"),           # 7 missing_image
        ("ok.png", "a fine photo"),        # 8 duplicate of 0
        ("ok2.png", 42),                   # 9 wrong_type
        ("tiny.png", "tiny"),              # 10 extreme_size (min_side)
    ]
    (d / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f, "text": t}) + "\n" for f, t in rows))
    return d


EXPECTED = {1: "zero_byte", 2: "corrupt", 3: "corrupt", 4: "extreme_size", 5: "extreme_size", 6: "empty_prompt",
            7: "missing_image", 8: "duplicate", 9: "wrong_type", 10: "extreme_size"}


def test_validate_reports_every_bad_kind(tmp_path):
    d = bad_folder(tmp_path / "bad")
    report = validate_source(str(d), progress=False)
    assert report.schema == "caption" and report.rows == 11 and not report.ok
    got = {p["row"]: p["kind"] for p in report.problems}
    assert got == EXPECTED
    fields = {p["row"]: p["field"] for p in report.problems}
    assert fields[1] == "file_name" and fields[6] == "text"
    text = report.summary()
    assert "zero-byte" in text and "decompression bomb" in text and "duplicate of row 0" in text


def test_validate_columns_ties_and_labels(tmp_path):
    d = tmp_path / "cols"
    d.mkdir()
    (d / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "words": "hi"}) + "\n")
    report = validate_source(str(d), progress=False)
    assert [p["kind"] for p in report.problems] == ["columns"]
    assert "words" in report.problems[0]["problem"] and "caption" in report.problems[0]["problem"]

    same = png_bytes(good(5))
    pq.write_table(pa.table({"caption": ["a", "b", "c"], "jpg_0": [png_bytes(good(0)), same, png_bytes(good(1))],
                             "jpg_1": [png_bytes(good(2)), same, png_bytes(good(3))], "label_0": [0.5, 1.0, 7.0]}),
                   tmp_path / "p.parquet")
    report = validate_source(str(tmp_path / "p.parquet"), progress=False)
    kinds = sorted((p["row"], p["kind"]) for p in report.problems)
    assert kinds == [(0, "tie"), (1, "tie"), (2, "wrong_type")]


def test_validate_clean_dataset_passes_and_cli_exit_codes(tmp_path):
    d = tmp_path / "clean"
    d.mkdir()
    for i in range(3):
        good(i).save(d / f"{i}.png")
    (d / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i}.png", "text": f"t{i}"}) + "\n"
                                              for i in range(3)))
    assert validate_source(str(d), progress=False).ok
    ok = subprocess.run([sys.executable, "-m", "pluralign.data.cli", "validate", str(d)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "pluralign.data.cli", "validate", str(bad_folder(tmp_path / "bad"))],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "zero_byte: 1" in bad.stdout and "corrupt: 2" in bad.stdout


@pytest.mark.parametrize("num_proc", [1, 2])
def test_build_stops_at_first_bad_row(tmp_path, num_proc):
    d = bad_folder(tmp_path / "bad")
    with pytest.raises(S.DataError) as e:
        build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out"),
                                 num_proc=num_proc))
    assert e.value.row == 1 and e.value.field == "file_name" and e.value.source == str(d)
    assert "zero-byte" in str(e.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]  # no temp folder left


def test_build_skip_lists_rows_in_card(tmp_path):
    d = bad_folder(tmp_path / "bad")
    out = build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out"),
                                   on_error="skip"))
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 4  # rows 0 and 8 are fine for building (duplicates are validate's business)
    card = (out / "README.md").read_text()
    assert "## Skipped rows (9)" in card and "| zero_byte |" in card and "| missing_image |" in card


def test_failed_rebuild_keeps_previous_output(tmp_path):
    d = tmp_path / "ok"
    d.mkdir()
    good(0).save(d / "a.png")
    (d / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a thing"}) + "\n")
    out = tmp_path / "out"
    build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(out)))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match="overwrite"):
        build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(out)))
    bad = bad_folder(tmp_path / "bad")
    with pytest.raises(S.DataError):
        build_dataset(DataConfig(sources=[str(bad)], anti_fraction=1.0, output_dir=str(out), overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == before
    assert len(datasets.load_from_disk(str(out))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ok", "out"]
    (d / "metadata.jsonl").write_text("".join(json.dumps({"file_name": "a.png", "text": f"thing {i}"}) + "\n"
                                              for i in range(2)))
    build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(out), overwrite=True))
    assert len(datasets.load_from_disk(str(out))) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ok", "out"]


def test_overwrite_replaces_only_a_saved_dataset(tmp_path):
    d = tmp_path / "ok"
    d.mkdir()
    good(0).save(d / "a.png")
    (d / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a thing"}) + "\n")
    # the source folder itself, or any folder of other files, would be deleted by the swap
    for target in (d, tmp_path / "notes"):
        target.mkdir(exist_ok=True)
        (target / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match=r"holds files that are not a saved dataset \(.*notes.txt"):
            build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(target), overwrite=True))
        assert (target / "notes.txt").read_text() == "mine"
    assert (d / "a.png").exists() and (d / "metadata.jsonl").exists()
    suite = tmp_path / "suite.csv"
    suite.write_text("prompt_o,prompt_a,attributes\n")
    with pytest.raises(FileExistsError, match="is a file, not a dataset folder"):
        build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(suite), overwrite=True))
    assert suite.read_text() == "prompt_o,prompt_a,attributes\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    out = build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(empty), overwrite=True))
    assert len(datasets.load_from_disk(str(out))) == 2  # an empty folder is fine, and so is a dataset after it
    build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(out), overwrite=True))


def test_every_row_skipped_says_so_and_names_the_first(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "metadata.jsonl").write_text(json.dumps({"file_name": "nope.png", "text": "a thing"}) + "\n")
    with pytest.raises(S.DataError, match=r"no row could be built: all 1 rows were skipped \(missing_image 1; the "
                                          r"first: .* row 0, image file not found"):
        build_dataset(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "out"),
                                 on_error="skip"))
    assert not (tmp_path / "out").exists()


def test_open_image_value_kinds(tmp_path):
    img = good(0)
    (tmp_path / "x.png").write_bytes(png_bytes(img))
    for v in (png_bytes(img), {"bytes": png_bytes(img), "path": None}, {"bytes": None, "path": "x.png"}, "x.png", img):
        out = S.open_image(v, source="s", row=0, field="f", base_dir=tmp_path)
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(img))
    with pytest.raises(S.DataError, match="no image"):
        S.open_image(None, source="s", row=3, field="f")
