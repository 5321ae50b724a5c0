"""``pluralign data generate``: on-policy anti/mirror pairs sampled from a generator and picked by best-of-n.

For every prompt pair (P_o, P_a) of the suite the generator samples K candidates under P_a and K under P_o
on K shared seeds; an intent-aware scorer rates each candidate for P_a's requested attributes and for P_o's
content; :func:`pluralign.onpolicy.select.select_pair` turns the ratings into an anti row (P_a: the
best content-keeping P_a image over the cleanest content-keeping P_o image) and its mirror (P_o: the same two
images, labels swapped), or a counted reason to drop the pair.

Everything that can fail is checked before the first image: the output folder, the suite, the generator (a
local directory, the hub cache, or ``tiny:FAMILY``), the generator's adapter and the scorer's weights. The
work is cut into shards (:mod:`pluralign.onpolicy.shards`) that are saved as they finish, so a killed run
resumes where it stopped, and that the processes of ``accelerate launch`` split between them. The main
process merges the shards into one dataset (the ``data build`` schema plus provenance columns), written in
one piece beside ``output_dir`` and renamed into place, with a README.md data card and ``generate_log.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from pluralign.config import option_defaults, to_dict, writable_dir
from pluralign.data.build import adopt_cache_files, check_replaceable, clean_stale_temps, save_atomically
from pluralign.data.pairs import encode_png
from pluralign.data.sources import open_image
from pluralign.data.taxonomy import ATTRIBUTES, CATEGORIES
from pluralign.env import process_state
from pluralign.eval.generate import (
    Variant,
    _call_pipeline,
    adapter_weight_file,
    apply_variant,
    load_adapter,
    load_pipeline,
    resolve_device,
)
from pluralign.eval.runner import base_identity_of
from pluralign.eval.samplers import use_sampler
from pluralign.eval.suite import EvalRow
from pluralign.hub import require_model
from pluralign.locks import directory_lock
from pluralign.trainers.cache import default_cache_dir
from pluralign.trainers.identity import check_adapter_fits
from pluralign.trainers.trainer import resolve_model

from . import shards as SH
from .card import dataset_card, summarize
from .config import FREE_FIELDS, GenerateConfig
from .prompts import candidate_seeds, load_prompt_pairs
from .scoring import build_scorer, score, scorer_name
from .select import Decision, select_pair

ADAPTER_NAME = "generator"


@dataclass
class Prepared:
    """What a run checked before its first image."""

    rows: list[EvalRow]
    model: str  # the generator as loaded (a tiny:FAMILY spec resolved to its folder)
    weight_file: Path | None
    scorer: object
    min_margin: float
    min_chosen: float | None
    generator: str  # provenance: the generator spec (and its adapter)
    scorer_label: str
    source: str  # the rows' ``source`` value
    suite: str

def _process() -> tuple[int, int, bool]:
    """(rank, world size, main process) of this process (:func:`pluralign.env.process_state`: launched as N
    processes, it must find N, else every process would generate every shard)."""
    state = process_state()
    return state.process_index, state.num_processes, state.is_main_process


def _barrier() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def prepare(cfg: GenerateConfig, *, pipe=None, scorer=None, rows: list[EvalRow] | None = None) -> Prepared:
    """Check every input, cheapest first, before anything is loaded or generated."""
    out = Path(cfg.output_dir)
    check_replaceable(out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"output_dir {out} exists; pass --overwrite true to replace it (it is kept until the "
                              "new one is complete)")
    rows = rows if rows is not None else load_prompt_pairs(cfg)
    model = ""
    if pipe is None:
        if not cfg.generator:
            raise ValueError("generator: not given; pass --generator with a diffusers pipeline directory, a hub id or "
                             "tiny:FAMILY")
        model = resolve_model(cfg.generator, default_cache_dir()) if cfg.generator.startswith("tiny:") \
            else cfg.generator
        require_model(model, "generator", local_option="--generator DIR")
    weight_file = None
    if cfg.generator_adapter:
        try:
            weight_file = adapter_weight_file(cfg.generator_adapter)
        except (FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"generator_adapter: {exc}") from None
        if pipe is None:
            identity = base_identity_of(model)
            if identity is not None:
                check_adapter_fits(weight_file, identity, allow_other_base=cfg.allow_other_base)
    if scorer is None:
        scorer = build_scorer(cfg.scorer, resolve_device(cfg.device))
        scorer.check_available()
    writable_dir(out.parent, "output_dir")
    min_margin = cfg.min_margin if cfg.min_margin is not None else float(getattr(scorer, "min_margin", 0.0))
    min_chosen = cfg.min_chosen_score
    generator = cfg.generator or str(getattr(getattr(pipe, "config", None), "_name_or_path", "") or type(pipe).__name__)
    if cfg.generator_adapter:
        generator += f" + {cfg.generator_adapter}@{cfg.generator_adapter_weight:g}"
    return Prepared(rows, model, weight_file, scorer, min_margin, min_chosen, generator, scorer_name(scorer, cfg.scorer),
                    f"onpolicy:{cfg.suite}", cfg.suite)


def plan_of(cfg: GenerateConfig, p: Prepared) -> dict:
    """What the shards of a run depend on: every setting but :data:`FREE_FIELDS`, and the prompt pairs."""
    rows = [{**r.to_dict(), "meta": {k: v for k, v in r.meta.items() if k != "photo"}} for r in p.rows]
    h = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode())
    settings = {k: v for k, v in to_dict(cfg).items() if k not in FREE_FIELDS}
    return {"settings": settings, "prompt_pairs": len(p.rows), "prompts_sha256": h.hexdigest(),
            "min_margin": p.min_margin, "min_chosen_score": p.min_chosen}


# ------------------------------------------------------------------------------------------ one shard
def sample(pipe, jobs: list[tuple[str, int, float]], cfg: GenerateConfig, bar=None) -> list:
    """One image per ``(prompt, seed, guidance scale)``, in order, ``batch_size`` per pipeline call. Jobs of one
    scale are batched together, so a run with one scale makes the same calls as if scales did not exist."""
    images = [None] * len(jobs)
    for scale in dict.fromkeys(g for _, _, g in jobs):
        todo = [i for i, job in enumerate(jobs) if job[2] == scale]
        for s in range(0, len(todo), cfg.batch_size):
            chunk = todo[s:s + cfg.batch_size]
            with torch.inference_mode():
                out = _call_pipeline(pipe, [jobs[i][0] for i in chunk], [jobs[i][1] for i in chunk],
                                     num_inference_steps=cfg.num_inference_steps, guidance_scale=scale,
                                     height=cfg.height, width=cfg.width)
            for i, image in zip(chunk, out, strict=True):
                images[i] = image
            if bar is not None:
                bar.update(len(chunk))
    return images


def _category(row: EvalRow) -> str:
    cat = row.meta.get("category")
    if cat in CATEGORIES:
        return cat
    known = [a for a in row.attributes if a in ATTRIBUTES]
    return ATTRIBUTES[known[0]].category if known else ""


def _scores(values, n: int, what: str, scorer: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"scorer {scorer}: {what} returned {arr.shape[0]} values for {n} images")
    return arr


def pair_rows(row: EvalRow, index: int, d: Decision, seeds_a: list[int], seeds_o: list[int], cand_a: list,
              cand_o: list, cfg: GenerateConfig, p: Prepared) -> list[dict]:
    """The anti row and its mirror for each chosen image of an accepted decision (images as PNG bytes; a photo's
    own bytes). The first pair's id is ``SOURCE#INDEX``, a further one's ``SOURCE#INDEX.K``. With
    ``d.content_rejected`` one more anti row, under the first pair's id: the chosen image over the P_a candidate
    that lost the content (no mirror: under P_o neither image is what was asked for)."""
    o_png = encode_png(cand_o[d.rejected], cfg.png_compress_level)
    out = []
    for n, chosen in enumerate([d.chosen, *d.more_chosen]):
        out += _one_pair(row, f"{p.source}#{index}" + (f".{n}" if n else ""), d, chosen, seeds_a, seeds_o, cand_a,
                         o_png, cfg, p)
    if d.content_rejected is not None:
        j = d.content_rejected
        # beside the first pair's rows, which share its pair_id: data build keeps adjacent rows of an id together
        out[2:2] = [{**out[0], "rejected": encode_png(cand_a[j], cfg.png_compress_level), "rejected_seed": seeds_a[j],
                     "rejected_score": d.scores_a[j], "rejected_content": d.content_a[j]}]
    return out


def _one_pair(row: EvalRow, pair_id: str, d: Decision, chosen: int, seeds_a: list[int], seeds_o: list[int],
              cand_a: list, o_png: dict, cfg: GenerateConfig, p: Prepared) -> list[dict]:
    win = cand_a[chosen]
    a_png = {"bytes": win.source_bytes, "path": None} if getattr(win, "source_bytes", None) is not None \
        else encode_png(win, cfg.png_compress_level)
    common = {"attributes": list(row.attributes), "category": _category(row), "source": p.source, "severity": 1.0,
              "pair_id": pair_id, "generator": p.generator, "scorer": p.scorer_label, "seeds": seeds_o}
    a = {"seed": seeds_a[chosen], "score": d.scores_a[chosen], "content": d.content_a[chosen]}
    o = {"seed": seeds_o[d.rejected], "score": d.scores_o[d.rejected], "content": d.content_o[d.rejected]}

    def row_of(prompt, kind, win, lose, win_png, lose_png):
        return {"prompt": prompt, "chosen": win_png, "rejected": lose_png, "kind": kind, **common,
                "chosen_seed": win["seed"], "rejected_seed": lose["seed"], "chosen_score": win["score"],
                "rejected_score": lose["score"], "chosen_content": win["content"], "rejected_content": lose["content"]}

    return [row_of(row.prompt_a, "anti", a, o, a_png, o_png),
            row_of(" ".join(row.prompt_o.split()), "mirror", o, a, o_png, a_png)]


PHOTO_SEED = -1  # the chosen_seed of a photograph: it was not generated


def _images_of(row: EvalRow, k: int) -> int:
    """How many images a prompt pair costs: K under P_o, K under P_a unless a photograph stands for them,
    none when the row requests nothing."""
    if "photo" in row.meta:
        return k
    return 2 * k if row.attributes else 0


def _photo(row: EvalRow, p: Prepared):
    """A photo-set row's photograph (checked when the suite was read; read again here, one shard at a time)."""
    m = row.meta
    base = Path(m["base_dir"]) if m.get("base_dir") else None
    img = open_image(m["photo"], source=p.suite, row=m["photo_row"], field="image", base_dir=base)
    if getattr(img, "source_bytes", None) is None:  # not PNG/JPEG RGB as stored: keep a lossless copy
        img.source_bytes = encode_png(img, 1)["bytes"]
    return img


