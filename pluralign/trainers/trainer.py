"""The Diffusion-DPO LoRA training loop: one code path on accelerate for every family.

``train(config)`` checks the whole configuration before it loads weights, encodes the pairs once
(through the on-disk cache), then runs optimizer steps in which the policy (LoRA on) and the
reference (same network, LoRA off) denoise the stacked ``[winners; losers]`` batch with shared
noise and timesteps. Family specifics come from :mod:`.families`, the target from
:mod:`.objectives`, the loss from :mod:`.loss`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import to_dict, writable_dir
from . import checkpoint as ckpt
from .adapters import (
    adapter_state_dict,
    adapters_disabled,
    add_lora,
    check_target_modules,
    load_adapter_state_dict,
    lora_config,
)
from .cache import TensorCache, cached_latents, cached_prompts, default_cache_dir, encode_pixels, fingerprint, to_pixels
from .config import DPOTrainConfig
from .data import check_columns, column, data_mix, load_pairs, select_rows
from .ema import LoraEMA
from .export import export_diffusers, export_kohya, model_card, push_adapter
from .families import Family, detect_family
from .loss import diffusion_dpo_loss, guided_sft_error, per_sample_mse
from .objectives import objective_from_config, pair_noise, shared_noise


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


@dataclass
class Plan:
    """Everything checked before weights are loaded."""

    config: DPOTrainConfig
    model: str
    family: Family
    output_dir: Path
    cache_dir: Path
    dataset: object
    runs: list[tuple[str, list[int], Path, Path]]  # adapter name, row indices, run dir, adapter dir


def resolve_model(spec: str, cache_dir: Path) -> str:
    """``tiny:<family>`` -> a tiny pipeline built once under ``cache_dir/models``; anything else as is."""
    if not spec.startswith("tiny:"):
        return spec
    from ..tiny import FAMILIES, save_tiny_pipeline

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


def _check_targets_from_config(model: str, family: Family, targets) -> None:
    """Instantiate the denoiser on the meta device (no weights) to check LoRA target names."""
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


def plan(config: DPOTrainConfig) -> Plan:
    """Validate the configuration; raise ``ValueError`` with what to fix, before loading weights."""
    out = Path(config.output_dir or Path("checkpoints") / "runs" / config.run_name)
    writable_dir(out, "output_dir")
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    writable_dir(cache_dir, "cache_dir")
    if config.report_to in ("wandb", "all"):
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError("report_to=wandb but wandb is not installed (pip install wandb, or report_to: none)")
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id")
    if config.resume_from_checkpoint not in (None, "latest"):
        ckpt.resolve_resume(config.resume_from_checkpoint, out)
    model = resolve_model(config.pretrained_model, cache_dir)
    family = detect_family(model, config.family).configured(config)
    targets = config.target_modules or family.lora_targets
    _check_targets_from_config(model, family, targets)
    ds = load_pairs(config.dataset)
    check_columns(ds, config.method, config.dataset)
    runs = []
    if config.adapter_mode == "single":
        idx = select_rows(ds, None, True, config.max_pairs)
        runs.append((config.adapter_name, idx, out, out / "adapter"))
    else:
        present = sorted({c for c in column(ds, "category") if c})
        cats = config.categories or present
        for cat in cats:
            idx = select_rows(ds, cat, config.share_general_pairs, config.max_pairs)
            if not any(c == cat for c in (column(ds, "category")[i] for i in idx)):
                raise ValueError(f"dataset {config.dataset}: no rows of category {cat!r} (present: {present})")
            runs.append((cat, idx, out / "runs" / cat, out / "adapter" / cat))
    for name, idx, _, adir in runs:
        if not idx:
            raise ValueError(f"dataset {config.dataset}: no rows to train adapter {name!r}")
        if (adir / "pytorch_lora_weights.safetensors").exists() and not (
                config.overwrite_output_dir or config.resume_from_checkpoint):
            raise ValueError(f"{adir} already holds a trained adapter; set overwrite_output_dir: true, "
                             "resume_from_checkpoint: latest, or another output_dir")
    return Plan(config, model, family, out, cache_dir, ds, runs)


def train(config: DPOTrainConfig) -> TrainResult:
    """Train (and export) the adapter(s) of ``config``; the public entry point of the trainer."""
    p = plan(config)
    results = [_train_one(p, name, idx, run_dir, adir) for name, idx, run_dir, adir in p.runs]
    if config.eval_before_after:
        for (name, *_), r in zip(p.runs, results):
            r.metrics.update(_evaluate_adapter(p, name, r.adapter_dirs[name]))
    if len(results) == 1:
        return results[0]
    merged = TrainResult(p.output_dir, p.output_dir / "adapter", {}, {}, {}, [], 0)
    for (name, *_), r in zip(p.runs, results):
        merged.adapter_dirs.update(r.adapter_dirs)
        merged.kohya_files.update(r.kohya_files)
        merged.metrics.update({f"{name}/{k}": v for k, v in r.metrics.items()})
        merged.history += [{"adapter": name, **h} for h in r.history]
        merged.steps += r.steps
    return merged


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


def _encode_dataset(p: Plan, pipe, indices: list[int], device) -> dict:
    """Cached latents + conditioning for the run's rows (or pixels + prompts without the cache), the
    row-kind masks, and the null prompt's conditioning when a term needs it."""
    c, fam, ds = p.config, p.family, p.dataset.select(indices)
    prompts = list(ds["prompt"])
    cols = ["chosen", "rejected"] if c.method == "dpo" else ["chosen"]
    encode = lambda ps: fam.encode_prompts(pipe, ps, c.resolution)  # noqa: E731
    if not c.use_cache:
        txt_cache = None
        data = {f"pixels_{s}": torch.stack([to_pixels(im, c.resolution) for im in ds[col]])
                for s, col in zip("wl", cols)}
        data["prompts"] = prompts
    else:
        vae = pipe.vae
        encoders = [getattr(pipe, n) for n in fam.text_encoders]
        lat_cache = TensorCache(p.cache_dir, "latents", fingerprint(vae, extra=f"{fam.cache_id}:{c.resolution}"))
        txt_cache = TensorCache(p.cache_dir, "prompts", fingerprint(*encoders, extra=f"{fam.cache_id}:{c.resolution}"))
        data = {f"latents_{s}": cached_latents(vae, list(ds[col]), c.resolution, lat_cache,
                                                batch_size=c.encode_batch_size, desc=f"latents ({col})")
                for s, col in zip("wl", cols)}
        data["cond"] = cached_prompts(encode, prompts, txt_cache)
    data["preserve"], data["anti"] = _kind_mask(ds, ("mirror", "general")), _kind_mask(ds, ("anti",))
    if _needs_null(c):
        data["null_cond"] = cached_prompts(encode, [""], txt_cache, desc="encoding the null prompt")
    return data


