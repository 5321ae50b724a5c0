"""On-disk cache of VAE latents and prompt embeddings (safetensors), and the encoders behind it.

A key is ``sha256(content) + encoder identity``: the image's pixels (mode, size, bytes) or the
prompt text, plus a fingerprint of the encoder (class, config, the hash of a few weight tensors)
and the training resolution. A second run over the same pairs and model finds every key and never
calls the VAE or the text encoders; changing the model, resolution or an image makes new keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm


def default_cache_dir() -> Path:
    return Path(os.environ.get("PLURALIGN_CACHE", Path.home() / ".cache" / "pluralign"))


def fingerprint(*modules, extra: str = "") -> str:
    """Identity of one or more encoders: class, config and a hash of their first/last weights."""
    h = hashlib.sha256(extra.encode())
    for m in modules:
        h.update(type(m).__name__.encode())
        cfg = getattr(m, "config", None)
        cfg = dict(cfg) if cfg is not None and not hasattr(cfg, "to_dict") else (cfg.to_dict() if cfg else {})
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
        params = list(m.parameters())
        for p in (params[0], params[-1]) if params else ():
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def image_key(image: Image.Image) -> str:
    image = image.convert("RGB")
    h = hashlib.sha256(f"{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:32]


def text_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]


def to_pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the short side to ``resolution``, center-crop a square, scale to [-1, 1]: ``[3, R, R]``."""
    image = image.convert("RGB")
    w, h = image.size
    s = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


@torch.no_grad()
def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """Latents as the denoiser sees them: VAE posterior mean, shifted and scaled."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    lat = dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((lat - shift) * vae.config.scaling_factor).float()


class TensorCache:
    """One safetensors file per key under ``root/<kind>/<encoder id>/``."""

    def __init__(self, root: str | Path, kind: str, encoder_id: str):
        self.dir = Path(root) / kind / encoder_id
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        p = self.path(key)
        return load_file(str(p)) if p.exists() else None

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        p = self.path(key)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, p)


def cached_latents(vae, images: list[Image.Image], resolution: int, cache: TensorCache | None,
                   batch_size: int = 16, desc: str = "encoding images") -> torch.Tensor:
    """Latents for ``images`` ([N, C, h, w]); encodes only what the cache lacks."""
    keys = [image_key(im) for im in images]
    found: dict[str, torch.Tensor] = {}
    if cache is not None:
        for k in dict.fromkeys(keys):
            hit = cache.get(k)
            if hit is not None:
                found[k] = hit["latents"]
    todo = [(k, im) for k, im in dict(zip(keys, images)).items() if k not in found]
    for i in tqdm(range(0, len(todo), batch_size), desc=desc, disable=not todo):
        chunk = todo[i:i + batch_size]
        lat = encode_pixels(vae, torch.stack([to_pixels(im, resolution) for _, im in chunk]))
        for (k, _), latent in zip(chunk, lat):
            found[k] = latent.cpu()  # hits load on the CPU: keep every row there (batches move to the device)
            if cache is not None:
                cache.put(k, {"latents": found[k]})
    return torch.stack([found[k] for k in keys])


def cached_prompts(encode, prompts: list[str], cache: TensorCache | None, batch_size: int = 32,
                   desc: str = "encoding prompts") -> dict[str, torch.Tensor]:
    """Conditioning tensors for ``prompts`` (dict of [N, ...]); ``encode(list[str]) -> dict``."""
    keys = [text_key(p) for p in prompts]
    found: dict[str, dict[str, torch.Tensor]] = {}
    if cache is not None:
        for k in dict.fromkeys(keys):
            hit = cache.get(k)
            if hit is not None:
                found[k] = hit
    todo = [(k, p) for k, p in dict(zip(keys, prompts)).items() if k not in found]
    for i in tqdm(range(0, len(todo), batch_size), desc=desc, disable=not todo):
        chunk = todo[i:i + batch_size]
        with torch.no_grad():
            cond = encode([p for _, p in chunk])
        for j, (k, _) in enumerate(chunk):
            row = {name: t[j].float().cpu() for name, t in cond.items()}  # as the cache hits are
            found[k] = row
            if cache is not None:
                cache.put(k, row)
    names = list(found[keys[0]])
    return {n: torch.stack([found[k][n] for k in keys]) for n in names}
