"""The toy world: procedural 32x32 scenes with captions, and their anti-aesthetic variants.

A scene is a pale, softly graded background with one medium-sized, saturated object near the
centre (optionally a second, smaller one). Scenes are rendered at 4x and downsampled, so the
clean images are sharp, well exposed, colourful and centred: the "aesthetic" images a universal
preference model rewards. Every anti-aesthetic attribute that renders at 32x32 has a variant:
the image comes from :func:`pluralign.data.degradations.degrade` at a severity strong enough to
be unmistakable at this size (but that keeps the object recognisable), the caption asks for it.

Everything is a pure function of a seed, so suites, pairs and training data are reproducible.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from pluralign.data import degradations, taxonomy

SIZE = 32
SUPERSAMPLE = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Saturated object colours, far apart in hue so degradations do not turn one into another.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (245, 205, 20),
    "purple": (140, 40, 190),
}
# Pale backgrounds (top colour, bottom colour of a soft vertical gradient).
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "light blue": ((200, 225, 250), (165, 200, 240)),
    "white": ((250, 250, 248), (225, 225, 222)),
    "cream": ((252, 243, 215), (240, 225, 185)),
    "light gray": ((215, 215, 218), (185, 185, 190)),
}

# Anti-aesthetic attributes of the world, with the severity of their variants. Chosen by eye
# (see docs/toy.md): unmistakable at 32x32, object still recognisable.
PIXEL_ATTRIBUTES: tuple[str, ...] = (
    "blurry", "underexposed", "overexposed", "muted", "noisy", "low_contrast", "color_cast",
    "small_subject", "off_center",
)
# emotion_and_subject attributes the world draws as scene content (see :func:`render_semantic`): no
# pixel operation on the clean render produces them, so a user's data for them has to come from a
# generator that follows the request (``pluralign data generate``), and only a judge measures them
# (the toy's is the content checker's judge network).
SEMANTIC_ATTRIBUTES: tuple[str, ...] = ("decay", "unfinished", "bleak")
ATTRIBUTES: tuple[str, ...] = PIXEL_ATTRIBUTES + SEMANTIC_ATTRIBUTES
SEVERITY: dict[str, float] = {
    "blurry": 1.0, "underexposed": 0.7, "overexposed": 0.7, "muted": 0.8, "noisy": 0.7,
    "low_contrast": 0.75, "color_cast": 0.7, "small_subject": 0.7, "off_center": 0.7,
    "decay": 0.8, "unfinished": 0.8, "bleak": 0.8,
}
# Severity of the "ordinary" aesthetic pairs (clean vs. mildly degraded under the ordinary prompt).
MILD_SEVERITY = 0.3


@dataclass(frozen=True)
class Scene:
    """Everything needed to render and caption one image."""

    shape: str
    colour: str
    background: str
    cx: float = 0.5  # object centre, fractions of the image width/height
    cy: float = 0.5
    size: float = 0.34  # object extent (circumscribed diameter), fraction of the image width
    angle: float = 0.0  # small rotation in degrees, for variety
    shape2: str | None = None  # optional second, smaller object
    colour2: str | None = None
    cx2: float = 0.8
    cy2: float = 0.2

    def __post_init__(self):
        for field, value, allowed in (("shape", self.shape, SHAPES), ("colour", self.colour, COLOURS),
                                      ("background", self.background, BACKGROUNDS)):
            if value not in allowed:
                raise ValueError(f"Scene.{field}={value!r} is not one of {list(allowed)}")
        if (self.shape2 is None) != (self.colour2 is None):
            raise ValueError("Scene: shape2 and colour2 must be given together")

    def to_dict(self) -> dict:
        return asdict(self)


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(x * r * 0.78, y * r * 0.78) for x, y in pts]
    elif shape == "triangle":
        pts = [(r * np.cos(a), r * np.sin(a)) for a in np.deg2rad([-90, 30, 150])]
        pts = [(x, y + 0.15 * r) for x, y in pts]  # centre the bounding box
    elif shape == "diamond":
        pts = [(0, -r), (0.8 * r, 0), (0, r), (-0.8 * r, 0)]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    t = np.deg2rad(angle)
    c, s = np.cos(t), np.sin(t)
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in pts]


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, colour: str, cx: float, cy: float, size: float, px: int):
    r = size * px / 2
    x, y = cx * px, cy * px
    fill = COLOURS[colour]
    # A slightly darker rim gives the object a crisp, "finished" edge.
    rim = tuple(int(v * 0.7) for v in fill)
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=rim)
        rr = r - px / SIZE * 0.9
        draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=fill)
    else:
        draw.polygon(_shape_polygon(shape, x, y, r, 0.0), fill=rim)
        draw.polygon(_shape_polygon(shape, x, y, r - px / SIZE * 1.2, 0.0), fill=fill)


def _gradient(top, bottom, px: int) -> np.ndarray:
    top, bottom = (np.array(c, np.float32) for c in (top, bottom))
    t = np.linspace(0.0, 1.0, px, dtype=np.float32)[:, None, None]
    return (top * (1 - t) + bottom * t) * np.ones((1, px, 1), np.float32)


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size`` (anti-aliased by 4x supersampling)."""
    px = size * SUPERSAMPLE
    img = Image.fromarray(_gradient(*BACKGROUNDS[scene.background], px).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    if scene.shape2 is not None:
        _draw_object(draw, scene.shape2, scene.colour2, scene.cx2, scene.cy2, scene.size * 0.45, px)
    _draw_object(draw, scene.shape, scene.colour, scene.cx, scene.cy, scene.size, px)
    return img.resize((size, size), Image.Resampling.LANCZOS)


# --- semantic attributes: scene content, not pixel operations -------------------------------------

STAIN = (92, 70, 38)  # the brown-olive of rot and rust
CRACK = (28, 22, 18)
PENCIL = (150, 150, 150)
STORM = ((84, 88, 100), (40, 42, 50))  # a low, dark overcast sky
RAIN = (178, 182, 192)


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Closed outline of ``shape`` as a point list (a circle as a 48-gon), starting at the top."""
    if shape == "circle":
        a = np.linspace(-np.pi / 2, 1.5 * np.pi, 49)
        return [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in a]
    pts = _shape_polygon(shape, cx, cy, r, 0.0)
    return pts + [pts[0]]


def _decay(img: Image.Image, scene: Scene, sev: float, rng: random.Random, px: int) -> Image.Image:
    """The object rotting: its colour browned, blotched with stains and split by dark cracks."""
    r = scene.size * px / 2
    x, y = scene.cx * px, scene.cy * px
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(_outline(scene.shape, x, y, r * 0.97), fill=255)
    rot = img.copy()
    arr = np.asarray(rot, np.float32)
    arr = arr * (1 - 0.35 * sev) + np.array(STAIN, np.float32) * 0.35 * sev
    rot = Image.fromarray(arr.round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(rot)
    for _ in range(3 + round(4 * sev)):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.65) * r
        sr = rng.uniform(0.12, 0.22) * r
        sx, sy = x + d * np.cos(a), y + d * np.sin(a)
        draw.ellipse([sx - sr, sy - sr * rng.uniform(0.6, 1.0), sx + sr, sy + sr], fill=STAIN)
    width = max(1, round(px / SIZE * 0.8))
    for _ in range(2 + round(2 * sev)):
        a = rng.uniform(0, 2 * np.pi)
        pts = [(x + r * np.cos(a), y + r * np.sin(a))]
        for _ in range(4):
            a += rng.uniform(-0.9, 0.9)
            step = rng.uniform(0.2, 0.35) * r
            last = pts[-1]
            pts.append((last[0] - step * np.cos(a), last[1] - step * np.sin(a)))
        draw.line(pts, fill=CRACK, width=width, joint="curve")
    return Image.composite(rot, img, mask)


def _sketch(img: Image.Image, scene: Scene, sev: float, rng: random.Random, px: int) -> None:
    """An unfilled outline in the object's colour with a gap left open, over pencil guide lines."""
    r = scene.size * px / 2
    x, y = scene.cx * px, scene.cy * px
    draw = ImageDraw.Draw(img)
    guide = max(1, round(px / SIZE * 0.5))
    reach = r * 1.25
    draw.line([(x - reach, y), (x + reach, y)], fill=PENCIL, width=guide)
    draw.line([(x, y - reach), (x, y + reach)], fill=PENCIL, width=guide)
    pts = _outline(scene.shape, x, y, r * 0.92)
    # resample the outline evenly, then leave a gap of up to a third of it undrawn
    seg = np.asarray(pts, np.float64)
    lengths = np.r_[0, np.cumsum(np.hypot(*np.diff(seg, axis=0).T))]
    s = np.linspace(0, lengths[-1], 97)
    even = np.stack([np.interp(s, lengths, seg[:, 0]), np.interp(s, lengths, seg[:, 1])], 1)
    gap = int(round(96 * 0.33 * sev))
    start = rng.randrange(96)
    keep = [tuple(even[(start + gap + k) % 96]) for k in range(96 - gap + 1)]
    draw.line(keep, fill=COLOURS[scene.colour], width=max(1, round(px / SIZE * 1.3)), joint="curve")


def _bleak(img: Image.Image, scene: Scene, sev: float, rng: random.Random, px: int) -> Image.Image:
    """A dark overcast sky behind the object and rain streaking across the whole frame."""
    arr = np.asarray(img, np.float32)
    r = scene.size * px / 2
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(_outline(scene.shape, scene.cx * px, scene.cy * px, r), fill=255)
    m = np.asarray(mask, np.float32)[..., None] / 255.0
    storm = _gradient(*STORM, px)
    arr = m * arr + (1 - m) * (arr * (1 - sev) + storm * sev)
    rain = Image.fromarray(arr.round().astype(np.uint8), "RGB")
    overlay = rain.copy()
    draw = ImageDraw.Draw(overlay)
    width = max(1, round(px / SIZE * 0.5))
    for _ in range(round(60 * sev)):
        sx, sy = rng.uniform(0, px * 1.1), rng.uniform(-0.1 * px, px)
        draw.line([(sx, sy), (sx - 0.05 * px, sy + 0.14 * px)], fill=RAIN, width=width)
    return Image.blend(rain, overlay, 0.55)


def render_semantic(scene: Scene, attribute: str, severity: float | None = None, seed: int = 0,
                    size: int = SIZE) -> Image.Image:
    """``scene`` drawn showing a semantic attribute: ``decay`` (the object cracked, stained and
    browned), ``unfinished`` (an unfilled outline with a gap and pencil guide lines) or ``bleak``
    (a dark storm sky and rain around the object). ``severity`` scales how much of it there is."""
    if attribute not in SEMANTIC_ATTRIBUTES:
        raise ValueError(f"{attribute!r} is not a semantic attribute {SEMANTIC_ATTRIBUTES}")
    sev = SEVERITY[attribute] if severity is None else severity
    rng = random.Random(f"{attribute}:{seed}")
    px = size * SUPERSAMPLE
    img = Image.fromarray(_gradient(*BACKGROUNDS[scene.background], px).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    if scene.shape2 is not None:
        _draw_object(draw, scene.shape2, scene.colour2, scene.cx2, scene.cy2, scene.size * 0.45, px)
    if attribute == "unfinished":
        _sketch(img, scene, sev, rng, px)
    else:
        _draw_object(draw, scene.shape, scene.colour, scene.cx, scene.cy, scene.size, px)
        img = _decay(img, scene, sev, rng, px) if attribute == "decay" else _bleak(img, scene, sev, rng, px)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def caption(scene: Scene) -> str:
    """The ordinary caption: ``"a red circle on a light blue background"``."""
    text = f"a {scene.colour} {scene.shape}"
    if scene.shape2 is not None:
        text += f" and a small {scene.colour2} {scene.shape2}"
    return f"{text} on a {scene.background} background"


def sample_scene(rng: random.Random, p_second: float = 0.0) -> Scene:
    second = {}
    if rng.random() < p_second:
        second = dict(shape2=rng.choice(SHAPES), colour2=rng.choice(list(COLOURS)),
                      cx2=rng.choice([0.2, 0.8]), cy2=rng.choice([0.2, 0.8]))
    return Scene(
        shape=rng.choice(SHAPES), colour=rng.choice(list(COLOURS)), background=rng.choice(list(BACKGROUNDS)),
        cx=0.5 + rng.uniform(-0.06, 0.06), cy=0.5 + rng.uniform(-0.06, 0.06), size=rng.uniform(0.42, 0.52),
        **second,
    )


def sample_scenes(n: int, seed: int = 0, p_second: float = 0.0) -> list[Scene]:
    """``n`` scenes drawn deterministically from ``seed``."""
    rng = random.Random(seed)
    return [sample_scene(rng, p_second) for _ in range(n)]


# --- anti-aesthetic variants -------------------------------------------------------------------

def degradation_for(attribute: str) -> str:
    """The degradation name that renders ``attribute`` (from the taxonomy's attribute map)."""
    if attribute not in taxonomy.ATTRIBUTES:
        raise KeyError(f"attribute {attribute!r} is not in pluralign.data.taxonomy.ATTRIBUTES")
    name = taxonomy.ATTRIBUTES[attribute].degradation
    if not name:
        raise ValueError(f"attribute {attribute!r} has no degradation; the toy world degrades only {PIXEL_ATTRIBUTES}")
    return name


def degrade(image: Image.Image, attribute: str, severity: float | None = None, seed: int = 0) -> Image.Image:
    """``image`` showing ``attribute`` (at the world's severity unless one is given), via
    :func:`pluralign.data.degradations.degrade` and the taxonomy's attribute -> degradation map."""
    sev = SEVERITY[attribute] if severity is None else severity
    return degradations.degrade(image, degradation_for(attribute), sev, seed=seed)


# Composition is a property of the scene, so the world re-renders it rather than pasting a
# shrunk copy of the frame (which leaves a visible seam on a graded background).
COMPOSITION = ("small_subject", "off_center")


def recompose(scene: Scene, attribute: str, severity: float | None = None, seed: int = 0) -> Scene:
    """``scene`` with its object shrunk (``small_subject``) or pushed towards a corner (``off_center``)."""
    sev = SEVERITY[attribute] if severity is None else severity
    if attribute == "small_subject":
        return replace(scene, size=scene.size * (1 - 0.75 * sev), shape2=None, colour2=None)
    if attribute == "off_center":
        rng = random.Random(seed)
        sx, sy = rng.choice((-1, 1)), rng.choice((-1, 1))
        size = scene.size * (1 - 0.25 * sev)
        reach = 0.5 - size / 2 - 0.02  # keep the whole object inside the frame
        shift = min(0.4 * sev, reach)
        return replace(scene, cx=0.5 + sx * shift, cy=0.5 + sy * shift, size=size, shape2=None, colour2=None)
    raise ValueError(f"{attribute!r} is not a composition attribute {COMPOSITION}")


def anti_caption(scene_or_caption: Scene | str, attribute: str, seed: int = 0) -> str:
    """The caption that asks for ``attribute`` (P_a): the ordinary caption plus one of the
    taxonomy's phrasings of the attribute, chosen by ``seed``. The world keeps its own fixed
    phrasing rule so the shipped models and their eval suites never drift apart."""
    text = caption(scene_or_caption) if isinstance(scene_or_caption, Scene) else scene_or_caption
    templates = taxonomy.ATTRIBUTES[attribute].templates
    return f"{text}, {templates[random.Random(f'{attribute}:{seed}').randrange(len(templates))]}"


def variant(scene: Scene, attribute: str | None, seed: int = 0, severity: float | None = None
            ) -> tuple[Image.Image, str]:
    """(image, caption) of ``scene`` clean (``attribute=None``) or showing ``attribute``."""
    if attribute is None:
        return render(scene), caption(scene)
    return degraded_image(scene, attribute, severity, seed), anti_caption(scene, attribute, seed)


def degraded_image(scene: Scene, attribute: str, severity: float | None = None, seed: int = 0) -> Image.Image:
    """The render of ``scene`` showing ``attribute``."""
    if attribute in SEMANTIC_ATTRIBUTES:
        return render_semantic(scene, attribute, severity, seed)
    if attribute in COMPOSITION:
        return render(recompose(scene, attribute, severity, seed))
    return degrade(render(scene), attribute, severity, seed)


def eval_suite(n: int = 72, seed: int = 1000, attributes: tuple[str, ...] = ATTRIBUTES) -> list[dict]:
    """Eval rows, one attribute each, balanced across ``attributes`` (round-robin).

    Each row: ``prompt_o, prompt_a, attributes, seed`` (the generation seed for I_o and I_a) plus the
    scene's ``shape, colour, background`` for the content checker. The default seed differs from
    the training data's so the suite's scenes are held out.
    """
    scenes = sample_scenes(n, seed)
    rows = []
    for i, scene in enumerate(scenes):
        attr = attributes[i % len(attributes)]
        prompt_o = caption(scene)
        rows.append({
            "prompt_o": prompt_o, "prompt_a": anti_caption(prompt_o, attr, seed + i), "attributes": [attr],
            "seed": seed + i, "shape": scene.shape, "colour": scene.colour, "background": scene.background,
        })
    return rows


def to_array(image: Image.Image) -> np.ndarray:
    """PIL -> float32 HxWx3 in [0, 1]."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
