"""The Diffusion-DPO LoRA training loop: one code path on accelerate for every family.

``train(config)`` checks the whole configuration before it loads weights, encodes the pairs once
(through the on-disk cache), then runs optimizer steps in which the policy (LoRA on) and the
reference (same network, LoRA off) denoise the stacked ``[winners; losers]`` batch with shared
noise and timesteps. Family specifics come from :mod:`.families`, the target from
:mod:`.objectives`, the loss from :mod:`.loss`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import to_dict, writable_dir
from ..data.sources import pair_images, pair_prompts
from ..hub import require_model
from ..locks import directory_lock
from ..tiny import FAMILIES, save_tiny_pipeline
from . import checkpoint as ckpt
from . import distributed as dist
from .adapters import (
    adapter_state_dict,
    adapters_disabled,
    add_lora,
    check_target_modules,
    lora_config,
)
from .cache import TensorCache, cached_latents, cached_prompts, default_cache_dir, encode_pixels, fingerprint, to_pixels
from .config import DPOTrainConfig
from .data import check_columns, column, data_mix, load_pairs, select_rows
from .ema import WeightEMA, warmup_note
from .export import export_diffusers, export_kohya, model_card, push_adapter
from .families import Family, detect_family
from .identity import base_identity, identity_metadata
from .loss import IntentLossConfig, intent_dpo_loss, merge_split_stats, per_sample_mse, sft_loss, split_stats
from .manifest import NAME as MANIFEST
from .manifest import clear_run, dataset_fingerprint, new_manifest, read_manifest, trajectory_changes, write_manifest
from .objectives import objective_from_config, pair_noise, shared_noise
from .reference import ReferenceAhead
from .schedules import check_schedule, make_scheduler, tail_steps


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped and the last checkpoint was left untouched."""


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    adapter_dirs: dict[str, Path]
    kohya_files: dict[str, Path]
    metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    base_model: str = ""  # the pipeline the adapters were trained on (a tiny:FAMILY spec resolved to its folder)


@dataclass
class AdapterRun:
    """One adapter to train: its name, the dataset rows it trains on, and where it writes."""

    name: str
    indices: list[int]
    run_dir: Path      # run.json, checkpoints, validation images, tracker files
    adapter_dir: Path  # the exported diffusers LoRA and its model card
    dataset: dict = field(default_factory=dict)  # spec, fingerprint and rows (run.json)
    config: DPOTrainConfig | None = None          # the run's settings: the plan's, max_steps resolved for its rows
    recorded: dict | None = None                 # the run.json found in run_dir, if any
    manifest: dict | None = None                 # this run's run.json, once the run is opened


@dataclass
class Plan:
    """Everything checked before weights are loaded."""

    config: DPOTrainConfig
    model: str
    family: Family
    output_dir: Path
    cache_dir: Path
    dataset: object
    runs: list[AdapterRun]
    base: dict  # the base model's identity (identity.base_identity)


def resolve_model(spec: str, cache_dir: Path) -> str:
    """``tiny:<family>`` -> a tiny pipeline built once under ``cache_dir/models``; anything else as is."""
    if not spec.startswith("tiny:"):
        return spec

    fam = spec.split(":", 1)[1]
    if fam not in FAMILIES:
        raise ValueError(f"pretrained_model {spec!r}: unknown tiny family; expected tiny:{'|tiny:'.join(FAMILIES)}")
    path = cache_dir / "models" / f"tiny-{fam}"
    if not (path / "model_index.json").exists():
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        save_tiny_pipeline(fam, tmp)
        if not (path / "model_index.json").exists():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
    return str(path)


def _check_targets_from_config(model: str, family: Family, targets, kohya: bool = False) -> None:
    """Instantiate the denoiser on the meta device (no weights) to check LoRA target names, and with
    ``kohya`` that the kohya file can hold every targeted module."""
    sub = Path(model) / family.denoiser_attr
    if not (sub / "config.json").exists():
        return
    import diffusers
    from accelerate import init_empty_weights

    cls_name = json.loads((sub / "config.json").read_text()).get("_class_name")
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        return
    with init_empty_weights():
        model_ = cls.from_config(cls.load_config(str(sub)))
    check_target_modules(model_, targets)
    if kohya:
        family.check_kohya_targets(model_, targets)


def wandb_can_log() -> bool:
    """Whether ``wandb.init`` can start without asking for a key: offline or disabled (by WANDB_MODE or a settings
    file `wandb offline` wrote), a key or identity token in the environment, or a key in the netrc file ``wandb
    login`` writes for the server's address. Read here without any network call."""
    import configparser
    import netrc
    import os
    from urllib.parse import urlparse

    settings = configparser.ConfigParser()
    settings.read([os.path.expanduser(os.path.join(os.environ.get("WANDB_CONFIG_DIR", "~/.config/wandb"), "settings")),
                   os.path.join("wandb", "settings")])  # later files win, as in wandb
    saved = dict(settings["default"]) if settings.has_section("default") else {}
    mode = os.environ.get("WANDB_MODE") or saved.get("mode", "")
    if mode.lower() in ("offline", "disabled", "dryrun") or saved.get("disabled", "").lower() == "true":
        return True
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    url = urlparse(os.environ.get("WANDB_BASE_URL") or saved.get("base_url") or "https://api.wandb.ai")
    try:
        entries = netrc.netrc(os.path.expanduser(os.environ["NETRC"]) if os.environ.get("NETRC") else None)
    except (OSError, netrc.NetrcParseError):
        return False
    return any(entries.authenticators(host) for host in {url.netloc, url.hostname} if host)


