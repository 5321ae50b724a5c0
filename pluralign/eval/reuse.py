"""The base's images from an earlier eval: several adapters evaluated against one base sample that base once.

Every eval generates the base model's I_o and I_a on every row before any adapter variant, so a sweep of N adapters
on one base and suite samples the same base images N times (a third to a half of each eval's generation). An eval
run with ``base_images_from: DIR`` takes them from the earlier eval written to ``DIR`` instead, and only when nothing
that decides those images differs; a difference is refused, naming it, before any adapter image is generated. What is
compared is :func:`generation_record`, which every eval writes to its ``results.json`` under ``generation``:

* the base: the path or hub id it was loaded from and the fingerprint of its denoiser weights (a pipeline built in
  memory has none, and its images are never reused);
* the rows: a hash of every row's prompts and seed, in order;
* the sampling: steps, sampler, guidance, height and width, and the pipeline's own device and dtype;
* how the rows were batched: ``batch_size`` and the process count, because a batch of other rows moves the floating
  point of a denoiser call;
* the torch and diffusers versions.

The record cannot see everything (the fingerprint samples the denoiser's files only: a VAE or text encoder replaced
in place would pass), so the base is also sampled again on the first batch of each process, and those images must
equal the saved ones pixel for pixel (:func:`check_first_batch`). The saved PNGs are lossless.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from PIL import Image

from .generate import BASE, Variant, image_path, max_abs_difference
from .suite import EvalRow

# EvalConfig fields that decide the base's images
GENERATION_FIELDS = ("num_inference_steps", "sampler", "guidance_scale", "height", "width", "batch_size", "dtype",
                     "device")


def rows_fingerprint(rows: list[EvalRow]) -> str:
    """sha256 of the rows' prompts and seeds in order: what the pipeline is called with."""
    data = json.dumps([[r.prompt_o, r.prompt_a, int(r.seed)] for r in rows], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def generation_record(config, rows: list[EvalRow], identity: dict | None, num_processes: int,
                      pipe=None) -> dict[str, Any]:
    """What decides the base's images in this eval (``results.json``'s ``generation``). The device and dtype are
    the pipeline's own when it is given (an option such as ``device: auto`` names no device)."""
    import diffusers
    import torch

    record = {
        "base_model": (identity or {}).get("model"),
        "base_fingerprint": (identity or {}).get("fingerprint"),
        "rows_sha256": rows_fingerprint(rows),
        "n_rows": len(rows),
        "num_processes": num_processes,
        **{f: getattr(config, f) for f in GENERATION_FIELDS},
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    for key in ("device", "dtype"):
        if getattr(pipe, key, None) is not None:
            record[key] = str(getattr(pipe, key))
    return record


def first_batch_rows(record: dict[str, Any], batch_size: int) -> list[int]:
    """The rows sampled again as a check: the first batch each process generates in a full pass (rows are split
    between processes in contiguous shares, each taken in batches from its start)."""
    n, procs = record["n_rows"], record["num_processes"]
    share = -(-n // procs)
    return sorted({i for p in range(procs) for i in range(p * share, min(p * share + batch_size, n))})


def check_first_batch(source: str | Path, fresh, reused, rows: list[int]) -> None:
    """Refuse the reuse (ValueError naming the largest difference) unless the base sampled again on ``rows`` gives
    the saved images pixel for pixel."""
    worst = max_abs_difference(fresh, [reused[i] for i in rows])
    if worst:
        raise ValueError(f"base_images_from {source}: the base sampled again on its first {len(rows)} rows differs "
                         f"from the saved images by up to {worst}/255, though every recorded setting matches (a "
                         "component the record does not fingerprint, such as the VAE or text encoder, changed?); "
                         "leave base_images_from unset")


def load_base_images(source: str | Path, record: dict[str, Any]) -> list[tuple[Image.Image, Image.Image]]:
    """The base's ``[(I_o, I_a)]`` saved by the eval written to ``source``, after checking that its
    :func:`generation_record` equals ``record``; ValueError naming the first difference, or what is missing."""
    src = Path(source)
    where = f"base_images_from {src}"
    path = src / "results.json"
    if not path.is_file():
        raise ValueError(f"{where}: no results.json there; give the output directory of an earlier `pluralign eval`")
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: results.json is not readable JSON ({exc})") from None
    before = earlier.get("generation")
    if not isinstance(before, dict):
        raise ValueError(f"{where}: its results.json records no generation settings (written by an older pluralign); "
                         "run that eval again, or leave base_images_from unset")
    if record["base_fingerprint"] is None:
        raise ValueError(f"{where}: this eval's base has no weight fingerprint (a pipeline built in memory, or "
                         "weights not on this machine), so its images cannot be matched; leave base_images_from unset")
    for key, now in record.items():
        if before.get(key) != now:
            raise ValueError(f"{where}: {key} differs ({before.get(key)!r} there, {now!r} here); its base images "
                             "are not this eval's, so they are not reused. Evaluate with the same base, suite and "
                             "sampling settings, or leave base_images_from unset")
    if not (earlier.get("variants", {}).get(BASE) or {}).get("images"):
        raise ValueError(f"{where}: that eval saved no base images (save_images was off); run it with save_images on")
    images = []
    for i in range(record["n_rows"]):
        pair = []
        for which in "oa":
            file = image_path(src, Variant(BASE), i, which)  # where save_images wrote it
            if not file.is_file():
                raise ValueError(f"{where}: {file} is missing; the earlier eval's images are incomplete")
            with Image.open(file) as im:
                pair.append(im.convert("RGB"))
        images.append((pair[0], pair[1]))
    return images
