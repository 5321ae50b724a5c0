"""The anti-aesthetic vocabulary: VisionReward dimensions, adapter categories and attributes.

An *attribute* is one concrete effect a user can ask for ("blurry", "underexposed", "grief").
Each attribute belongs to one of the five adapter categories (one LoRA adapter per category),
to one of the 28 subclasses of that category, and to one of the 11 VisionReward dimensions the
paper scores. It carries several prompt phrasings (for rewriting P_o -> P_a), the name of the
image degradation that produces it from a clean picture (``None`` for prompt-only attributes such
as emotions, which no pixel operation can fake honestly), and the name of the model-free verifier
in ``pluralign.rewards.verifiers`` that measures it, with the sign of the change it causes.
"""

from __future__ import annotations

from dataclasses import dataclass

# VisionReward dimension -> its negative (anti-aesthetic) options, mildest first.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "object_pairing": ("disharmonious",),
    "main_object": ("not prominent",),
    "richness": ("monotonous", "empty"),
    "background": ("no background",),
    "clarity": ("blurry", "completely blurry"),
    "color_brightness": ("dark",),
    "color_aesthetic": ("ugly colors",),
    "lighting_distinction": ("no light and shadow",),
    "emotion": ("negative", "very negative"),
    "detail_refinement": ("rough", "fragmented"),
    "detail_realism": ("inauthentic", "severely inauthentic"),
}

# Adapter category -> its subclasses (28 in all).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "clarity_and_focus": (
        "intentional_blur", "double_exposure", "film_artifacts", "analog_degradation",
        "digital_artifacts", "bad_or_no_details",
    ),
    "color_and_tone": (
        "clashing_disharmony", "chromatic_aberration", "muted_faded", "sickly_cast", "color_inconsistency",
    ),
    "lighting_and_exposure": (
        "exposure_extremes", "light_leak", "flat_lighting", "harsh_or_insufficient_flash",
        "low_contrast_oppressive",
    ),
    "composition_and_structure": (
        "unconventional_framing", "obstructed_cropping", "scale_inconsistency", "unconventional_scale",
        "amateur_snapshot_energy",
    ),
    "emotion_and_subject": (
        "negative_personal_emotion", "atmospheric_distress", "decay_and_degradation", "disgust_and_aversion",
        "unfinished_raw", "abstract_photo", "surrealism",
    ),
}

_SUBCLASS_TO_CATEGORY = {sub: cat for cat, subs in CATEGORIES.items() for sub in subs}


@dataclass(frozen=True)
class Attribute:
    """One requestable anti-aesthetic effect.

    ``direction`` is +1 when the verifier's value rises with the attribute present, -1 when it
    falls, and 0 when there is no verifier. ``exclusive`` names a group of attributes that are
    never combined in one prompt (an image cannot be both under- and over-exposed).
    """

    name: str
    category: str
    subclass: str
    dimension: str
    templates: tuple[str, ...]
    degradation: str | None = None
    verifier: str | None = None
    direction: int = 0
    exclusive: str | None = None

    @property
    def judge_only(self) -> bool:
        """No model-free verifier measures it (emotions, surrealism, clashing colours): only a judge (a
        VLM, the toy world's checker) can say whether an image shows it, and without one the eval
        reports it as unmeasured."""
        return self.verifier is None

    def __post_init__(self):
        if _SUBCLASS_TO_CATEGORY.get(self.subclass) != self.category:
            raise ValueError(f"attribute {self.name}: subclass {self.subclass!r} is not in category {self.category!r}")
        if self.dimension not in DIMENSIONS:
            raise ValueError(f"attribute {self.name}: unknown dimension {self.dimension!r}")
        if (self.verifier is None) != (self.direction == 0):
            raise ValueError(f"attribute {self.name}: a verifier needs a direction of +1/-1 and vice versa")


def _a(name, subclass, dimension, templates, degradation=None, verifier=None, direction=0, exclusive=None):
    return Attribute(name, _SUBCLASS_TO_CATEGORY[subclass], subclass, dimension, tuple(templates),
                     degradation, verifier, direction, exclusive)


