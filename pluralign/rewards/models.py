"""Reward models and judges behind :class:`~pluralign.rewards.base.RewardModel`.

Each class takes a hub id *or a local directory* (the same ``from_pretrained`` path), so tests
run the real code on tiny random models saved to disk. Each lists the models it loads
(:meth:`~pluralign.rewards.base.RewardModel.required_models`), so that a caller can check that
they are all on this machine before loading any. Weights are read as safetensors only:
checkpoints published as pickles (HPSv2, the LAION aesthetic head) must be converted once with
``python -c "import torch, safetensors.torch as st; st.save_file(torch.load('in.pt', weights_only=True), 'out.safetensors')"``
(state dict inside, nested ``state_dict`` key unwrapped) before use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from .base import MissingDependency, RewardModel, require
from .rules import PAIRED_ONLY, RULE_SPECS
from .verifiers import measure


def _hub_error(name: str, model_id: str, exc: Exception) -> MissingDependency:
    if Path(model_id).expanduser().exists() or model_id.startswith((".", "/", "~")):  # a local path: nothing to download
        return MissingDependency(
            f"{name}: could not load weights {model_id!r} ({type(exc).__name__}: {exc}). Pass a local directory "
            f"that holds the model's config and weights (what save_pretrained writes) as {name}=DIR.")
    return MissingDependency(
        f"{name}: could not load weights {model_id!r} ({type(exc).__name__}: {exc}). Download them with"
        f" `hf download {model_id}` on a machine with hub access, or pass a local directory ({name}=DIR)."
    )


class CLIPScore(RewardModel):
    """100 x cosine(image embedding, text embedding) of a CLIP model (Hessel et al. 2021, without the clamp).

    Ties at zero would make paired accuracy ambiguous, so negative cosines are kept.
    """

    name = "clip"

    def __init__(self, model_id: str = "openai/clip-vit-large-patch14", processor_id: str | None = None,
                 scale: float = 100.0, **kw):
        super().__init__(**kw)
        self.model_id, self.processor_id, self.scale = model_id, processor_id or model_id, scale

    def required_models(self) -> list[tuple[str, str]]:
        models = [(self.model_id, "model")]
        return models + [(self.processor_id, "processor")] if self.processor_id != self.model_id else models

    def load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        self.check_available()
        try:
            self.model = CLIPModel.from_pretrained(self.model_id, use_safetensors=True).to(self.device, self.dtype).eval()
            self.processor = AutoProcessor.from_pretrained(self.processor_id)
        except OSError as exc:
            raise _hub_error(self.name, self.model_id, exc) from exc

    def _embed(self, images, prompts):
        tok = self.processor.tokenizer
        text = tok(prompts, padding="max_length", truncation=True, max_length=min(tok.model_max_length, 77),
                   return_tensors="pt").to(self.device)
        pix = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        img = self.model.get_image_features(pixel_values=pix)
        txt = self.model.get_text_features(**text)
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        return torch.nn.functional.normalize(img.float(), dim=-1), torch.nn.functional.normalize(txt.float(), dim=-1)

    def _score_batch(self, images, prompts):
        img, txt = self._embed(images, prompts)
        return self.scale * (img * txt).sum(-1)


class PickScore(CLIPScore):
    """PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on Pick-a-Pic; logit_scale.exp() x cosine."""

    name = "pickscore"

    def __init__(self, model_id: str = "yuvalkirstain/PickScore_v1",
                 processor_id: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", **kw):
        super().__init__(model_id=model_id, processor_id=processor_id, **kw)

    def _score_batch(self, images, prompts):
        img, txt = self._embed(images, prompts)
        return self.model.logit_scale.exp().float() * (img * txt).sum(-1)


class HPSv2(RewardModel):
    """Human Preference Score v2/v2.1: an open_clip ViT-H-14 fine-tuned on HPD v2; 100 x cosine.

    Needs ``open_clip_torch`` (extra ``rewards``) and the checkpoint converted to safetensors.
    """

    name = "hpsv2"

    def __init__(self, checkpoint: str | None = None, arch: str = "ViT-H-14", **kw):
        super().__init__(**kw)
        self.checkpoint, self.arch = checkpoint, arch

    def check_available(self, local_option: str | None = None) -> None:
        if importlib.util.find_spec("open_clip") is None:
            require("open_clip", "open_clip_torch")  # raises, naming the package
        if not self.checkpoint or not Path(self.checkpoint).is_file():
            raise MissingDependency(
                f"hpsv2: checkpoint {self.checkpoint!r} not found; download HPS_v2.1_compressed.pt from the hub repo"
                " xswu/HPSv2, convert it to safetensors (see pluralign.rewards.models) and pass it as hpsv2=PATH"
            )

    def load(self) -> None:
        self.check_available()
        open_clip = require("open_clip", "open_clip_torch")
        from safetensors.torch import load_file

        model, _, preprocess = open_clip.create_model_and_transforms(self.arch, pretrained=None)
        model.load_state_dict(load_file(self.checkpoint))
        self.model, self.preprocess = model.to(self.device).eval(), preprocess
        self.tokenizer = open_clip.get_tokenizer(self.arch)

    def _score_batch(self, images, prompts):
        pix = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        text = self.tokenizer(prompts).to(self.device)
        img = torch.nn.functional.normalize(self.model.encode_image(pix).float(), dim=-1)
        txt = torch.nn.functional.normalize(self.model.encode_text(text).float(), dim=-1)
        return 100.0 * (img * txt).sum(-1)


class ImageRewardModel(RewardModel):
    """ImageReward (Xu et al. 2023) through its own package (optional extra ``image-reward``)."""

    name = "imagereward"

    def __init__(self, model_id: str = "ImageReward-v1.0", **kw):
        super().__init__(**kw)
        self.model_id = model_id

    def check_available(self, local_option: str | None = None) -> None:
        if importlib.util.find_spec("ImageReward") is None:
            require("ImageReward", "image-reward")  # raises, naming the package

    def load(self) -> None:
        rm = require("ImageReward", "image-reward")
        try:
            self.model = rm.load(self.model_id, device=str(self.device))
        except Exception as exc:  # the package downloads on first use
            raise _hub_error(self.name, self.model_id, exc) from exc

    def _score_batch(self, images, prompts):
        return torch.tensor([float(self.model.score(p, [im])) for im, p in zip(images, prompts)])


class _AestheticHead(torch.nn.Module):
    """The LAION improved-aesthetic-predictor MLP; layer indices match the published state dict."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