def plan(config: DPOTrainConfig) -> Plan:
    """Validate the configuration; raise ``ValueError`` with what to fix, before loading weights."""
    out = Path(config.output_dir or Path("outputs") / "runs" / config.run_name)
    writable_dir(out, "output_dir")
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    writable_dir(cache_dir, "cache_dir")
    if config.report_to in ("wandb", "all"):
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError("report_to=wandb but wandb is not installed (pip install wandb, or report_to: none)")
        if not wandb_can_log():  # wandb.init would fail only after the model and data are loaded
            raise ValueError("report_to=wandb but no W&B login is found (no WANDB_API_KEY, no netrc entry); run "
                             "`wandb login`, set WANDB_API_KEY, set WANDB_MODE=offline to log locally, or pass "
                             "--report_to none")
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id")
    if not config.num_train_epochs:  # with epochs the steps depend on each adapter's rows: checked per run below
        check_schedule(config.lr_scheduler, config.lr_warmup_steps, config.max_steps, config.lr_decay_steps,
                       config.lr_decay_share)
    if config.resume_from_checkpoint not in (None, "latest"):
        ckpt.resolve_resume(config.resume_from_checkpoint, out)
    model = resolve_model(config.pretrained_model, cache_dir)
    # offline, a model that is not cached would fail in from_pretrained after the data is loaded; say what to do now
    require_model(model, "pretrained_model", revision=config.revision, local_option="--pretrained_model DIR")
    family = detect_family(model, config.family).configured(config)
    targets = config.target_modules or family.lora_targets
    _check_targets_from_config(model, family, targets, kohya=config.export_kohya and not config.use_dora)
    ds = load_pairs(config.dataset)
    check_columns(ds, config.method, config.dataset)
    runs = []
    if config.adapter_mode == "single":
        idx = select_rows(ds, None, True, config.max_pairs)
        runs.append(AdapterRun(config.adapter_name, idx, out, out / "adapter"))
    else:
        present = sorted({c for c in column(ds, "category") if c})
        cats = config.categories or present
        for cat in cats:
            idx = select_rows(ds, cat, config.share_general_pairs, config.max_pairs,
                              intent_fraction=config.intent_fraction, seed=config.seed)
            if not any(c == cat for c in (column(ds, "category")[i] for i in idx)):
                raise ValueError(f"dataset {config.dataset}: no rows of category {cat!r} (present: {present})")
            runs.append(AdapterRun(cat, idx, out / "runs" / cat, out / "adapter" / cat))
    if config.overwrite_output_dir and config.resume_from_checkpoint:
        raise ValueError("overwrite_output_dir starts a new run in output_dir and resume_from_checkpoint continues the "
                         "one there: set only one of them")
    base = base_identity(model, config.revision, family.name)
    for run in runs:
        if not run.indices:
            raise ValueError(f"dataset {config.dataset}: no rows to train adapter {run.name!r}")
        run.dataset = {"spec": config.dataset, "fingerprint": dataset_fingerprint(ds, config.dataset, run.indices),
                       "rows": len(run.indices)}
        run.config = run_config(config, len(run.indices), launched_processes())
        if config.num_train_epochs:
            try:
                check_schedule(config.lr_scheduler, config.lr_warmup_steps, run.config.max_steps,
                               config.lr_decay_steps, config.lr_decay_share)
            except ValueError as exc:
                raise ValueError(f"adapter {run.name!r} ({len(run.indices)} rows, num_train_epochs "
                                 f"{config.num_train_epochs:g}: {run.config.max_steps} steps): {exc}") from None
        run.recorded = read_manifest(run.run_dir)
        _check_run_dir(run.config, run, base)
    return Plan(config, model, family, out, cache_dir, ds, runs, base)


