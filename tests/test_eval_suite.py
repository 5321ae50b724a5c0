"""Eval suites from every source, and the errors bad input gets."""

import json

import pytest

from pluralign.eval.suite import SuiteError, from_anti_aesthetic, from_file, from_prompts, load_suite
from pluralign.toy.suite import toy_rows


def test_jsonl_rows_with_default_and_explicit_seeds(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text(
        json.dumps({"prompt_o": "a cat", "prompt_a": "a blurry cat", "attributes": ["blurry"], "seed": 7}) + "\n\n"
        + json.dumps({"prompt_o": "a dog", "prompt_a": "a dark dog", "attributes": "underexposed", "note": "x"}) + "\n"
    )
    rows = load_suite(str(f), seed=100)
    assert [r.seed for r in rows] == [7, 101]
    assert rows[1].attributes == ["underexposed"] and rows[1].meta == {"note": "x"}


def test_csv_rows_and_attribute_lists(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("prompt_o,prompt_a,attributes,seed\na cat,a dark muted cat,underexposed;muted,3\n")
    (row,) = from_file(f)
    assert row.attributes == ["underexposed", "muted"] and row.seed == 3


@pytest.mark.parametrize("line, message", [
    ('{"prompt_o": "a", "attributes": []}', "line 2: field 'prompt_a'"),
    ('{"prompt_o": "a", "prompt_a": "b"}', "line 2: field 'attributes' is missing"),
    ('{"prompt_o": "a", "prompt_a": "b", "attributes": ["blury"]}', "did you mean 'blurry'"),
    ('{"prompt_o": "a", "prompt_a": "b", "attributes": [], "seed": "x"}', "line 2: field 'seed'"),
    ('{"prompt_o": "a", "prompt_a": "b", "attributes": [], "seed": 18446744073709551616}', "outside the range a torch"),
    ('not json', "line 2: not valid JSON"),
])
def test_bad_jsonl_rows_name_file_line_and_field(tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt_o": "ok", "prompt_a": "ok blurry", "attributes": ["blurry"]}\n' + line + "\n")
    with pytest.raises(SuiteError, match=message) as err:
        from_file(f)
    assert str(f) in str(err.value)


def test_csv_without_required_columns(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("prompt,attributes\nx,blurry\n")
    with pytest.raises(SuiteError, match="header lacks column"):
        from_file(f)


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite(str(tmp_path / "nope.jsonl"))


def test_anti_aesthetic_schema_from_a_dataset_and_a_local_file(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({
        "original_prompt": ["a cat on a sofa", "a bridge"],
        "disorted_long_prompt": ["a blurry, dark cat on a sofa", "a bridge in ugly colours"],
        "selected": ["clarity, color_brightness", "color_aesthetic; no_such_thing"],
    })
    rows = from_anti_aesthetic(ds, seed=5)
    assert rows[0].prompt_a == "a blurry, dark cat on a sofa"
    # a dimension is its own request, measured by any of its rules (taxonomy.DIMENSION_MEASURES) or a judge
    assert rows[0].attributes == ["dimension:clarity", "dimension:color_brightness"]
    assert rows[1].attributes == ["dimension:color_aesthetic"]
    assert rows[1].meta["unmapped"] == ["no_such_thing"] and rows[1].seed == 6
    as_lists = datasets.Dataset.from_dict({"original_prompt": ["x"], "disorted_long_prompt": ["x, noisy"],
                                           "selected": [["noisy", "clarity: blurry"]]})
    assert from_anti_aesthetic(as_lists)[0].attributes == ["noisy", "dimension:clarity"]
    f = tmp_path / "aas.jsonl"
    ds.to_json(str(f))
    assert [r.prompt_o for r in load_suite(str(f))] == ["a cat on a sofa", "a bridge"]


def test_anti_aesthetic_schema_missing_columns_is_clear():
    import datasets

    with pytest.raises(SuiteError, match="disorted_long_prompt"):
        from_anti_aesthetic(datasets.Dataset.from_dict({"original_prompt": ["x"]}))


def test_toy_suite_carries_the_scene_for_the_content_checker():
    rows = toy_rows(6, seed=1000)
    assert len(rows) == 6 and len({r.seed for r in rows}) == 6
    assert all({"shape", "colour", "background"} <= set(r.meta) for r in rows)
    assert rows[0].prompt_o != rows[0].prompt_a and len(rows[0].attributes) == 1


def test_rows_from_prompts_use_the_rewriter():
    rows = from_prompts(["a red apple on a table", "a small house"], ["underexposed", "muted"], seed=3)
    assert [r.attributes for r in rows] == [["underexposed"], ["muted"]]
    assert all(r.prompt_a != r.prompt_o for r in rows)
    with pytest.raises(SuiteError, match="unknown attribute"):
        from_prompts(["x"], ["nonsense"])


def test_undecodable_or_malformed_suite_files_name_the_file(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"prompt_o": "caf\xe9", "prompt_a": "a dark caf\xe9", "attributes": ["underexposed"]}\n'.encode("latin-1"))
    with pytest.raises(SuiteError, match=rf"{bad}: not UTF-8 text \(byte \d+\)"):
        load_suite(str(bad))
    quoted = tmp_path / "quote.csv"
    quoted.write_text('prompt_o,prompt_a,attributes\n"a cat,"a dark cat",underexposed\n', encoding="utf-8")
    with pytest.raises(SuiteError, match=rf"{quoted}"):
        load_suite(str(quoted))


@pytest.mark.parametrize("text, message", [
    ("a cat,a blurry dark cat,blurry,underexposed\n", r"line 2: 4 values for the header's 3 columns; quote a field"),
    ("a dog,a blurry dog\n", r"line 2: fewer values than the header's 3 columns \(attributes missing\)"),
])
def test_csv_rows_of_the_wrong_width_are_refused_not_cut(tmp_path, text, message):
    f = tmp_path / "s.csv"
    f.write_text("prompt_o,prompt_a,attributes\n" + text)
    with pytest.raises(SuiteError, match=message):
        from_file(f)


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    for name, body in [("s.csv", "prompt_o,prompt_a,attributes\na dog,a blurry dog,blurry\n"),
                       ("s.jsonl", json.dumps({"prompt_o": "a dog", "prompt_a": "a blurry dog", "attributes": "blurry"}))]:
        f = tmp_path / name
        f.write_bytes(b"\xef\xbb\xbf" + body.encode())
        (row,) = from_file(f)
        assert row.prompt_o == "a dog" and row.attributes == ["blurry"]


def test_a_trailing_comma_is_not_a_value(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("prompt_o,prompt_a,attributes\na dog,a blurry dog,blurry,\n")
    (row,) = from_file(f)
    assert row.attributes == ["blurry"]