def _kind_mask(ds, kinds: tuple[str, ...]) -> torch.Tensor:
    """Rows of the given kinds: ``mirror``/``general`` rows carry ordinary prompts (what
    ``preserve_weight`` anchors), ``anti`` rows the requests (what ``guided_sft_scale`` applies to)."""
    return torch.tensor([k in kinds for k in column(ds, "kind")], dtype=torch.bool)


def _guided_sft(c: DPOTrainConfig) -> bool:
    """Whether the SFT term fits the guided prediction on anti rows (it needs an SFT term to act on)."""
    return c.sft_weight > 0 and c.guided_sft_scale > 1


def _needs_null(c: DPOTrainConfig) -> bool:
    """Whether the step needs predictions under the null prompt."""
    return bool(c.preserve_null_weight) or _guided_sft(c)


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


def _null_predictions(fam, model, unwrapped, noisy, t, null_cond: dict, accelerator, with_policy: bool):
    """The policy's (when ``with_policy``) and the frozen reference's predictions under the null prompt,
    on the step's own noisy latents and timesteps: what ``preserve_null_weight`` compares and the
    unconditional branch ``guided_sft_scale`` extrapolates from."""
    null = {k: v.to(device=noisy.device, dtype=noisy.dtype).expand(noisy.shape[0], *v.shape[1:])
            for k, v in null_cond.items()}
    pred = fam.denoise(model, noisy, t, null) if with_policy else None
    with torch.no_grad(), adapters_disabled(unwrapped), accelerator.autocast():
        ref = fam.denoise(unwrapped, noisy, t, null)
    return pred, ref


