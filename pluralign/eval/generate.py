"""Paired generation of I_o and I_a for the base model and for an adapter at several weights.

The pipeline is called generically (prompt list, one seeded generator per image,
``num_inference_steps``, ``guidance_scale``, ``height``/``width``, ``output_type="pil"``), so the
same code serves SD1.x, SDXL, SD3 and Flux. I_o and I_a of a row get generators seeded with the
row's seed: the two images share their initial noise and differ only by the prompt.

Variants:
- ``base``: the pipeline with every LoRA adapter disabled (the reference);
- ``adapter@W``: the adapter loaded with ``pipe.load_lora_weights(dir, adapter_name=...)`` and
  dialled to weight W with ``pipe.set_adapters([name], [W])`` (the "dial curve");
- ``<category>@W`` (per-category eval): every category adapter of the dial set is loaded (under its
  category's name) and ``pipe.set_adapters(all, [..])`` puts this one at W and the others at 0, as a
  user turns one dial of several. Such a variant may be generated on a subset of the rows.

Rows are split across processes with accelerate's ``PartialState().split_between_processes``
and gathered back in row order, so ``accelerate launch --num_processes N`` divides the work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pluralign.env import process_state
from pluralign.hub import require_model

from .suite import EvalRow

BASE = "base"


@dataclass(frozen=True)
class Variant:
    """One model configuration to generate with: the base (``weight is None``) or the adapter at a weight."""

    name: str
    weight: float | None = None
    adapter: str | None = None  # per-category eval: the adapter of the dial set this variant turns up

    @property
    def dirname(self) -> str:
        """Filesystem-safe folder name under ``images/``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name.replace("@", "_w"))


def adapter_variant(weight: float) -> Variant:
    return Variant(f"adapter@{weight:g}", float(weight))


def category_variant(category: str, weight: float) -> Variant:
    """``<category>@W``: the category's adapter at ``weight``, every other adapter of the dial set at 0."""
    return Variant(f"{category}@{weight:g}", float(weight), category)


def variants_for(weights: Sequence[float], with_adapter: bool) -> list[Variant]:
    """The base first (it is the reference every other variant is compared against), then the dial curve."""
    out = [Variant(BASE)]
    if with_adapter:
        out += [adapter_variant(w) for w in weights]
    return out


def load_pipeline(base: str, device: str = "auto", dtype: str = "float32", progress: bool = True):
    """A stock diffusers pipeline from a hub id or local directory (safetensors only). ``progress=False`` turns off
    diffusers' bar of every call's denoising steps (a caller that samples many small batches shows its own)."""
    from diffusers import DiffusionPipeline

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    require_model(base, "base", local_option="--base DIR")
    local = Path(base).expanduser()  # a path the user gave; a hub id's cached snapshot may be partial, and loads
    if local.is_file() or (local.is_dir() and not (local / "model_index.json").is_file()):
        raise ValueError(f"base {base}: not a diffusers pipeline directory (no model_index.json); pass the folder "
                         "that holds model_index.json (what save_pretrained writes) or a hub id such as "
                         "stable-diffusion-v1-5/stable-diffusion-v1-5")
    try:
        pipe = DiffusionPipeline.from_pretrained(base, dtype=torch_dtype, use_safetensors=True)
    except OSError as exc:  # a hub error, or a directory without the files: say which and what to pass
        raise ValueError(f"base {base}: cannot load a diffusers pipeline ({type(exc).__name__}: {exc}); pass a "
                         "diffusers pipeline directory (with model_index.json and safetensors weights) or a hub id "
                         "such as stable-diffusion-v1-5/stable-diffusion-v1-5") from exc
    pipe.to(resolve_device(device))
    if not progress:
        pipe.set_progress_bar_config(disable=True)
    return pipe


def resolve_device(device: str = "auto") -> str:
    """``auto``: this process's device, from accelerate set up the way every entry point sets it up
    (:func:`pluralign.env.process_state`: on CPU processes when ``ACCELERATE_USE_CPU=1``), whichever asks first."""
    if device != "auto":
        return device
    return str(process_state().device)


