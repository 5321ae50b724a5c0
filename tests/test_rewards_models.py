"""Reward-model code paths on tiny random models saved to disk (no network), and clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from pluralign.rewards.base import MissingDependency
from pluralign.rewards.registry import available, get_reward


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from pluralign.tokenizers import clip_tokenizer

    d = tmp_path_factory.mktemp("tiny-clip")
    tok = clip_tokenizer()
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, projection_dim=16),
        projection_dim=16)
    CLIPModel(cfg).save_pretrained(d)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    proc.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_blip_dir(tmp_path_factory):
    """A random 1-layer BLIP ITM model and a BERT word-piece tokenizer over a 20-word vocabulary, saved to disk.

    The initialiser range is raised from BLIP's 0.02 to 0.5: at 0.02 a 16-wide model's ITM logits
    barely move with the input, and the test could not tell a working pipeline from a constant.
    """
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipProcessor

    try:  # transformers >= 5 without torchvision: the PIL backend, named explicitly to avoid a warning
        from transformers import BlipImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import BlipImageProcessor as ImageProcessor

    d = tmp_path_factory.mktemp("tiny-blip")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "a an the of red house cat dog blurry photo dark street".split()
    (d / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tok = BertTokenizer.from_pretrained(str(d))
    assert tok("a red house")["input_ids"] == [2, 5, 9, 10, 3]  # real word ids, not [UNK]
    torch.manual_seed(0)
    cfg = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                         sep_token_id=3, initializer_range=0.5),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, initializer_range=0.5),
        projection_dim=16, image_text_hidden_size=16, initializer_range=0.5)
    BlipForImageTextRetrieval(cfg).save_pretrained(d)
    BlipProcessor(image_processor=ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(d)
    return d


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("name", ["clip", "pickscore"])
def test_clip_family_scores_are_batched_and_prompt_dependent(tiny_clip_dir, name):
    model = get_reward(name, model_id=str(tiny_clip_dir), processor_id=str(tiny_clip_dir), batch_size=2, device="cpu")
    imgs = _images(3)
    s = model.score(imgs, ["a red house", "a cat", "a blurry photo"])
    assert s.shape == (3,) and s.dtype == torch.float32 and torch.isfinite(s).all()
    # batching does not change a score, and the prompt matters
    one = model.score(imgs[2:], ["a blurry photo"])
    assert torch.allclose(one, s[2:], atol=1e-4)
    assert not torch.allclose(model.score(imgs[:1], ["a cat"]), model.score(imgs[:1], ["a red house"]))


def test_aesthetic_head_from_safetensors(tiny_clip_dir, tmp_path):
    from safetensors.torch import save_file

    from pluralign.rewards.models import _AestheticHead

    torch.manual_seed(0)
    save_file(_AestheticHead(16).state_dict(), str(tmp_path / "head.safetensors"))
    model = get_reward("aesthetic", head=str(tmp_path / "head.safetensors"), clip_id=str(tiny_clip_dir), device="cpu")
    imgs = _images(2)
    s = model.score(imgs, ["x", "y"])
    assert s.shape == (2,) and torch.isfinite(s).all()
    assert torch.allclose(s, model.score(imgs, ["other", "prompts"]))  # prompt-free
    with pytest.raises(MissingDependency, match="head weights"):
        get_reward("aesthetic", head=str(tmp_path / "missing.safetensors")).score(imgs, ["x", "y"])


def test_missing_optional_packages_are_named():
    imgs = _images(1)
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependency, match="open_clip_torch"):
            get_reward("hpsv2").score(imgs, ["x"])
    try:
        import ImageReward  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependency, match="image-reward"):
            get_reward("imagereward").score(imgs, ["x"])


def test_missing_local_weights_and_unknown_names():
    with pytest.raises(MissingDependency, match="does not exist"):
        get_reward("clip", model_id="/nonexistent/clip").score(_images(1), ["x"])
    with pytest.raises(MissingDependency, match="blip"):
        get_reward("blip", model_id="/nonexistent/blip").score(_images(1), ["x"])
    with pytest.raises(KeyError, match="registered"):
        get_reward("hpsv9")
    assert {"clip", "pickscore", "hpsv2", "imagereward", "aesthetic", "blip", "verifier"} <= set(available())


def test_prompt_count_mismatch():
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        get_reward("verifier").score(_images(2), ["x"])


def test_blip_itm_match_probability_is_batched_deterministic_and_input_dependent(tiny_blip_dir):
    prompts = ["a red house", "a cat", "a blurry photo of the dark street"]
    imgs = _images(3)
    model = get_reward("blip", model_id=str(tiny_blip_dir), batch_size=2, device="cpu")
    s = model.score(imgs, prompts)
    assert s.shape == (3,) and s.dtype == torch.float32 and s.device.type == "cpu"
    assert torch.isfinite(s).all() and ((s > 0) & (s < 1)).all()  # softmax probability of "match"
    assert model.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in model.model.parameters())
    # batch size and padding length do not change a score (prompts of different lengths share a batch)
    one_by_one = get_reward("blip", model_id=str(tiny_blip_dir), batch_size=1, device="cpu").score(imgs, prompts)
    assert torch.allclose(one_by_one, s, atol=1e-5)
    # deterministic: same call, and a freshly loaded copy, give the same bytes
    assert torch.equal(model.score(imgs, prompts), s)
    assert torch.equal(get_reward("blip", model_id=str(tiny_blip_dir), batch_size=2, device="cpu").score(imgs, prompts), s)
    # both inputs matter: the prompt, and the image
    assert not torch.allclose(model.score(imgs[:1], ["a cat"]), model.score(imgs[:1], ["a red house"]), atol=1e-4)
    assert not torch.allclose(model.score(imgs[:2], ["a cat"] * 2)[0], model.score(imgs[:2], ["a cat"] * 2)[1], atol=1e-4)
    # one prompt string applies to every image
    assert torch.allclose(model.score(imgs, "a cat"), model.score(imgs, ["a cat"] * 3))