def launched_processes() -> int:
    """The processes the launcher started (``WORLD_SIZE``), known before accelerate is set up."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def run_config(config: DPOTrainConfig, rows: int, processes: int = 1) -> DPOTrainConfig:
    """The settings one adapter trains with: ``config`` itself, or with ``num_train_epochs`` set, ``max_steps``
    resolved to that many passes over the adapter's own ``rows`` (at least one step). Why per adapter: under a shared
    ``max_steps`` a category with few rows draws each of them many more times than a large one and can overdo its
    category (docs/training.md, "Per-category adapters")."""
    if not config.num_train_epochs:
        return config
    per_step = config.train_batch_size * config.gradient_accumulation_steps * processes
    # as the decimal the user wrote: 1.1 x 100 rows is 110 steps, not float's 110.00000000000001 rounded up to 111
    return dataclasses.replace(config, max_steps=max(1, math.ceil(Fraction(str(config.num_train_epochs)) * rows / per_step)))


def _check_run_dir(config: DPOTrainConfig, run: AdapterRun, base: dict) -> None:
    """A run directory holds one run: starting over needs overwrite_output_dir, and a resume must
    follow the recorded trajectory (allow_config_change accepts the differences it lists)."""
    held = run.recorded is not None or (run.adapter_dir / "pytorch_lora_weights.safetensors").exists() \
        or bool(ckpt.list_checkpoints(run.run_dir / "checkpoints"))
    if not config.resume_from_checkpoint:
        if held and not config.overwrite_output_dir:
            raise ValueError(f"{run.run_dir} already holds a run; set overwrite_output_dir: true to replace it, "
                             "resume_from_checkpoint: latest to continue it, or choose another output_dir")
        return
    if run.recorded is None:
        if ckpt.list_checkpoints(run.run_dir / "checkpoints"):
            raise ValueError(f"{run.run_dir} has checkpoints but no {MANIFEST}, so nothing says which run or "
                             "settings they belong to; start a new run (overwrite_output_dir: true)")
        return
    changes = trajectory_changes(run.recorded, config, base, run.dataset)
    if changes and not config.allow_config_change:
        listed = "\n  ".join(changes)
        raise ValueError(f"{run.run_dir / MANIFEST}: resuming with settings that change the run's trajectory:\n  "
                         f"{listed}\nRestore them, or set allow_config_change: true to resume anyway (recorded in "
                         f"{MANIFEST}).")


def train(config: DPOTrainConfig) -> TrainResult:
    """Train (and export) the adapter(s) of ``config``; the public entry point of the trainer."""
    p = plan(config)
    results = []
    # one process at a time per output_dir: two runs there would prune each other's checkpoints. The
    # launcher's RANK says which process is the main one before accelerate is set up
    main_process = os.environ.get("RANK", "0") == "0"
    with directory_lock(p.output_dir, "output_dir") if main_process else nullcontext(), subnormals_flushed():
        for run in p.runs:
            results.append(_train_one(dataclasses.replace(p, config=run.config), run))
    if len(results) == 1:
        return results[0]
    merged = TrainResult(p.output_dir, p.output_dir / "adapter", {}, {}, {}, [], 0, p.model)
    for run, r in zip(p.runs, results):
        merged.adapter_dirs.update(r.adapter_dirs)
        merged.kohya_files.update(r.kohya_files)
        merged.metrics.update({f"{run.name}/{k}": v for k, v in r.metrics.items()})
        merged.history += [{"adapter": run.name, **h} for h in r.history]
        merged.steps += r.steps
    return merged


@contextmanager
def subnormals_flushed():
    """CPU float arithmetic with subnormal numbers flushed to zero while training, restored afterwards.

    Why: the DPO term's gradient is scaled by ``sigmoid(-beta * logits)``. With beta in the thousands a
    well-separated pair puts that factor below float32's smallest normal number (``beta * logits`` between
    about 87 and 103), and every product downstream of it in the backward pass is then subnormal, which x86
    cores compute many times slower. On the toy demo about one step in ten took 0.22 s of backward instead of
    0.04 s, with five times the CPU time and no page faults. Such a factor is below float32's resolution
    next to the SFT and preserve terms' gradients, so flushing it changes nothing: the demo's adapter is the
    same bit for bit (docs/benchmarks.md). ``torch.set_flush_denormal`` is process-wide and has no getter, so
    the default (off) is restored on exit; on a CPU without the instruction set it is a no-op."""
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def _open_run(p: Plan, run: AdapterRun, accelerator) -> None:
    """Continue the recorded run, or start a new one: under overwrite_output_dir nothing of an earlier
    run stays that resume or export could pick up, and the new run gets its own id."""
    c = p.config
    if accelerator.is_main_process:
        if c.resume_from_checkpoint and run.recorded is not None:
            manifest = run.recorded
            manifest.setdefault("resumes", []).append({
                "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "max_steps": c.max_steps, "accepted_changes": trajectory_changes(manifest, c, p.base, run.dataset)})
        else:
            kohya = p.output_dir / "adapter_kohya" / f"{run.name}.safetensors"
            for gone in clear_run(run.run_dir, run.adapter_dir, kohya) if c.overwrite_output_dir else []:
                print(f"overwrite_output_dir: removed {gone}", flush=True)
            manifest = new_manifest(c, p.base, run.dataset)
        write_manifest(run.run_dir, manifest)
    accelerator.wait_for_everyone()
    run.manifest = read_manifest(run.run_dir)


# ----------------------------------------------------------------------------------------------


class PairSampler:
    """Deterministic order: epoch ``e`` is a permutation seeded by ``(seed, e)``; the position is
    a plain integer, checkpointed with the run, so a resumed run reads the same pairs."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._perm_epoch, self._perm = n, seed, -1, None

    def take(self, position: int, count: int) -> list[int]:
        out = []
        for p in range(position, position + count):
            epoch = p // self.n
            if epoch != self._perm_epoch:
                g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
            out.append(self._perm[p % self.n])
        return out


def _load_pipeline(p: Plan, dtype=torch.float32):
    """Frozen weights in the run's weight dtype (a 12B Flux would not fit in float32), the VAE in
    float32 for encoding (the SD/SDXL VAEs overflow in fp16)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(p.model, dtype=dtype, revision=p.config.revision)
    if dtype != torch.float32:
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _encode_dataset(p: Plan, pipe, indices: list[int], terms: IntentLossConfig) -> dict:
    """Cached latents + conditioning for the run's rows (or pixels + prompts without the cache), the
    row-kind masks, and the null prompt's conditioning when a term needs it."""
    c, fam, ds = p.config, p.family, p.dataset.select(indices)
    cols = ["chosen", "rejected"] if c.method == "dpo" else ["chosen"]
    # read as `pluralign data validate` reads them: what validate accepts, training accepts
    prompts = pair_prompts(ds, source=c.dataset, rows=indices)
    images = {col: pair_images(ds, col, source=c.dataset, rows=indices) for col in cols}
    encode = lambda ps: fam.encode_prompts(pipe, ps, c.resolution)  # noqa: E731
    if not c.use_cache:
        txt_cache = None
        data = {f"pixels_{s}": torch.stack([to_pixels(im, c.resolution) for im in images[col]])
                for s, col in zip("wl", cols)}
        data["prompts"] = prompts
    else:
        vae = pipe.vae
        encoders = [getattr(pipe, n) for n in fam.text_encoders]
        lat_cache = TensorCache(p.cache_dir, "latents", fingerprint(vae, extra=f"{fam.cache_id}:{c.resolution}"))
        txt_cache = TensorCache(p.cache_dir, "prompts", fingerprint(*encoders, extra=f"{fam.cache_id}:{c.resolution}"))
        data = {f"latents_{s}": cached_latents(vae, images[col], c.resolution, lat_cache,
                                                batch_size=c.encode_batch_size, desc=f"latents ({col})")
                for s, col in zip("wl", cols)}
        data["cond"] = cached_prompts(encode, prompts, txt_cache)
    data["ordinary"], data["anti"] = _kind_mask(ds, ("mirror", "general")), _kind_mask(ds, ("anti",))
    data["kinds"], data["categories"] = column(ds, "kind"), column(ds, "category")  # split_stats' groups
    if terms.needs_null_reference:
        data["null_cond"] = cached_prompts(encode, [""], txt_cache, desc="encoding the null prompt")
    return data


