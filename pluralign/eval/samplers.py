"""The sampler a pipeline denoises with: the checkpoint's own scheduler, or another one built from its config.

Sampling is most of an evaluation's cost, and a higher-order solver reaches in 10 steps what DDIM needs 20
for (on the toy world, docs/toy.md "Sampler"). Users of diffusers swap schedulers with
``OtherScheduler.from_config(pipe.scheduler.config)``; this does the same from one option name
(``sampler:`` in eval, ``data generate`` and the demo), so the sampler is recorded with the results and
the same name means the same solver everywhere.

Only DDPM-type schedulers (epsilon or v-prediction over a beta schedule: SD1.x, SDXL) can be swapped.
SD3 and Flux sample a flow-matching ODE whose scheduler has no beta schedule to build another solver from;
for them only ``default`` is accepted.
"""

from __future__ import annotations

from typing import Any

DEFAULT = "default"
# name -> (diffusers scheduler class, settings that define the solver beyond the checkpoint's noise schedule)
SAMPLERS: dict[str, tuple[str, dict[str, Any]] | None] = {
    DEFAULT: None,  # the checkpoint's own scheduler, unchanged
    "ddim": ("DDIMScheduler", {}),
    # DPM-Solver++ (Lu et al. 2022), second-order multistep: the usual 10-25 step sampler for SD models
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
SAMPLER_NAMES = tuple(SAMPLERS)
# the attribute the checkpoint's own scheduler is kept under, so `default` can restore it after a swap
_ORIGINAL = "_pluralign_original_scheduler"


def use_sampler(pipe, name: str) -> None:
    """Make ``pipe`` denoise with sampler ``name`` (:data:`SAMPLERS`), built from the checkpoint's scheduler
    config so the noise schedule, prediction type and timestep spacing stay the model's.

    Idempotent, and ``default`` restores the checkpoint's scheduler, so one loaded pipeline can serve runs
    with different samplers. Raises ValueError for an unknown name, or for a swap on a pipeline whose
    scheduler is not DDPM-type (flow matching: SD3, Flux)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r}: unknown; choose one of {', '.join(SAMPLER_NAMES)}")
    original = pipe.__dict__.get(_ORIGINAL, pipe.scheduler)
    spec = SAMPLERS[name]
    if spec is None:
        pipe.scheduler = original
        return
    cls_name, settings = spec
    config = original.config
    if "beta_schedule" not in config or "FlowMatch" in type(original).__name__:
        raise ValueError(f"sampler {name!r}: this pipeline samples with {type(original).__name__}, a flow-matching "
                         "scheduler (SD3, Flux) that no DDPM solver can replace; use sampler: default")
    if type(pipe.scheduler).__name__ == cls_name and all(pipe.scheduler.config.get(k) == v for k, v in settings.items()):
        return
    import diffusers

    pipe.__dict__[_ORIGINAL] = original
    pipe.scheduler = getattr(diffusers, cls_name).from_config(config, **settings)
