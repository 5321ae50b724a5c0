"""GPU smoke check: a short intent-DPO run per family on random-init models of real shape.

No downloads: every component is built from a config written below (SD1.5 and SDXL UNets at full
size, SD3.5-Medium and FLUX.1-dev transformers with fewer blocks, small random text encoders with
the real hidden sizes, the real VAE layouts), saved as a diffusers pipeline directory and trained
through ``pluralign.trainers.train`` exactly as a recipe would: bf16, 8-bit AdamW, gradient
checkpointing, LoRA on the family's default targets, real resolution. Prints a markdown table of
s/step, pairs/s and peak GPU memory.

Then (``--generate N``, on by default; also after a failed training run) ``pluralign data generate``'s
``generate_dataset`` samples N prompt pairs with K = 2 candidates from the same pipeline directory,
scored by the model-free ``verifiers``, and a second table gives images/s, accepted pairs and peak GPU
memory. Random weights make noise, so the acceptance says nothing about a model; the stage checks that
on-policy generation runs at real shapes on the GPU.

    scripts/gpu_smoke.sh                       # all four families on cuda:0
    python scripts/gpu_smoke.py --families flux --steps 6 --resolution 512
    python scripts/gpu_smoke.py --generate 0   # training only
    python scripts/gpu_smoke.py --dry-run      # CPU, tiny sizes: checks the script itself

Without a CUDA GPU (and without ``--dry-run``) it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

FAMILIES = ("sd15", "sdxl", "sd35m", "flux")
RESOLUTION = {"sd15": 512, "sdxl": 1024, "sd35m": 1024, "flux": 1024}
PIPELINE_FAMILY = {"sd15": "sd", "sdxl": "sdxl", "sd35m": "sd3", "flux": "flux"}
DRY_DESCRIPTION = "tiny layout of the same classes (dry run)"
DESCRIPTION = {"sd15": "SD1.5 UNet (full size)", "sdxl": "SDXL UNet (full size)",
               "sd35m": "SD3.5-Medium MMDiT, 12 of 24 blocks", "flux": "FLUX.1-dev, 10+19 of 19+38 blocks"}
# the generation stage: K candidates per prompt, each family's usual guidance (Flux: the distilled guidance)
GEN_CANDIDATES = 2
GEN_GUIDANCE = {"sd15": 7.5, "sdxl": 7.0, "sd35m": 7.0, "flux": 3.5}
# prompt pairs whose attributes the model-free verifiers measure, so every pair is scored
GEN_PAIRS = (("a lighthouse on a rocky coast at dusk", "a blurry, out-of-focus photo of a lighthouse on a rocky "
              "coast at dusk", ["blurry"]),
             ("a bowl of oranges on a wooden table", "an underexposed, very dark photo of a bowl of oranges on a "
              "wooden table", ["underexposed"]),
             ("a portrait of an old fisherman at the harbour", "a noisy, grainy portrait of an old fisherman at the "
              "harbour", ["noisy"]),
             ("a red bicycle leaning against a brick wall", "a red bicycle leaning against a brick wall, with a strong "
              "blue colour cast", ["color_cast"]))


# ---------------------------------------------------------------------------------------------- components

def _clip(hidden: int, projection: bool, vocab: int, small: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hidden = 32 if small else hidden
    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                         num_attention_heads=max(1, hidden // 64) if not small else 2, max_position_embeddings=77,
                         projection_dim=hidden, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                         pad_token_id=vocab - 1, hidden_act="gelu")
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5(vocab: int, small: bool):
    from transformers import T5Config, T5EncoderModel

    d = 32 if small else 4096  # T5-XXL width: the joint attention input of SD3 and Flux
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=d, d_kv=8 if small else 64, d_ff=d * 2 if small else 1024,
                                   num_layers=1, num_heads=2 if small else 8, relative_attention_num_buckets=8,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


def _vae(latent_channels: int, small: bool, flow: bool, shift: float | None = None, scale: float = 0.18215):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * (2 if small else 4),
                         up_block_types=("UpDecoderBlock2D",) * (2 if small else 4),
                         block_out_channels=(8, 16) if small else (128, 256, 512, 512),
                         layers_per_block=1 if small else 2, norm_num_groups=4 if small else 32,
                         shift_factor=shift, scaling_factor=scale, use_quant_conv=not flow,
                         use_post_quant_conv=not flow)


def build_sd15(small: bool):
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from pluralign.tokenizers import clip_tokenizer

    tok = clip_tokenizer()
    te = _clip(768, False, len(tok), small)
    unet = UNet2DConditionModel(  # stable-diffusion-v1-5 unet/config.json
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=1 if small else 2,
        block_out_channels=(32, 64) if small else (320, 640, 1280, 1280),
        down_block_types=(("CrossAttnDownBlock2D", "DownBlock2D") if small else
                          ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")),
        up_block_types=(("UpBlock2D", "CrossAttnUpBlock2D") if small else
                        ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
        cross_attention_dim=te.config.hidden_size, attention_head_dim=8, norm_num_groups=8 if small else 32)
    with torch.device("cpu"):  # scheduler tables stay on the CPU (and work under a meta-device build)
        sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                              clip_sample=False)
    return StableDiffusionPipeline(vae=_vae(4, small, False), text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_sdxl(small: bool):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from pluralign.tokenizers import clip_tokenizer

    tok = clip_tokenizer()
    te1, te2 = _clip(768, False, len(tok), small), _clip(1280, True, len(tok), small)
    h1, h2 = te1.config.hidden_size, te2.config.hidden_size
    time_dim = 8 if small else 256
    unet = UNet2DConditionModel(  # stable-diffusion-xl-base-1.0 unet/config.json
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=1 if small else 2,
        block_out_channels=(32, 64) if small else (320, 640, 1280),
        down_block_types=(("DownBlock2D", "CrossAttnDownBlock2D") if small else
                          ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")),
        up_block_types=(("CrossAttnUpBlock2D", "UpBlock2D") if small else
                        ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
        transformer_layers_per_block=(1, 1) if small else (1, 2, 10),
        attention_head_dim=(2, 4) if small else (5, 10, 20), cross_attention_dim=h1 + h2,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + h2, norm_num_groups=8 if small else 32)
    with torch.device("cpu"):
        sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(vae=_vae(4, small, False, scale=0.13025), text_encoder=te1, text_encoder_2=te2,
                                     tokenizer=tok, tokenizer_2=clip_tokenizer(), unet=unet, scheduler=sched,
                                     add_watermarker=False)


def build_sd35m(small: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from pluralign.tokenizers import clip_tokenizer, t5_tokenizer

    clip, t5 = clip_tokenizer(), t5_tokenizer()
    te1, te2, te3 = _clip(768, True, len(clip), small), _clip(1280, True, len(clip), small), _t5(len(t5), small)
    layers = 2 if small else 12  # SD3.5-Medium has 24 MMDiT-X blocks, the first 13 with a second attention
    transformer = SD3Transformer2DModel(  # stable-diffusion-3.5-medium transformer/config.json, fewer blocks
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=layers,
        attention_head_dim=8 if small else 64, num_attention_heads=2 if small else 24,
        joint_attention_dim=te3.config.d_model, caption_projection_dim=16 if small else 1536,
        pooled_projection_dim=te1.config.hidden_size + te2.config.hidden_size, pos_embed_max_size=384,
        dual_attention_layers=tuple(range(min(layers, 13) // 2 if not small else 1)), qk_norm="rms_norm")
    with torch.device("cpu"):
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=sched,
        vae=_vae(16, small, True, shift=0.0609, scale=1.5305), text_encoder=te1, tokenizer=clip, text_encoder_2=te2,
        tokenizer_2=clip_tokenizer(), text_encoder_3=te3, tokenizer_3=t5)


def build_flux(small: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from pluralign.tokenizers import clip_tokenizer, t5_tokenizer

    clip, t5 = clip_tokenizer(), t5_tokenizer()
    te1, te2 = _clip(768, False, len(clip), small), _t5(len(t5), small)
    transformer = FluxTransformer2DModel(  # FLUX.1-dev transformer/config.json, about half the blocks
        patch_size=1, in_channels=64, num_layers=1 if small else 10, num_single_layers=1 if small else 19,
        attention_head_dim=8 if small else 128, num_attention_heads=2 if small else 24,
        joint_attention_dim=te2.config.d_model, pooled_projection_dim=te1.config.hidden_size, guidance_embeds=True,
        axes_dims_rope=(2, 2, 4) if small else (16, 56, 56))
    with torch.device("cpu"):
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(scheduler=sched, vae=_vae(16, small, True, shift=0.1159, scale=0.3611), text_encoder=te1,
                        tokenizer=clip, text_encoder_2=te2, tokenizer_2=t5, transformer=transformer)


BUILDERS = {"sd15": build_sd15, "sdxl": build_sdxl, "sd35m": build_sd35m, "flux": build_flux}


def save_pipeline(family: str, path: Path, *, small: bool, device: str, dtype: torch.dtype) -> tuple[Path, int]:
    """Build the random-init pipeline of ``family`` on ``device`` and save it (``dtype``) to ``path``."""
    torch.manual_seed(0)
    with torch.device(device):
        pipe = BUILDERS[family](small)
    pipe.to(dtype=dtype)
    denoiser = pipe.unet if hasattr(pipe, "unet") and pipe.unet is not None else pipe.transformer
    n_params = sum(p.numel() for p in denoiser.parameters())
    pipe.save_pretrained(path, safe_serialization=True)
    del pipe, denoiser
    return path, n_params


# ---------------------------------------------------------------------------------------------- runs

def run_family(family: str, work: Path, args) -> dict:
    from pluralign.trainers import DPOTrainConfig, train

    small = args.dry_run
    device = "cpu" if small else "cuda"
    res = args.resolution or (32 if small else RESOLUTION[family])
    t0 = time.perf_counter()
    model_dir, n_params = save_pipeline(family, work / f"model-{family}", small=small, device=device,
                                        dtype=torch.float32 if small else torch.bfloat16)
    build_s = time.perf_counter() - t0
    if not small:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    config = DPOTrainConfig(
        pretrained_model=str(model_dir), family=PIPELINE_FAMILY[family], dataset="builtin:shapes", resolution=res,
        output_dir=str(work / f"run-{family}"), cache_dir=str(work / "cache"), max_steps=args.steps,
        train_batch_size=args.batch, gradient_accumulation_steps=1, rank=args.rank, alpha=args.rank,
        mixed_precision="no" if small else "bf16", optimizer=args.optimizer, gradient_checkpointing=True,
        learning_rate=1e-5, beta=5000.0, report_to="none", export_kohya=False, checkpointing_steps=0,
        logging_steps=1, seed=0)
    result = train(config)
    peak = torch.cuda.max_memory_allocated() / 2**30 if not small else float("nan")
    steps = [h["s_per_step"] for h in result.history[1:]] or [h["s_per_step"] for h in result.history]
    s_step = statistics.median(steps)
    row = {"family": family, "model": DRY_DESCRIPTION if small else DESCRIPTION[family], "denoiser_params_M": round(n_params / 1e6, 1),
           "resolution": res, "pairs_per_step": args.batch, "s_per_step": s_step, "pairs_per_s": args.batch / s_step,
           "peak_gpu_mem_GiB": peak, "steps": result.steps, "final_loss": result.history[-1]["loss"],
           "build_s": build_s}
    del result
    gc.collect()
    if not small:
        torch.cuda.empty_cache()
    return row


def run_generate(family: str, work: Path, args) -> dict:
    """The generation stage of ``family`` on the pipeline :func:`run_family` saved (whether or not its
    training passed): the ``gen_*`` entries of its row, or ``generate_error``."""
    model_dir = work / f"model-{family}"
    res = args.resolution or (32 if args.dry_run else RESOLUTION[family])
    print(f"== {family}: data generate, {args.generate} prompt pairs", file=sys.stderr, flush=True)
    try:
        if not (model_dir / "model_index.json").is_file():
            raise FileNotFoundError(f"no pipeline at {model_dir}: building it failed")
        return generate_family(family, model_dir, work, res, args)
    except Exception as exc:
        traceback.print_exc()
        return {"gen_resolution": res, "generate_error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            try:
                torch.cuda.empty_cache()
            except RuntimeError:  # a sticky CUDA error: the next family reports it
                pass


def generate_family(family: str, model_dir: Path, work: Path, res: int, args) -> dict:
    """``generate_dataset`` on ``args.generate`` prompt pairs, K = 2, scorer ``verifiers``, from ``model_dir``."""
    from pluralign.eval.generate import load_pipeline
    from pluralign.onpolicy.config import GenerateConfig
    from pluralign.onpolicy.generate import generate_dataset

    small = args.dry_run
    device, dtype = ("cpu", "float32") if small else ("cuda", "bfloat16")
    suite = work / f"generate-{family}.jsonl"
    suite.write_text("".join(json.dumps({"prompt_o": o, "prompt_a": a, "attributes": attrs, "seed": i}) + "\n"
                             for i, (o, a, attrs) in ((i, GEN_PAIRS[i % len(GEN_PAIRS)]) for i in range(args.generate))))
    cfg = GenerateConfig(generator=str(model_dir), suite=str(suite), num_candidates=GEN_CANDIDATES, scorer="verifiers",
                         num_inference_steps=args.generate_steps, guidance_scale=GEN_GUIDANCE[family], height=res,
                         width=res, batch_size=2 * GEN_CANDIDATES, shard_size=args.generate, device=device, dtype=dtype,
                         output_dir=str(work / f"generated-{family}"), overwrite=True, resume=False)
    if not small:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    pipe = load_pipeline(str(model_dir), device, dtype)  # what generate_dataset itself loads from cfg.generator
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = generate_dataset(cfg, pipe=pipe, progress=False)
    gen_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if not small else float("nan")
    del pipe
    summary = json.loads((out / "generate_log.json").read_text())["summary"]
    return {"gen_resolution": res, "gen_prompt_pairs": summary["prompt_pairs"], "gen_candidates": GEN_CANDIDATES,
            "gen_images": summary["images"], "gen_steps": args.generate_steps, "gen_load_s": load_s, "gen_s": gen_s,
            "gen_images_per_s": summary["images"] / gen_s, "gen_accepted": summary["accepted"],
            "gen_dropped": summary["dropped"], "gen_peak_gpu_mem_GiB": peak}


def _memory(gib: float) -> str:
    return "n/a (CPU)" if gib != gib else f"{gib:.1f} GiB"  # NaN: no CUDA device to measure


def table(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| family | model (random init) | denoiser params | resolution | pairs/step | s/step | pairs/s | peak GPU memory |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['model']} | FAILED: {r['error']} | | | | | |")
            continue
        mem = _memory(r["peak_gpu_mem_GiB"])
        lines.append(f"| {r['family']} | {r['model']} | {r['denoiser_params_M']:.0f}M | {r['resolution']} | "
                     f"{r['pairs_per_step']} | {r['s_per_step']:.3f} | {r['pairs_per_s']:.2f} | {mem} |")
    return "\n".join(lines)


def generate_table(rows: list[dict], header: str) -> str:
    """The generation stage's rows (families that reached it), or "" when none did."""
    rows = [r for r in rows if "gen_images" in r or "generate_error" in r]
    if not rows:
        return ""
    lines = [header, "",
             "| family | resolution | prompt pairs | images | steps | images/s | accepted pairs | dropped | peak GPU memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "generate_error" in r:
            lines.append(f"| {r['family']} | {r['gen_resolution']} | FAILED: {r['generate_error']} | | | | | | |")
            continue
        mem = _memory(r["gen_peak_gpu_mem_GiB"])
        dropped = ", ".join(f"{k} {v}" for k, v in r["gen_dropped"].items()) or "none"
        lines.append(f"| {r['family']} | {r['gen_resolution']} | {r['gen_prompt_pairs']} | {r['gen_images']} | "
                     f"{r['gen_steps']} | {r['gen_images_per_s']:.2f} | {r['gen_accepted']} of {r['gen_prompt_pairs']} | "
                     f"{dropped} | {mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per family (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=1, help="pairs per step")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--optimizer", default="adamw8bit", choices=("adamw8bit", "adamw"),
                        help="the recipes' 8-bit AdamW (bitsandbytes) or torch AdamW")
    parser.add_argument("--resolution", type=int, default=None, help="override the per-family real resolution")
    parser.add_argument("--work-dir", type=Path, default=None, help="where models/runs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--generate", type=int, default=2, metavar="N",
                        help="after training, run data generate's generate_dataset on N prompt pairs per family "
                        f"(K={GEN_CANDIDATES}, scorer verifiers) and report images/s; 0 skips it")
    parser.add_argument("--generate-steps", type=int, default=20, help="denoising steps per generated image")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, fp32: checks the script, no GPU")
    args = parser.parse_args(argv)
    if args.generate < 0 or args.generate_steps < 1:
        parser.error("--generate must be >= 0 and --generate-steps >= 1")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_smoke: ERROR: no CUDA GPU is visible (torch.cuda.is_available() is False). This check measures "
              "GPU training; run it on a GPU machine, or pass --dry-run for the CPU self-check.", file=sys.stderr)
        return 2
    gpu = "CPU dry run" if args.dry_run else torch.cuda.get_device_name(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pluralign-gpu-smoke-") as tmp:
        work = args.work_dir or Path(tmp)
        for fam in families:
            print(f"== {fam}: {DESCRIPTION[fam]}", file=sys.stderr, flush=True)
            try:
                rows.append(run_family(fam, work, args))
            except Exception as exc:  # one family failing (OOM, a missing kernel) must not lose the others
                traceback.print_exc()
                rows.append({"family": fam, "model": DESCRIPTION[fam], "error": f"{type(exc).__name__}: {exc}"[:300]})
                gc.collect()
                if torch.cuda.is_available():
                    try:
                        torch.cuda.empty_cache()
                    except RuntimeError as cleanup:  # a sticky CUDA error (illegal address) poisons the context:
                        print(f"gpu_smoke: CUDA unusable after {fam}: {cleanup}", file=sys.stderr)  # later rows fail too
            if args.generate > 0:  # also after a failed training step: generation is forward passes only
                rows[-1].update(run_generate(fam, work, args))
            if args.json:  # after every family, so a run cut short keeps what it measured
                args.json.write_text(json.dumps({"device": gpu, "rows": rows}, indent=1))
    header = (f"GPU smoke, {time.strftime('%Y-%m-%d')}, {gpu}, torch {torch.__version__}: bf16, "
              f"{'8-bit AdamW' if args.optimizer == 'adamw8bit' else 'AdamW'}, gradient "
              f"checkpointing, LoRA rank {args.rank}, median over steps 2..{args.steps}" if not args.dry_run else
              f"GPU smoke DRY RUN (CPU, tiny models, fp32), {time.strftime('%Y-%m-%d')}: not GPU numbers")
    print(table(rows, header))
    gen = generate_table(rows, f"data generate on the same pipelines ({'bf16' if not args.dry_run else 'fp32, CPU'}): "
                         f"{args.generate} prompt pairs x K={GEN_CANDIDATES} candidates x 2 prompts, scorer verifiers; "
                         "images/s over the whole generate_dataset call (sampling with the first call's warm-up, "
                         "scoring, writing the dataset). Random weights make noise: the accepted pairs say nothing "
                         "about a model.")
    if gen:
        print()
        print(gen)
    return 1 if any("error" in r or "generate_error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