def run_shard(pipe, scorer, rows: list[EvalRow], start: int, cfg: GenerateConfig, p: Prepared, bar=None
              ) -> tuple[list[dict], dict]:
    """Sample, score and select the prompt pairs ``rows`` (suite indices from ``start``): (rows, log).

    A row's P_a candidates are K images sampled under P_a, or its photograph (photo sets); its P_o candidates
    are K images sampled under P_o on the same K seeds."""
    t0 = time.perf_counter()
    k = cfg.num_candidates
    seeds = [candidate_seeds(cfg.seed, r.seed, k) for r in rows]
    photo = [("photo" in r.meta) for r in rows]
    live = [i for i, r in enumerate(rows) if r.attributes or photo[i]]  # a row that requests nothing: skipped
    scales = [cfg.guidance_for(r.attributes) for r in rows]  # what each pair is sampled at, and logged with
    jobs = []
    for i in live:
        if not photo[i]:
            jobs += [(rows[i].prompt_a, s, scales[i]) for s in seeds[i]]
        jobs += [(rows[i].prompt_o, s, scales[i]) for s in seeds[i]]
    generated = iter(sample(pipe, jobs, cfg, bar))
    cands, images, refs, po, pa, attrs = {}, [], [], [], [], []
    for i in live:
        cand_a = [_photo(rows[i], p)] if photo[i] else [next(generated) for _ in range(k)]
        cand_o = [next(generated) for _ in range(k)]
        cands[i] = (cand_a, cand_o, len(images))
        images += cand_a + cand_o
        # the same-seed P_o image is each candidate's reference; a photograph has none
        refs += ([None] if photo[i] else cand_o) + cand_o
        po += [rows[i].prompt_o] * (len(cand_a) + k)
        pa += [rows[i].prompt_a] * (len(cand_a) + k)
        attrs += [list(rows[i].attributes)] * (len(cand_a) + k)
    n = len(images)
    att = con = np.zeros(0)
    if n:  # one call for all candidates of the shard
        ref = refs if all(r is not None for r in refs) else None
        att = _scores(score(scorer.attribute_score, images, po, pa, attrs, references=ref), n, "attribute_score",
                      p.scorer_label)
        con = _scores(score(scorer.content_score, images, po, references=ref), n, "content_score", p.scorer_label)
    out_rows, decisions = [], []
    for i, row in enumerate(rows):
        seeds_a = [PHOTO_SEED] if photo[i] else seeds[i]
        if i in cands:
            cand_a, cand_o, j = cands[i]
            na = len(cand_a)
            d = select_pair(att[j:j + na], att[j + na:j + na + k], con[j:j + na], con[j + na:j + na + k],
                            min_content=cfg.min_content, min_margin=p.min_margin, min_chosen=p.min_chosen,
                            n_pairs=cfg.pairs_per_prompt, content_pair=cfg.content_pairs, choose_by=cfg.choose_by)
            if d.accepted:
                out_rows += pair_rows(row, start + i, d, seeds_a, seeds[i], cand_a, cand_o, cfg, p)
        else:
            d = select_pair([], [], [], [], min_content=cfg.min_content, min_margin=p.min_margin,
                            has_attributes=False)
        decisions.append({"index": start + i, "prompt_o": row.prompt_o, "prompt_a": row.prompt_a,
                          "attributes": list(row.attributes), "category": _category(row), "seeds": seeds[i],
                          "photo": photo[i], "guidance_scale": scales[i], **d.to_dict()})
    log = {"range": [start, start + len(rows)], "decisions": decisions, "images": len(jobs),
           "seconds": round(time.perf_counter() - t0, 3)}
    return out_rows, log


