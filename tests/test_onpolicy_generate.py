"""`pluralign data generate` on the toy world: best-of-n picks what the scorer says, the mirror is the anti row
swapped, the margin filter drops and counts, the output is the pair schema that validate and training read,
and a run interrupted after a shard resumes to the same dataset as one that was not."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image
from test_trainer_helpers import one_torch_thread

from pluralign import cli
from pluralign.data import sources as S
from pluralign.data.pairs import FEATURES as PAIR_FEATURES
from pluralign.data.taxonomy import ATTRIBUTES
from pluralign.data.validate import validate_source
from pluralign.eval import generate as G
from pluralign.eval.suite import SuiteError
from pluralign.onpolicy import generate as OG
from pluralign.onpolicy import shards as SH
from pluralign.onpolicy.config import GenerateConfig
from pluralign.onpolicy.prompts import candidate_seeds, load_prompt_pairs
from pluralign.onpolicy.scoring import build_scorer
from pluralign.onpolicy.select import select_pair
from pluralign.toy import paths, world
from pluralign.toy.scorer import ToyScorer
from pluralign.trainers.data import check_columns, load_pairs, select_rows

STEPS, K, N = 4, 3, 6  # 4 denoising steps, 3 candidates, 6 prompt pairs (3 shards of 2)


def config(out, **kw) -> GenerateConfig:
    base = dict(generator=str(paths.aligned_dir()), suite="toy", n_prompts=N, num_candidates=K, scorer="toy",
                num_inference_steps=STEPS, guidance_scale=6.0, batch_size=2 * K, shard_size=2, device="cpu",
                output_dir=str(out))
    base.update(kw)
    return GenerateConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads wait on each other (4 steps x 48 images took
    65 s with two threads under load, 3 s with one)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def pipe():
    return G.load_pipeline(str(paths.aligned_dir()), "cpu", progress=False)


@pytest.fixture(scope="module")
def scorer():
    return ToyScorer().ensure_loaded()


@pytest.fixture(scope="module")
def generated(pipe, scorer, tmp_path_factory):
    """One uninterrupted run (3 shards of 2 prompt pairs) at min_margin 0: every pair with a positive margin."""
    out = tmp_path_factory.mktemp("gen") / "pairs"
    cfg = config(out, min_margin=0.0)
    OG.generate_dataset(cfg, pipe=pipe, scorer=scorer, progress=False)
    log = json.loads((out / "generate_log.json").read_text())
    return cfg, out, datasets.load_from_disk(str(out)), log


def png_array(value) -> np.ndarray:
    img = value if isinstance(value, Image.Image) else Image.open(io.BytesIO(value["bytes"]))
    return np.asarray(img.convert("RGB"))


# ------------------------------------------------------------------------------------------ pure parts
def test_select_pair_takes_the_top_scored_content_keeping_candidate():
    d = select_pair([0.9, 0.5, 0.7], [0.3, -0.2, -0.2], [0.1, 0.8, 0.9], [0.9, 0.6, 0.95], min_content=0.5,
                    min_margin=0.1)
    # 0.9 lost the content; of the rest 0.7 is highest. Rejected: lowest score, ties to the higher content
    assert d.accepted and (d.chosen, d.rejected) == (2, 2) and d.margin == pytest.approx(0.9)
    assert select_pair([1, 1], [0, 0], [1, 1], [1, 1], min_content=0.5, min_margin=0).chosen == 0  # ties: first
    # equally clean P_o candidates (a scorer that rates each against its own same-seed image): the chosen
    # image's same-seed partner, so the pair is the one the margin was measured on
    d = select_pair([0.1, 0.9, 0.2], [-1.0, -1.0 + 1e-12, -1.0], [1, 1, 1], [1.0, 0.7, 1.0], min_content=0.5,
                    min_margin=0)
    assert (d.chosen, d.rejected) == (1, 1)
    reasons = {
        "content_lost_a": ([1, 2], [0, 0], [0.2, 0.4], [1, 1]),
        "content_lost_o": ([1, 2], [0, 0], [1, 1], [0.49, 0.0]),
        "below_min_margin": ([0.35, 0.1], [0.2, 0.3], [1, 1], [1, 1]),  # 0.35 - 0.2 = 0.15 < 0.2
        "unscored": ([np.nan, np.nan], [0, 0], [1, 1], [1, 1]),
        "weak_chosen": ([-0.1, -0.3], [-1, -1], [1, 1], [1, 1]),  # margin 0.9, but -0.1 < min_chosen 0
    }
    for reason, args in reasons.items():
        d = select_pair(*args, min_content=0.5, min_margin=0.2, min_chosen=0.0)
        assert not d.accepted and d.reason == reason, reason
    assert select_pair([-0.1], [-1], [1], [1], min_content=0.5, min_margin=0.2).accepted  # no floor by default
    # a chosen image that does not out-score the rejected one is never a preference, whatever min_margin
    assert select_pair([0.1], [0.1], [1], [1], min_content=0.5, min_margin=0.0).reason == "below_min_margin"
    assert select_pair([], [], [], [], min_content=0.5, min_margin=0, has_attributes=False).reason == "no_attributes"


def test_pairs_per_prompt_takes_the_next_best_candidates_while_they_pass():
    sa, so, ca, co = [0.9, 0.2, 0.8, 0.6], [0.1, 0.0, 0.3, 0.5], [1, 1, 1, 0.1], [1, 1, 1, 1]
    # rejected: P_o 1 (0.0). After chosen 0: 2 (0.8, margin 0.8) passes, 1 (margin 0.2 < 0.5) stops the list;
    # 3 lost the content
    d = select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.5, n_pairs=4)
    assert (d.chosen, d.rejected, d.more_chosen) == (0, 1, [2])
    assert select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.1, n_pairs=4).more_chosen == [2, 1]
    assert select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.1, n_pairs=2).more_chosen == [2]
    assert select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.1, min_chosen=0.85, n_pairs=4).more_chosen == []
    assert select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.1).more_chosen == []  # one pair by default


def test_choose_by_content_takes_the_surest_subject_among_the_candidates_that_pass():
    # P_a: 0 shows the request most but barely keeps the object; 1 passes with the surest object; 2 has a surer
    # object still but does not pass the floor; 3 lost the content
    sa, so, ca, co = [0.5, 0.3, 0.05, 0.45], [-0.4, -0.3], [0.55, 0.9, 0.99, 0.2], [1.0, 1.0]
    by_attr = select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.2, min_chosen=0.1)
    by_content = select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.2, min_chosen=0.1, choose_by="content")
    assert (by_attr.chosen, by_content.chosen, by_content.rejected) == (0, 1, 0)
    assert by_content.accepted and by_content.margin == pytest.approx(0.3 - (-0.4))
    # the next pairs by content too, only among those that pass; a drop is the same drop either way
    more = select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.2, min_chosen=0.1, choose_by="content", n_pairs=3)
    assert (more.chosen, more.more_chosen) == (1, [0])
    strict = dict(min_content=0.5, min_margin=2.0, min_chosen=0.1)
    assert select_pair(sa, so, ca, co, **strict).reason == select_pair(sa, so, ca, co, **strict, choose_by="content").reason
    with pytest.raises(ValueError, match="choose_by 'surest'"):
        select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.2, choose_by="surest")


def test_content_pair_rejects_the_content_losing_candidate_that_shows_the_attributes_most():
    sa, so, ca, co = [0.9, 0.2, 0.8, 0.95, 0.7], [0.1, 0.0], [1, 1, 0.1, 0.3, 0.2], [1, 1]
    d = select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.1, content_pair=True)
    # chosen: 0 (0.9 keeps the content); of the lost ones (2, 3, 4) candidate 3 scores highest
    assert (d.chosen, d.rejected, d.content_rejected) == (0, 1, 3)
    assert select_pair(sa, so, ca, co, min_content=0.5, min_margin=0.1).content_rejected is None  # off by default
    assert select_pair(sa, so, [1] * 5, co, min_content=0.5, min_margin=0.1, content_pair=True).content_rejected is None
    # a dropped prompt pair gives no row at all, whatever its lost candidates
    d = select_pair(sa, so, ca, co, min_content=0.5, min_margin=5.0, content_pair=True)
    assert not d.accepted and d.content_rejected is None
    # ties among the lost ones go to the lower index; NaN scores are never picked
    d = select_pair([0.9, 0.5, 0.5, np.nan], [0.0], [1, 0.1, 0.1, 0.1], [1], min_content=0.5, min_margin=0,
                    content_pair=True)
    assert d.content_rejected == 1
    # a lost candidate that does not follow the request (no better than the clean image, or under the floor) is
    # not a content row: it would teach the request away along with the lost subject
    d = select_pair([0.9, -0.2, 0.05], [0.0], [1, 0.1, 0.1], [1], min_content=0.5, min_margin=0, content_pair=True)
    assert d.content_rejected == 2
    assert select_pair([0.9, -0.2, 0.05], [0.0], [1, 0.1, 0.1], [1], min_content=0.5, min_margin=0, min_chosen=0.1,
                       content_pair=True).content_rejected is None


def test_content_pairs_add_one_anti_row_against_the_lost_candidate(generated, pipe, scorer, tmp_path):
    """The same candidates as the plain run: every plain row is kept, and each accepted prompt pair with a P_a
    candidate that lost the content adds one anti row, P_a prompt, the same chosen image, the lost candidate
    rejected."""
    cfg1, _, ds1, _ = generated
    out = tmp_path / "pairs"
    OG.generate_dataset(config(out, min_margin=0.0, content_pairs=True), pipe=pipe, scorer=scorer, progress=False)
    ds = datasets.load_from_disk(str(out))
    log = json.loads((out / "generate_log.json").read_text())
    lost = [d for d in log["decisions"] if d["content_rejected"] is not None]
    assert lost, "the test's suite should have an accepted prompt pair with a content-losing P_a candidate"
    assert len(ds) == len(ds1) + len(lost) == log["summary"]["rows"] and log["summary"]["content_rows"] == len(lost)
    first = {r["pair_id"]: r for r in ds1 if r["kind"] == "anti"}
    extra = [r for r in ds if r["kind"] == "anti" and r["rejected_content"] < cfg1.min_content]
    assert len(extra) == len(lost)
    for r, d in zip(extra, lost):
        one = first[r["pair_id"]]
        j = d["content_rejected"]
        assert r["prompt"] == one["prompt"] == d["prompt_a"]
        assert np.array_equal(png_array(r["chosen"]), png_array(one["chosen"]))
        assert r["rejected_seed"] == d["seeds"][j] and r["rejected_score"] == d["scores_a"][j]
        assert not np.array_equal(png_array(r["rejected"]), png_array(one["rejected"]))
    assert "only the chosen one kept the subject" in (out / "README.md").read_text()
    # with more pairs a prompt pair, the content row still sits beside the first pair's rows (one pair_id, adjacent)
    out3 = tmp_path / "pairs3"
    OG.generate_dataset(config(out3, min_margin=0.0, content_pairs=True, pairs_per_prompt=3), pipe=pipe, scorer=scorer,
                        progress=False)
    ids = [r["pair_id"] for r in datasets.load_from_disk(str(out3))]
    assert all(ids.index(i) + ids.count(i) - 1 == len(ids) - 1 - ids[::-1].index(i) for i in set(ids))


def test_pairs_per_prompt_rows_share_the_rejected_image_under_their_own_ids(generated, pipe, scorer, tmp_path):
    """The same candidates as the one-pair run, up to 3 pairs a prompt pair: the first pair of each prompt pair is
    the one-pair run's row, the others add distinct chosen images against the same rejected image, and the counts
    say how many rows there are."""
    _, _, ds1, _ = generated
    out = tmp_path / "pairs"
    OG.generate_dataset(config(out, min_margin=0.0, pairs_per_prompt=3), pipe=pipe, scorer=scorer, progress=False)
    ds = datasets.load_from_disk(str(out))
    log = json.loads((out / "generate_log.json").read_text())
    extra = sum(len(d["more_chosen"]) for d in log["decisions"])
    assert extra > 0 and len(ds) == len(ds1) + 2 * extra == log["summary"]["rows"]
    first = {r["pair_id"]: r for r in ds1 if r["kind"] == "anti"}
    anti = [r for r in ds if r["kind"] == "anti"]
    assert len({r["pair_id"] for r in anti}) == len(anti)
    for r in anti:
        base, _, k = r["pair_id"].partition("#")[2].partition(".")
        one = first[f"{r['source']}#{base}"]
        assert np.array_equal(png_array(r["rejected"]), png_array(one["rejected"]))
        if k:
            assert r["chosen_seed"] != one["chosen_seed"] and r["chosen_score"] <= one["chosen_score"]
        else:
            assert np.array_equal(png_array(r["chosen"]), png_array(one["chosen"]))


def test_shards_split_disjointly_and_merge_in_shard_order(tmp_path):
    ranges = SH.shard_ranges(10, 3)
    assert ranges == [(0, 3), (3, 6), (6, 9), (9, 10)]
    for world_size in (1, 2, 3, 5):
        parts = [SH.shards_of_process(len(ranges), r, world_size) for r in range(world_size)]
        assert sorted(s for p in parts for s in p) == list(range(len(ranges)))  # every shard, once
    d = tmp_path / "shards"
    assert SH.prepare(d, {"settings": {"k": 1}}, 4, resume=True) == (0, [])

    def row(i):
        r = {k: None for k in SH.FEATURES}
        r.update(prompt=f"p{i}", chosen={"bytes": b"x", "path": None}, rejected={"bytes": b"y", "path": None},
                 kind="anti", attributes=["blurry"], seeds=[i], severity=1.0)
        return r

    for s in (3, 1, 0, 2):  # the processes finish in any order
        SH.write_shard(d, s, [row(10 * s), row(10 * s + 1)] if s != 2 else [], {"decisions": []})
    assert [r["prompt"] for r in SH.merged_rows(str(d), 4)] == ["p0", "p1", "p10", "p11", "p30", "p31"]
    assert SH.finished_shards(d, 4) == {0, 1, 2, 3}
    (d / "shard-00001.parquet").unlink()  # a log without its rows is not a finished shard
    assert SH.finished_shards(d, 4) == {0, 2, 3}
    with pytest.raises(RuntimeError, match="shard 1 is not finished"):
        SH.merged_logs(d, 4)
    assert SH.prepare(d, {"settings": {"k": 1}}, 4, resume=True)[0] == 3
    with pytest.raises(ValueError, match=r"(?s)k: 1 -> 2.*--resume false"):
        SH.prepare(d, {"settings": {"k": 2}}, 4, resume=True)
    kept, notes = SH.prepare(d, {"settings": {"k": 2}}, 4, resume=False)
    assert kept == 0 and "removed the 3 finished shards" in notes[0] and SH.finished_shards(d, 4) == set()


def test_plain_captions_get_attributes_of_every_category_and_a_rewrite(tmp_path):
    f = tmp_path / "captions.txt"
    f.write_text("a lighthouse at dusk\n\nan old man on a bench\na bowl of fruit\na city street\na dog\n")
    cfg = GenerateConfig(suite=str(f), categories=["emotion_and_subject", "color_and_tone"], max_attributes=2)
    rows = load_prompt_pairs(cfg)
    assert [r.prompt_o for r in rows] == ["a lighthouse at dusk", "an old man on a bench", "a bowl of fruit",
                                         "a city street", "a dog"]
    cats = [r.meta["category"] for r in rows]
    assert cats[:2].count("emotion_and_subject") == 1 and cats[2:4].count("emotion_and_subject") == 1
    for r in rows:
        assert r.prompt_o in r.prompt_a and 1 <= len(r.attributes) <= 2
        assert {ATTRIBUTES[a].category for a in r.attributes} == {r.meta["category"]}
    assert any(ATTRIBUTES[a].degradation is None for r in rows for a in r.attributes)  # grief, decay, ... too
    assert [r.to_dict() for r in load_prompt_pairs(cfg)] == [r.to_dict() for r in rows]  # seeded
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "a cat"}\n{"caption": 3}\n')
    with pytest.raises(SuiteError, match=r"bad.jsonl: line 2: no caption"):
        load_prompt_pairs(GenerateConfig(suite=str(bad)))


def test_toy_scorer_reads_content_and_attributes_from_the_prompt(scorer):
    scene = world.Scene("circle", "red", "light blue")
    clean = world.render(scene)
    blurry = world.degraded_image(scene, "blurry")
    p_o = world.caption(scene)
    att = scorer.attribute_score([blurry, clean], [p_o] * 2, [p_o + ", blurry"] * 2, [["blurry"]] * 2)
    assert att[0] > 0 > att[1]
    con = scorer.content_score([clean, world.render(world.Scene("square", "green", "white"))], [p_o] * 2)
    assert con[0] > 0.9 and con[1] < 0.1
    with pytest.raises(ValueError, match="names no toy object"):
        scorer.content_score([clean], ["a lighthouse at dusk"])
    assert type(build_scorer("toy")).__name__ == "ToyScorer"  # through the pluralign.scorers entry point


# ------------------------------------------------------------------------------------------ a real run
def test_output_is_the_pair_schema_with_provenance(generated):
    cfg, out, ds, log = generated
    assert list(ds.features) == list(PAIR_FEATURES) + list(SH.PROVENANCE)
    assert len(ds) == 2 * log["summary"]["accepted"] > 0
    assert set(ds["kind"]) == {"anti", "mirror"} and set(ds["severity"]) == {1.0}
    assert all(s == "onpolicy:toy" for s in ds["source"]) and all(g == cfg.generator for g in ds["generator"])
    report = validate_source(str(out), progress=False)
    assert report.ok and report.trainable, report.summary()
    # the trainer's reader takes it as it is
    train_ds = load_pairs(str(out))
    check_columns(train_ds, "dpo", str(out))
    idx = select_rows(train_ds, "clarity_and_focus", False, None)
    assert idx and all(train_ds[i]["category"] == "clarity_and_focus" for i in idx)
    assert len(S.pair_images(train_ds, "chosen", source=str(out))) == len(ds)
    card = (out / "README.md").read_text()
    s = log["summary"]
    assert f"**acceptance rate:** {s['acceptance_rate']:.1%}" in card and "| blurry |" in card


def test_training_takes_a_step_on_it(generated, tmp_path):
    from pluralign.trainers import train
    from pluralign.trainers.config import DPOTrainConfig

    _, out, ds, _ = generated
    result = train(DPOTrainConfig(pretrained_model=str(paths.aligned_dir()), dataset=str(out), max_steps=1,
                                  train_batch_size=2, rank=4, alpha=4.0, report_to="none", export_kohya=False,
                                  lr_warmup_steps=0, output_dir=str(tmp_path / "run"),
                                  cache_dir=str(tmp_path / "cache")))
    adapter = tmp_path / "run" / "adapter"
    assert result.steps == 1 and (adapter / "pytorch_lora_weights.safetensors").exists()
    # and the adapter it made can sample the next round (its keys and base are checked first)
    again = tmp_path / "again"
    OG.generate_dataset(config(again, n_prompts=1, num_candidates=1, num_inference_steps=2, min_margin=0.0,
                               generator_adapter=str(adapter), generator_adapter_weight=0.5), progress=False)
    log = json.loads((again / "generate_log.json").read_text())
    assert log["summary"]["images"] == 2 and log["config"]["generator_adapter_weight"] == 0.5
    assert f"+ {adapter}@0.5" in (again / "README.md").read_text()


def test_mirror_rows_are_the_anti_rows_swapped(generated):
    _, _, ds, _ = generated
    rows = ds.with_format(None).cast_column("chosen", datasets.Image(decode=False)) \
        .cast_column("rejected", datasets.Image(decode=False))
    for anti, mirror in zip(rows.select(range(0, len(ds), 2)), rows.select(range(1, len(ds), 2))):
        assert (anti["kind"], mirror["kind"]) == ("anti", "mirror") and anti["pair_id"] == mirror["pair_id"]
        assert anti["chosen"]["bytes"] == mirror["rejected"]["bytes"]
        assert anti["rejected"]["bytes"] == mirror["chosen"]["bytes"]
        assert (anti["chosen_seed"], anti["rejected_seed"]) == (mirror["rejected_seed"], mirror["chosen_seed"])
        assert (anti["chosen_score"], anti["rejected_score"]) == (mirror["rejected_score"], mirror["chosen_score"])
        assert anti["prompt"] != mirror["prompt"] and mirror["prompt"] in anti["prompt"]  # P_a, P_o
        assert anti["chosen_score"] > anti["rejected_score"]


def test_chosen_is_the_top_scored_content_keeping_candidate(generated, pipe, scorer):
    """Sample the candidates again, independently of the run, score them and pick by hand."""
    cfg, _, ds, log = generated
    rows = load_prompt_pairs(cfg)
    anti = [r for r in ds if r["kind"] == "anti"]
    for r in anti[:2]:
        i = int(r["pair_id"].rsplit("#", 1)[1])
        row = rows[i]
        seeds = candidate_seeds(cfg.seed, row.seed, K)
        assert r["seeds"] == seeds
        jobs = [(row.prompt_a, s) for s in seeds] + [(row.prompt_o, s) for s in seeds]
        imgs = G._call_pipeline(pipe, [p for p, _ in jobs], [s for _, s in jobs], num_inference_steps=STEPS,
                                guidance_scale=6.0, height=None, width=None)
        att = scorer.attribute_score(imgs, [row.prompt_o] * 2 * K, [row.prompt_a] * 2 * K, [row.attributes] * 2 * K)
        con = scorer.content_score(imgs, [row.prompt_o] * 2 * K)
        keep_a = [j for j in range(K) if con[j] >= cfg.min_content]
        keep_o = [j for j in range(K) if con[K + j] >= cfg.min_content]
        best_a = max(keep_a, key=lambda j: att[j])
        best_o = min(keep_o, key=lambda j: att[K + j])
        assert np.array_equal(png_array(r["chosen"]), np.asarray(imgs[best_a]))
        assert np.array_equal(png_array(r["rejected"]), np.asarray(imgs[K + best_o]))
        assert (r["chosen_seed"], r["rejected_seed"]) == (seeds[best_a], seeds[best_o])
        assert r["chosen_score"] == pytest.approx(att[best_a]) and r["rejected_score"] == pytest.approx(att[K + best_o])


def test_margin_filter_drops_and_counts(generated, pipe, scorer, tmp_path):
    """The same candidates again (same seeds), with a margin between two of the first run's and a floor on
    the chosen image's score that only two positive-margin pairs clear: each pair is kept or dropped, for
    the first reason that applies, as the first run's scores say."""
    cfg0, _, _, log0 = generated
    scored = {d["index"]: (d["margin"], d["scores_a"][d["chosen"]]) for d in log0["decisions"] if d["margin"] is not None}
    tops = sorted((top for m, top in scored.values() if m > 0), reverse=True)
    assert len(tops) >= 2, scored
    floor = tops[1] - 1e-9
    # between the margins of the two pairs whose chosen image clears the floor: one of them is dropped for
    # its margin, the other kept
    strong = sorted(m for m, top in scored.values() if m > 0 and top >= floor)
    cut = (strong[0] + strong[1]) / 2
    out = tmp_path / "strict"
    OG.generate_dataset(config(out, min_margin=cut, min_chosen_score=floor), pipe=pipe, scorer=scorer, progress=False)
    log = json.loads((out / "generate_log.json").read_text())
    expected = {i: "weak_chosen" if top < floor else "below_min_margin" if m < cut else None
                for i, (m, top) in scored.items()}
    # a pair with no margin was dropped before any margin (no candidate kept the content): again, for the same reason
    expected.update({d["index"]: d["reason"] for d in log0["decisions"] if d["margin"] is None})
    assert {d["index"]: d["reason"] for d in log["decisions"]} == expected
    s = log["summary"]
    kept = [i for i, r in expected.items() if r is None]
    assert s["accepted"] == len(kept) >= 1 and s["prompt_pairs"] == N
    assert s["accepted"] + sum(s["dropped"].values()) == N
    assert s["dropped"]["weak_chosen"] >= 1 and s["dropped"]["below_min_margin"] >= 1
    card = (out / "README.md").read_text()
    for reason, count in s["dropped"].items():
        assert f"| {reason} | {count} |" in card
    assert len(datasets.load_from_disk(str(out))) == 2 * len(kept)
    # nothing passes: an empty dataset of the same schema, and the card says why
    none = tmp_path / "none"
    OG.generate_dataset(config(none, min_margin=1e6, n_prompts=2), pipe=pipe, scorer=scorer, progress=False)
    empty = datasets.load_from_disk(str(none))
    assert len(empty) == 0 and empty.features == SH.FEATURES
    assert "**acceptance rate:** 0.0%" in (none / "README.md").read_text()