def _loaded_adapters(pipe) -> set[str]:
    get = getattr(pipe, "get_list_adapters", None)
    if get is None:
        return set()
    try:
        return {name for names in get().values() for name in names}
    except (ValueError, AttributeError):
        return set()


LORA_WEIGHT_FILE = "pytorch_lora_weights.safetensors"
# a LoRA matrix in any of the key formats diffusers loads (PEFT lora_A/B, diffusers lora.down/up, kohya lora_down/up)
_FILE_LORA_KEY = re.compile(r"lora(_A|_B|\.down|\.up|_down|_up|_embedding_A|_embedding_B)\b")


def adapter_weight_file(adapter: str | Path, label: str | None = None) -> Path:
    """The safetensors file ``load_lora_weights`` reads for ``adapter`` (a LoRA directory or file).

    A trained adapter's directory also holds a kohya copy; the diffusers file is the one to load, as
    diffusers itself picks it. Raises FileNotFoundError naming the ``adapter`` option (or ``label``,
    e.g. ``adapters: clarity_and_focus=DIR``) for a path that is not there or holds no weights."""
    where = label or f"adapter {adapter}"
    path = Path(adapter).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{where}: no such file or directory; pass the adapter folder the trainer "
                                f"wrote (it holds {LORA_WEIGHT_FILE}) or a LoRA .safetensors file")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{where}: not a .safetensors file; LoRA weights are read as safetensors only")
        return path
    if (path / LORA_WEIGHT_FILE).is_file():
        return path / LORA_WEIGHT_FILE
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{where}: no .safetensors LoRA weights in this directory; pass the folder "
                                f"the trainer wrote (it holds {LORA_WEIGHT_FILE})")
    if len(files) > 1:
        raise ValueError(f"{where}: {len(files)} .safetensors files and none is {LORA_WEIGHT_FILE} "
                         f"({', '.join(f.name for f in files[:4])}); pass the file to load"
                         f"{' as adapter' if label is None else ' in its place'}")
    return files[0]


def _created_lora(pipe, adapter_name: str) -> tuple[int, set[str]]:
    """How many LoRA tensors ``adapter_name`` got in the pipeline's modules, and the modules that carry them
    (``component.module.path``)."""
    param = re.compile(rf"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)\.{re.escape(adapter_name)}(\.|$)")
    count, modules = 0, set()
    for component, module in getattr(pipe, "components", {}).items():
        if not isinstance(module, torch.nn.Module):
            continue
        for name, _ in module.named_parameters():
            m = param.search(name)
            if m:
                count += 1
                modules.add(f"{component}.{name[:m.start()]}")
    return count, modules


def check_lora_keys(pipe, weight_file: Path, adapter_name: str) -> None:
    """Raise ValueError unless every LoRA tensor of ``weight_file`` became a LoRA parameter of the pipeline.

    diffusers and PEFT load the keys that match a module and only warn about the rest, so an adapter
    for another architecture (an SD1.5 LoRA on SDXL) loads a quarter of itself and changes the
    images a little: a measurement of nothing that looks like a result."""
    from safetensors import safe_open

    with safe_open(str(weight_file), framework="pt") as f:
        keys = [k for k in f.keys() if _FILE_LORA_KEY.search(k)]
    created, modules = _created_lora(pipe, adapter_name)
    if created >= len(keys):
        return
    bare = {m.split(".", 1)[1] for m in modules}  # older files name modules without the component prefix
    unmatched = {}  # one key per module: lora_A and lora_B of a module fail together
    for k in keys:
        module = k.split(".lora")[0]
        if module not in modules | bare:
            unmatched.setdefault(module, k)
    examples = f"; unmatched, e.g.: {', '.join(list(unmatched.values())[:3])}" if unmatched else ""
    raise ValueError(f"adapter {weight_file}: only {created} of its {len(keys)} LoRA tensors match modules of this "
                     f"{type(pipe).__name__}{examples}. It was made for another model: evaluate it on the base it "
                     "was trained on")


