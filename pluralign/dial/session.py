"""A base pipeline with a set of adapters and the two images a dial setting is judged by.

The page shows the image with every adapter at 0 beside the image at the dial's setting, on the same
seed, so what a slider does is the difference between them. Every render is the exact call the
:meth:`DialSession.snippet` prints, so a setting found in the page is reproduced in a script with
stock diffusers (``load_lora_weights`` + ``set_adapters``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pluralign.eval.generate import adapter_weight_file, load_adapter, load_pipeline

log = logging.getLogger("pluralign.dial")

ENTRY_POINT_GROUP = "pluralign.dials"  # name -> factory() returning the DialSpec a plain `pluralign dial` opens on


@dataclass
class DialSpec:
    """What a dial opens on: the base, the adapters by name and how to sample it."""

    base: str
    adapters: dict[str, str]
    examples: list[str] = field(default_factory=list)
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    title: str = ""


def default_spec(name: str = "toy") -> DialSpec:
    """The dial a plain ``pluralign dial`` opens on, from the ``pluralign.dials`` entry point ``name`` (the
    toy world registers ``toy``: its aligned model and one shipped adapter per category)."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        raise ValueError(f"no default dial {name!r} is installed (found: {sorted(found) or 'none'}); pass --base DIR|HUB "
                         "--adapters name=DIR,... or reinstall pluralign (pip install -e .) to register the toy dial")
    return found[name].load()()


def parse_adapters(spec: str | Mapping[str, str]) -> dict[str, str]:
    """``name=DIR,name=DIR`` (or a mapping) -> ``{name: DIR}``; a bad item is named with the expected form."""
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--adapters: {item!r} is not name=DIR; give e.g. "
                             "--adapters clarity_and_focus=runs/dial/adapter/clarity_and_focus,emotion_and_subject=...")
        if name.strip() in out:
            raise ValueError(f"--adapters: {name.strip()!r} is given twice")
        out[name.strip()] = path.strip()
    return out


