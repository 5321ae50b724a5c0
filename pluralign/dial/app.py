"""``pluralign dial``: the aesthetic dial in a browser (a local Gradio app).

With no argument it opens on the toy world's aligned model and its shipped per-category adapters
(the ``toy`` entry of the ``pluralign.dials`` entry point group); ``--base`` and ``--adapters`` open it
on any diffusers pipeline, e.g. SDXL with five category adapters::

    pluralign dial
    pluralign dial --base stabilityai/stable-diffusion-xl-base-1.0 \\
        --adapters clarity_and_focus=runs/dial/adapter/clarity_and_focus,emotion_and_subject=...

One slider per adapter; the page regenerates when a slider is released, and shows the image with
every adapter at 0 beside the image at the dial's setting (same seed) and the diffusers code that
reproduces it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from pluralign.config import option, parse, run_module
from pluralign.data.rewrite import rewrite_prompt
from pluralign.data.taxonomy import CATEGORIES, attributes_in
from pluralign.env import check_device
from pluralign.eval.generate import adapter_weight_file

from .session import DialSession, DialSpec, default_spec, parse_adapters

log = logging.getLogger("pluralign.dial")

CSS = """
.gradio-container {max-width: 1180px !important; margin: auto;}
#dial-title h1 {font-size: 1.6rem; margin-bottom: 0.2rem;}
.dial-image img {image-rendering: pixelated;}
"""


@dataclass
class DialConfig:
    """Options of ``pluralign dial``."""

    base: str = option("", "diffusers pipeline dir or hub id; empty: the toy world's aligned model with its shipped "
                       "per-category adapters")
    adapters: str = option("", "name=DIR,... one slider per adapter (LoRA dirs the trainer wrote); with --base")
    host: str = option("127.0.0.1", "interface to serve on (0.0.0.0 exposes the app to the network)")
    port: int = option(7860, "port to serve on", min=1, max=65535)
    device: str = option("auto", "torch device (auto: CUDA when available)")
    dtype: str = option("float32", "weights dtype", choices=("float32", "float16", "bfloat16"))
    num_inference_steps: int = option(0, "default sampling steps (0: the dial's own, 30 for a --base)", min=0, max=1000)
    guidance_scale: float = option(-1.0, "CFG scale (negative: the dial's own, 7.5 for a --base)", min=-1, max=50)
    max_weight: float = option(2.0, "the sliders' upper end", gt=0, max=10)
    display_size: int = option(256, "images smaller than this are shown enlarged to it, pixels kept sharp", min=0,
                               max=4096)

    def __post_init__(self):
        check_device(self.device)


def resolve_spec(cfg: DialConfig) -> DialSpec:
    if cfg.adapters and not cfg.base:
        raise ValueError("--adapters needs --base: the adapters must be loaded on the model they were trained on")
    if cfg.base:
        spec = DialSpec(base=cfg.base, adapters=parse_adapters(cfg.adapters), title=cfg.base)
        if not spec.adapters:
            raise ValueError("--base needs --adapters name=DIR,...: the dial has nothing to turn without adapters")
        spec.examples = default_examples(list(spec.adapters))
    else:
        spec = default_spec()
    if cfg.num_inference_steps:
        spec.num_inference_steps = cfg.num_inference_steps
    if cfg.guidance_scale >= 0:
        spec.guidance_scale = cfg.guidance_scale
    return spec


def default_examples(categories: list[str]) -> list[str]:
    """Ordinary prompts and, for each adapter named after a taxonomy category, the same prompt rewritten to ask
    for that category's first attribute (the taxonomy's own phrasing)."""
    plain = ["a lighthouse on a rocky coast at dusk", "portrait of an old fisherman mending a net"]
    out = list(plain)
    for i, name in enumerate(categories):
        if name in CATEGORIES:
            out.append(rewrite_prompt(plain[i % len(plain)], [attributes_in(name)[0]], seed=i))
    return out


def _enlarge(image, size: int):
    from PIL import Image

    if not size or min(image.size) >= size:
        return image
    k = -(-size // min(image.size))
    return image.resize((image.width * k, image.height * k), Image.NEAREST)


def build_app(session: DialSession, cfg: DialConfig):
    """The Gradio Blocks page over ``session``."""
    import gradio as gr

    spec = session.spec
    names = session.names

    def render(prompt, seed, steps, *weights):
        t = time.perf_counter()
        w = dict(zip(names, weights))
        try:
            off, on = session.render(prompt, w, int(seed), int(steps))
            code = session.snippet(prompt, w, int(seed), int(steps))
        except ValueError as exc:
            log.error("render failed: %s", exc)
            raise gr.Error(str(exc)) from exc
        took = time.perf_counter() - t
        setting = ", ".join(f"{n} {v:g}" for n, v in w.items() if v) or "all adapters at 0"
        status = f"{setting} · seed {int(seed)} · {int(steps)} steps · {took:.2f} s for both images"
        return _enlarge(off, cfg.display_size), _enlarge(on, cfg.display_size), code, status

    with gr.Blocks(title="pluralign dial") as app:
        gr.Markdown(f"# pluralign dial\n{spec.title}", elem_id="dial-title")
        if session.errors:
            gr.Markdown("\n".join(["**Not loaded** (the dial runs without them):"] +
                                  [f"- `{n}`: {e}" for n, e in session.errors.items()]), elem_id="dial-errors")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", value=(spec.examples or [""])[-1], lines=2, elem_id="prompt")
                if spec.examples:
                    gr.Examples(examples=[[e] for e in spec.examples], inputs=[prompt], label="Examples")
                sliders = [gr.Slider(0.0, cfg.max_weight, value=0.0, step=0.05, label=n, elem_id=f"slider-{n}")
                           for n in names]
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, elem_id="seed")
                    steps = gr.Slider(1, 100, value=spec.num_inference_steps, step=1, label="Steps", elem_id="steps")
                go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3):
                with gr.Row():
                    off = gr.Image(label="All adapters at 0", type="pil", format="png", interactive=False,
                                   elem_id="image-off", elem_classes=["dial-image"])
                    on = gr.Image(label="At the dial's setting", type="pil", format="png", interactive=False,
                                  elem_id="image-on", elem_classes=["dial-image"])
                status = gr.Markdown(elem_id="status")
                code = gr.Code(label="Reproduce this setting", language="python", elem_id="snippet")
        inputs, outputs = [prompt, seed, steps, *sliders], [off, on, code, status]
        for s in [*sliders, steps]:
            s.release(render, inputs, outputs)
        prompt.submit(render, inputs, outputs)
        go.click(render, inputs, outputs)
        app.load(render, inputs, outputs)
    return app


def main(argv: list[str] | None = None) -> int:
    (cfg,) = parse((DialConfig,), argv, prog="pluralign dial", description=__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import gradio as gr
    except ImportError as exc:
        raise ValueError("pluralign dial needs gradio: pip install 'pluralign[dial]' (or pip install gradio)") from exc
    spec = resolve_spec(cfg)
    missing = {}
    for name, path in spec.adapters.items():  # checked before the base loads: a dial with no adapter turns nothing
        try:
            adapter_weight_file(path, label=f"adapter {name}={path}")
        except (OSError, ValueError) as exc:
            missing[name] = str(exc)
    if missing and len(missing) == len(spec.adapters):
        raise ValueError("no adapter to load: " + "; ".join(missing.values()))
    session = DialSession(spec, cfg.device, cfg.dtype)
    if not session.names:
        raise ValueError("no adapter could be loaded, so the dial would have nothing to turn: "
                         + "; ".join(f"{n}: {e}" for n, e in session.errors.items()))
    log.info("dial on %s with %s", spec.base, ", ".join(session.names) or "no adapters")
    app = build_app(session, cfg)
    app.launch(server_name=cfg.host, server_port=cfg.port, css=CSS, theme=gr.themes.Soft(), show_error=True,
               footer_links=[])
    return 0


if __name__ == "__main__":
    sys.exit(run_module(main, "pluralign dial"))
