"""The toy base model: a genuine ``StableDiffusionPipeline`` trained from scratch on the toy world.

Three stages, all seeded (random draws come from CPU generators, so a run on a GPU sees the same
data, noise and timesteps as one on the CPU; only float rounding differs):

1. an ``AutoencoderKL`` (32x32 images <-> 16x16 latents) trained as an autoencoder on clean and
   degraded renders, with enough latent channels that grain, blur and exposure survive the
   round trip (measured by :func:`vae_fidelity`);
2. the dataset encoded once into scaled latents, captions tokenized with the project's CLIP
   tokenizer: the ordinary caption for a clean render, the anti-aesthetic caption for a degraded
   one, so the model learns to follow both kinds of request;
3. a ``UNet2DConditionModel`` and a ``CLIPTextModel`` trained jointly with the plain epsilon
   denoising loss, captions dropped 10% of the time for classifier-free guidance.

Full-parameter pretraining is deliberately a small plain loop here; preference fine-tuning of
the result goes through ``pluralign.trainers`` like any user model.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pluralign.env import check_device
from pluralign.rewards import verifiers
from pluralign.tokenizers import clip_tokenizer, copy_clip_license

from ..config import option
from ..trainers.ema import WeightEMA
from . import world


@dataclass
class BaseModelConfig:
    seed: int = option(0, "seed of the data, the initialisation and the training noise")
    n_scenes: int = option(8000, "scenes in the training set; each gives a clean and one degraded image", min=1)
    latent_channels: int = option(12, "VAE latent channels", min=1)
    latent_size: int = option(16, "side of the latent grid: 16 (one downsampling of the 32x32 world) or 8 (two; the "
                              "denoiser then costs about 2.5 times less per call, see docs/toy.md)", choices=(16, 8))
    vae_steps: int = option(3000, "autoencoder training steps", min=1)
    fidelity_scenes: int = option(64, "held-out scenes of the autoencoder's per-attribute fidelity check", min=1)
    vae_batch_size: int = option(32, "autoencoder batch size", min=1)
    vae_lr: float = option(2e-3, "autoencoder learning rate", min=0)
    vae_kl_weight: float = option(1e-6, "weight of the KL term of the autoencoder", min=0)
    vae_hf_weight: float = option(3.0, "weight of an L1 loss on horizontal and vertical pixel differences: "
                                  "MSE barely sees grain and fine blur, this term makes the latent keep them", min=0)
    vae_extra_renders: int = option(10000, "extra renders of vae_extra_attribute added to the autoencoder's data only "
                                    "(the denoiser never sees them): grain is the attribute a 16x16 latent "
                                    "drops first, and oversampling it makes the latent keep it", min=0)
    vae_extra_attribute: str = option("noisy", "attribute of those extra renders", choices=world.ATTRIBUTES)
    unet_steps: int = option(12000, "denoiser training steps", min=1)
    batch_size: int = option(64, "denoiser batch size", min=1)
    lr: float = option(1e-3, "denoiser (UNet + text encoder) peak learning rate", min=0)
    warmup_steps: int = option(100, "linear warm-up steps of the denoiser", min=0)
    ema_decay: float = option(0.998, "EMA decay of the denoiser weights (0 disables)", min=0, max=1)
    min_snr_gamma: float = option(5.0, "Min-SNR loss weighting (Hang et al. 2023; 0 disables): converges several "
                                  "times faster, which matters on a CPU budget", min=0)
    cond_drop: float = option(0.1, "probability of training on the empty caption (classifier-free guidance)",
                              min=0, max=1)
    unet_channels: tuple[int, ...] = option((32, 48, 64), "UNet block widths (16x16 -> 8x8 -> 4x4)")
    text_hidden: int = option(64, "CLIP text encoder width = UNet cross-attention width", min=8)
    text_layers: int = option(2, "CLIP text encoder layers", min=1)
    num_inference_steps: int = option(20, "DDIM steps used to sample the model (recorded for eval)", min=1)
    guidance_scale: float = option(6.0, "classifier-free guidance scale used to sample the model (chosen on a "
                                    "validation suite, seed 5000, among 4/6/8)", min=1)
    max_tokens: int = option(32, "tokenizer model_max_length (the world's longest caption is 25 tokens)", min=8,
                             max=77)
    init_from: str = option("", "a toy base pipeline directory to continue from instead of training from scratch: its "
                            "autoencoder, text encoder and denoiser start this build's (their architecture options are "
                            "then ignored); the world's semantic attributes were added to the shipped base this way")
    device: str = option("cpu", "where the autoencoder and the denoiser train (cpu, cuda, cuda:1, ...); the models "
                         "are moved back to the CPU afterwards")

    def __post_init__(self):
        check_device(self.device)  # an hour of training should not start on a device that is not there


# --- data ------------------------------------------------------------------------------------------

@dataclass
class ToyData:
    images: np.ndarray  # N x 32 x 32 x 3 float32 in [0, 1]
    captions: list[str]
    attributes: list  # None for clean


def make_dataset(n_scenes: int, seed: int, progress: bool = True) -> ToyData:
    """For each scene its clean render (ordinary caption) and one degraded variant (anti caption)."""
    from tqdm.auto import tqdm

    rng = random.Random(seed + 1)
    images, captions, attrs = [], [], []
    for i, scene in enumerate(tqdm(world.sample_scenes(n_scenes, seed, p_second=0.0), desc="toy data",
                                   disable=not progress)):
        for attr in (None, world.ATTRIBUTES[rng.randrange(len(world.ATTRIBUTES))]):
            img, cap = world.variant(scene, attr, seed=seed * 1_000_003 + i)
            images.append(world.to_array(img))
            captions.append(cap)
            attrs.append(attr)
    return ToyData(np.stack(images), captions, attrs)


def extra_renders(attribute: str, n: int, seed: int) -> ToyData:
    """``n`` uncaptioned renders of ``attribute`` on fresh scenes (autoencoder data only)."""
    scenes = world.sample_scenes(n, seed + 99, p_second=0.0)
    images = [world.to_array(world.degraded_image(s, attribute, seed=seed * 7_919 + i)) for i, s in enumerate(scenes)]
    return ToyData(np.stack(images) if images else np.zeros((0, world.SIZE, world.SIZE, 3), np.float32),
                   [""] * n, [attribute] * n)


def vae_dataset(data: ToyData, cfg: BaseModelConfig) -> ToyData:
    """The autoencoder's data: the denoiser's, plus ``cfg.vae_extra_renders`` renders of the extra attribute."""
    if not cfg.vae_extra_renders:
        return data
    extra = extra_renders(cfg.vae_extra_attribute, cfg.vae_extra_renders, cfg.seed)
    return ToyData(np.concatenate([data.images, extra.images]), data.captions + extra.captions,
                   data.attributes + extra.attributes)


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous() * 2 - 1


# --- stage 1: autoencoder -----------------------------------------------------------------------

def make_vae(latent_channels: int, seed: int, latent_size: int = 16):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    # one downsampling between levels; at 8x8 the deepest level holds 8192 numbers, as the shipped 16x16x32 (32 channels
    # there, 2048 for the image's 3072, lost the grain of noisy renders; 128 kept none after 3000 steps either: docs/toy.md)
    widths = {16: (32, 32), 8: (32, 64, 128)}[latent_size]
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths, layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=8, sample_size=world.SIZE,
        # self-attention in the mid block costs 5x the rest of this VAE on CPU and buys nothing at 32x32
        mid_block_add_attention=False,
    )


def _continued(cfg: BaseModelConfig, part: str):
    """``part`` (vae, text_encoder, unet) of the pipeline at ``cfg.init_from``, to continue training."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    path = Path(cfg.init_from) / part
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"init_from: {path} has no config.json; give the directory of a toy base pipeline "
                                "(e.g. pluralign/toy/checkpoints/base)")
    cls = {"vae": AutoencoderKL, "text_encoder": CLIPTextModel, "unet": UNet2DConditionModel}[part]
    model = cls.from_pretrained(str(path))
    if part == "unet" and model.config.sample_size != cfg.latent_size:
        raise ValueError(f"init_from: {path} denoises {model.config.sample_size}x{model.config.sample_size} latents, "
                         f"latent_size is {cfg.latent_size}; set --latent_size {model.config.sample_size}")
    if part == "vae" and model.config.latent_channels != cfg.latent_channels:
        raise ValueError(f"init_from: {path} has {model.config.latent_channels} latent channels, latent_channels is "
                         f"{cfg.latent_channels}; set --latent_channels {model.config.latent_channels}")
    return model.float()