def test_attribute_guidance_samples_each_pair_at_its_own_scale(pipe, scorer, tmp_path, monkeypatch):
    """A listed attribute's pairs are sampled, under P_a and P_o, at its scale; the rest at guidance_scale; jobs
    of one scale share pipeline calls; every image lands where its job is; the log records each pair's scale."""
    cfg = config(tmp_path / "o", attribute_guidance=["bleak=4.5", "decay=3"], batch_size=2)
    assert cfg.guidance_for(["muted"]) == 6.0 and cfg.guidance_for(["bleak"]) == 4.5
    assert cfg.guidance_for(["bleak", "decay"]) == 3.0  # the milder of two listed
    assert config(tmp_path / "o", attribute_guidance=["dimension:emotion=2"]).guidance_for(["dimension:emotion"]) == 2.0
    calls = []

    def fake(pipe_, prompts, seeds, *, guidance_scale, **kw):
        calls.append((list(prompts), guidance_scale))
        return [(p, s, guidance_scale) for p, s in zip(prompts, seeds)]

    monkeypatch.setattr(OG, "_call_pipeline", fake)
    jobs = [("a", 1, 6.0), ("b", 2, 4.5), ("c", 3, 6.0), ("d", 4, 4.5), ("e", 5, 6.0)]
    assert OG.sample(None, jobs, cfg) == jobs
    assert calls == [(["a", "c"], 6.0), (["e"], 6.0), (["b", "d"], 4.5)]

    monkeypatch.undo()
    rows = load_prompt_pairs(config(tmp_path / "o"))[:2]
    listed = rows[0].attributes[0]
    assert listed not in rows[1].attributes
    cfg = config(tmp_path / "o", attribute_guidance=[f"{listed}=2.0"])
    seen = {}
    real = OG._call_pipeline

    def spy(pipe_, prompts, seeds, *, guidance_scale, **kw):
        for p in prompts:
            seen.setdefault(p, set()).add(guidance_scale)
        return real(pipe_, prompts, seeds, guidance_scale=guidance_scale, **kw)

    monkeypatch.setattr(OG, "_call_pipeline", spy)
    _, log = OG.run_shard(pipe, scorer, rows, 0, cfg, OG.prepare(cfg, pipe=pipe, scorer=scorer, rows=rows))
    assert seen[rows[0].prompt_a] == seen[rows[0].prompt_o] == {2.0}
    assert seen[rows[1].prompt_a] == seen[rows[1].prompt_o] == {6.0}
    assert [d["guidance_scale"] for d in log["decisions"]] == [2.0, 6.0]