def load_adapter(pipe, adapter_dir: str | Path, adapter_name: str) -> str:
    """Load a diffusers LoRA directory (or file) under ``adapter_name`` (once) and return the name.

    A name already loaded from *another* directory is replaced, never silently reused: evaluating two
    adapters in a row on one pipeline must measure the second one. Every LoRA tensor of the file must
    land on a module (:func:`check_lora_keys`); otherwise the adapter is removed again and a
    ValueError says how many matched.
    """
    sources = pipe.__dict__.setdefault("_pluralign_adapter_sources", {})
    source = str(Path(adapter_dir).resolve())
    if adapter_name in _loaded_adapters(pipe):
        if sources.get(adapter_name) == source:
            return adapter_name
        pipe.delete_adapters(adapter_name)
    weight_file = adapter_weight_file(adapter_dir)
    try:
        pipe.load_lora_weights(str(weight_file.parent), weight_name=weight_file.name, adapter_name=adapter_name)
    except RuntimeError as exc:  # torch's "size mismatch for ..." list, one line per tensor
        if "size mismatch" not in str(exc):  # out of memory, a device or dtype error: not the adapter's shapes
            raise
        if adapter_name in _loaded_adapters(pipe):
            pipe.delete_adapters(adapter_name)
        first = next(ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln)
        raise ValueError(f"adapter {weight_file}: its LoRA tensors do not fit this model's layers ({first}); it was "
                         "trained for another model: pass the base it was trained on") from None
    try:
        check_lora_keys(pipe, weight_file, adapter_name)
    except ValueError:
        if adapter_name in _loaded_adapters(pipe):
            pipe.delete_adapters(adapter_name)
        raise
    sources[adapter_name] = source
    return adapter_name


def load_adapters(pipe, adapters: Mapping[str, str | Path]) -> list[str]:
    """Load every adapter of a dial set (``{name: directory or file}``) with :func:`load_adapter`, each
    under its own name, and return the names. All of them are checked before the first image: if
    one fails (its LoRA keys match no module), those this call loaded are removed again and the
    ValueError starts with the failing one's name."""
    before = _loaded_adapters(pipe)
    done = []
    for name, path in adapters.items():
        try:
            load_adapter(pipe, path, name)
        except ValueError as exc:
            loaded = _loaded_adapters(pipe)
            for other in done:
                if other in loaded and other not in before:
                    pipe.delete_adapters(other)
            raise ValueError(f"{name}: {exc}") from exc
        done.append(name)
    return done


def apply_variant(pipe, variant: Variant, adapter_name: str | None, dial: Sequence[str] | None = None) -> None:
    """Put the pipeline in the state of ``variant``: all LoRA off for the base, the adapter at its weight otherwise.

    With ``dial`` (the names of a dial set, e.g. one adapter per category), every adapter of the set is
    active: ``adapter_name`` at the variant's weight and the others at 0."""
    loaded = _loaded_adapters(pipe)
    if variant.weight is None:
        if loaded:
            pipe.disable_lora()
        return
    names = list(dial) if dial else [adapter_name]
    missing = [n for n in names + [adapter_name] if n is None or n not in loaded]
    if missing:
        raise ValueError(f"variant {variant.name} needs adapter(s) {sorted(set(map(str, missing)))} to be loaded first "
                         f"(loaded: {sorted(loaded)})")
    pipe.enable_lora()
    pipe.set_adapters(names, [variant.weight if n == adapter_name else 0.0 for n in names])


def _call_pipeline(pipe, prompts: list[str], seeds: list[int], *, num_inference_steps: int, guidance_scale: float,
                   height: int | None, width: int | None) -> list[Image.Image]:
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    kwargs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "output_type": "pil"}
    if height:
        kwargs["height"] = height
    if width:
        kwargs["width"] = width
    out = pipe(prompt=prompts, generator=generators, **kwargs)
    return [im.convert("RGB") for im in out.images]


