"""Content checker: a tiny CNN that names the shape and colour of the main object of a toy image,
and the toy world's judge of its semantic attributes.

Adherence alone rewards a model that returns a blurry grey square for every request; the checker
measures content fidelity (is the requested red circle still there?). It is trained on clean and
degraded renders of the toy world, so an anti-aesthetic image of the right object still counts.

No pixel statistic measures ``decay``, ``unfinished`` or ``bleak`` (they are scene content), so the
checker carries a judge: one sigmoid per semantic attribute, trained on the world's renders of them
against clean and pixel-degraded renders, the toy's stand-in for the VLM judge a real model needs. The
judge is a network of its own (``judge.safetensors``), fitted on every batch as rendered and under a
random change of light, because a generator's storm is darker or tinted and a judge fitted on renders
alone read the renderer's sky colour instead of the rain. Checkers without one judge with a third head
of the content network. Weights are safetensors plus a JSON config, like every other model in the project.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import paths, world

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
JUDGE_WEIGHTS = "judge.safetensors"
CONFIG = "config.json"


class CheckerNet(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4) and up to three linear heads (shape, colour, semantic attributes);
    a head with 0 outputs is left out (the judge network has only the attribute head)."""

    def __init__(self, n_shapes: int, n_colours: int, width: int = 16, n_attributes: int = 0):
        super().__init__()
        self.width = width

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 2 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.shape_head = nn.Linear(2 * width, n_shapes) if n_shapes else None
        self.colour_head = nn.Linear(2 * width, n_colours) if n_colours else None
        self.attribute_head = nn.Linear(2 * width, n_attributes) if n_attributes else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of (shape, colour, semantic attributes); a head the network lacks gives N x 0 (the judge
        network has only the attribute head, checkers built before 2026-12-04 lack it)."""
        h = self.features(x * 2 - 1)
        attrs = self.attribute_head(h) if self.attribute_head is not None else h.new_zeros(len(h), 0)
        shapes = self.shape_head(h) if self.shape_head is not None else h.new_zeros(len(h), 0)
        colours = self.colour_head(h) if self.colour_head is not None else h.new_zeros(len(h), 0)
        return shapes, colours, attrs


def _to_tensor(images) -> torch.Tensor:
    arrs = [img if isinstance(img, np.ndarray) else world.to_array(img) for img in images]
    for i, a in enumerate(arrs):
        if a.shape != (world.SIZE, world.SIZE, 3):
            raise ValueError(f"image {i}: expected {world.SIZE}x{world.SIZE} RGB, got shape {a.shape}")
    return torch.from_numpy(np.stack(arrs).astype(np.float32)).permute(0, 3, 1, 2)


def _save(net: CheckerNet, file: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(file))


def _load(net: CheckerNet, weights: dict, file: Path) -> CheckerNet:
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:  # shapes or keys that do not fit the config beside it
        raise ValueError(f"{file}: its tensors do not fit {file.parent / CONFIG} ({str(exc).splitlines()[0]}); "
                         f"rebuild the checker with `pluralign build-toy --output {file.parent.parent} --stages "
                         "checker,judge`") from None
    return net


class ContentChecker:
    """Load with :meth:`from_pretrained`; :meth:`predict` names objects, :meth:`check` compares to suite rows."""

    def __init__(self, net: CheckerNet, shapes: list[str], colours: list[str], config: dict | None = None,
                 attributes: list[str] | None = None, judge: CheckerNet | None = None):
        self.net = net.eval()
        self.judge = judge.eval() if judge is not None else None  # judges the attributes when present
        self.shapes, self.colours = list(shapes), list(colours)
        self.attributes = list(attributes or [])
        self.config = config or {}
        self.source: Path | None = None  # the directory it was loaded from, for messages
        self._warned = False

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> ContentChecker:
        from safetensors.torch import load_file


        path = Path(path) if path is not None else paths.checker_dir()
        cfg_file, w_file = path / CONFIG, path / WEIGHTS
        if not cfg_file.is_file() or not w_file.is_file():
            raise FileNotFoundError(f"{path}: no content checker here (need {CONFIG} and {WEIGHTS}); "
                                    "build one with `python -m pluralign.toy.build_checkpoints`")
        cfg = json.loads(cfg_file.read_text())
        attributes = cfg.get("attributes", [])
        weights = load_file(str(w_file))
        # the content network's own attribute head, if it has one (a judge network may judge instead)
        own_head = weights["attribute_head.weight"].shape[0] if "attribute_head.weight" in weights else 0
        net = _load(CheckerNet(len(cfg["shapes"]), len(cfg["colours"]), cfg.get("width", 16), own_head), weights, w_file)
        judge = None
        if "judge" in cfg:
            j_file = path / JUDGE_WEIGHTS
            if not j_file.is_file():
                raise FileNotFoundError(f"{cfg_file} names a judge network but {j_file} is missing; rebuild it with "
                                        f"`pluralign build-toy --output {path.parent} --stages judge`")
            judge = _load(CheckerNet(0, 0, cfg["judge"].get("width", 16), len(attributes)), load_file(str(j_file)), j_file)
        checker = cls(net, cfg["shapes"], cfg["colours"], cfg, attributes, judge)
        checker.source = path
        return checker

    def judge_config(self) -> dict:
        """The ``judge`` entry of ``config.json`` for this checker's judge network."""
        return {**self.config.get("judge", {}), "width": self.judge.width}

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        _save(self.net, path / WEIGHTS)
        cfg = {**self.config, "shapes": self.shapes, "colours": self.colours, "attributes": self.attributes}
        if self.judge is not None:  # the config names a judge exactly when its file is written
            _save(self.judge, path / JUDGE_WEIGHTS)
            cfg["judge"] = self.judge_config()
        else:
            cfg.pop("judge", None)
            (path / JUDGE_WEIGHTS).unlink(missing_ok=True)
        (path / CONFIG).write_text(json.dumps(cfg, indent=2))
        return path

    @torch.no_grad()
    def predict(self, images, batch_size: int = 256) -> tuple[list[str], list[str]]:
        """Predicted (shapes, colours) of PIL images or float HxWx3 arrays in [0, 1]."""
        shapes, colours = [], []
        images = list(images)
        for i in range(0, len(images), batch_size):
            s, c, _ = self.net(_to_tensor(images[i:i + batch_size]))
            shapes += [self.shapes[j] for j in s.argmax(1).tolist()]
            colours += [self.colours[j] for j in c.argmax(1).tolist()]
        return shapes, colours

    @torch.no_grad()
    def attribute_probs(self, images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Per semantic attribute the checker judges, the probability that each image shows it: from the judge
        network where the checker has one, else from the content network's own attribute head."""
        net = self.judge if self.judge is not None else self.net
        where = f" at {self.source}" if self.source else ""
        add = f"`pluralign build-toy --output {self.source.parent if self.source else 'DIR'} --stages judge`"
        if not self.attributes or net.attribute_head is None:
            raise ValueError(f"this content checker{where} has no judge of the semantic attributes; add one with {add}")
        if self.judge is None and not self._warned:
            self._warned = True
            log.warning("the content checker%s has no judge network (%s): its content network's own head judges %s, "
                        "and it misses storms that are darker or tinted. Add one with %s", where, JUDGE_WEIGHTS,
                        ", ".join(self.attributes), add)
        images = list(images)
        probs = [net(_to_tensor(images[i:i + batch_size]))[2].sigmoid().double().numpy()
                 for i in range(0, len(images), batch_size)]
        out = np.concatenate(probs) if probs else np.zeros((0, len(self.attributes)))
        return {a: out[:, k] for k, a in enumerate(self.attributes)}

    def check(self, images, rows) -> np.ndarray:
        """True where the image shows the row's ``shape`` and ``colour``."""
        images, rows = list(images), list(rows)
        if len(images) != len(rows):
            raise ValueError(f"check: {len(images)} images but {len(rows)} rows")
        for i, row in enumerate(rows):
            for key in ("shape", "colour"):
                if key not in row:
                    raise KeyError(f"check: row {i} has no '{key}' field (rows come from world.eval_suite)")
        shapes, colours = self.predict(images)
        return np.array([s == r["shape"] and c == r["colour"] for s, c, r in zip(shapes, colours, rows)], bool)


# --- training ------------------------------------------------------------------------------------

@dataclass
class CheckerData:
    images: np.ndarray  # N x 32 x 32 x 3 float32
    shapes: np.ndarray  # N int
    colours: np.ndarray  # N int
    attributes: list  # N (None for clean)


# every attribute the world draws, pixel and semantic: the checker judges the whole world whichever of
# them a given base was trained to follow
WORLD_ATTRIBUTES = world.PIXEL_ATTRIBUTES + world.SEMANTIC_ATTRIBUTES


def make_data(n_scenes: int, seed: int, p_clean: float = 0.3, severity_range=(0.3, 1.0),
              semantic_range=(0.5, 1.0), semantic_share: float = 0.4) -> CheckerData:
    """Renders of ``n_scenes`` scenes, each clean or showing one attribute (random, at a random severity).

    Severities reach beyond the world's own so the checker stays robust on generated images,
    which are rougher than renders. Semantic attributes start at a severity where they are
    unmistakable, since the attribute head's label says "shows it", and make up ``semantic_share``
    of the non-clean renders: the head needs positives, the pixel attributes are its negatives.
    """
    rng = random.Random(seed)
    imgs, shapes, colours, attrs = [], [], [], []
    for i, scene in enumerate(world.sample_scenes(n_scenes, seed, p_second=0.15)):
        attr = None if rng.random() < p_clean else rng.choice(
            world.SEMANTIC_ATTRIBUTES if rng.random() < semantic_share else world.PIXEL_ATTRIBUTES)
        if attr is None:
            img = world.render(scene)
        else:
            lo, hi = semantic_range if attr in world.SEMANTIC_ATTRIBUTES else severity_range
            img = world.degraded_image(scene, attr, rng.uniform(lo, hi), seed=seed * 100003 + i)
        imgs.append(world.to_array(img))
        shapes.append(world.SHAPES.index(scene.shape))
        colours.append(list(world.COLOURS).index(scene.colour))
        attrs.append(attr)
    return CheckerData(np.stack(imgs), np.array(shapes), np.array(colours), attrs)


def accuracy(checker: ContentChecker, data: CheckerData) -> float:
    s, c = checker.predict(list(data.images))
    ok = [(checker.shapes.index(a) == b) and (checker.colours.index(x) == y)
          for a, x, b, y in zip(s, c, data.shapes, data.colours)]
    return float(np.mean(ok))


def soften(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Each image of NCHW ``x`` blended with its 3x3 box blur by ``amount`` (per image, in [0, 1])."""
    blurred = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = amount.view(-1, 1, 1, 1)
    return x * (1 - w) + blurred * w


def random_light(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """NCHW ``x`` in [0, 1], each image under its own change of light: per-channel gains in [0.6, 1], an overall
    dimming to [0.45, 1] and, for half the images, a haze of up to 35% toward a random flat colour."""
    n = len(x)
    gain = (torch.empty(n, 3, 1, 1).uniform_(0.6, 1.0, generator=g)
            * torch.empty(n, 1, 1, 1).uniform_(0.45, 1.0, generator=g))
    haze = torch.empty(n, 1, 1, 1).uniform_(0.0, 0.35, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) < 0.5)
    colour = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.2
    return (x * gain * (1 - haze) + haze * colour).clamp(0, 1)


def _fit(net: CheckerNet, data: CheckerData, loss_fn, steps: int, batch_size: int, lr: float, seed: int,
         progress: bool, desc: str) -> None:
    """Fit ``net`` on ``data``: AdamW under a one-cycle rate, batches drawn with replacement and roughened the
    way generated images are. ``loss_fn(net, x, idx, g)`` gives a batch's loss (``idx``: its rows of ``data``)."""
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    x_all = torch.from_numpy(data.images).permute(0, 3, 1, 2)
    g = torch.Generator().manual_seed(seed)
    net.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=5)
    for _ in bar:
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        x = x_all[idx]
        # mild pixel noise, softening and random flips: generated images are never exact renders (an
        # autoencoder's round trip softens cracks, outlines and rain first)
        x = (x + 0.03 * torch.randn(x.shape, generator=g) * torch.rand(len(x), 1, 1, 1, generator=g)).clamp(0, 1)
        x = soften(x, torch.rand(len(x), generator=g) * 0.6)
        if torch.rand((), generator=g) < 0.5:
            x = x.flip(3)
        loss = loss_fn(net, x, idx, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    net.eval()


def _attribute_labels(data: CheckerData, semantic: list[str]) -> torch.Tensor:
    return torch.tensor([[float(a == s) for s in semantic] for a in data.attributes])


def train_checker(n_scenes: int = 4000, steps: int = 800, batch_size: int = 64, lr: float = 3e-3,
                  width: int = 16, seed: int = 0, progress: bool = True, eval_scenes: int = 450
                  ) -> tuple[ContentChecker, dict]:
    """Train the checker from scratch; returns it and a record (config, held-out accuracies, wall time)."""
    t0 = time.time()
    torch.manual_seed(seed)
    data = make_data(n_scenes, seed)
    semantic = list(world.SEMANTIC_ATTRIBUTES)
    net = CheckerNet(len(world.SHAPES), len(world.COLOURS), width, len(semantic))
    ys, yc, ya = torch.from_numpy(data.shapes), torch.from_numpy(data.colours), _attribute_labels(data, semantic)
    ce, bce = nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss()

    def loss_fn(net, x, idx, g):
        s, c, a = net(x)
        return ce(s, ys[idx]) + ce(c, yc[idx]) + bce(a, ya[idx])

    _fit(net, data, loss_fn, steps, batch_size, lr, seed, progress, "content checker")
    checker = ContentChecker(net, list(world.SHAPES), list(world.COLOURS),
                             {"width": width, "n_scenes": n_scenes, "steps": steps, "batch_size": batch_size,
                              "lr": lr, "seed": seed}, semantic)
    record = evaluate_checker(checker, eval_scenes, seed=seed + 7919)
    record["wall_seconds"] = round(time.time() - t0, 1)
    checker.config["heldout"] = record
    return checker, record


def train_judge(checker: ContentChecker, n_scenes: int = 6000, steps: int = 1500, batch_size: int = 64,
                lr: float = 3e-3, width: int = 16, seed: int = 0, progress: bool = True, eval_scenes: int = 450
                ) -> dict:
    """Give ``checker`` a judge network of its own, trained from scratch; returns the held-out record.

    The judge sees every batch twice: as rendered, and under :func:`random_light`. A generator's storm sky is
    darker or tinted by the background it replaced, and a judge fitted on renders alone reads the renderer's
    sky colour instead of the rain (``judge_under_light`` of the record). It shares no features with the shape
    and colour heads, whose job is to name colours, so the content checker stays exactly as it was."""
    t0 = time.time()
    torch.manual_seed(seed)
    data = make_data(n_scenes, seed)
    semantic = list(checker.attributes or world.SEMANTIC_ATTRIBUTES)
    net = CheckerNet(0, 0, width, len(semantic))
    ya = _attribute_labels(data, semantic)
    bce = nn.BCEWithLogitsLoss()

    def loss_fn(net, x, idx, g):
        return bce(net(x)[2], ya[idx]) + bce(net(random_light(x, g))[2], ya[idx])

    _fit(net, data, loss_fn, steps, batch_size, lr, seed, progress, "judge")
    checker.judge, checker.attributes = net, semantic
    record = evaluate_checker(checker, eval_scenes, seed=seed + 7919)
    record["wall_seconds"] = round(time.time() - t0, 1)
    checker.config["judge"] = {"width": width, "n_scenes": n_scenes, "steps": steps, "batch_size": batch_size,
                               "lr": lr, "seed": seed, "light_views": True, "heldout": record}
    return record


def save_judge(checker: ContentChecker, path: str | Path) -> Path:
    """Write ``checker``'s judge network into the checker directory ``path`` and name it in its config, leaving
    the content network's weights file untouched."""
    path = Path(path)
    if checker.judge is None:
        raise ValueError(f"save_judge: the checker has no judge network to write into {path} (train_judge makes one)")
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"save_judge: {path / CONFIG} is missing; write the content checker there first "
                                "(save_pretrained)")
    cfg = json.loads((path / CONFIG).read_text())
    if cfg.get("attributes") and cfg["attributes"] != checker.attributes:
        raise ValueError(f"save_judge: the judge judges {checker.attributes}, the checker in {path} "
                         f"{cfg['attributes']}; rebuild both with `--stages checker,judge`")
    _save(checker.judge, path / JUDGE_WEIGHTS)
    cfg.update(judge=checker.judge_config(), attributes=checker.attributes)
    (path / CONFIG).write_text(json.dumps(cfg, indent=2))
    return path


# Fixed changes of light and tint under which the judge is measured (``judge_under_light``). A generator's
# storm sky is rarely the renderer's grey-blue: sampled under strong guidance it comes out darker, or tinted
# by the background it replaced. A bleak scene stays bleak whatever its light, so the judge has to read the
# rain, the stains and the outline rather than one colour. Each is a per-channel gain and a haze
# (the share of the image replaced by a flat colour); none changes where anything is drawn.
LIGHT_CHANGES: dict[str, tuple[tuple[float, float, float], float, tuple[float, float, float]]] = {
    "dim_0.7": ((0.7, 0.7, 0.7), 0.0, (0, 0, 0)),
    "dim_0.5": ((0.5, 0.5, 0.5), 0.0, (0, 0, 0)),
    "olive": ((0.85, 0.85, 0.6), 0.0, (0, 0, 0)),
    "brown": ((0.8, 0.65, 0.5), 0.0, (0, 0, 0)),
    "olive_dim": ((0.6, 0.6, 0.42), 0.0, (0, 0, 0)),
    "warm_haze": ((1.0, 1.0, 1.0), 0.3, (0.55, 0.5, 0.4)),
}


def change_light(images: np.ndarray, gain, haze: float, colour) -> np.ndarray:
    """N x H x W x 3 float images in [0, 1] under a per-channel ``gain`` and a ``haze`` toward ``colour``."""
    out = images * np.asarray(gain, np.float32) * (1 - haze) + haze * np.asarray(colour, np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


def evaluate_checker(checker: ContentChecker, n: int = 450, seed: int = 7919) -> dict:
    """Held-out content accuracy on clean renders and on each attribute at the world's severity, and
    the judge of the semantic attributes: per attribute, how often it fires on renders of it (recall)
    and on renders of anything else, clean or another attribute (false positives); ``judge_under_light``
    gives the same two under each of :data:`LIGHT_CHANGES`."""
    scenes = world.sample_scenes(n, seed)
    clean = [world.render(s) for s in scenes]
    rows = [{"shape": s.shape, "colour": s.colour} for s in scenes]
    out = {"n": n, "clean": float(checker.check(clean, rows).mean()), "by_attribute": {}}
    shown = {None: clean}
    for attr in WORLD_ATTRIBUTES:
        shown[attr] = [world.degraded_image(s, attr, seed=seed + i) for i, s in enumerate(scenes)]
        out["by_attribute"][attr] = float(checker.check(shown[attr], rows).mean())
    out["degraded"] = float(np.mean(list(out["by_attribute"].values())))
    if checker.attributes:
        probs = {k: checker.attribute_probs(v) for k, v in shown.items()}
        out["judge"] = _judge_rates(checker, probs)
        arrays = {k: np.stack([world.to_array(img) for img in v]) for k, v in shown.items()}
        out["judge_under_light"] = {
            name: _judge_rates(checker, {k: checker.attribute_probs(list(change_light(v, *change)))
                                         for k, v in arrays.items()})
            for name, change in LIGHT_CHANGES.items()}
    return out


def _judge_rates(checker: ContentChecker, probs: dict) -> dict:
    """Recall and false-positive rate of each semantic head, from {shown attribute or None: head probabilities}."""
    return {a: {"recall": float((probs[a][a] > 0.5).mean()),
                "false_positive": float(np.mean([(probs[k][a] > 0.5).mean() for k in probs if k != a]))}
            for a in checker.attributes}


def main(argv: list[str] | None = None) -> int:
    """``python -m pluralign.toy.checker [DIR]``: the held-out record of a checker (default: the shipped one)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pluralign.toy.checker", description=main.__doc__)
    ap.add_argument("checker_dir", nargs="?", default=None, help="a checker directory (config.json, model.safetensors)")
    ap.add_argument("--n", type=int, default=450, help="held-out scenes")
    ap.add_argument("--seed", type=int, default=7919, help="seed of the held-out scenes")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    record = evaluate_checker(ContentChecker.from_pretrained(args.checker_dir), args.n, args.seed)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
