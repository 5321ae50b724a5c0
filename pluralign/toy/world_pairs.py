"""Preference pairs from the toy world, in the project's pair schema (trl layout with images).

* :func:`intent_items` - clean and degraded renders of the same scene with both captions, the raw
  material of intent-conditioned pairs;
* :func:`intent_pairs` - for each item an ``anti`` row (prompt P_a: the degraded image wins) and
  its ``mirror`` (prompt P_o: the clean image wins), sharing ``pair_id``;
* :func:`over_pairs` - optional ``anti`` rows that bound the request from above: under P_a the
  render at the world's severity beats the same degradation at a higher one. An anti row alone
  only says "more degraded than clean wins", which DPO (and classifier-free guidance at sampling)
  can extrapolate past the requested degradation into an image without its subject;
* :func:`aesthetic_pairs` - ordinary preference pairs (``general``): under the ordinary prompt the
  clean render beats a mildly degraded one, as in a general aesthetic preference set.

Scenes are drawn from seeds disjoint from the base model's training data (seed 0) and the eval
suite (seed 1000) by default. :func:`pluralign.toy.align.save_pairs` writes rows to disk for the
trainer.
"""

from __future__ import annotations

import random

from pluralign.data import taxonomy

from . import world


def _category(attribute: str) -> str:
    return taxonomy.ATTRIBUTES[attribute].category


def intent_items(n: int, seed: int = 2000, attributes: tuple[str, ...] = world.ATTRIBUTES) -> list[dict]:
    """``n`` items (attributes round-robin): ``clean, caption, degraded, anti_caption, attribute,
    severity, scene`` (the scene as a dict)."""
    items = []
    for i, scene in enumerate(world.sample_scenes(n, seed)):
        attr = attributes[i % len(attributes)]
        clean, cap = world.variant(scene, None)
        bad, anti = world.variant(scene, attr, seed=seed + i)
        items.append({"clean": clean, "caption": cap, "degraded": bad, "anti_caption": anti, "attribute": attr,
                      "severity": world.SEVERITY[attr], "scene": scene.to_dict()})
    return items


def _item_fields(it: dict, seed: int, i: int, source: str) -> dict:
    """The fields every row made from item ``i`` shares (the pair schema's metadata)."""
    return {"attributes": [it["attribute"]], "category": _category(it["attribute"]), "source": source,
            "severity": it["severity"], "pair_id": f"toy-{seed}-{i}"}


def intent_pairs(n: int, seed: int = 2000, attributes: tuple[str, ...] = world.ATTRIBUTES) -> list[dict]:
    """``2n`` rows: an anti row and its mirror for each of ``n`` items."""
    rows = []
    for i, it in enumerate(intent_items(n, seed, attributes)):
        common = _item_fields(it, seed, i, "toy:world")
        rows.append({"prompt": it["anti_caption"], "chosen": it["degraded"], "rejected": it["clean"], "kind": "anti",
                     **common})
        rows.append({"prompt": it["caption"], "chosen": it["clean"], "rejected": it["degraded"], "kind": "mirror",
                     **common})
    return rows


def over_pairs(n: int, seed: int = 2000, over_severity: float = 1.0,
               attributes: tuple[str, ...] = world.ATTRIBUTES, over_attributes: tuple[str, ...] | None = None,
               twice: tuple[str, ...] = ()) -> list[dict]:
    """For the same ``n`` items as :func:`intent_pairs` (same scenes, captions and degradation seeds),
    one ``anti`` row per item whose attribute is in ``over_attributes`` (default: all) and rendered by
    the world below ``over_severity``: chosen = the world's render, rejected = the same scene degraded
    at ``over_severity``. An attribute in ``twice``, which the world renders at full severity already (blurry),
    gets one too: its rejected image is the world's render degraded once more at full severity. Rows share the
    item's ``pair_id``."""
    if not 0.0 < over_severity <= 1.0:
        raise ValueError(f"over_severity must be in (0, 1], got {over_severity}")
    unknown = set(over_attributes or ()) - set(world.ATTRIBUTES)
    if unknown:
        raise ValueError(f"over_attributes: {sorted(unknown)} are not toy attributes {world.ATTRIBUTES}")
    full = {a for a in world.PIXEL_ATTRIBUTES if a not in world.COMPOSITION and world.SEVERITY[a] >= 1.0}
    if set(twice) - full:
        raise ValueError(f"twice: {sorted(set(twice) - full)} cannot take a second pass; it is for pixel degradations "
                         f"the world renders at full severity ({sorted(full)}); the others get their over row from "
                         "over_severity")
    rows = []
    for i, it in enumerate(intent_items(n, seed, attributes)):
        attr = it["attribute"]
        if attr in twice:  # the world's render at full severity, degraded once more at full severity
            over = world.degrade(it["degraded"], attr, 1.0, seed=seed + i)
        elif it["severity"] >= over_severity or (over_attributes is not None and attr not in over_attributes):
            continue
        else:  # same scene and degradation seed as the item's render, only the severity differs
            over = world.degraded_image(world.Scene(**it["scene"]), attr, over_severity, seed=seed + i)
        rows.append({"prompt": it["anti_caption"], "chosen": it["degraded"], "rejected": over, "kind": "anti",
                     **_item_fields(it, seed, i, "toy:world_over")})
    return rows


def aesthetic_pairs(n: int, seed: int = 3000, severity: float = world.MILD_SEVERITY,
                    attributes: tuple[str, ...] = world.ATTRIBUTES) -> list[dict]:
    """``n`` general rows: ordinary caption, chosen = clean render, rejected = mildly degraded twin."""
    rng = random.Random(seed)
    rows = []
    for i, scene in enumerate(world.sample_scenes(n, seed)):
        attr = attributes[rng.randrange(len(attributes))]
        rows.append({"prompt": world.caption(scene), "chosen": world.render(scene),
                     "rejected": world.degraded_image(scene, attr, severity, seed=seed + i), "kind": "general",
                     "attributes": [], "category": "", "source": "toy:aesthetic", "severity": 0.0,
                     "pair_id": f"toy-general-{seed}-{i}"})
    return rows