def _optimizer(c: DPOTrainConfig, params):
    kw = {"lr": c.learning_rate, "betas": (c.adam_beta1, c.adam_beta2), "weight_decay": c.adam_weight_decay,
          "eps": c.adam_epsilon}
    if c.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kw)
    return torch.optim.AdamW(params, **kw)


def _step_seed(seed: int, micro_step: int) -> int:
    return (seed * 1_000_003 + micro_step * 7919) % (2**63 - 1)


def _non_finite(loss: torch.Tensor, stats: dict, err: torch.Tensor) -> str | None:
    if torch.isfinite(loss).all():
        return None
    bad = [k for k, v in stats.items() if not torch.isfinite(v).all()]
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


def _train_one(p: Plan, adapter_name: str, indices: list[int], run_dir: Path, adapter_dir: Path) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    c, fam = p.config, p.family
    run_dir.mkdir(parents=True, exist_ok=True)
    log_with = None if c.report_to == "none" else c.report_to
    accelerator = Accelerator(mixed_precision=c.mixed_precision, gradient_accumulation_steps=c.gradient_accumulation_steps,
                              log_with=log_with, project_dir=str(run_dir))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise ValueError(f"launched as {launched} processes but accelerate set up {accelerator.num_processes} "
                         "(no GPU found for a GPU config?); for CPU processes set ACCELERATE_USE_CPU=1 "
                         "(see recipes/accelerate/cpu_2proc.yaml)")
    set_seed(c.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    pipe = _load_pipeline(p, weight_dtype)
    denoiser = getattr(pipe, fam.denoiser_attr)
    for name in ("vae", *fam.text_encoders):
        getattr(pipe, name).requires_grad_(False)
    pipe.to(accelerator.device)
    objective = objective_from_config(pipe.scheduler, c)
    data = _encode_dataset(p, pipe, indices, accelerator.device)
    if weight_dtype != torch.float32:
        pipe.to(dtype=weight_dtype)
    params = add_lora(denoiser, lora_config(c.rank, c.alpha, c.dropout, c.target_modules or fam.lora_targets,
                                            c.use_rslora, c.use_dora), adapter_name)
    if c.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    denoiser.train()
    optimizer = _optimizer(c, params)
    n_proc = accelerator.num_processes
    lr_scheduler = get_scheduler(c.lr_scheduler, optimizer, num_warmup_steps=c.lr_warmup_steps * n_proc,
                                 num_training_steps=c.max_steps * n_proc)
    model, optimizer, lr_scheduler = accelerator.prepare(denoiser, optimizer, lr_scheduler)
    ema = LoraEMA(params, c.ema_decay) if c.ema_decay else None

    global_step, position, history = 0, 0, []
    ckpt_root = run_dir / "checkpoints"
    resume = ckpt.resolve_resume(c.resume_from_checkpoint, ckpt_root)
    if resume is not None:
        lora, state = ckpt.load_checkpoint(resume, optimizer, lr_scheduler)
        load_adapter_state_dict(denoiser, lora, adapter_name)
        global_step, position, history = state["global_step"], state["position"], state.get("history", [])
        if ema is not None:
            saved = ckpt.load_ema(resume)
            if saved is None:
                raise ValueError(f"{resume} was saved without ema_decay: resume it with ema_decay 0, or start the "
                                 "run again (a fresh output_dir) to train with an EMA")
            ema.load_state_dict(saved)
        accelerator.print(f"resumed from {resume} at step {global_step}")
    if global_step >= c.max_steps and (adapter_dir / "pytorch_lora_weights.safetensors").exists():
        accelerator.print(f"{adapter_name}: already trained to step {global_step}")

    if accelerator.is_main_process and log_with:
        flat = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in to_dict(c).items()}
        accelerator.init_trackers(c.tracker_project, config=flat,
                                  init_kwargs={"wandb": {"name": f"{c.run_name}-{adapter_name}",
                                                         "dir": os.environ.get("WANDB_DIR", str(run_dir))}})

    sampler = PairSampler(len(indices), c.seed)
    per_micro = c.train_batch_size * n_proc
    rank = accelerator.process_index
    bar = tqdm(total=c.max_steps, initial=global_step, desc=f"train {adapter_name}", unit="step",
               disable=not accelerator.is_local_main_process)
    step_t0, running = time.perf_counter(), []
    micro_step = global_step * c.gradient_accumulation_steps
    unwrapped = accelerator.unwrap_model(model)
    while global_step < c.max_steps:
        idx = sampler.take(position, per_micro)[rank * c.train_batch_size:(rank + 1) * c.train_batch_size]
        position += per_micro
        with accelerator.accumulate(model):
            x_w, x_l, cond = _batch(p, pipe, data, idx, accelerator.device, weight_dtype)
            # noise and timesteps are drawn for the global micro-batch from a generator seeded by (seed,
            # micro-step) on every process, and each process takes its slice: N processes x B pairs
            # follow exactly the draws of 1 process x N*B pairs
            gen = torch.Generator().manual_seed(_step_seed(c.seed, micro_step))
            span = {"offset": rank * c.train_batch_size, "total": per_micro}
            micro_step += 1
            if c.method == "dpo":
                x0, noise, t = shared_noise(x_w, x_l, objective, gen, **span)
                cond2 = {k: torch.cat([v, v]) for k, v in cond.items()}
            else:
                x0 = x_w
                noise, t = pair_noise(x_w, objective, gen, **span)
                cond2 = cond
            noisy = objective.add_noise(x0, noise, t)
            target = objective.target(x0, noise, t)
            pred = fam.denoise(model, noisy, t, cond2)
            err = per_sample_mse(pred, target)
            if c.method == "dpo":
                with torch.no_grad(), adapters_disabled(unwrapped), accelerator.autocast():
                    ref_pred = fam.denoise(unwrapped, noisy, t, cond2)
                ref = per_sample_mse(ref_pred, target)
                b = x_w.shape[0]
                loss, stats = diffusion_dpo_loss(err[:b], err[b:], ref[:b], ref[b:], beta=c.beta,
                                                 loss_type=c.loss_type, label_smoothing=c.label_smoothing)
                u_pol = u_ref = None
                if _needs_null(c):
                    u_pol, u_ref = _null_predictions(fam, model, unwrapped, noisy, t, data["null_cond"], accelerator,
                                                     with_policy=bool(c.preserve_null_weight))
                if c.sft_weight:
                    sft = err[:b]
                    if _guided_sft(c):
                        anti = data["anti"][idx].to(accelerator.device)
                        guided = guided_sft_error(pred[:b], u_ref[:b], target[:b], c.guided_sft_scale)
                        sft = torch.where(anti, guided, sft)
                    loss = loss + c.sft_weight * sft.mean()
                if c.preserve_weight:
                    keep = data["preserve"][idx].to(accelerator.device).repeat(2).float()
                    drift = per_sample_mse(pred, ref_pred)
                    stats["preserve_mse"] = (drift * keep).sum().detach() / keep.sum().clamp(min=1)
                    loss = loss + c.preserve_weight * (drift * keep).sum() / keep.numel()
                if c.preserve_null_weight:
                    null_drift = per_sample_mse(u_pol, u_ref).mean()
                    stats["preserve_null_mse"] = null_drift.detach()
                    loss = loss + c.preserve_null_weight * null_drift
            else:
                loss = err.mean()
                stats = {"policy_err_chosen": err.detach().mean()}
            problem = _non_finite(loss, stats, err)
            if problem:
                last = ckpt.list_checkpoints(ckpt_root)
                bar.close()
                accelerator.end_training()
                raise NonFiniteLossError(
                    f"{adapter_name}: non-finite loss at optimizer step {global_step + 1} (micro-step {micro_step}): "
                    f"{problem}. Stopped without updating weights; last good checkpoint: "
                    f"{last[-1] if last else 'none'}. Lower learning_rate/beta or check the data.")
            accelerator.backward(loss)
            grad_norm = None
            if accelerator.sync_gradients and c.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None and accelerator.sync_gradients:
                ema.update(params, global_step + 1)
        running.append({"loss": loss.detach().float().item(), **{k: v.float().item() for k, v in stats.items()}})
        if not accelerator.sync_gradients:
            continue
        global_step += 1
        dt = time.perf_counter() - step_t0
        step_t0 = time.perf_counter()
        logs = {k: sum(r[k] for r in running) / len(running) for k in running[0]}
        running = []
        logs.update(lr=lr_scheduler.get_last_lr()[0], s_per_step=dt,
                    pairs_per_s=per_micro * c.gradient_accumulation_steps / max(dt, 1e-9))
        if grad_norm is not None:
            logs["grad_norm"] = float(grad_norm)
        history.append({"step": global_step, **logs})
        if global_step % c.logging_steps == 0:
            accelerator.log(logs, step=global_step)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs.get('implicit_acc', float('nan')):.2f}",
                        s_step=f"{dt:.2f}")
        bar.update(1)
        if c.checkpointing_steps and global_step % c.checkpointing_steps == 0 and accelerator.is_main_process:
            ckpt.save_checkpoint(ckpt_root, global_step, adapter_state_dict(unwrapped, adapter_name), optimizer,
                                 lr_scheduler, {"position": position, "history": history}, c.checkpoints_total_limit,
                                 ema=ema.state_dict() if ema else None)
        if c.validation_steps and c.validation_prompts and global_step % c.validation_steps == 0 \
                and accelerator.is_main_process:
            with ema.applied(params) if ema else nullcontext():
                _log_images(accelerator, render_validation(pipe, unwrapped, c, run_dir, global_step), global_step)
    bar.close()

    accelerator.wait_for_everyone()
    result = TrainResult(p.output_dir, adapter_dir, {}, {}, {}, history, global_step)
    if accelerator.is_main_process:
        if c.checkpointing_steps and global_step % c.checkpointing_steps:
            ckpt.save_checkpoint(ckpt_root, global_step, adapter_state_dict(unwrapped, adapter_name), optimizer,
                                 lr_scheduler, {"position": position, "history": history}, c.checkpoints_total_limit,
                                 ema=ema.state_dict() if ema else None)
        if ema is not None:
            ema.copy_to(params)  # from here on the adapter is the average: what is rendered and exported
        if c.validation_prompts and not (c.validation_steps and global_step % c.validation_steps == 0):
            _log_images(accelerator, render_validation(pipe, unwrapped, c, run_dir, global_step), global_step)
        result = _export(p, pipe, unwrapped, adapter_name, indices, adapter_dir, history, global_step)
    accelerator.end_training()
    return result