# ------------------------------------------------------------------------------------------ the run
def _load_generator(cfg: GenerateConfig, p: Prepared, pipe=None):
    """The generator (``pipe`` when one is given) sampling with ``cfg.sampler``, with ``generator_adapter`` loaded
    and set to its weight."""
    if pipe is None:
        pipe = load_pipeline(p.model, cfg.device, cfg.dtype)
    use_sampler(pipe, cfg.sampler)
    if p.weight_file is not None:
        load_adapter(pipe, cfg.generator_adapter, ADAPTER_NAME)  # every LoRA tensor must land on a module
        apply_variant(pipe, Variant(f"adapter@{cfg.generator_adapter_weight:g}", cfg.generator_adapter_weight),
                      ADAPTER_NAME)
    return pipe


def generate_dataset(cfg: GenerateConfig, *, pipe=None, scorer=None, rows: list[EvalRow] | None = None,
                     on_shard=None, progress: bool = True) -> Path | None:
    """Generate, save and document the on-policy pairs of ``cfg``; returns ``output_dir`` (None on the
    processes other than the main one, which write no dataset).

    ``pipe`` (a loaded diffusers pipeline), ``scorer`` (a loaded intent scorer) and ``rows`` (the prompt
    pairs) replace what the config names. ``on_shard(index)`` is called after each shard is saved."""
    out = Path(cfg.output_dir)
    # the launcher's RANK says which process is the main one before accelerate is set up (as the trainer does)
    main_by_env = os.environ.get("RANK", "0") == "0"
    if main_by_env:
        for line in clean_stale_temps(out.parent):
            print(f"pluralign data generate: {line}", file=sys.stderr)
    rank, world, is_main = _process()
    p = prepare(cfg, pipe=pipe, scorer=scorer, rows=rows)
    ranges = SH.shard_ranges(len(p.rows), cfg.shard_size)
    shard_dir = SH.shard_dir_for(out)
    with directory_lock(out, "output_dir") if main_by_env else nullcontext():
        notes = []
        if is_main:
            _, notes = SH.prepare(shard_dir, plan_of(cfg, p), len(ranges), cfg.resume, option_defaults(GenerateConfig))
            for n in notes:
                print(f"pluralign data generate: {n}", file=sys.stderr)
        _barrier()
        done = SH.finished_shards(shard_dir, len(ranges))
        todo = [s for s in SH.shards_of_process(len(ranges), rank, world) if s not in done]
        if todo:
            scorer = p.scorer if scorer is not None else p.scorer.ensure_loaded()
            pipe = _load_generator(cfg, p, pipe)
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            total = sum(_images_of(r, cfg.num_candidates) for s in todo for r in p.rows[slice(*ranges[s])])
            bar = tqdm(total=total, desc=f"generate ({len(todo)} shards)", unit="img", disable=not progress or
                       not is_main, dynamic_ncols=True)
            accepted = pairs = 0
            for s in todo:
                start, stop = ranges[s]
                rows_s, log = run_shard(pipe, scorer, p.rows[start:stop], start, cfg, p, bar)
                SH.write_shard(shard_dir, s, rows_s, log)
                pairs += stop - start
                accepted += sum(d["accepted"] for d in log["decisions"])
                bar.set_postfix(accepted=f"{accepted}/{pairs}", refresh=False)
                if on_shard is not None:
                    on_shard(s)
            bar.close()
        _barrier()
        if is_main:
            merge(cfg, p, shard_dir, len(ranges), notes)
    return out if is_main else None