class LAIONAesthetic(RewardModel):
    """LAION aesthetic predictor v2: an MLP on L2-normalised CLIP ViT-L/14 image embeddings. Ignores the prompt."""

    name = "aesthetic"
    prompt_aware = False

    def __init__(self, head: str | None = None, clip_id: str = "openai/clip-vit-large-patch14", **kw):
        super().__init__(**kw)
        self.head, self.clip_id = head, clip_id

    def required_models(self) -> list[tuple[str, str]]:
        return [(self.clip_id, "CLIP model")]

    def check_available(self, local_option: str | None = None) -> None:
        if not self.head or not Path(self.head).is_file():
            raise MissingDependency(
                f"aesthetic: head weights {self.head!r} not found; convert sac+logos+ava1-l14-linearMSE.pth (LAION"
                " improved-aesthetic-predictor) to safetensors and pass it as aesthetic=PATH"
            )
        super().check_available(local_option)

    def load(self) -> None:
        from safetensors.torch import load_file
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.check_available()
        try:
            self.clip = CLIPVisionModelWithProjection.from_pretrained(self.clip_id, use_safetensors=True).to(self.device).eval()
            self.processor = CLIPImageProcessor.from_pretrained(self.clip_id)
        except OSError as exc:
            raise _hub_error(self.name, self.clip_id, exc) from exc
        state = load_file(self.head)
        mlp = _AestheticHead(self.clip.config.projection_dim)
        mlp.load_state_dict(state)
        self.mlp = mlp.to(self.device).eval()

    def _score_batch(self, images, prompts):
        pix = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        emb = torch.nn.functional.normalize(self.clip(pixel_values=pix).image_embeds.float(), dim=-1)
        return self.mlp(emb).reshape(-1)