_ALL = [
    # clarity_and_focus
    _a("blurry", "intentional_blur", "clarity",
       ["blurry", "soft and blurred all over", "smeared with heavy blur", "so blurry the edges dissolve"],
       "gaussian_blur", "sharpness", -1, "blur"),
    _a("motion_blur", "intentional_blur", "clarity",
       ["with streaky motion blur", "shot with a shaky hand, motion-blurred", "smeared by camera movement",
        "long-exposure motion streaks"],
       "motion_blur", "sharpness", -1, "blur"),
    _a("defocused", "intentional_blur", "clarity",
       ["completely out of focus", "with the focus missed entirely", "defocused, soft bokeh everywhere",
        "as if the lens never found focus"],
       "defocus_blur", "sharpness", -1, "blur"),
    _a("double_exposure", "double_exposure", "object_pairing",
       ["as a messy double exposure", "with a ghostly second exposure on top", "two overlapping exposures"],
       "double_exposure"),
    _a("film_grain", "film_artifacts", "detail_refinement",
       ["with coarse film grain", "on grainy high-speed film", "gritty with clumpy grain"],
       "film_grain", "noise", +1),
    _a("worn_print", "analog_degradation", "detail_realism",
       ["like a scratched, worn old print", "on a damaged analog photograph", "with dust and scratches of old film"]),
    _a("noisy", "digital_artifacts", "detail_refinement",
       ["full of digital sensor noise", "noisy like a high-ISO phone shot", "speckled with colour noise"],
       "sensor_noise", "noise", +1),
    _a("jpeg_artifacts", "digital_artifacts", "detail_refinement",
       ["with blocky JPEG compression artifacts", "heavily over-compressed", "like a low-quality re-saved JPEG"],
       "jpeg_blocking", "blockiness", +1),
    _a("rough_details", "bad_or_no_details", "detail_refinement",
       ["with rough, fragmented details", "lacking any fine detail", "crude and unrefined in every detail"]),
    # color_and_tone
    _a("clashing_colors", "clashing_disharmony", "color_aesthetic",
       ["in clashing, ugly colours", "with a garish, disharmonious palette", "in colours that fight each other"]),
    _a("chromatic_aberration", "chromatic_aberration", "color_aesthetic",
       ["with strong chromatic aberration", "with colour fringing at every edge", "with red and blue fringes"],
       "chromatic_aberration", "chromatic_aberration", +1),
    _a("muted", "muted_faded", "color_aesthetic",
       ["in muted, washed-out colours", "almost colourless", "desaturated and drab"],
       "desaturate", "saturation", -1),
    _a("color_cast", "sickly_cast", "color_aesthetic",
       ["with a sickly colour cast", "tinted an unhealthy green-yellow", "with a strong unnatural tint"],
       "color_cast", "color_cast", +1),
    _a("inconsistent_colors", "color_inconsistency", "color_aesthetic",
       ["with inconsistent, mismatched colour grading", "with colours that change from patch to patch"]),
    # lighting_and_exposure
    _a("underexposed", "exposure_extremes", "color_brightness",
       ["badly underexposed", "far too dark", "shot in murky darkness", "crushed into shadow"],
       "underexposure", "brightness", -1, "exposure"),
    _a("overexposed", "exposure_extremes", "color_brightness",
       ["blown-out and overexposed", "washed out by too much light", "with clipped, burnt highlights"],
       "overexposure", "value", +1, "exposure"),
    _a("light_leak", "light_leak", "lighting_distinction",
       ["with an orange light leak", "with light leaking across the frame", "fogged by a light leak"],
       "light_leak", "glow", +1),
    _a("flat_lighting", "flat_lighting", "lighting_distinction",
       ["under flat, shadowless light", "lit flatly with no depth", "with dull, even lighting and no shadows"],
       "flat_lighting", "contrast", -1),
    _a("vignette", "harsh_or_insufficient_flash", "lighting_distinction",
       ["with heavy dark vignetting", "lit by a weak flash that falls off to black corners",
        "with corners sinking into darkness"],
       "vignette", "vignetting", -1),
    _a("low_contrast", "low_contrast_oppressive", "lighting_distinction",
       ["flat and low in contrast", "faded and murky, with no contrast", "in an oppressive grey low-contrast haze"],
       "low_contrast", "contrast", -1),
    # composition_and_structure
    _a("off_center", "unconventional_framing", "main_object",
       ["with the subject awkwardly off-centre", "framed so the subject is pushed into a corner",
        "with clumsy off-centre framing"],
       "offcenter_subject", "subject_offcenter", +1, "framing"),
    _a("tilted", "unconventional_framing", "main_object",
       ["with a crooked, tilted horizon", "shot at a careless tilt", "skewed at an unintended angle"],
       "tilt", "tilt", +1),
    _a("obstructed", "obstructed_cropping", "main_object",
       ["partly blocked by an object in front of the lens", "with something obstructing the view",
        "half hidden behind a blurry foreground blob"],
       "obstruction", "occlusion", +1),
    _a("cropped", "obstructed_cropping", "main_object",
       ["awkwardly cropped", "with the subject cut off at the edge", "with a careless tight crop"],
       "crop", "zoom", +1, "framing"),
    _a("no_background", "unconventional_framing", "background",
       ["on a blank, empty background", "with no background at all, floating in a void",
        "isolated against a plain featureless backdrop"]),
    _a("scale_mismatch", "scale_inconsistency", "detail_realism",
       ["with objects at inconsistent, impossible scales", "where sizes do not match each other"]),
    _a("small_subject", "unconventional_scale", "main_object",
       ["with the subject tiny in a vast empty frame", "where the subject is barely visible and small",
        "with the subject shrunk to a speck"],
       "small_subject", "subject_size", -1, "framing"),
    _a("snapshot", "amateur_snapshot_energy", "richness",
       ["as a careless amateur snapshot", "like an accidental phone photo", "with casual, unplanned snapshot energy"]),
    # emotion_and_subject
    _a("grief", "negative_personal_emotion", "emotion",
       ["steeped in grief", "full of sorrow and loss", "with a grief-stricken mood"]),
    _a("bleak", "atmospheric_distress", "emotion",
       ["in a bleak, oppressive atmosphere", "under a distressing, ominous mood", "with a sense of dread"]),
    _a("decay", "decay_and_degradation", "detail_realism",
       ["rotting and decayed", "crumbling with decay", "overtaken by rust and rot"]),
    _a("disgust", "disgust_and_aversion", "emotion",
       ["in a repulsive, disgusting way", "made deliberately off-putting", "grimy and revolting"]),
    _a("unfinished", "unfinished_raw", "detail_refinement",
       ["as a raw, unfinished sketch", "left rough and incomplete", "like an unfinished draft"]),
    _a("abstract", "abstract_photo", "richness",
       ["as an abstract, barely legible photo", "reduced to abstract shapes", "ambiguous and abstract"]),
    _a("surreal", "surrealism", "detail_realism",
       ["in an unsettling surreal style", "dreamlike and illogical", "with surreal, impossible details"]),
]

ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in _ALL}

