"""Diagnosis: can the diagnosis photos reproduce the unseen photos' `light_leak` on double exposures (0.33)?

A double exposure blends the frame with a zoomed, mirrored copy; where one side of the scene is brighter or warmer,
the mirror carries that light to the other side, which is what a leak looks like from one edge. The leak rule takes
off the darkening of the opposite edge, so a plain swap should not read as a leak. This reads `light_leak` and
`film_grain` on the reference double exposures (`pluralign.rewards.reference_degradations`) of the diagnosis photos
(gradio's and both sets of `scripts/diagnosis_photos.sh`; never the held-out or unseen ones) at 64, 256 and 1024 px,
severities 0.3, 0.65 and 1, through the rules' whole pipeline at the shipped thresholds, with the photos as they
are, with shallow focus (`grain_even_rise.shallow_focus`), with a left-right brightness ramp (0.2 to 1), with that
ramp and a warm bright side, and darkened (raised to the power 2.2). It prints the share of pairs each rule fires on.

    scripts/diagnosis_photos.sh; scripts/diagnosis_photos.sh /tmp/pluralign-diagnosis-photos 2   # once
    python scripts/leak_on_double_exposures.py      # about 3 minutes
"""

from __future__ import annotations

import numpy as np
from grain_even_rise import shallow_focus
from vignette_dark_corners import diagnosis_photos, square

from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import load_rules, paired_statistics


def ramp(x: np.ndarray, lo: float = 0.2) -> np.ndarray:
    return np.clip(x * np.linspace(lo, 1.0, x.shape[1], dtype=np.float32)[None, :, None], 0, 1)


def warm_side(x: np.ndarray) -> np.ndarray:
    r = np.linspace(0, 1, x.shape[1], dtype=np.float32)[None, :]
    y = ramp(x, 0.3)
    y[..., 0] = np.clip(y[..., 0] + 0.25 * r, 0, 1)
    y[..., 2] = np.clip(y[..., 2] - 0.15 * r, 0, 1)
    return y


VARIANTS = {"as they are": lambda x: x, "shallow focus": shallow_focus, "brightness ramp": ramp,
            "ramp and a warm bright side": warm_side, "darkened (power 2.2)": lambda x: x**2.2}


def main() -> int:
    rules = load_rules()
    rs = {k: rules[k] for k in ("light_leak", "film_grain")}
    rng = np.random.default_rng(4)
    print("| photos | pairs | light_leak fires | film_grain fires |\n|---|---:|---:|---:|")
    for name, edit in VARIANTS.items():
        a_img, o_img = [], []
        for path in diagnosis_photos():
            for size in (64, 256, 1024):
                o = np.clip(edit(square(path, size)), 0, 1).astype(np.float32)
                for s in (0.3, 0.65, 1.0):
                    a_img.append(np.clip(R.degrade(o, "double_exposure", s, rng), 0, 1).astype(np.float32))
                    o_img.append(o)
        st = paired_statistics(rs, a_img, o_img)
        print(f"| {name} | {len(a_img)} | {np.mean(st['light_leak'] > rs['light_leak'].threshold):.2f} | "
              f"{np.mean(st['film_grain'] > rs['film_grain'].threshold):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
