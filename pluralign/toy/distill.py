"""Distil a toy pipeline's denoiser into a cheaper UNet (exploration of the speed issue; docs/toy.md).

The demo's time is denoiser calls, and a UNet with a narrower first level costs less per call. Training such a
base from scratch took the shipped one over an hour and gave a model that followed 30% of requests (docs/toy.md,
"A smaller denoiser"). Distillation asks less: the student matches the teacher's noise prediction on the teacher's
own training distribution (noised latents of the world's renders, under their captions and under the empty
caption that guidance extrapolates from), which is a deterministic regression target rather than the noisy
denoising loss, and every weight whose shape the student shares with the teacher starts as the teacher's. The
teacher's autoencoder, tokenizer, text encoder and scheduler are reused as they are, so the student pipeline
reads the same prompts and decodes the same latents.

    python -m pluralign.toy.distill --teacher pluralign/toy/checkpoints/base --output /tmp/student_base \\
        --channels 16,48,64 --steps 3000
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pluralign.config import option, parse, run_module, to_dict
from pluralign.eval.generate import load_pipeline

from ..trainers.ema import WeightEMA
from . import base_model


@dataclass
class DistillConfig:
    teacher: str = option("", "the toy pipeline directory to distil (e.g. pluralign/toy/checkpoints/base)")
    output: str = option("", "where the student pipeline is written")
    channels: str = option("16,48,64", "student UNet block widths, comma-separated (16x16 -> 8x8 -> 4x4)")
    steps: int = option(3000, "distillation steps", min=1)
    batch_size: int = option(64, "noised latents per step", min=1)
    lr: float = option(1e-3, "peak learning rate (linear warm-up, cosine to a tenth)", min=0)
    warmup_steps: int = option(100, "warm-up steps", min=0)
    ema_decay: float = option(0.998, "EMA decay of the student's weights (0 disables)", min=0, max=1)
    n_scenes: int = option(8000, "scenes of the distillation data (a clean and a degraded render each)", min=1)
    seed: int = option(0, "seed of the data, the student's new weights and the noise", min=0)
    cond_drop: float = option(0.2, "share of rows under the empty caption: guidance extrapolates from that branch, so "
                              "the student must match it as closely as the prompted one (targets data)", min=0, max=1)
    targets: str = option("data", "data: the teacher's predictions on noised training latents; trajectories: its "
                          "prompted and empty-caption predictions on the states of its own guided sampling, the "
                          "states the sampler visits", choices=("data", "trajectories"))
    trajectory_prompts: int = option(1024, "prompts (drawn from the training captions) whose sampling trajectories are "
                                     "the states (targets trajectories)", min=1)
    num_inference_steps: int = option(20, "DDIM steps of those trajectories", min=1)
    guidance_scale: float = option(6.0, "guidance of those trajectories, and of the guided prediction in the loss",
                                   min=1)
    guided_weight: float = option(0.0, "weight of the guided prediction's squared error beside the two branches' "
                                  "(targets trajectories): the sampler follows the branches' difference times the "
                                  "guidance scale, so an error there is magnified that much", min=0)
    init_unet: str = option("", "start the student from this UNet directory (e.g. an earlier student's unet/) "
                            "instead of a fresh one with the teacher's shared-shape tensors; --channels is then "
                            "the directory's")
    threads: int = option(0, "torch threads (0: torch's default)", min=0)
    progress: bool = option(True, "show a progress bar with an ETA")


def transplant(student: torch.nn.Module, teacher: torch.nn.Module) -> tuple[int, int]:
    """Copy every teacher tensor whose name and shape the student shares; returns (copied, student tensors)."""
    theirs = teacher.state_dict()
    mine = student.state_dict()
    same = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    student.load_state_dict(same, strict=False)
    return len(same), len(mine)


@torch.no_grad()
def trajectories(pipe, cond_all: torch.Tensor, empty: torch.Tensor, cfg: DistillConfig) -> dict[str, torch.Tensor]:
    """The states of the teacher's guided DDIM sampling for ``cfg.trajectory_prompts`` training captions, with its
    prompted and empty-caption predictions at each: ``x``, ``t``, ``caption`` (index into ``cond_all``), ``eps_c``,
    ``eps_u``."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(cfg.seed + 29)
    picks = torch.randperm(len(cond_all), generator=g)[:cfg.trajectory_prompts]
    sched = pipe.scheduler
    unet = pipe.unet
    side, ch = unet.config.sample_size, unet.config.in_channels
    out: dict[str, list] = {k: [] for k in ("x", "t", "caption", "eps_c", "eps_u")}
    batches = [picks[i:i + 128] for i in range(0, len(picks), 128)]
    for rows in tqdm(batches, desc="teacher trajectories", disable=not cfg.progress):
        sched.set_timesteps(cfg.num_inference_steps)
        x = torch.randn(len(rows), ch, side, side, generator=g) * sched.init_noise_sigma
        cond = torch.cat([empty.expand(len(rows), -1, -1), cond_all[rows]])
        for t in sched.timesteps:
            eps_u, eps_c = unet(torch.cat([x, x]), t, cond).sample.chunk(2)
            for k, v in (("x", x), ("t", torch.full((len(rows),), int(t))), ("caption", rows), ("eps_c", eps_c),
                         ("eps_u", eps_u)):
                out[k].append(v.clone())
            x = sched.step(eps_u + cfg.guidance_scale * (eps_c - eps_u), t, x).prev_sample
    return {k: torch.cat(v) for k, v in out.items()}