def merge(cfg: GenerateConfig, p: Prepared, shard_dir: Path, n_shards: int, notes: list[str]) -> None:
    """The main process: every shard into one dataset with its card, swapped in as ``output_dir``."""
    logs = SH.merged_logs(shard_dir, n_shards)
    summary = summarize(logs)
    config = to_dict(cfg)

    def fill(tmp: Path) -> Path:
        if summary["accepted"]:
            ds = datasets.Dataset.from_generator(SH.merged_rows, features=SH.FEATURES, cache_dir=str(tmp / "cache"),
                                                 gen_kwargs={"shard_dir": str(shard_dir), "n_shards": n_shards})
        else:  # datasets builds no dataset from an empty generator; the card still says why
            ds = datasets.Dataset.from_dict({k: [] for k in SH.FEATURES}, features=SH.FEATURES)
        final = tmp / "dataset"
        if not adopt_cache_files(ds, final):  # the rows in memory (none accepted): write them
            ds.save_to_disk(str(final), num_shards=1 if not len(ds) else None)  # datasets cannot read back 0 shards
        del ds
        (final / "README.md").write_text(dataset_card(summary, config, generator=p.generator, scorer=p.scorer_label,
                                                      min_margin=p.min_margin, min_chosen=p.min_chosen, notes=notes),
                                         encoding="utf-8")
        decisions = [d for log in logs for d in log["decisions"]]
        (final / "generate_log.json").write_text(json.dumps({"summary": summary, "config": config,
                                                             "min_margin": p.min_margin,
                                                             "min_chosen_score": p.min_chosen, "decisions": decisions},
                                                            indent=1), encoding="utf-8")
        return final

    save_atomically(Path(cfg.output_dir), fill)
    shutil.rmtree(shard_dir, ignore_errors=True)
    print(f"pluralign data generate: {summary['accepted']} of {summary['prompt_pairs']} prompt pairs accepted "
          f"({summary['acceptance_rate']:.1%}), {summary['rows']} rows; dropped: "
          + (", ".join(f"{k} {v}" for k, v in summary["dropped"].items()) or "none"), file=sys.stderr)
    if not summary["accepted"]:
        print("pluralign data generate: warning: no pair was accepted, the dataset is empty; see the dropped reasons in "
              f"{Path(cfg.output_dir) / 'README.md'} (lower min_margin or min_content, or sample more candidates)",
              file=sys.stderr)