def _kind_mask(ds, kinds: tuple[str, ...]) -> torch.Tensor:
    """Rows of the given kinds: ``mirror``/``general`` rows carry ordinary prompts (what
    ``preserve_weight`` anchors), ``anti`` rows the requests (what ``guided_sft_scale`` applies to)."""
    return torch.tensor([k in kinds for k in column(ds, "kind")], dtype=torch.bool)


def _batch(p: Plan, pipe, data: dict, idx: list[int], device, dtype):
    """Latents ``x_w`` (``x_l``) and conditioning for rows ``idx`` of the encoded run data."""
    if "latents_w" in data:
        x_w = data["latents_w"][idx]
        x_l = data["latents_l"][idx] if "latents_l" in data else None
        cond = {k: v[idx] for k, v in data["cond"].items()}
    else:
        x_w = encode_pixels(pipe.vae, data["pixels_w"][idx])
        x_l = encode_pixels(pipe.vae, data["pixels_l"][idx]) if "pixels_l" in data else None
        with torch.no_grad():
            cond = p.family.encode_prompts(pipe, [data["prompts"][i] for i in idx], p.config.resolution)
    to = {"device": device, "dtype": dtype}
    return x_w.to(**to), (x_l.to(**to) if x_l is not None else None), {k: v.to(**to) for k, v in cond.items()}


def _with_null_rows(p: Plan, s: RunState, noisy, t, cond):
    """The step's prompted rows, followed by its null-prompt rows when the objective needs them (see
    IntentLossConfig): the null rows are every row, or with ``preserve_null_rows: chosen`` the first half (the
    batch is ``[chosen, rejected]``); the guided SFT term reads only those, and the null anchor is the same mean on
    fewer rows. Each process takes its own chosen half, so N processes still anchor the rows 1 process would.

    The null-prompt rows ride in the same batch as the prompted ones: one policy call (with gradients) and one
    reference call instead of up to four. Each row's prediction is its own whatever the batch (every layer acts
    per sample; only float rounding may differ), and fewer, larger calls keep the cores busier: the toy demo's
    step took 0.150 s instead of 0.196 s."""
    if not s.terms.needs_null_reference:
        return noisy, t, cond
    m = noisy.shape[0] // 2 if p.config.preserve_null_rows == "chosen" else noisy.shape[0]
    null = {k: v.to(device=noisy.device, dtype=noisy.dtype).expand(m, *v.shape[1:]) for k, v in s.data["null_cond"].items()}
    return torch.cat([noisy, noisy[:m]]), torch.cat([t, t[:m]]), {k: torch.cat([v, null[k]]) for k, v in cond.items()}


def _policy_predictions(p: Plan, s: RunState, inputs: StepInputs):
    """The policy's predictions on the step's rows (with gradients), and under the null prompt when the
    objective needs them (else None)."""
    n = inputs.noisy.shape[0]
    prompted = (inputs.noisy, inputs.t, inputs.cond)
    pred = p.family.denoise(s.model, *(_with_null_rows(p, s, *prompted) if s.terms.needs_null_policy else prompted))
    return pred[:n], (pred[n:] if s.terms.needs_null_policy else None)


def _reference_predictions(p: Plan, s: RunState, steps: list[StepInputs]) -> list[tuple]:
    """The frozen reference's predictions for one or more micro-steps in one no-grad call with the adapters
    off (``reference_chunk``, see :mod:`.reference`): ``(ref, null_ref)`` per step, ``null_ref`` None when the
    objective needs no null-prompt rows."""
    rows = [_with_null_rows(p, s, i.noisy, i.t, i.cond) for i in steps]
    if len(rows) == 1:
        noisy, t, cond = rows[0]
    else:
        noisy, t = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
        cond = {k: torch.cat([r[2][k] for r in rows]) for k in rows[0][2]}
    with torch.no_grad(), adapters_disabled(s.unwrapped), s.accelerator.autocast():
        ref = p.family.denoise(dist.forward_module(s.accelerator, s.model, s.unwrapped), noisy, t, cond)
    out, start = [], 0
    for i, r in zip(steps, rows):
        n, size = i.noisy.shape[0], r[0].shape[0]
        ref_i = ref[start:start + size]
        out.append((ref_i[:n], ref_i[n:] if s.terms.needs_null_reference else None))
        start += size
    return out


def _in_loss_space(scale: torch.Tensor | None, *tensors):
    """Each prediction (or target) times its row's ``scale`` (``Objective.error_scale``), so every squared error
    of the objective is measured in ``loss_space``; None tensors stay None. Tensors with fewer rows than
    ``scale`` (the null-prompt rows of the chosen half) take its first rows, the timesteps they were drawn at."""
    if scale is None:
        return tensors
    return tuple(None if x is None else x * scale[:x.shape[0]].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
                 for x in tensors)


def _optimizer(c: DPOTrainConfig, params):
    kw = {"lr": c.learning_rate, "betas": (c.adam_beta1, c.adam_beta2), "weight_decay": c.adam_weight_decay,
          "eps": c.adam_epsilon}
    if c.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kw)
    return torch.optim.AdamW(params, **kw)


def _step_seed(seed: int, micro_step: int) -> int:
    return (seed * 1_000_003 + micro_step * 7919) % (2**63 - 1)


def _non_finite(loss: torch.Tensor, stats: dict, pred: torch.Tensor, target: torch.Tensor) -> str | None:
    if torch.isfinite(loss).all():
        return None
    bad = [k for k, v in stats.items() if not torch.isfinite(v).all()]
    err = per_sample_mse(pred.detach(), target)
    return f"loss={loss.item()}; non-finite stats: {bad or 'none'}; non-finite per-sample errors: " \
           f"{int((~torch.isfinite(err)).sum())}/{err.numel()}"