def _trajectory_loss(student, states: dict[str, torch.Tensor], cond_all: torch.Tensor, empty: torch.Tensor,
                     cfg: DistillConfig, g: torch.Generator) -> torch.Tensor:
    """Both branches' squared errors on a batch of trajectory states, plus ``guided_weight`` times the guided
    prediction's."""
    idx = torch.randint(0, len(states["x"]), (cfg.batch_size,), generator=g)
    x, t = states["x"][idx], states["t"][idx]
    cond = torch.cat([empty.expand(len(idx), -1, -1), cond_all[states["caption"][idx]]])
    s_u, s_c = student(torch.cat([x, x]), torch.cat([t, t]), cond).sample.chunk(2)
    t_u, t_c = states["eps_u"][idx], states["eps_c"][idx]
    loss = (s_c - t_c).pow(2).mean() + (s_u - t_u).pow(2).mean()
    if cfg.guided_weight:
        w = cfg.guidance_scale
        loss = loss + cfg.guided_weight * ((s_u + w * (s_c - s_u)) - (t_u + w * (t_c - t_u))).pow(2).mean()
    return loss


def distill(cfg: DistillConfig) -> dict:
    from tqdm.auto import tqdm

    if not cfg.teacher or not cfg.output:
        raise ValueError("give --teacher (a toy pipeline directory) and --output (where the student goes)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    pipe = load_pipeline(cfg.teacher, device="cpu", progress=False)
    teacher = pipe.unet.eval().requires_grad_(False)
    channels = tuple(int(c) for c in cfg.channels.split(","))
    if cfg.init_unet:
        from diffusers import UNet2DConditionModel

        student = UNet2DConditionModel.from_pretrained(cfg.init_unet)
        copied, total = 0, len(student.state_dict())
    else:
        student = base_model.make_unet(teacher.config.in_channels, channels, teacher.config.cross_attention_dim,
                                       cfg.seed + 3, teacher.config.sample_size)
        copied, total = transplant(student, teacher)

    data = base_model.make_dataset(cfg.n_scenes, cfg.seed, cfg.progress)
    with torch.no_grad():
        ids = base_model.tokenize(pipe.tokenizer, data.captions)
        cond_all = torch.cat([pipe.text_encoder(ids[i:i + 512])[0] for i in range(0, len(ids), 512)])
        empty = pipe.text_encoder(base_model.tokenize(pipe.tokenizer, [""]))[0]
    train_sched, _ = base_model.schedulers()
    alphas = train_sched.alphas_cumprod
    if cfg.targets == "trajectories":
        states = trajectories(pipe, cond_all, empty, cfg)
    else:
        latents = base_model.encode(pipe.vae, data.images) * pipe.vae.config.scaling_factor

    params = list(student.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    sched = base_model.warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    ema = WeightEMA(params, cfg.ema_decay) if cfg.ema_decay > 0 else None
    g = torch.Generator().manual_seed(cfg.seed + 13)
    student.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="distil", disable=not cfg.progress)
    for step in bar:
        if cfg.targets == "trajectories":
            loss = _trajectory_loss(student, states, cond_all, empty, cfg, g)
        else:
            idx, dropped, noise, t = base_model.draw_batch(latents, cfg.batch_size, cfg.cond_drop,
                                                           train_sched.config.num_train_timesteps, g)
            cond = cond_all[idx].clone()
            cond[dropped] = empty[0]
            xt = base_model.noised(latents[idx], noise, alphas, t)
            with torch.no_grad():
                target = teacher(xt, t, cond).sample
            loss = (student(xt, t, cond).sample - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(params, step)
        losses.append(loss.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{torch.stack(losses[-50:]).mean().item():.5f}", refresh=False)
    if ema is not None:
        ema.copy_to(params)
    student.eval()

    out = Path(cfg.output)
    base_model.save_pipeline(base_model.assemble(pipe.vae, pipe.text_encoder, pipe.tokenizer, student), out)
    n_teacher = sum(p.numel() for p in teacher.parameters())
    record = {"config": to_dict(cfg), "command": "python -m pluralign.toy.distill " + " ".join(sys.argv[1:]),
              "teacher_parameters": n_teacher, "student_parameters": sum(p.numel() for p in student.parameters()),
              "transplanted_tensors": [copied, total],
              "final_loss": float(torch.stack(losses[-100:]).mean()), "wall_seconds": round(time.perf_counter() - t0, 1)}
    (out / "distill.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    (cfg,) = parse((DistillConfig,), argv, prog="python -m pluralign.toy.distill",
                   description="Distil a toy pipeline's denoiser into a cheaper UNet.")
    record = distill(cfg)
    print(f"student: {record['student_parameters']} parameters (teacher {record['teacher_parameters']}), "
          f"{record['transplanted_tensors'][0]} of {record['transplanted_tensors'][1]} tensors from the teacher, "
          f"final loss {record['final_loss']:.5f}, {record['wall_seconds']:.0f} s -> {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "python -m pluralign.toy.distill"))
