"""Pair building for every source schema, mixing ratios and category balance."""

import io
import json
import random
from collections import Counter

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data as skdata

from pluralign.data import pairs as P
from pluralign.data import sources as S
from pluralign.data.build import build_dataset, check_sources
from pluralign.data.config import DataConfig
from pluralign.data.taxonomy import ATTRIBUTES


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tiny(i: int, size=16) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def write_folder(d, n=6, size=48, meta="metadata.jsonl"):
    d.mkdir(parents=True, exist_ok=True)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    rows = []
    for i in range(n):
        Image.fromarray(photos[i % 4]).resize((size + i, size)).save(d / f"im{i}.jpg")
        rows.append({"file_name": f"im{i}.jpg", "text": f"photo number {i} of a scene"})
    if meta.endswith(".jsonl"):
        (d / meta).write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (d / meta).write_text("file_name,caption\n" + "".join(f"{r['file_name']},{r['text']}\n" for r in rows))
    return d


def pickapic_parquet(path, labels):
    table = pa.table({
        "caption": [f"prompt {i}" for i in range(len(labels))],
        "jpg_0": [png(tiny(2 * i)) for i in range(len(labels))],
        "jpg_1": [png(tiny(2 * i + 1)) for i in range(len(labels))],
        "label_0": [float(v) for v in labels],
    })
    pq.write_table(table, path)
    return path


def trl_parquet(path, n, size=8):
    feats = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Image(),
                               "rejected": datasets.Image()})
    ds = datasets.Dataset.from_dict({"prompt": [f"a scene {i}" for i in range(n)],
                                     "chosen": [tiny(i, size) for i in range(n)],
                                     "rejected": [tiny(10_000 + i, size) for i in range(n)]}, features=feats)
    ds.to_parquet(str(path))
    return path


def caption_parquet(path, n, size=24):
    feats = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [tiny(i, size) for i in range(n)],
                                     "caption": [f"a caption {i}" for i in range(n)]}, features=feats)
    ds.to_parquet(str(path))
    return path


def rows_of(cfg):
    return list(P.generate_rows([0], 1, cfg.__dict__, log_dir=str(cfg.output_dir) + "_logs"))


def decode(v):
    return np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB"))


# ---------------------------------------------------------------- anti / mirror
def test_anti_and_mirror_rows_share_images_with_opposite_labels():
    img = Image.fromarray(skdata.astronaut()).resize((64, 64))
    cfg = DataConfig(severity_min=0.5, severity_max=0.9)
    anti, mirror = P.intent_rows(img, "an astronaut portrait", source="mem", pair_id="p0",
                                 category="clarity_and_focus", seed=4, cfg=cfg)
    assert anti["kind"] == "anti" and mirror["kind"] == "mirror" and anti["pair_id"] == mirror["pair_id"] == "p0"
    assert anti["chosen"]["bytes"] == mirror["rejected"]["bytes"]
    assert anti["rejected"]["bytes"] == mirror["chosen"]["bytes"]
    np.testing.assert_array_equal(decode(mirror["chosen"]), np.asarray(img))  # clean is lossless
    assert not np.array_equal(decode(anti["chosen"]), np.asarray(img))
    assert mirror["prompt"] == "an astronaut portrait"
    assert "an astronaut portrait" in anti["prompt"] and anti["prompt"] != mirror["prompt"]
    assert 1 <= len(anti["attributes"]) <= 4
    assert all(ATTRIBUTES[a].category == "clarity_and_focus" for a in anti["attributes"])
    assert 0.5 <= anti["severity"] <= 0.9 and set(anti) == set(P.COLUMNS)
    again = P.intent_rows(img, "an astronaut portrait", source="mem", pair_id="p0", category="clarity_and_focus",
                          seed=4, cfg=cfg)
    assert again[0] == anti


def test_pairs_from_arrays_balanced_categories():
    items = [(np.asarray(tiny(i, 24)), f"thing {i}") for i in range(40)]
    rows = list(P.pairs_from_images(items, DataConfig()))
    assert len(rows) == 80
    cats = Counter(r["category"] for r in rows if r["kind"] == "anti")
    assert set(cats.values()) == {10}