@torch.no_grad()
def render_validation(pipe, denoiser, c: DPOTrainConfig, out_dir: Path, step: int) -> dict:
    """Images for each validation prompt with and without the adapter (fixed seeds); PNGs + dict."""
    images = {}
    folder = out_dir / "validation" / f"step-{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, prompt in enumerate(c.validation_prompts or []):
        for tag in ("adapter", "base"):
            g = torch.Generator().manual_seed(c.validation_seed + i)
            kwargs = dict(num_inference_steps=c.validation_inference_steps, generator=g, height=c.resolution,
                          width=c.resolution)
            if tag == "base":
                with adapters_disabled(denoiser):
                    im = pipe(prompt, **kwargs).images[0]
            else:
                im = pipe(prompt, **kwargs).images[0]
            im.save(folder / f"{i:02d}-{tag}.png")
            images.setdefault(tag, []).append((prompt, im))
    return images


def _log_images(accelerator, images: dict, step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            import wandb

            tracker.log({f"validation/{tag}": [wandb.Image(im, caption=pr) for pr, im in ims]
                         for tag, ims in images.items()}, step=step)
        elif tracker.name == "tensorboard":
            import numpy as np

            for tag, ims in images.items():
                tracker.writer.add_images(f"validation/{tag}", np.stack([np.asarray(im) for _, im in ims]), step,
                                          dataformats="NHWC")


@dataclass
class RunState:
    """One adapter's training run: what setup builds and what each optimizer step advances.

    ``global_step``, ``position`` (pairs read so far, over all processes), ``micro_step`` and
    ``history`` are what a checkpoint saves and a resume restores; everything else is rebuilt
    from the config.
    """

    accelerator: Any
    pipe: Any
    model: Any            # the denoiser as accelerate prepared it (wrapped under DDP/FSDP)
    unwrapped: Any        # the same module unwrapped: what adapters are toggled and saved on
    params: list
    optimizer: Any
    lr_scheduler: Any
    objective: Any
    terms: IntentLossConfig
    data: dict
    weight_dtype: torch.dtype
    ckpt_root: Path
    sampler: PairSampler
    ema: WeightEMA | None = None
    bar: Any = None
    global_step: int = 0
    position: int = 0
    micro_step: int = 0
    history: list[dict] = field(default_factory=list)
    running: list[dict] = field(default_factory=list)  # per-micro-step stats of the current optimizer step
    split: list[dict] = field(default_factory=list)    # per-micro-step split_stats sums of the current optimizer step
    step_t0: float = 0.0
    grad_norm: float | None = None
    ahead: ReferenceAhead | None = None  # under DPO: the reference's predictions for the current chunk's micro-steps


@dataclass
class StepInputs:
    """One micro-step's rows (``idx``), noisy latents, timesteps, conditioning, target and loss-space scale
    (``Objective.error_scale``; None in the native space). Under DPO every tensor holds ``[chosen; rejected]``."""

    idx: list[int]
    noisy: torch.Tensor
    t: torch.Tensor
    cond: dict[str, torch.Tensor]
    target: torch.Tensor
    scale: torch.Tensor | None


def _train_one(p: Plan, run: AdapterRun) -> TrainResult:
    """Setup, resume, then micro-steps until ``max_steps`` optimizer steps; after each optimizer
    step log, checkpoint and validate; finally export."""
    s = _setup(p, run)
    _resume(p, run, s)
    _start_tracking(p, run, s)
    while s.global_step < p.config.max_steps:
        _micro_step(p, run, s)
        if s.accelerator.sync_gradients:
            _after_step(p, run, s)
    s.bar.close()
    return _finish(p, run, s)


def _setup(p: Plan, run: AdapterRun) -> RunState:
    """Accelerator, frozen pipeline, encoded data, LoRA parameters, optimizer and scheduler.

    The order matters for exact reproduction: the seed is set before the pipeline loads and the
    LoRA weights are initialised after the data is encoded, as every earlier run did."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    c, fam = p.config, p.family
    run.run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=c.mixed_precision, gradient_accumulation_steps=c.gradient_accumulation_steps,
                              log_with=_trackers(c), project_dir=str(run.run_dir))
    launched = launched_processes()
    if c.num_train_epochs and accelerator.num_processes != launched:  # the steps were resolved for `launched`
        raise ValueError(f"num_train_epochs resolved {run.name}'s steps for {launched} process(es) (WORLD_SIZE), but "
                         f"accelerate runs {accelerator.num_processes}; launch with accelerate launch or torchrun, "
                         "which set WORLD_SIZE, or give max_steps instead of num_train_epochs")
    if launched > 1 and accelerator.num_processes != launched:
        raise ValueError(f"launched as {launched} processes but accelerate set up {accelerator.num_processes} "
                         "(no GPU found for a GPU config?); for CPU processes set ACCELERATE_USE_CPU=1 "
                         "(see recipes/accelerate/cpu_2proc.yaml)")
    _open_run(p, run, accelerator)
    set_seed(c.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    pipe = _load_pipeline(p, weight_dtype)
    denoiser = getattr(pipe, fam.denoiser_attr)
    for name in ("vae", *fam.text_encoders):
        getattr(pipe, name).requires_grad_(False)
    pipe.to(accelerator.device)
    objective = objective_from_config(pipe.scheduler, c)
    objective.error_scale(torch.zeros(1, dtype=torch.long), c.loss_space, c.velocity_share)  # fails before encoding
    terms = IntentLossConfig.from_config(c)
    data = _encode_dataset(p, pipe, run.indices, terms)
    if weight_dtype != torch.float32:
        pipe.to(dtype=weight_dtype)
    params = add_lora(denoiser, lora_config(c.rank, c.alpha, c.dropout, c.target_modules or fam.lora_targets,
                                            c.use_rslora, c.use_dora), run.name)
    if c.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    denoiser.train()
    optimizer = _optimizer(c, params)
    n_proc = accelerator.num_processes
    lr_scheduler = make_scheduler(c.lr_scheduler, optimizer, warmup_steps=c.lr_warmup_steps, total_steps=c.max_steps,
                                  decay_steps=tail_steps(c.lr_decay_steps, c.lr_decay_share, c.max_steps),
                                  num_processes=n_proc)
    dist.configure_deepspeed(accelerator, micro_batch_size=c.train_batch_size,
                             gradient_accumulation_steps=c.gradient_accumulation_steps, max_grad_norm=c.max_grad_norm)
    _check_sharded_options(c, accelerator)
    model, optimizer, lr_scheduler = accelerator.prepare(denoiser, optimizer, lr_scheduler)
    s = RunState(accelerator=accelerator, pipe=pipe, model=model, unwrapped=accelerator.unwrap_model(model),
                 params=params, optimizer=optimizer, lr_scheduler=lr_scheduler, objective=objective, terms=terms,
                 data=data, weight_dtype=weight_dtype, ckpt_root=run.run_dir / "checkpoints",
                 sampler=PairSampler(len(run.indices), c.seed),
                 ema=WeightEMA(params, c.ema_decay) if c.ema_decay else None)
    note = warmup_note(c.ema_decay, c.max_steps) if c.ema_decay else None
    if note:
        accelerator.print(note, flush=True)
    if c.method == "dpo":
        s.ahead = ReferenceAhead(c.reference_chunk, lambda k: _step_inputs(p, s, k),
                                 lambda steps: _reference_predictions(p, s, steps))
    return s


def _check_sharded_options(c: DPOTrainConfig, accelerator) -> None:
    """Refuse, before the first step, what needs the whole weights on one process while they are sharded."""
    if dist.zero_stage(accelerator) >= 3:
        raise ValueError("DeepSpeed ZeRO-3 is not supported: it shards the frozen base weights, which pluralign's "
                         "reference pass and LoRA export do not gather under DeepSpeed; use ZeRO-2 (the LoRA optimizer "
                         "state is what it shards) or FSDP FULL_SHARD for bases too large for one device "
                         "(recipes/accelerate/fsdp.yaml)")
    if not dist.params_sharded(accelerator):
        return
    how = f"{accelerator.distributed_type} with sharded parameters"
    if c.ema_decay:
        raise ValueError(f"ema_decay is not supported under {how} (the average would be of each process's slice); "
                         "set ema_decay 0, or use DDP / DeepSpeed ZeRO-2")
    if c.validation_prompts:
        raise ValueError(f"validation_prompts are not supported under {how} (rendering runs on the main process "
                         "only); leave them out and run `pluralign eval` on the exported adapter")


def _resume(p: Plan, run: AdapterRun, s: RunState) -> None:
    """Restore weights, optimizer, scheduler, RNG, data position and history from a checkpoint."""
    c = p.config
    resume = ckpt.resolve_resume(c.resume_from_checkpoint, s.ckpt_root, run.manifest["run_id"])
    if resume is None and c.resume_from_checkpoint == "latest":  # diffusers' scripts say so too: not a silent restart
        s.accelerator.print(f"resume_from_checkpoint latest: no checkpoint of this run under {s.ckpt_root}; "
                            "training starts from step 0", flush=True)
    if resume is not None:
        state = ckpt.load_checkpoint(
            resume, s.optimizer, s.lr_scheduler,
            lambda lora: dist.load_full_adapter_state(s.accelerator, s.model, s.unwrapped, lora, run.name),
            **_optimizer_shards(s))
        s.global_step, s.position, s.history = state["global_step"], state["position"], state.get("history", [])
        if s.ema is not None:
            saved = ckpt.load_ema(resume)
            if saved is None:
                raise ValueError(f"{resume} was saved without ema_decay: resume it with ema_decay 0, or start the "
                                 "run again (a fresh output_dir) to train with an EMA")
            s.ema.load_state_dict(saved)
        s.accelerator.print(f"resumed from {resume} at step {s.global_step}")
    if s.global_step >= c.max_steps and (run.adapter_dir / "pytorch_lora_weights.safetensors").exists():
        s.accelerator.print(f"{run.name}: already trained to step {s.global_step}")
    s.micro_step = s.global_step * c.gradient_accumulation_steps


def _trackers(c: DPOTrainConfig) -> str | None:
    return None if c.report_to == "none" else c.report_to


def _start_tracking(p: Plan, run: AdapterRun, s: RunState) -> None:
    """Trackers (W&B runs are named ``<run_name>-<adapter>``) and the progress bar with its ETA."""
    c = p.config
    if s.accelerator.is_main_process and _trackers(c):
        flat = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in to_dict(c).items()}
        s.accelerator.init_trackers(c.tracker_project, config=flat,
                                    init_kwargs={"wandb": {"name": f"{c.run_name}-{run.name}",
                                                           "dir": os.environ.get("WANDB_DIR", str(run.run_dir))}})
    s.bar = tqdm(total=c.max_steps, initial=s.global_step, desc=f"train {run.name}", unit="step",
                 disable=not s.accelerator.is_local_main_process)
    s.step_t0 = time.perf_counter()


def _step_inputs(p: Plan, s: RunState, k: int) -> StepInputs:
    """What micro-step ``k`` reads that the weights do not change: its pairs, from the data position it
    starts at; noise and timesteps, drawn for the global micro-batch from a generator seeded by (seed, k) on
    every process, each process taking its slice (N processes x B pairs follow exactly the draws of 1 process x
    N*B pairs); the noisy latents, the target and the rows' loss-space scale."""
    c, acc = p.config, s.accelerator
    n_proc, rank = acc.num_processes, acc.process_index
    per_micro = c.train_batch_size * n_proc
    position = s.position + (k - s.micro_step) * per_micro
    idx = s.sampler.take(position, per_micro)[rank * c.train_batch_size:(rank + 1) * c.train_batch_size]
    x_w, x_l, cond = _batch(p, s.pipe, s.data, idx, acc.device, s.weight_dtype)
    gen = torch.Generator().manual_seed(_step_seed(c.seed, k))
    span = {"offset": rank * c.train_batch_size, "total": per_micro}
    if c.method == "dpo":
        x0, noise, t = shared_noise(x_w, x_l, s.objective, gen, **span)
        cond = {key: torch.cat([v, v]) for key, v in cond.items()}
    else:
        x0 = x_w
        noise, t = pair_noise(x_w, s.objective, gen, **span)
    return StepInputs(idx=idx, noisy=s.objective.add_noise(x0, noise, t), t=t, cond=cond,
                      target=s.objective.target(x0, noise, t),
                      scale=s.objective.error_scale(t, c.loss_space, c.velocity_share))


def _micro_step(p: Plan, run: AdapterRun, s: RunState) -> None:
    """One micro-batch: its inputs (and under DPO the reference's predictions, computed ahead for a chunk of
    micro-steps), the policy's forward pass, backpropagation, and the optimizer step when accelerate says the
    accumulation is complete."""
    c, fam, acc = p.config, p.family, s.accelerator
    if c.method == "dpo":
        inputs, (ref_pred, null_ref) = s.ahead.take(s.micro_step)
    else:
        inputs = _step_inputs(p, s, s.micro_step)
    idx = inputs.idx
    s.position += c.train_batch_size * acc.num_processes
    s.micro_step += 1
    with acc.accumulate(s.model):
        if c.method == "dpo":
            pred, null_pred = _policy_predictions(p, s, inputs)
            pred, ref_pred, null_pred, null_ref, target = _in_loss_space(inputs.scale, pred, ref_pred, null_pred,
                                                                         null_ref, inputs.target)
            loss, stats = intent_dpo_loss(pred, ref_pred, target, anti=s.data["anti"][idx],
                                          ordinary=s.data["ordinary"][idx], terms=s.terms, null_pred=null_pred,
                                          null_ref=null_ref)
            s.split.append(split_stats(pred, ref_pred, target, kinds=[s.data["kinds"][i] for i in idx],
                                       categories=[s.data["categories"][i] for i in idx], terms=s.terms))
        else:
            pred, target = _in_loss_space(inputs.scale, fam.denoise(s.model, inputs.noisy, inputs.t, inputs.cond),
                                          inputs.target)
            loss, stats = sft_loss(pred, target)
        problem = _non_finite(loss, stats, pred, target)
        if problem:
            last = ckpt.list_checkpoints(s.ckpt_root)
            s.bar.close()
            acc.end_training()
            raise NonFiniteLossError(
                f"{run.name}: non-finite loss at optimizer step {s.global_step + 1} (micro-step {s.micro_step}): "
                f"{problem}. Stopped without updating weights; last good checkpoint: "
                f"{last[-1] if last else 'none'}. Lower learning_rate/beta or check the data.")
        acc.backward(loss)
        s.grad_norm = None
        if acc.sync_gradients and c.max_grad_norm > 0:
            norm = acc.clip_grad_norm_(s.params, c.max_grad_norm)  # DeepSpeed clips inside backward; may be None
            s.grad_norm = None if norm is None else float(norm)
        s.optimizer.step()
        s.lr_scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
        if s.ema is not None and acc.sync_gradients:
            s.ema.update(s.params, s.global_step + 1)
    s.running.append({"loss": loss.detach().float().item(), **{k: v.float().item() for k, v in stats.items()}})


def _after_step(p: Plan, run: AdapterRun, s: RunState) -> None:
    """After an optimizer step: average the micro-steps' stats into the history, log, checkpoint, validate."""
    c, acc = p.config, s.accelerator
    s.global_step += 1
    dt = time.perf_counter() - s.step_t0
    s.step_t0 = time.perf_counter()
    logs = {k: sum(r[k] for r in s.running) / len(s.running) for k in s.running[0]}
    logs.update(merge_split_stats(s.split))  # per kind/category, pooled over the step's pairs
    s.running, s.split = [], []
    per_step = c.train_batch_size * acc.num_processes * c.gradient_accumulation_steps
    logs.update(lr=s.lr_scheduler.get_last_lr()[0], s_per_step=dt, pairs_per_s=per_step / max(dt, 1e-9))
    if s.grad_norm is not None:
        logs["grad_norm"] = s.grad_norm
    s.history.append({"step": s.global_step, **logs})
    if s.global_step % c.logging_steps == 0:
        acc.log(logs, step=s.global_step)
    s.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs.get('implicit_acc', float('nan')):.2f}",
                      s_step=f"{dt:.2f}")
    s.bar.update(1)
    if c.checkpointing_steps and s.global_step % c.checkpointing_steps == 0:
        _save_checkpoint(p, run, s)  # every process: gathering sharded state is a collective
    if c.validation_steps and c.validation_prompts and s.global_step % c.validation_steps == 0 \
            and acc.is_main_process:
        with s.ema.applied(s.params) if s.ema else nullcontext():
            _log_images(acc, render_validation(s.pipe, s.unwrapped, c, run.run_dir, s.global_step), s.global_step)