# A request for a whole VisionReward dimension (the paper's prompt set lists dimensions, not attributes,
# in ``selected``) is written ``dimension:NAME``. It is shown when any of the attributes below is: the
# ones whose verifier rules measure that dimension's negative option. Every other attribute of the
# dimension is left out on purpose: "dark" is underexposure, never overexposure; "not prominent" is a
# small, off-centre or obstructed subject, not a tight crop. An empty tuple means no model-free
# measurement exists ("ugly colors", "negative emotion"): the dimension is judge only.
DIMENSION_PREFIX = "dimension:"
DIMENSION_MEASURES: dict[str, tuple[str, ...]] = {
    "object_pairing": (),
    "main_object": ("small_subject", "off_center", "obstructed"),
    "richness": (),
    "background": (),
    "clarity": ("blurry", "motion_blur", "defocused"),
    "color_brightness": ("underexposed",),
    "color_aesthetic": (),
    "lighting_distinction": ("flat_lighting", "low_contrast"),
    "emotion": (),
    "detail_refinement": (),
    "detail_realism": (),
}


def attributes_in(category: str, *, degradable: bool = False) -> tuple[str, ...]:
    """Attribute names of ``category`` (only those with an image degradation if ``degradable``)."""
    if category not in CATEGORIES:
        raise KeyError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")
    return tuple(a.name for a in _ALL if a.category == category and (a.degradation or not degradable))