def test_category_for_is_balanced_per_block():
    cats = ["a", "b", "c"]
    got = [P.category_for(i, cats, seed=7) for i in range(30)]
    for b in range(10):
        assert sorted(got[3 * b:3 * b + 3]) == cats
    assert got != [P.category_for(i, cats, seed=8) for i in range(30)]


# ---------------------------------------------------------------- schemas
def test_detect_schema_and_error_lists_columns():
    assert S.detect_schema(["caption", "jpg_0", "jpg_1", "label_0", "ranking_id"], "x") == "pickapic"
    assert S.detect_schema(["prompt", "chosen", "rejected"], "x") == "trl"
    assert S.detect_schema(["original_prompt", "disorted_long_prompt", "selected"], "x") == "prompt_set"
    assert S.detect_schema(["P_o", "I_o", "P_a", "I_a"], "x") == "benchmark"
    assert S.detect_schema(["prompt_o", "image_o", "prompt_a", "image_a"], "x") == "benchmark"
    assert S.detect_schema(["image", "text"], "x") == "caption"
    with pytest.raises(S.DataError) as e:
        S.detect_schema(["picture", "words"], "my.parquet")
    msg = str(e.value)
    assert "my.parquet" in msg and "picture" in msg and "jpg_0" in msg and "disorted_long_prompt" in msg


@pytest.mark.parametrize("meta", ["metadata.jsonl", "captions.csv"])
def test_folder_sources_build_pairs(tmp_path, meta):
    folder = write_folder(tmp_path / "f", n=4, meta=meta)
    cfg = DataConfig(sources=[str(folder)], anti_fraction=1.0, output_dir=str(tmp_path / "o"))
    rows = rows_of(cfg)
    assert [r["kind"] for r in rows] == ["anti", "mirror"] * 4
    assert {r["source"] for r in rows} == {str(folder)}
    assert rows[1]["prompt"] == "photo number 0 of a scene"


def test_caption_file_path_source(tmp_path):
    folder = write_folder(tmp_path / "f", n=2, meta="captions.csv")
    src = S.open_source(str(folder / "captions.csv"))
    assert src.schema == "caption" and src.kind == "captions"
    rows = rows_of(DataConfig(sources=[str(folder / "captions.csv")], anti_fraction=1.0,
                              output_dir=str(tmp_path / "o")))
    assert len(rows) == 4


def test_pickapic_ties(tmp_path):
    path = pickapic_parquet(tmp_path / "pap.parquet", [1, 0, 0.5, 1])
    base = dict(sources=[str(path)], anti_fraction=0.0, output_dir=str(tmp_path / "o"))
    rows = rows_of(DataConfig(**base))
    assert [r["prompt"] for r in rows] == ["prompt 0", "prompt 1", "prompt 3"]
    assert all(r["kind"] == "general" and r["category"] == "" and r["severity"] == 0 for r in rows)
    assert rows[0]["chosen"]["bytes"] == png(tiny(0)) and rows[1]["chosen"]["bytes"] == png(tiny(3))
    log = json.loads((tmp_path / "o_logs" / "shard-0.json").read_text())
    assert log["stats"]["dropped_ties"] == 1
    both = rows_of(DataConfig(**base, ties="keep_both"))
    ties = [r for r in both if r["prompt"] == "prompt 2"]
    assert len(ties) == 2 and ties[0]["chosen"] == ties[1]["rejected"] and ties[0]["pair_id"] != ties[1]["pair_id"]
    with pytest.raises(S.DataError, match="row 2, field 'label_0'.*tie"):
        rows_of(DataConfig(**base, ties="error"))


def test_trl_preference_source(tmp_path):
    path = trl_parquet(tmp_path / "trl.parquet", 5)
    rows = rows_of(DataConfig(sources=[str(path)], anti_fraction=0.0, output_dir=str(tmp_path / "o")))
    assert len(rows) == 5 and rows[2]["prompt"] == "a scene 2"
    assert decode(rows[2]["chosen"]).tolist() == np.asarray(tiny(2, 8)).tolist()