def _optimizer_shards(s: RunState) -> dict:
    """Under a sharded optimizer each process saves and restores its own state file."""
    if not dist.optimizer_sharded(s.accelerator):
        return {}
    return {"rank": s.accelerator.process_index, "world_size": s.accelerator.num_processes}


def _save_checkpoint(p: Plan, run: AdapterRun, s: RunState) -> None:
    """Called on every process. The LoRA state is gathered (a collective when sharded); with a
    sharded optimizer each process writes its own optimizer file into the staging directory
    before the main process completes the checkpoint and renames it into place."""
    acc = s.accelerator
    lora = dist.full_adapter_state(acc, s.model, s.unwrapped, run.name)
    shards = _optimizer_shards(s)
    if shards:
        staging = ckpt.staging_dir(s.ckpt_root, s.global_step)
        if acc.is_main_process:
            ckpt.prepare_staging(staging)
        acc.wait_for_everyone()
        ckpt.save_optimizer_shard(staging, s.optimizer, shards["rank"])
        acc.wait_for_everyone()
    if acc.is_main_process:
        ckpt.save_checkpoint(s.ckpt_root, s.global_step, lora, None if shards else s.optimizer, s.lr_scheduler,
                             {"position": s.position, "history": s.history, "run_id": run.manifest["run_id"],
                              **({"optimizer_world_size": shards["world_size"]} if shards else {})},
                             p.config.checkpoints_total_limit, ema=s.ema.state_dict() if s.ema else None)
    acc.wait_for_everyone()