def high_frequency_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and vertical neighbour differences of two NCHW batches."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def train_vae(data: ToyData, cfg: BaseModelConfig, progress: bool = True):
    from tqdm.auto import tqdm

    dev = torch.device(cfg.device)
    vae = _continued(cfg, "vae") if cfg.init_from else make_vae(cfg.latent_channels, cfg.seed, cfg.latent_size)
    vae = vae.to(dev)
    x_all = _nchw(data.images).to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.vae_lr, total_steps=cfg.vae_steps, pct_start=0.1)
    g = torch.Generator().manual_seed(cfg.seed + 11)
    vae.train()
    bar = tqdm(range(cfg.vae_steps), desc="autoencoder", disable=not progress)
    for step in bar:
        x = x_all[torch.randint(0, len(x_all), (cfg.vae_batch_size,), generator=g).to(dev)]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(dev)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + cfg.vae_kl_weight * post.kl().mean()
        if cfg.vae_hf_weight:
            loss = loss + cfg.vae_hf_weight * high_frequency_l1(rec, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:  # reading the loss waits for the device
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    vae.eval()
    return vae.to("cpu")


@torch.no_grad()
def encode(vae, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Unscaled latent means of float HxWx3 images."""
    x = _nchw(images)
    return torch.cat([vae.encode(x[i:i + batch_size]).latent_dist.mean for i in range(0, len(x), batch_size)])


@torch.no_grad()
def reconstruct(vae, images: np.ndarray) -> np.ndarray:
    rec = vae.decode(encode(vae, images)).sample
    return ((rec.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def vae_fidelity(vae, n: int = 64, seed: int = 4242) -> dict:
    """Does each attribute survive the autoencoder? For every attribute, the verifier-style
    statistic of the degraded image minus that of its clean twin, before and after reconstruction
    (a ratio near 1 means the difference survives), plus the reconstruction PSNR (of clean renders, and
    of semantic attributes' renders, which no statistic measures)."""
    measure = {  # the statistic that shows each attribute (sign: how it moves)
        "blurry": "sharpness", "underexposed": "brightness", "overexposed": "brightness", "muted": "saturation",
        "noisy": "noise", "low_contrast": "contrast", "color_cast": "color_cast", "small_subject": "subject_size",
        "off_center": "subject_offcenter",
    }
    scenes = world.sample_scenes(n, seed)
    clean = np.stack([world.to_array(world.render(s)) for s in scenes])
    rec_clean = reconstruct(vae, clean)
    mse = float(np.mean((rec_clean - clean) ** 2))
    out = {"psnr_clean": round(10 * math.log10(1 / max(mse, 1e-12)), 2), "by_attribute": {}}
    for attr in world.ATTRIBUTES:
        deg = np.stack([world.to_array(world.degraded_image(s, attr, seed=seed + i)) for i, s in enumerate(scenes)])
        rec_deg = reconstruct(vae, deg)
        if attr not in measure:  # scene content (cracks, outlines, rain): no statistic, so how well it is redrawn
            err = float(np.mean((rec_deg - deg) ** 2))
            out["by_attribute"][attr] = {"psnr": round(10 * math.log10(1 / max(err, 1e-12)), 2)}
            continue
        f = verifiers.VERIFIERS[measure[attr]]
        d_true = np.mean([f(a) - f(b) for a, b in zip(deg, clean)])
        d_rec = np.mean([f(a) - f(b) for a, b in zip(rec_deg, rec_clean)])
        out["by_attribute"][attr] = {"verifier": measure[attr], "delta_images": round(float(d_true), 4),
                                     "delta_reconstructed": round(float(d_rec), 4),
                                     "ratio": round(float(d_rec / d_true), 3) if d_true else None}
    return out


# --- stage 3: text encoder + denoiser -----------------------------------------------------------

def make_text_encoder(tokenizer, hidden: int, layers: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
    )
    return CLIPTextModel(cfg)


def make_unet(latent_channels: int, channels: tuple[int, ...], cross_dim: int, seed: int, latent_size: int = 16):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    n = len(channels)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=tuple(channels), layers_per_block=1,
        # attention only below full latent resolution: a 16x16 level would dominate CPU time
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_dim, attention_head_dim=8, norm_num_groups=8,
    )


def schedulers():
    """(training scheduler, sampling scheduler). A linear beta schedule reaches a near-zero
    terminal SNR, so the sampler can produce very dark and very bright images (SD's scaled-linear
    schedule leaks the mean brightness at t=T and cannot)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
              prediction_type="epsilon", clip_sample=False)
    return DDPMScheduler(**kw), DDIMScheduler(**kw, set_alpha_to_one=False, timestep_spacing="trailing")


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def warmup_cosine(opt: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up to the peak rate, then a cosine down to a tenth of it at ``total_steps``."""

    def lr_at(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        prog = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def draw_batch(latents: torch.Tensor, batch_size: int, cond_drop: float, num_timesteps: int, g: torch.Generator):
    """One denoising batch's random draws, on the CPU generator ``g`` in a fixed order (the same stream on any
    device): rows of ``latents``, which of them take the empty caption, noise, timesteps."""
    idx = torch.randint(0, len(latents), (batch_size,), generator=g)
    dropped = torch.rand(batch_size, generator=g) < cond_drop
    noise = torch.randn((batch_size, *latents.shape[1:]), generator=g)
    t = torch.randint(0, num_timesteps, (batch_size,), generator=g)
    return idx, dropped, noise, t


def noised(x0: torch.Tensor, noise: torch.Tensor, alphas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The forward diffusion: ``x0`` noised to timestep ``t`` under the cumulative ``alphas``."""
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def train_denoiser(latents: torch.Tensor, ids: torch.Tensor, tokenizer, cfg: BaseModelConfig, progress: bool = True):
    """Jointly train a UNet and a CLIP text encoder on scaled ``latents`` with token ``ids``."""
    from tqdm.auto import tqdm

    dev = torch.device(cfg.device)
    if cfg.init_from:
        text_encoder, unet = _continued(cfg, "text_encoder").to(dev), _continued(cfg, "unet").to(dev)
    else:
        text_encoder = make_text_encoder(tokenizer, cfg.text_hidden, cfg.text_layers, cfg.seed + 2).to(dev)
        unet = make_unet(cfg.latent_channels, cfg.unet_channels, cfg.text_hidden, cfg.seed + 3, cfg.latent_size).to(dev)
    train_sched, _ = schedulers()
    alphas = train_sched.alphas_cumprod.to(dev)
    empty = tokenize(tokenizer, [""])[0].to(dev)
    latents, ids = latents.to(dev), ids.to(dev)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.unet_steps)
    ema = WeightEMA(params, cfg.ema_decay) if cfg.ema_decay > 0 else None
    g = torch.Generator().manual_seed(cfg.seed + 13)
    unet.train()
    text_encoder.train()
    bar = tqdm(range(cfg.unet_steps), desc="denoiser", disable=not progress)
    losses = []
    for step in bar:
        idx, dropped, noise, t = (v.to(dev) for v in draw_batch(latents, cfg.batch_size, cfg.cond_drop,
                                                                 train_sched.config.num_train_timesteps, g))
        x0, tok = latents[idx], ids[idx].clone()
        tok[dropped] = empty
        xt = noised(x0, noise, alphas, t)
        cond = text_encoder(tok)[0]
        err = (unet(xt, t, cond).sample - noise).pow(2).mean(dim=(1, 2, 3))
        if cfg.min_snr_gamma > 0:
            snr = alphas[t] / (1 - alphas[t])
            err = err * snr.clamp(max=cfg.min_snr_gamma) / snr
        loss = err.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(params, step)
        losses.append(loss.detach())
        if step % 20 == 0:  # reading the loss waits for the device, so only now and then
            bar.set_postfix(loss=f"{torch.stack(losses[-50:]).mean().item():.4f}", refresh=False)
    if ema is not None:
        ema.copy_to(params)
    unet.eval()
    text_encoder.eval()
    return unet.to("cpu"), text_encoder.to("cpu"), {"final_loss": float(torch.stack(losses[-100:]).mean())}


def assemble(vae, text_encoder, tokenizer, unet):
    from diffusers import StableDiffusionPipeline

    _, sample_sched = schedulers()
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sample_sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def train_base(cfg: BaseModelConfig, progress: bool = True):
    """Train the whole base pipeline; returns ``(pipe, record)`` (record: timings, VAE fidelity, losses)."""
    record: dict = {}
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    data = make_dataset(cfg.n_scenes, cfg.seed, progress)
    record["data_seconds"] = round(time.time() - t0, 1)
    t1 = time.time()
    vae = train_vae(vae_dataset(data, cfg), cfg, progress)  # the enlarged copy is freed once trained
    lat = encode(vae, data.images)
    scale = float(1.0 / lat.std())
    vae.register_to_config(scaling_factor=scale)
    record["vae_seconds"] = round(time.time() - t1, 1)
    record["vae_scaling_factor"] = scale
    try:
        record["vae_fidelity"] = vae_fidelity(vae, cfg.fidelity_scenes)
    except ImportError:  # verifiers not installed in a trimmed environment
        pass
    else:  # worth seeing before the long denoiser stage: an attribute the latent drops cannot be generated
        # a pixel attribute's statistic ratio (near 1: it survives), a semantic one's reconstruction PSNR
        kept = {a: r.get("ratio", r.get("psnr")) for a, r in record["vae_fidelity"]["by_attribute"].items()}
        print(f"autoencoder: PSNR {record['vae_fidelity']['psnr_clean']} dB, attribute ratio (pixel) or PSNR dB "
              f"(semantic) {kept}", flush=True)
    tokenizer = clip_tokenizer(cfg.max_tokens)
    t2 = time.time()
    unet, text_encoder, stats = train_denoiser(lat * scale, tokenize(tokenizer, data.captions), tokenizer, cfg,
                                               progress)
    record["denoiser_seconds"] = round(time.time() - t2, 1)
    record.update(stats)
    return assemble(vae, text_encoder, tokenizer, unet), record


def save_pipeline(pipe, path: str | Path) -> Path:
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    copy_clip_license(path / "tokenizer")
    return path


def generate(pipe, prompts: list[str], seeds: list[int], num_inference_steps: int, guidance_scale: float,
             batch_size: int = 64):
    """PIL images, one per (prompt, seed): a fixed per-image generator, so I_o and I_a of a row share noise."""
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i:i + batch_size]]
        res = pipe(prompts[i:i + batch_size], generator=gens, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, height=world.SIZE, width=world.SIZE)
        out += res.images
    return out