def category_of(attribute: str) -> str:
    """The adapter category of an attribute name."""
    return get(attribute).category


def get(attribute: str) -> Attribute:
    try:
        return ATTRIBUTES[attribute]
    except KeyError:
        raise KeyError(f"unknown attribute {attribute!r}; known: {', '.join(ATTRIBUTES)}") from None


def degradable_categories() -> tuple[str, ...]:
    """Categories that have at least one attribute an image degradation can produce."""
    return tuple(c for c in CATEGORIES if attributes_in(c, degradable=True))


# VisionReward dimension name as written in the paper's datasets ("color brightness") -> our key.
def dimension_key(name: str) -> str | None:
    key = name.strip().lower().replace("-", " ").replace(" ", "_")
    return key if key in DIMENSIONS else None


def dimension_request(dimension: str) -> str:
    """The requestable name of a whole dimension, ``dimension:clarity``."""
    if dimension not in DIMENSIONS:
        raise KeyError(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
    return DIMENSION_PREFIX + dimension


def requested_dimension(name: str) -> str | None:
    """The dimension a ``dimension:NAME`` request names (None for an attribute name)."""
    if name.startswith(DIMENSION_PREFIX) and name[len(DIMENSION_PREFIX):] in DIMENSIONS:
        return name[len(DIMENSION_PREFIX):]
    return None


def is_requestable(name: str) -> bool:
    """An attribute name or a ``dimension:NAME`` request."""
    return name in ATTRIBUTES or requested_dimension(name) is not None


def phrase(name: str) -> str:
    """How a judge is asked about a request: the attribute's first phrasing, or the dimension's first
    negative option ("blurry", "ugly colors")."""
    dim = requested_dimension(name)
    return DIMENSIONS[dim][0] if dim is not None else get(name).templates[0]


# Attribute -> attributes its physics implies, so a rule for the second also fires on an image that
# shows only the first (darkening an image lowers its absolute contrast). The verifier checks list these
# pairs apart from the specificity target, and multi-attribute adherence does not count the implied
# attribute as shown when only the implying one is (see pluralign.rewards.rules.adherence_table).
IMPLIES: dict[str, tuple[str, ...]] = {
    "motion_blur": ("blurry",),  # a smear is a blur
    "defocused": ("blurry",),  # so is a defocus
    # an isotropic blur: at these sizes no rule tells a Gaussian point spread from a lens's disk
    "blurry": ("defocused",),
    # a crop enlarged to the frame is interpolated (softer per pixel), and a window away from the frame's
    # centre moves the scene's centre off it
    "cropped": ("blurry", "defocused", "off_center"),
    # darkening compresses absolute contrast (a gain keeps each place's texture in proportion to its light, so it
    # lays no featureless surface: the obstruction rule reads none since 2026-12-07)
    "underexposed": ("low_contrast",),
    # a dark occluder near the lens is out of focus: a darker frame with less detail, lost in every direction
    "obstructed": ("underexposed", "blurry", "defocused"),
    "vignette": ("underexposed",),  # dark corners: a darker frame
    "noisy": ("film_grain",),  # grain is noise: they differ in clump size and colour,
    "film_grain": ("noisy",),  # which a 64 px image cannot resolve
    "light_leak": ("color_cast", "overexposed"),  # fogging warm light: a local cast and added light
    "double_exposure": ("low_contrast",),  # blending two exposures averages each one's light and shadow
    "small_subject": ("low_contrast",),  # an empty frame: less of it carries light and shadow
    "low_contrast": ("muted",),  # a veil of light adds the same grey to every channel: colours pale
    # a subject moved off centre by d that stays in the frame spans at most 1 - 2d of it
    "off_center": ("small_subject",),
}