def _finish(p: Plan, run: AdapterRun, s: RunState) -> TrainResult:
    """The final checkpoint, the EMA swapped in, final validation images, and the export."""
    c, acc = p.config, s.accelerator
    acc.wait_for_everyone()
    result = TrainResult(p.output_dir, run.adapter_dir, {}, {}, {}, s.history, s.global_step, p.model)
    if c.checkpointing_steps and s.global_step % c.checkpointing_steps:
        _save_checkpoint(p, run, s)
    sharded_layers = dist.full_adapter_state(acc, s.model, s.unwrapped, run.name) \
        if dist.params_sharded(acc) else None
    if acc.is_main_process:
        if s.ema is not None:
            s.ema.copy_to(s.params)  # from here on the adapter is the average: what is rendered and exported
        if c.validation_prompts and not (c.validation_steps and s.global_step % c.validation_steps == 0):
            _log_images(acc, render_validation(s.pipe, s.unwrapped, c, run.run_dir, s.global_step), s.global_step)
        result = _export(p, s.pipe, s.unwrapped, run, s.history, s.global_step, layers=sharded_layers)
    acc.end_training()
    return result


def _final_metrics(history: list[dict], last: int = 5) -> dict[str, float]:
    tail = history[-last:]
    if not tail:
        return {}
    keys = [k for k in tail[0] if k != "step"]
    return {k: sum(h[k] for h in tail) / len(tail) for k in keys if all(k in h for h in tail)}