class DialSession:
    """The pipeline with every adapter of ``spec`` that loads; those that do not are kept in ``errors``.

    An adapter that is missing, or whose LoRA tensors do not all land on the base's modules (it was
    trained for another model), is not loaded: the dial opens on the others and says why, in the
    page and in the log, rather than refusing to start or sampling with a partly applied LoRA."""

    def __init__(self, spec: DialSpec, device: str = "auto", dtype: str = "float32"):
        self.spec = spec
        self.pipe = load_pipeline(spec.base, device, dtype, progress=False)
        self.device, self.dtype = str(self.pipe.device), dtype
        self.adapters: dict[str, Path] = {}
        self.errors: dict[str, str] = {}
        for name, path in spec.adapters.items():
            try:
                weight_file = adapter_weight_file(path, label=f"adapter {name}={path}")
                load_adapter(self.pipe, path, name)
            except (OSError, ValueError) as exc:  # FileNotFoundError is an OSError
                self.errors[name] = str(exc)
                log.error("adapter %s not loaded: %s", name, exc)
                continue
            self.adapters[name] = weight_file.resolve()

        # the LoRA-wrapped layers with their own weights, to return to bit for bit after a fused setting
        self._pristine = [(m, m.base_layer.weight.detach().clone()) for m in self._lora_layers()]
        self._fused: dict[str, float] = {}
        self._off: tuple = (None, None)
        if self.adapters:  # loading leaves the last adapter active; the dial starts with every slider at 0
            self.pipe.disable_lora()

    def _lora_layers(self):
        for component in ("unet", "transformer", "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, component, None)
            if module is None:
                continue
            for m in module.modules():
                if hasattr(m, "base_layer") and hasattr(m, "lora_A"):
                    yield m

    def _set(self, weights: Mapping[str, float]) -> None:
        """Put the pipeline at a dial setting: the adapters in use fused into the base weights at their weights.

        Fused, a sample costs what the base costs however many sliders are up (unfused, every active
        adapter adds two matmuls to each wrapped layer: five adapters took 1.0-1.3 s per toy image
        against 0.5-0.6 s). Adapters at 0 are left out: they would add exact zeros. Leaving a setting
        restores the saved base weights, since unfusing subtracts what fusing added and would drift in
        the last bits over many slider moves. The snippet fuses the same adapters the same way, so the
        page and the script compute the same image."""
        active = {n: v for n, v in zip(self.names, self._weights(weights)) if v != 0.0}
        if active == self._fused:
            return
        if self._fused:
            self.pipe.unfuse_lora()
            with torch.no_grad():
                for m, weight in self._pristine:
                    m.base_layer.weight.copy_(weight)
            self._fused = {}
        if active:
            self.pipe.enable_lora()
            self.pipe.set_adapters(list(active), adapter_weights=list(active.values()))
            self.pipe.fuse_lora(adapter_names=list(active), lora_scale=1.0)
        elif self.names:
            self.pipe.disable_lora()
        self._fused = active

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    def _weights(self, weights: Mapping[str, float]) -> list[float]:
        unknown = sorted(set(weights) - set(self.adapters))
        if unknown:
            raise ValueError(f"no adapter named {', '.join(unknown)} is loaded (loaded: {', '.join(self.names) or 'none'})")
        return [float(weights.get(n, 0.0)) for n in self.names]

    def _call_kwargs(self, steps: int | None, guidance: float | None) -> dict:
        kw = {"num_inference_steps": int(steps or self.spec.num_inference_steps),
              "guidance_scale": float(self.spec.guidance_scale if guidance is None else guidance)}
        if self.spec.height:
            kw["height"] = self.spec.height
        if self.spec.width:
            kw["width"] = self.spec.width
        return kw

    def sample(self, prompt: str, weights: Mapping[str, float], seed: int, steps: int | None = None,
               guidance: float | None = None):
        """One image at a dial setting: the call :meth:`snippet` prints, on a CPU generator (so a seed gives
        the same noise on every device)."""
        if not prompt or not prompt.strip():
            raise ValueError("the prompt is empty: type one or pick an example")
        self._set(weights)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return self.pipe(prompt, generator=generator, **self._call_kwargs(steps, guidance)).images[0]

    def render(self, prompt: str, weights: Mapping[str, float], seed: int, steps: int | None = None,
               guidance: float | None = None):
        """``(every adapter at 0, the dial's setting)`` on the same seed. A slider move changes only the second
        image, so the first is kept for the last prompt, seed and sampling settings."""
        key = (prompt, int(seed), steps, guidance)
        if self._off[0] != key:
            self._off = (key, self.sample(prompt, {}, seed, steps, guidance))
        return self._off[1], self.sample(prompt, weights, seed, steps, guidance)

    def snippet(self, prompt: str, weights: Mapping[str, float], seed: int, steps: int | None = None,
                guidance: float | None = None) -> str:
        """Python that reproduces :meth:`sample` at this setting with stock diffusers. Adapters at 0 are left
        out: a LoRA at weight 0 adds exact zeros."""
        w = dict(zip(self.names, self._weights(weights)))
        active = {n: v for n, v in w.items() if v != 0.0}
        kw = self._call_kwargs(steps, guidance)
        dtype = "" if self.dtype == "float32" else f", dtype=torch.{self.dtype}"
        lines = ["import torch", "from diffusers import DiffusionPipeline", "",
                 f"pipe = DiffusionPipeline.from_pretrained({str(self.spec.base)!r}{dtype})"]
        if self.device != "cpu":
            lines.append(f"pipe.to({self.device!r})")
        for n in active:
            f = self.adapters[n]
            lines.append(f"pipe.load_lora_weights({str(f.parent)!r}, weight_name={f.name!r}, adapter_name={n!r})")
        if active:
            lines.append(f"pipe.set_adapters({list(active)!r}, adapter_weights={list(active.values())!r})")
            lines.append(f"pipe.fuse_lora(adapter_names={list(active)!r}, lora_scale=1.0)  # as fast as the base")
        lines += ["image = pipe(", f"    {prompt!r},", *(f"    {k}={v!r}," for k, v in kw.items()),
                  f"    generator=torch.Generator('cpu').manual_seed({int(seed)}),", ").images[0]"]
        return "\n".join(lines) + "\n"
