"""Which base model a run trained on, and whether an adapter fits a given base.

A LoRA only means something on the weights it was trained against: an SD1.5 adapter loaded into
SDXL matches a quarter of its modules and silently drops the rest, and one trained on a fine-tune
shifts another checkpoint in ways nobody measured. So every run records its base's identity
(``run.json``) and every exported adapter carries it in its safetensors metadata; eval checks it
before generating anything.

The fingerprint hashes the denoiser's config and, for each weight file, its size, its safetensors
header (names, shapes, dtypes) and three 64 KiB samples of its tensor data (start, middle, end).
That tells apart two fine-tunes of one architecture, which share every header, while reading a
few hundred KiB of a 24 GB checkpoint instead of all of it.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from safetensors import safe_open

from .families import detect_family

SAMPLE = 64 * 1024
WEIGHT_FILE = "pytorch_lora_weights.safetensors"
# safetensors metadata keys of an exported adapter (strings only, as the format requires)
KEYS = {"family": "pluralign.family", "model": "pluralign.base_model", "revision": "pluralign.base_revision",
        "fingerprint": "pluralign.base_fingerprint", "run_id": "pluralign.run_id"}


class AdapterMismatchError(ValueError):
    """An adapter does not fit the base it is being loaded into; the message names both sides."""


def _file_digest(path: Path, h) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with path.open("rb") as f:
        start = 0
        if path.suffix == ".safetensors" and size >= 8:
            (n,) = struct.unpack("<Q", f.read(8))
            h.update(f.read(n))
            start = 8 + n
        for offset in (start, start + max(0, (size - start) // 2 - SAMPLE // 2), max(start, size - SAMPLE)):
            f.seek(offset)
            h.update(f.read(SAMPLE))


def fingerprint_dir(denoiser_dir: Path) -> str | None:
    """Fingerprint of a denoiser folder (``unet/`` or ``transformer/``), or None without weights."""
    files = sorted(p for p in denoiser_dir.iterdir() if p.suffix in (".safetensors", ".bin")) \
        if denoiser_dir.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    config = denoiser_dir / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in files:
        _file_digest(f, h)
    return h.hexdigest()[:24]


def local_snapshot(model: str | Path, revision: str | None = None) -> Path | None:
    """The folder holding a pipeline's files: ``model`` itself, or a hub id's cached snapshot."""
    if Path(model).is_dir():
        return Path(model)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(model), "model_index.json", revision=revision, local_files_only=True)).parent
    except Exception:  # noqa: BLE001 - not cached, not a hub id: nothing to fingerprint
        return None


def base_identity(model: str | Path, revision: str | None = None, family: str = "auto") -> dict:
    """``model`` as the user named it (hub id or path), its revision, family and fingerprint
    (None when its weights are not on this machine)."""
    fam = detect_family(str(model), family)
    local = local_snapshot(model, revision)
    return {"model": str(model), "revision": revision, "family": fam.name,
            "fingerprint": fingerprint_dir(local / fam.denoiser_attr) if local else None}


def identity_metadata(identity: dict, run_id: str) -> dict[str, str]:
    """The safetensors metadata an exported adapter carries."""
    values = {**identity, "run_id": run_id}
    return {KEYS[k]: str(values[k]) for k in KEYS if values.get(k) is not None}


def read_adapter_identity(adapter: str | Path) -> dict | None:
    """The identity an adapter directory (or its weight file) was exported with; None for an adapter
    that pluralign did not write (it carries no such metadata)."""
    path = Path(adapter)
    path = path / WEIGHT_FILE if path.is_dir() else path
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is named the same way
        raise ValueError(f"{path}: not a readable safetensors LoRA file ({exc})") from None
    found = {k: meta[v] for k, v in KEYS.items() if v in meta}
    return found or None


def check_adapter_fits(adapter: str | Path, base: dict, *, allow_other_base: bool = False) -> dict | None:
    """Raise :class:`AdapterMismatchError` if the adapter was trained for another family, or (unless
    ``allow_other_base``) on other weights; return the adapter's identity (None if it has none)."""
    trained = read_adapter_identity(adapter)
    if trained is None:
        return None
    if trained.get("family") and trained["family"] != base["family"]:
        raise AdapterMismatchError(
            f"adapter {adapter} was trained for the {trained['family']} family ({trained.get('model')}), but the base "
            f"{base['model']} is {base['family']}: its LoRA modules would not match. Use a base of the {trained['family']} family.")
    fp_a, fp_b = trained.get("fingerprint"), base.get("fingerprint")
    if fp_a and fp_b and fp_a != fp_b and not allow_other_base:
        raise AdapterMismatchError(
            f"adapter {adapter} was trained on {trained.get('model')} (fingerprint {fp_a}), not on the base "
            f"{base['model']} (fingerprint {fp_b}). If you mean to apply it to another checkpoint of the same "
            "family, set allow_other_base: true.")
    return trained