def _export(p: Plan, pipe, denoiser, run: AdapterRun, history, steps, layers=None) -> TrainResult:
    """The diffusers LoRA (and kohya file), its model card, config and data mix; pushed if asked."""
    c, adapter_name, adapter_dir = p.config, run.name, run.adapter_dir
    identity = {**p.base, "run_id": run.manifest["run_id"]}
    # ``layers`` is the gathered state under sharded parameters; otherwise the module holds whole tensors
    layers = layers if layers is not None else adapter_state_dict(denoiser, adapter_name)
    lora_cfg = denoiser.peft_config[adapter_name]
    export_diffusers(type(pipe), p.family, layers, lora_cfg, adapter_dir,
                     identity_metadata(p.base, run.manifest["run_id"]))
    kohya = {}
    if c.export_kohya and not c.use_dora:
        kohya[adapter_name] = export_kohya(p.family, layers, lora_cfg,
                                           p.output_dir / "adapter_kohya" / f"{adapter_name}.safetensors")
    metrics = _final_metrics(history)
    eval_summary = json.loads(Path(c.eval_summary).read_text()) if c.eval_summary else None
    hyper = {k: getattr(c, k) for k in ("method", "loss_type", "beta", "label_smoothing", "sft_weight", "guided_sft_scale", "guided_sft_rows", "preserve_weight", "preserve_null_weight", "preserve_null_rows", "loss_space", "velocity_share", "ema_decay", "rank",
                                        "alpha", "dropout", "use_rslora", "use_dora", "learning_rate", "lr_scheduler",
                                        "lr_warmup_steps", "lr_decay_steps", "lr_decay_share", "train_batch_size", "gradient_accumulation_steps", "max_steps", "optimizer",
                                        "mixed_precision", "resolution", "seed")}
    hyper["lr_decay_steps"] = tail_steps(c.lr_decay_steps, c.lr_decay_share, c.max_steps)  # the steps it ran, however given
    if c.num_train_epochs:  # max_steps above is what these passes over this adapter's rows came to
        hyper["num_train_epochs"] = c.num_train_epochs
    hyper["target_modules"] = ", ".join(c.target_modules or p.family.lora_targets)
    shared = c.adapter_mode == "per_category" and c.share_general_pairs
    mix = data_mix(p.dataset, run.indices, intent_fraction=c.intent_fraction if shared else None)
    (adapter_dir / "README.md").write_text(model_card(
        base_model=c.pretrained_model if not c.pretrained_model.startswith("tiny:") else p.model,
        family=p.family.name, adapter_name=adapter_name, data_mix=mix, hyper=hyper, metrics=metrics,
        eval_summary=eval_summary, identity=identity))
    (adapter_dir / "training_config.json").write_text(json.dumps(to_dict(c), indent=1, default=str))
    (adapter_dir / "run.json").write_text(json.dumps(run.manifest, indent=1, default=str))  # provenance travels with it
    (adapter_dir / "data_mix.json").write_text(json.dumps(mix, indent=1))
    if c.push_to_hub:
        push_adapter(adapter_dir, c.hub_model_id if c.adapter_mode == "single" else f"{c.hub_model_id}-{adapter_name}")
    return TrainResult(p.output_dir, adapter_dir, {adapter_name: adapter_dir}, kohya, metrics, history, steps, p.model)


def replace(config: DPOTrainConfig, **changes) -> DPOTrainConfig:
    """A copy of ``config`` with ``changes`` (convenience for scripts and tests)."""
    return dataclasses.replace(config, **changes)


__all__ = ["train", "plan", "TrainResult", "NonFiniteLossError", "render_validation", "replace"]
