"""The frozen reference's predictions, computed for several micro-steps in one call.

Diffusion-DPO's reference is the same network with its adapters switched off. Its predictions do
not depend on the weights being trained, and everything else a micro-step reads (its pairs, noise
and timesteps) is a function of the micro-step's number. So the reference can run ahead: draw the
inputs of K micro-steps, switch the adapters off once, and denoise all of them in one no-grad call.
On small models the per-call overhead (the adapter switch walks every module; a call launches the
same number of kernels whatever its batch) is most of a reference call, and K steps then cost about
what a few did.

Chunks are ``[jK, (j+1)K)`` whatever micro-step a run starts from or how long it is to run. A run
resumed in the middle of a chunk recomputes that whole chunk, and a run extended past its
``max_steps`` computes the last chunk the longer run would have: every batch the reference sees, and
with it every float it returns, is the one an uninterrupted run computed. A chunk past the last
micro-step costs at most K - 1 unused reference rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def chunk_of(step: int, size: int) -> range:
    """The micro-steps computed together with ``step``: the ``size`` of them from ``step // size * size``."""
    if size < 1:
        raise ValueError(f"reference_chunk must be at least 1, got {size}")
    if step < 0:
        raise ValueError(f"micro-step {step} is negative")
    start = step // size * size
    return range(start, start + size)


class ReferenceAhead:
    """Hands out ``(inputs, reference)`` for micro-step ``k``, computing a chunk when ``k`` is not ready.

    ``inputs_at(k)`` builds micro-step ``k``'s inputs; ``reference(list_of_inputs)`` returns one
    reference result per input, from one call. Steps of a chunk before the one asked for (a resume
    in the middle of it) are computed for the batch's sake and dropped."""

    def __init__(self, size: int, inputs_at: Callable[[int], Any], reference: Callable[[list], list]):
        self.size, self.inputs_at, self.reference = size, inputs_at, reference
        self._ready: dict[int, tuple[Any, Any]] = {}

    def take(self, step: int) -> tuple[Any, Any]:
        if step not in self._ready:
            steps = chunk_of(step, self.size)
            inputs = [self.inputs_at(k) for k in steps]
            refs = self.reference(inputs)
            if len(refs) != len(inputs):
                raise RuntimeError(f"the reference returned {len(refs)} results for {len(inputs)} micro-steps")
            self._ready = {k: (i, r) for k, i, r in zip(steps, inputs, refs) if k >= step}
        return self._ready.pop(step)