class BLIPITM(RewardModel):
    """BLIP image-text matching: probability of the "match" class from the ITM head."""

    name = "blip"
    # scores are match probabilities in [0, 1], not scaled similarities (the intent scorers read this)
    probability = True

    def __init__(self, model_id: str = "Salesforce/blip-itm-large-coco", **kw):
        super().__init__(**kw)
        self.model_id = model_id

    def required_models(self) -> list[tuple[str, str]]:
        return [(self.model_id, "model")]

    def load(self) -> None:
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        self.check_available()
        try:
            self.model = BlipForImageTextRetrieval.from_pretrained(self.model_id, use_safetensors=True).to(self.device).eval()
            self.processor = BlipProcessor.from_pretrained(self.model_id)
        except OSError as exc:
            raise _hub_error(self.name, self.model_id, exc) from exc

    def _score_batch(self, images, prompts):
        inputs = self.processor(images=images, text=prompts, padding=True, truncation=True, max_length=64,
                                return_tensors="pt").to(self.device)
        logits = self.model(**inputs, use_itm_head=True).itm_score
        return torch.softmax(logits.float(), dim=-1)[:, 1]


# Each verifiable attribute as a prompt names it: "motion blur" or "motion-blur".
_ATTRIBUTE_WORDS = {a: (a.replace("_", " "), a.replace("_", "-")) for a in RULE_SPECS}


def attributes_named_in(prompt: str) -> list[str]:
    """The verifiable attributes whose name (``_`` as space or hyphen) appears in ``prompt``."""
    low = prompt.lower()
    return [a for a, ws in _ATTRIBUTE_WORDS.items() if any(w in low for w in ws)]


def verifier_statistics(images: list, attribute_rows: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the sum of ``direction * log(verifier value + eps)`` over its row's verifiable attributes,
    and how many attributes that sum has (0 where none of the row's attributes has a verifier rule).

    The log puts verifiers of different scales on one footing and the direction makes more of the
    attribute score higher. Shared by :class:`VerifierReward` (attributes named in the prompt) and
    the ``verifiers`` intent scorer (attributes given by the caller)."""
    # a paired-only rule (a crop, a light leak: how I_a maps onto I_o) says nothing about one image alone
    vals = measure(images, sorted({verifier for verifier, _, _, _ in RULE_SPECS.values() if verifier not in PAIRED_ONLY}))
    total, count = np.zeros(len(images)), np.zeros(len(images), dtype=np.int64)
    for i, attrs in enumerate(attribute_rows):
        for a in attrs:
            if a in RULE_SPECS:
                verifier, _, direction, eps = RULE_SPECS[a]
                total[i] += direction * np.log(max(vals[verifier][i], 0) + eps + 1e-6)
                count[i] += 1
    return total, count


class VerifierReward(RewardModel):
    """A model-free reward: how strongly an image shows the verifiable attributes its prompt names.

    For each attribute whose name (``_`` as space or hyphen) appears in the prompt, add
    ``direction * log(verifier value + eps)`` (:func:`verifier_statistics`). It judges an image
    alone, so unlike the paired rules it cannot tell the attribute from the scene; it serves as
    a transparent baseline judge that needs no weights (and so runs in tests).
    """

    name = "verifier"

    def _score_batch(self, images, prompts):
        total, _ = verifier_statistics(images, [attributes_named_in(p) for p in prompts])
        return torch.tensor(total, dtype=torch.float32)