def test_benchmark_rows_become_anti_and_mirror(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    tiny(1).save(d / "o.png")
    tiny(2).save(d / "a.png")
    (d / "metadata.jsonl").write_text(json.dumps({"P_o": "a red car", "I_o": "o.png", "P_a": "a red car, blurry",
                                                  "I_a": "a.png", "attributes": "blurry, muted"}) + "\n")
    src = S.open_source(str(d))
    assert src.schema == "benchmark"
    rows = rows_of(DataConfig(sources=[str(d)], anti_fraction=1.0, output_dir=str(tmp_path / "o")))
    anti, mirror = rows
    assert anti["prompt"] == "a red car, blurry" and mirror["prompt"] == "a red car"
    assert decode(anti["chosen"]).tolist() == np.asarray(tiny(2)).tolist()
    assert anti["attributes"] == ["blurry", "muted"] and anti["category"] == "clarity_and_focus"


def test_prompt_set_is_refused_for_building_with_advice(tmp_path):
    d = tmp_path / "ps"
    d.mkdir()
    (d / "captions.jsonl").write_text(json.dumps({"original_prompt": "a cat", "disorted_long_prompt": "a cat, dark",
                                                  "selected": "['color brightness']"}) + "\n")
    src = S.open_source(str(d))
    assert src.schema == "prompt_set"
    recs = list(S.records(src, src.rows()))
    assert recs[0].kind == "prompts" and recs[0].prompt_a == "a cat, dark" and recs[0].attributes == ("color_brightness",)
    with pytest.raises(S.DataError, match="prompts without images.*P_o, I_o, P_a, I_a"):
        check_sources(DataConfig(sources=[str(d)], anti_fraction=1.0))


def test_built_dataset_mixes_in_by_its_kinds(tmp_path):
    """A built dataset is a source of the rows it has: anti/mirror rows only cannot fill a general share."""
    folder = write_folder(tmp_path / "f", n=1)
    out = build_dataset(DataConfig(sources=[str(folder)], anti_fraction=1.0, output_dir=str(tmp_path / "o")))
    assert S.open_source(str(out)).schema == "pairs"
    with pytest.raises(S.DataError, match="needs a preference source.*general rows"):
        check_sources(DataConfig(sources=[str(out)], anti_fraction=0.0))
    with pytest.raises(S.DataError, match="pairs_fraction=0.5 leaves 0.5"):
        check_sources(DataConfig(sources=[str(out)], anti_fraction=1.0, pairs_fraction=0.5))
    again = build_dataset(DataConfig(sources=[str(out)], anti_fraction=1.0, output_dir=str(tmp_path / "o2")))
    a, b = (datasets.load_from_disk(str(d)) for d in (out, again))
    assert b["prompt"] == a["prompt"] and b["pair_id"] == [f"{out}#{p}" for p in a["pair_id"]]
    assert b.data.column("chosen").to_pylist() == a.data.column("chosen").to_pylist()  # bytes kept as they are


def test_missing_source_kind_for_ratio(tmp_path):
    folder = write_folder(tmp_path / "f", n=1)
    with pytest.raises(S.DataError, match="needs a preference source"):
        check_sources(DataConfig(sources=[str(folder)], anti_fraction=0.5))


def test_disk_dataset_as_source(tmp_path):
    path = trl_parquet(tmp_path / "trl.parquet", 3)
    datasets.load_dataset("parquet", data_files=str(path), split="train").save_to_disk(str(tmp_path / "disk"))
    src = S.open_source(str(tmp_path / "disk"))
    assert src.kind == "disk" and src.schema == "trl"
    assert len(list(S.records(src, src.rows()))) == 3


# ---------------------------------------------------------------- mixing
def _stream(kind, size):
    i = 0
    while True:
        i += 1
        yield [{"kind": k} for k in (["anti", "mirror"] if kind == "intent" else ["general"])][:size]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_mix_ratio_on_1k_rows(fraction):
    rows = list(P.mix(_stream("intent", 2), _stream("general", 1), fraction, 1000))
    assert 998 <= len(rows) <= 1000
    share = sum(r["kind"] != "general" for r in rows) / len(rows)
    assert abs(share - fraction) <= 0.02
    # every anti row is directly followed by its mirror
    for a, b in zip(rows, rows[1:]):
        if a["kind"] == "anti":
            assert b["kind"] == "mirror"


def test_mix_stops_when_a_needed_stream_runs_out():
    stats = {}
    intent = iter([[{"kind": "anti"}, {"kind": "mirror"}]] * 3)
    rows = list(P.mix(intent, _stream("general", 1), 0.5, None, stats))
    assert stats["stopped"] == "intent sources exhausted"
    assert abs(sum(r["kind"] != "general" for r in rows) / len(rows) - 0.5) < 0.2


def test_round_robin():
    assert list(P.round_robin([iter([1, 2, 3]), iter(["a"])])) == [1, "a", 2, 3]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_build_mix_ratio_and_balance_on_1k_rows(tmp_path, num_proc):
    cap = caption_parquet(tmp_path / "cap.parquet", 260)
    gen = trl_parquet(tmp_path / "trl.parquet", 760)
    out = build_dataset(DataConfig(sources=[str(cap), str(gen)], anti_fraction=0.3, max_rows=1000, num_proc=num_proc,
                                   output_dir=str(tmp_path / "out"), max_side=None))
    ds = datasets.load_from_disk(str(out))
    kinds = Counter(ds["kind"])
    assert 990 <= len(ds) <= 1000
    assert abs((kinds["anti"] + kinds["mirror"]) / len(ds) - 0.3) <= 0.02
    assert kinds["anti"] == kinds["mirror"]
    cats = Counter(c for c, k in zip(ds["category"], ds["kind"]) if k == "anti")
    assert len(cats) == 4 and max(cats.values()) - min(cats.values()) <= 2 * num_proc
    by_pair = Counter(p for p, k in zip(ds["pair_id"], ds["kind"]) if k != "general")
    assert set(by_pair.values()) == {2}
    card = (out / "README.md").read_text()
    assert "anti+mirror share" in card and str(cap) in card and "| general |" in card


@pytest.mark.parametrize("num_proc", [1, 2])
def test_the_build_keeps_its_arrow_files_and_loads_as_save_to_disk_would(tmp_path, num_proc):
    from pluralign.data.build import adopt_cache_files

    gen = trl_parquet(tmp_path / "trl.parquet", 40)
    cfg = DataConfig(sources=[str(gen)], anti_fraction=0.0, max_rows=40, num_proc=num_proc, max_side=None,
                     output_dir=str(tmp_path / "out"))
    out = build_dataset(cfg)
    assert sorted(p.name for p in out.glob("*.arrow")) == [f"data-{i:05d}-of-{num_proc:05d}.arrow" for i in range(num_proc)]
    ds = datasets.load_from_disk(str(out))
    saved = tmp_path / "saved"
    ds.save_to_disk(str(saved))
    again = datasets.load_from_disk(str(saved))
    assert ds.features == again.features and ds.to_list() == again.to_list() and len(ds) == 40
    # a dataset that is not exactly its cache files (a selection) is left for save_to_disk
    assert not adopt_cache_files(ds.select([1, 0]), tmp_path / "never") and not (tmp_path / "never").exists()


def test_rows_do_not_depend_on_random_state(tmp_path):
    folder = write_folder(tmp_path / "f", n=3)
    cfg = DataConfig(sources=[str(folder)], anti_fraction=1.0, output_dir=str(tmp_path / "o"))
    random.seed(1)
    np.random.seed(1)
    a = rows_of(cfg)
    random.seed(2)
    np.random.seed(2)
    assert rows_of(cfg) == a
    cfg2 = DataConfig(sources=[str(folder)], anti_fraction=1.0, output_dir=str(tmp_path / "o"), seed=1)
    assert rows_of(cfg2) != a


@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_encoder_is_exact_and_readable_by_pillow_and_datasets(level):
    from pluralign.data.pairs import encode_png, png_rgb

    rng = np.random.default_rng(level)
    for h, w in [(1, 1), (1, 7), (5, 1), (33, 17)]:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        data = png_rgb(a, level)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), a), (h, w)
        assert np.array_equal(np.asarray(datasets.Image().decode_example({"bytes": data, "path": None})), a)
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((128, 128)))
    assert encode_png(Image.fromarray(photo), level)["bytes"] == png_rgb(photo, level)
    if level:  # the Up filter and deflate compress a photograph (raw RGB is 49 KB)
        assert len(png_rgb(photo, level)) < 0.8 * photo.nbytes
    grey = Image.fromarray(photo[:, :, 0])  # other modes go through Pillow, unchanged
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(grey, level)["bytes"]))), photo[:, :, 0])
    with pytest.raises(ValueError, match="H x W x 3"):
        png_rgb(photo[:, :, 0])
