"""``builtin:shapes``: 18 intent pairs (and a few general ones) drawn with PIL, for smoke runs.

It exists so that every training path (the tiny recipes, the tests, the GPU smoke check) has data
without a download or a build step; it is not the embedded toy world (``pluralign.toy``), whose
pairs come from the world's renderer and which the demo trains on.


Each scene is a coloured shape on a light background. Degradations are a box blur
(clarity_and_focus, attribute ``blurry``) and a darkening (lighting_and_exposure, attribute
``underexposed``). Every clean/degraded couple yields an ``anti`` pair (prompt asks for the
degradation, chosen = degraded) and its ``mirror`` (plain prompt, chosen = clean) sharing a
``pair_id``, plus a few ``general`` pairs (clean vs. noisy, no category).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60)}
DEGRADE = {
    "blurry": ("clarity_and_focus", "a blurry photo of", lambda im: im.filter(ImageFilter.BoxBlur(3))),
    "underexposed": ("lighting_and_exposure", "a dark, underexposed photo of",
                     lambda im: ImageEnhance.Brightness(im).enhance(0.25)),
}


def draw_scene(shape: str, color: str, size: int = 32) -> Image.Image:
    im = Image.new("RGB", (size, size), (235, 230, 220))
    d = ImageDraw.Draw(im)
    m = size // 5
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        d.rectangle(box, fill=COLORS[color])
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=COLORS[color])
    return im


def shape_pair_rows(size: int = 32, n_general: int = 2, seed: int = 0) -> list[dict]:
    rows = []
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        for color in COLORS:
            clean = draw_scene(shape, color, size)
            caption = f"a {color} {shape}"
            for attr, (category, lead, fn) in DEGRADE.items():
                bad = fn(clean)
                pid = f"{shape}-{color}-{attr}"
                common = {"attributes": [attr], "category": category, "source": "builtin:shapes", "severity": 1.0,
                          "pair_id": pid}
                rows.append({"prompt": f"{lead} {caption}", "chosen": bad, "rejected": clean, "kind": "anti",
                             **common})
                rows.append({"prompt": f"a photo of {caption}", "chosen": clean, "rejected": bad, "kind": "mirror",
                             **common})
    for i in range(n_general):
        clean = draw_scene(SHAPES[i % 3], list(COLORS)[i % 3], size)
        arr = np.asarray(clean).astype(np.float32) + rng.normal(0, 40, (size, size, 3))
        noisy = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        rows.append({"prompt": f"a photo of a {list(COLORS)[i % 3]} {SHAPES[i % 3]}", "chosen": clean,
                     "rejected": noisy, "kind": "general", "attributes": [], "category": "", "source": "builtin:shapes",
                     "severity": 0.0, "pair_id": f"general-{i}"})
    return rows


def shape_pairs(size: int = 32, n_general: int = 2, seed: int = 0):
    """The shapes pair set as a ``datasets.Dataset`` with the project's pair schema."""
    import datasets

    rows = shape_pair_rows(size, n_general, seed)
    features = datasets.Features({
        "prompt": datasets.Value("string"), "chosen": datasets.Image(), "rejected": datasets.Image(),
        "kind": datasets.Value("string"), "attributes": datasets.Sequence(datasets.Value("string")),
        "category": datasets.Value("string"), "source": datasets.Value("string"),
        "severity": datasets.Value("float32"), "pair_id": datasets.Value("string"),
    })
    return datasets.Dataset.from_list(rows, features=features)