def test_interrupted_run_resumes_to_the_same_dataset(generated, pipe, scorer, tmp_path):
    cfg0, _, ds0, _ = generated
    out = tmp_path / "pairs"
    cfg = config(out, min_margin=0.0)
    done = []

    def stop_after_first(shard):
        done.append(shard)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        OG.generate_dataset(cfg, pipe=pipe, scorer=scorer, on_shard=stop_after_first, progress=False)
    shard_dir = SH.shard_dir_for(out)
    assert not out.exists() and SH.finished_shards(shard_dir, 3) == {0}
    assert not (out.parent / f".{out.name}.lock").exists()  # the lock went with the run
    with pytest.raises(ValueError, match=r"(?s)num_candidates: 3 -> 4.*--resume false"):  # other settings cannot continue it
        OG.generate_dataset(config(out, min_margin=0.0, num_candidates=4), pipe=pipe, scorer=scorer, progress=False)
    plan = json.loads((shard_dir / SH.PLAN).read_text())
    del plan["settings"]["sampler"]  # as an older version wrote it: an option added since, at its default, is no change
    (shard_dir / SH.PLAN).write_text(json.dumps(plan))
    with pytest.raises(ValueError, match=r"sampler: None -> 'ddim'"):  # any other value still is
        OG.generate_dataset(config(out, min_margin=0.0, sampler="ddim"), pipe=pipe, scorer=scorer, progress=False)
    OG.generate_dataset(cfg, pipe=pipe, scorer=scorer, on_shard=done.append, progress=False)
    assert done == [0, 1, 2]  # the finished shard was not generated again
    ds = datasets.load_from_disk(str(out))
    assert ds.data.table.equals(ds0.data.table)
    assert not shard_dir.exists() and "resuming: 1 of 3 shards are finished" in (out / "README.md").read_text()
    with pytest.raises(FileExistsError, match="--overwrite true"):
        OG.generate_dataset(cfg, pipe=pipe, scorer=scorer, progress=False)
    (out / "notes.txt").write_text("mine")  # no longer only a saved dataset: --overwrite would delete the note
    (out / "state.json").unlink()
    with pytest.raises(FileExistsError, match="not a saved dataset"):
        OG.generate_dataset(config(out, min_margin=0.0, overwrite=True), pipe=pipe, scorer=scorer, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_verifiers_with_same_seed_references_pair_each_chosen_with_its_partner(tmp_path):
    """The rewards package's model-free scorer rates each candidate against its same-seed P_o image: every
    P_o candidate rates the same against itself, so the rejected image is the chosen one's same-seed partner.
    The generator is the toy base, which follows the requests (the aligned model refuses nearly all of them, so
    there may be no candidate to accept)."""
    out = tmp_path / "v"
    base = G.load_pipeline(str(paths.base_dir()), "cpu", progress=False)
    OG.generate_dataset(config(out, generator=str(paths.base_dir()), n_prompts=2, num_candidates=2,
                               scorer="verifiers", min_margin=0.0), pipe=base, progress=False)
    log = json.loads((out / "generate_log.json").read_text())
    assert log["summary"]["prompt_pairs"] == 2 and log["summary"]["accepted"] >= 1
    for d in log["decisions"]:
        assert d["scores_o"] == pytest.approx([-1.0, -1.0]) and d["content_o"] == pytest.approx([1.0, 1.0])
        if d["accepted"]:
            assert d["rejected"] == d["chosen"] and d["margin"] == pytest.approx(d["scores_a"][d["chosen"]] + 1)
    ds = datasets.load_from_disk(str(out))
    assert all(r["chosen_seed"] == r["rejected_seed"] and r["scorer"] == "verifiers" for r in ds)


def test_data_build_mixes_generated_degradation_and_general_pairs(generated, tmp_path):
    from test_data_pairs import trl_parquet, write_folder

    from pluralign.data.build import build_dataset
    from pluralign.data.config import DataConfig

    _, gen_dir, gen, _ = generated
    n_gen = len(gen)  # anti + mirror rows
    folder = write_folder(tmp_path / "photos", n=8)
    trl = trl_parquet(tmp_path / "trl.parquet", 40)
    out = tmp_path / "mix"
    cfg = DataConfig(sources=[str(gen_dir), str(folder), str(trl)], anti_fraction=0.5, pairs_fraction=0.5,
                     output_dir=str(out))
    build_dataset(cfg)
    ds = datasets.load_from_disk(str(out))
    sources = ds["source"]
    onpolicy = [i for i, s in enumerate(sources) if s == "onpolicy:toy"]
    degraded = [i for i, s in enumerate(sources) if s == str(folder)]
    general = [i for i, k in enumerate(ds["kind"]) if k == "general"]
    # the generated pairs run out first: equal shares of anti+mirror rows, half of all rows general
    assert len(onpolicy) == n_gen and len(degraded) == n_gen and len(general) == 2 * n_gen
    rows = ds.cast_column("chosen", datasets.Image(decode=False)).cast_column("rejected", datasets.Image(decode=False))
    g = gen.cast_column("chosen", datasets.Image(decode=False))
    assert [rows[i]["chosen"]["bytes"] for i in onpolicy] == [r["chosen"]["bytes"] for r in g]  # images as made
    for i in onpolicy[::2]:  # a pair stays together
        assert (ds[i]["kind"], ds[i + 1]["kind"]) == ("anti", "mirror") and ds[i]["pair_id"] == ds[i + 1]["pair_id"]
        assert ds[i]["pair_id"].startswith(f"{gen_dir}#onpolicy:toy#")
    card = (out / "README.md").read_text()
    assert "## Mix" in card and "requested 0.5, reached 0.500" in card
    assert f"| built pairs: {gen_dir} | {n_gen} |" in card and f"| degradation pairs: {folder} | {n_gen} |" in card
    assert "intent_stopped: pair datasets exhausted" in card
    assert validate_source(str(out), progress=False).ok


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_named_before_any_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(OG, "load_pipeline", lambda *a, **k: pytest.fail("loaded the generator"))
    monkeypatch.setattr(OG, "_call_pipeline", lambda *a, **k: pytest.fail("generated an image"))
    out = str(tmp_path / "o")
    common = ["data", "generate", "--suite", "toy", "--n_prompts", "2", "--output_dir", out]
    cases = [
        (["--generator", str(tmp_path / "nowhere")], "generator"),
        (["--generator", str(paths.aligned_dir()), "--scorer", "toy:" + str(tmp_path / "nochecker")],
         "content checker is missing"),
        (["--generator", str(paths.aligned_dir()), "--scorer", "nosuchscorer"], "nosuchscorer"),
        (["--generator", "someorg/not-downloaded-model"], "someorg/not-downloaded-model"),  # offline hub id
        (["--generator", str(paths.aligned_dir()), "--scorer", "clip:" + str(tmp_path / "noclip")], "noclip"),
        (["--generator", str(paths.aligned_dir()), "--generator_adapter", str(tmp_path / "noadapter")],
         "generator_adapter"),
        (["--generator", str(paths.aligned_dir()), "--num_candidates", "0"], "num_candidates"),
        (["--generator", str(paths.aligned_dir()), "--attribute_guidance", "bleak=loud"],
         "attribute_guidance: 'bleak=loud' is not NAME=SCALE"),
        (["--generator", str(paths.aligned_dir()), "--attribute_guidance", "bleak=nan"], "'bleak=nan' is not NAME=SCALE"),
        (["--generator", str(paths.aligned_dir()), "--attribute_guidance", "bleak"], "'bleak' is not NAME=SCALE"),
        (["--generator", str(paths.aligned_dir()), "--attribute_guidance", "bleak=3,bleak=2"],
         "attribute_guidance: bleak is listed twice"),
        (["--generator", str(paths.aligned_dir()), "--suite", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
    ]
    for extra, needle in cases:
        assert cli.main(common + extra) == 2, extra
        err = capsys.readouterr().err
        assert "pluralign data generate: error:" in err and needle in err, (extra, err)
    bad = tmp_path / "suite.jsonl"
    bad.write_text('{"prompt_o": "a red circle", "prompt_a": "a red circle, blurry", "attributes": ["blury"]}\n')
    assert cli.main(common + ["--generator", str(paths.aligned_dir()), "--suite", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "suite.jsonl: line 1: field 'attributes': unknown attribute 'blury' (did you mean 'blurry'?)" in err
    assert not (tmp_path / "o").exists()


def test_tiny_generator_and_plain_captions_end_to_end(tmp_path, monkeypatch):
    """``tiny:sd`` is built into the cache; captions get attributes and a rewrite; a prompt-only attribute
    (grief, decay, ...) that the model-free verifiers cannot measure is counted as unscored, not guessed."""
    monkeypatch.setenv("PLURALIGN_CACHE", str(tmp_path / "cache"))
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"caption": c}) + "\n" for c in ("a lighthouse", "a bowl of fruit")))
    out = tmp_path / "o"
    OG.generate_dataset(GenerateConfig(generator="tiny:sd", suite=str(captions), num_candidates=2, scorer="verifiers",
                                       categories=["emotion_and_subject", "clarity_and_focus"], max_attributes=1,
                                       num_inference_steps=2, device="cpu", output_dir=str(out)), progress=False)
    assert (tmp_path / "cache" / "models" / "tiny-sd" / "model_index.json").exists()
    log = json.loads((out / "generate_log.json").read_text())
    by_cat = {d["category"]: d for d in log["decisions"]}
    assert set(by_cat) == {"emotion_and_subject", "clarity_and_focus"}
    assert by_cat["emotion_and_subject"]["reason"] == "unscored"
    assert by_cat["clarity_and_focus"]["reason"] != "unscored"
    assert all(d["prompt_o"] in d["prompt_a"] for d in log["decisions"])
    card = (out / "README.md").read_text()
    assert "| unscored | 1 |" in card and "tiny:sd" in card


def test_photo_set_pairs_each_photo_with_a_generated_clean_image(pipe, scorer, tmp_path):
    """A curated photo is the one P_a candidate: kept as it is (its own bytes) when it keeps the content and
    shows its caption's attributes more than the cleanest of the generator's K images under the clean caption."""
    d = tmp_path / "photos"
    d.mkdir()
    scenes = world.sample_scenes(3, seed=5)
    lines = []
    for i, (scene, attr) in enumerate(zip(scenes, ["blurry", "underexposed", "noisy"])):
        world.degraded_image(scene, attr).save(d / f"p{i}.png")
        lines.append({"image": f"p{i}.png", "anti_aesthetic_caption": world.anti_caption(scene, attr, i),
                      "objective_caption": world.caption(scene),
                      "major_classes": [ATTRIBUTES[attr].category]})
    (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "o"
    OG.generate_dataset(config(out, suite=str(d), n_prompts=0, min_margin=0.0), pipe=pipe, scorer=scorer,
                        progress=False)
    log = json.loads((out / "generate_log.json").read_text())
    assert [d["attributes"] for d in log["decisions"]] == [["blurry"], ["underexposed"], ["noisy"]]
    assert all(d["photo"] and len(d["scores_a"]) == 1 and len(d["scores_o"]) == K for d in log["decisions"])
    assert log["summary"]["accepted"] == 3 and log["summary"]["images"] == 3 * K  # only the clean side sampled
    ds = datasets.load_from_disk(str(out)).cast_column("chosen", datasets.Image(decode=False))
    anti = [r for r in ds if r["kind"] == "anti"]
    assert [r["chosen"]["bytes"] for r in anti] == [(d / f"p{i}.png").read_bytes() for i in range(3)]
    assert all(r["chosen_seed"] == -1 and r["rejected_seed"] in r["seeds"] for r in anti)
    assert validate_source(str(out), progress=False).ok
    del lines[1]["objective_caption"]
    (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(S.DataError, match=r"metadata.jsonl, line 2.*objective_caption.*content-only caption"):
        OG.generate_dataset(config(tmp_path / "o2", suite=str(d), n_prompts=0), pipe=pipe, scorer=scorer,
                            progress=False)


def test_launched_processes_that_accelerate_does_not_see_are_refused(tmp_path, monkeypatch):
    """Two launched processes that each set up alone would both generate every shard into one folder."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(OG, "load_pipeline", lambda *a, **k: pytest.fail("loaded the generator"))
    with pytest.raises(ValueError, match="launched as 2 processes but accelerate set up 1.*ACCELERATE_USE_CPU=1"):
        OG.generate_dataset(config(tmp_path / "o"), progress=False)


def test_data_help_lists_generate(capsys):
    assert cli.main(["data", "--help"]) == 0
    assert "generate" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", "generate", "--help"])
    assert exc.value.code == 0 and "--num_candidates" in capsys.readouterr().out