def _evaluate_adapter(p: Plan, adapter_name: str, adapter_dir: Path) -> dict[str, float]:
    """Base vs adapter dial with the built-in eval loop; the summary goes into the model card."""
    from accelerate import PartialState

    from pluralign.eval.runner import EvalConfig, run_eval

    from .export import attach_eval

    c = p.config
    out = p.output_dir / "eval" / adapter_name
    results = run_eval(EvalConfig(
        base=p.model, adapter=str(adapter_dir), adapter_name=adapter_name, weights=list(c.eval_weights),
        suite=c.eval_suite, n_prompts=c.eval_n_prompts, num_inference_steps=c.eval_inference_steps,
        guidance_scale=c.eval_guidance_scale, height=c.resolution, width=c.resolution, output=str(out),
        dtype={"no": "float32", "fp16": "float16", "bf16": "bfloat16"}[c.mixed_precision]))
    if not PartialState().is_main_process:
        return {}
    summary = eval_card_summary(results, out, adapter_dir)
    attach_eval(adapter_dir / "README.md", summary)
    (adapter_dir / "eval_summary.json").write_text(json.dumps(summary, indent=1))
    flat = {f"eval/{v}/adherence": s["adherence"] for v, s in summary["variants"].items() if s["adherence"] is not None}
    return flat


