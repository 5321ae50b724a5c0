"""The curated anti-aesthetic photo set (image, anti_aesthetic_caption, major_classes, optionally
objective_caption) is recognised as its own schema: each row is a photograph that shows the
qualities its caption names, for the adapter categories it lists. Validation checks the names;
`data build` points to `data generate`, which pairs each photo with a generator's clean image."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pluralign.data import sources as S
from pluralign.data.build import build_dataset
from pluralign.data.config import DataConfig
from pluralign.data.validate import validate_source


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _photo_set(path, classes, clean=True):
    cols = {"image": [{"bytes": _png(i), "path": None} for i in range(len(classes))],
            "anti_aesthetic_caption": [f"a grainy, underlit photo of a chair {i}" for i in range(len(classes))],
            "major_classes": classes}
    if clean:
        cols["objective_caption"] = [f"a chair {i}" for i in range(len(classes))]
    pq.write_table(pa.table(cols), path)
    return path


def test_rows_become_photo_records_with_their_categories(tmp_path):
    src = S.open_source(str(_photo_set(tmp_path / "photos.parquet",
                                       [["clarity_and_focus"], ["color_and_tone", "emotion_and_subject"]])))
    assert src.schema == "photo_set"
    recs = list(S.records(src, src.rows()))
    assert [r.kind for r in recs] == ["photo", "photo"]
    assert recs[1].categories == ("color_and_tone", "emotion_and_subject")
    assert recs[0].prompt == "a chair 0" and recs[0].prompt_a.startswith("a grainy, underlit photo")
    assert S.open_image(recs[0].image, source=src.name, row=0, field="image").size == (24, 24)


def test_without_a_clean_caption_the_content_prompt_is_empty(tmp_path):
    src = S.open_source(str(_photo_set(tmp_path / "p.parquet", [["clarity_and_focus"]], clean=False)))
    (rec,) = list(S.records(src, src.rows()))
    assert rec.prompt == "" and rec.prompt_a


def test_validate_names_an_unknown_or_missing_category(tmp_path):
    path = _photo_set(tmp_path / "p.parquet", [["colour_and_tone"], [], ["clarity_and_focus"]])
    report = validate_source(str(path), progress=False)
    assert report.schema == "photo_set" and not report.ok
    by_row = {p["row"]: p for p in report.problems}
    assert set(by_row) == {0, 1}
    assert by_row[0]["field"] == "major_classes" and "did you mean 'color_and_tone'" in by_row[0]["problem"]
    assert by_row[1]["kind"] == "missing"


def test_build_points_to_data_generate(tmp_path):
    path = _photo_set(tmp_path / "p.parquet", [["clarity_and_focus"]])
    with pytest.raises(S.DataError, match=r"curated photo set.*pluralign data generate --suite"):
        build_dataset(DataConfig(sources=[str(path)], output_dir=str(tmp_path / "out"), anti_fraction=1.0))
    assert not (tmp_path / "out").exists()