def generate_pairs(pipe, rows: Sequence[EvalRow], *, batch_size: int = 8, num_inference_steps: int = 20,
                   guidance_scale: float = 7.5, height: int | None = None, width: int | None = None,
                   desc: str = "generate") -> list[tuple[Image.Image, Image.Image]]:
    """``[(I_o, I_a)]`` in row order; each process generates its share and the shares are gathered.

    A batch holds ``batch_size`` rows, i.e. ``2 * batch_size`` images (P_o and P_a of each row).
    """
    from accelerate import PartialState

    state = PartialState()
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    indices = list(range(len(rows)))
    local: list[tuple[int, Image.Image, Image.Image]] = []
    with state.split_between_processes(indices) as mine:
        mine = list(mine)
        batches = [mine[s : s + batch_size] for s in range(0, len(mine), batch_size)]
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not state.is_local_main_process or not batches):
            prompts = [rows[i].prompt_o for i in batch] + [rows[i].prompt_a for i in batch]
            seeds = [rows[i].seed for i in batch] * 2
            with torch.inference_mode():
                images = _call_pipeline(pipe, prompts, seeds, num_inference_steps=num_inference_steps,
                                        guidance_scale=guidance_scale, height=height, width=width)
            k = len(batch)
            local += [(i, images[j], images[k + j]) for j, i in enumerate(batch)]
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        local = gather_object(local)
    local.sort(key=lambda t: t[0])
    if [t[0] for t in local] != indices:
        raise RuntimeError(f"generation returned rows {[t[0] for t in local][:10]}... instead of 0..{len(rows) - 1}")
    return [(o, a) for _, o, a in local]


def generate_variants(pipe, rows: Sequence[EvalRow], variants: Sequence[Variant], *, adapter_dir: str | Path | None = None,
                      adapter_name: str = "intent", adapters: Mapping[str, str | Path] | None = None,
                      rows_for: Mapping[str, Sequence[int]] | None = None,
                      **gen_kwargs) -> dict[str, list[tuple[Image.Image, Image.Image]]]:
    """Images of every variant: ``{variant.name: [(I_o, I_a), ...]}``.

    The base is generated first with all LoRA layers disabled; the adapter is then loaded (when
    ``adapter_dir`` is given; otherwise it must already be on the pipeline under ``adapter_name``).

    Per-category eval: ``adapters`` (``{name: directory}``) is the dial set, loaded before the first
    adapter variant; a variant whose ``adapter`` names one of them gets it at its weight and the others
    at 0. ``rows_for`` maps a variant's name to the row indices to generate for it (default: every
    row); its images are then in the order of those indices.
    """
    out: dict[str, list[tuple[Image.Image, Image.Image]]] = {}
    loaded = False
    dial = list(adapters) if adapters else None
    for v in variants:
        if v.weight is not None and not loaded:
            if adapters:
                load_adapters(pipe, adapters)
            elif adapter_dir is not None:
                load_adapter(pipe, adapter_dir, adapter_name)
            loaded = True
        name = (v.adapter or adapter_name) if v.weight is not None else None
        apply_variant(pipe, v, name, dial if v.weight is not None else None)
        todo = rows if rows_for is None or v.name not in rows_for else [rows[i] for i in rows_for[v.name]]
        out[v.name] = generate_pairs(pipe, todo, desc=f"generate {v.name}", **gen_kwargs)
    if loaded and _loaded_adapters(pipe):
        pipe.enable_lora()
    return out


def max_abs_difference(a: Sequence[tuple[Image.Image, Image.Image]], b: Sequence[tuple[Image.Image, Image.Image]]) -> int:
    """Largest per-pixel difference (0..255) between two variants' images; 0 means identical."""
    worst = 0
    for pair_a, pair_b in zip(a, b):
        for x, y in zip(pair_a, pair_b):
            d = np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16))
            worst = max(worst, int(d.max()) if d.size else 0)
    return worst


def image_path(root: str | Path, variant: Variant, index: int, which: str) -> Path:
    """``root/images/<variant>/<index:05d>_<o|a>.png``: stable names the reports and users can rely on."""
    return Path(root) / "images" / variant.dirname / f"{index:05d}_{which}.png"


def save_images(root: str | Path, variant: Variant, pairs: Sequence[tuple[Image.Image, Image.Image]],
                indices: Sequence[int] | None = None) -> Path:
    """Write a variant's images; ``indices``: the suite row of each pair (default 0, 1, ...), which names its files."""
    folder = Path(root) / "images" / variant.dirname
    folder.mkdir(parents=True, exist_ok=True)
    for i, (o, a) in zip(range(len(pairs)) if indices is None else indices, pairs):
        o.save(image_path(root, variant, i, "o"))
        a.save(image_path(root, variant, i, "a"))
    return folder