def eval_card_summary(results: dict, eval_dir: Path, adapter_dir: Path) -> dict:
    """The few numbers a model card needs: adherence, leakage and content per variant (base, dial)."""
    def val(d):
        return None if not d else d.get("value")

    variants = {}
    for name, v in results["variants"].items():
        variants[name] = {"adherence": val(v.get("adherence")), "adherence_ci95": (v.get("adherence") or {}).get("ci95"),
                          "leakage_max_abs_points": (v.get("leakage") or {}).get("max_abs_points"),
                          "content_fidelity": val(v.get("content_fidelity"))}
    return {"suite": results["suite"], "variants": variants,
            "report": os.path.relpath(eval_dir / "report.html", adapter_dir)}


def _final_metrics(history: list[dict], last: int = 5) -> dict[str, float]:
    tail = history[-last:]
    if not tail:
        return {}
    keys = [k for k in tail[0] if k != "step"]
    return {k: sum(h[k] for h in tail) / len(tail) for k in keys if all(k in h for h in tail)}


def _export(p: Plan, pipe, denoiser, adapter_name, indices, adapter_dir: Path, history, steps) -> TrainResult:
    c = p.config
    export_diffusers(type(pipe), p.family, denoiser, adapter_name, adapter_dir)
    kohya = {}
    if c.export_kohya and not c.use_dora:
        kohya[adapter_name] = export_kohya(p.family, denoiser, adapter_name,
                                           p.output_dir / "adapter_kohya" / f"{adapter_name}.safetensors")
    metrics = _final_metrics(history)
    eval_summary = json.loads(Path(c.eval_summary).read_text()) if c.eval_summary else None
    hyper = {k: getattr(c, k) for k in ("method", "loss_type", "beta", "label_smoothing", "sft_weight", "guided_sft_scale", "preserve_weight", "preserve_null_weight", "ema_decay", "rank",
                                        "alpha", "dropout", "use_rslora", "use_dora", "learning_rate", "lr_scheduler",
                                        "train_batch_size", "gradient_accumulation_steps", "max_steps", "optimizer",
                                        "mixed_precision", "resolution", "seed")}
    hyper["target_modules"] = ", ".join(c.target_modules or p.family.lora_targets)
    mix = data_mix(p.dataset, indices)
    (adapter_dir / "README.md").write_text(model_card(
        base_model=c.pretrained_model if not c.pretrained_model.startswith("tiny:") else p.model,
        family=p.family.name, adapter_name=adapter_name, data_mix=mix, hyper=hyper, metrics=metrics,
        eval_summary=eval_summary))
    (adapter_dir / "training_config.json").write_text(json.dumps(to_dict(c), indent=1, default=str))
    (adapter_dir / "data_mix.json").write_text(json.dumps(mix, indent=1))
    if c.push_to_hub:
        push_adapter(adapter_dir, c.hub_model_id if c.adapter_mode == "single" else f"{c.hub_model_id}-{adapter_name}")
    return TrainResult(p.output_dir, adapter_dir, {adapter_name: adapter_dir}, kohya, metrics, history, steps)


def replace(config: DPOTrainConfig, **changes) -> DPOTrainConfig:
    """A copy of ``config`` with ``changes`` (convenience for scripts and tests)."""
    return dataclasses.replace(config, **changes)


__all__ = ["train", "plan", "TrainResult", "NonFiniteLossError", "render_validation", "replace"]
