"""Reward-model code paths on tiny random models saved to disk (no network), and clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from pluralign.config import run_module
from pluralign.eval.fixtures import save_tiny_clip
from pluralign.hub import ModelNotFound, require_model
from pluralign.rewards import models
from pluralign.rewards.base import MissingDependency
from pluralign.rewards.registry import UnknownReward, available, build_rewards, get_reward, load_rewards, parse_spec


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


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
    # aesthetic=PATH names the head file
    named = get_reward(f"aesthetic={tmp_path / 'head.safetensors'}", clip_id=str(tiny_clip_dir), device="cpu")
    assert torch.equal(named.score(imgs, ["x", "y"]), s)


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
    with pytest.raises(FileNotFoundError, match="clip: model '/nonexistent/clip': no such file or directory"):
        get_reward("clip", model_id="/nonexistent/clip").score(_images(1), ["x"])
    with pytest.raises(FileNotFoundError, match="blip: model '/nonexistent/blip'"):
        get_reward("blip", model_id="/nonexistent/blip").score(_images(1), ["x"])
    with pytest.raises(UnknownReward, match="unknown reward model 'hpsv9'; registered: aesthetic, blip, clip"):
        get_reward("hpsv9")
    assert issubclass(UnknownReward, ValueError)  # the command line reports it as one line
    assert {"clip", "pickscore", "hpsv2", "imagereward", "aesthetic", "blip", "verifier"} <= set(available())


def test_a_missing_package_is_one_line_on_the_command_line(capsys):
    """MissingDependency stays an ImportError for callers, and is a ValueError for run_module: one line, exit 2."""
    def needs_package():
        raise MissingDependency("this reward model needs the optional package 'open_clip_torch'")

    assert issubclass(MissingDependency, ImportError)
    assert run_module(needs_package, "pluralign audit") == 2
    err = capsys.readouterr().err
    assert err.startswith("pluralign audit: error: this reward model needs") and "Traceback" not in err


def _fake_hub_cache(root, repo: str):
    """A hub cache holding one snapshot of ``repo``, laid out as huggingface_hub writes it."""
    commit = "0" * 40
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    return snapshot


def test_require_model_finds_local_and_cached_models(tmp_path):
    assert require_model(str(tmp_path), "base") == str(tmp_path)
    snapshot = _fake_hub_cache(tmp_path / "hub", "org/cached-model")
    assert require_model("org/cached-model", "base", cache_dir=tmp_path / "hub") == str(snapshot)
    with pytest.raises(FileNotFoundError, match=f"base '{tmp_path}/missing': no such file or directory"):
        require_model(str(tmp_path / "missing"), "base")
    with pytest.raises(FileNotFoundError, match="base '': no such file"):
        require_model("", "base")


def test_require_model_offline_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as err:
        require_model("org/not-here", "base", local_option="--base DIR", cache_dir=tmp_path)
    msg = str(err.value)
    assert msg.startswith("base org/not-here is not on this machine and the hub is offline (HF_HUB_OFFLINE=1)")
    assert "`hf download org/not-here`" in msg and "(--base DIR)" in msg and "licence" not in msg
    # a gated repo: the licence comes first, then the login
    with pytest.raises(ModelNotFound) as err:
        require_model("black-forest-labs/FLUX.1-dev", "pretrained_model", revision="abc", cache_dir=tmp_path)
    msg = str(err.value)
    assert "`hf download black-forest-labs/FLUX.1-dev --revision abc`" in msg
    assert "accept its licence at https://huggingface.co/black-forest-labs/FLUX.1-dev, then `hf auth login`" in msg
    assert issubclass(ModelNotFound, ValueError)


def test_require_model_online_leaves_the_download_to_the_loader(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert require_model("org/not-here", "base", cache_dir=tmp_path) == "org/not-here"


def test_a_registered_reward_takes_a_local_path(tiny_clip_dir, tmp_path):
    assert parse_spec("clip") == ("clip", {})
    assert parse_spec(f"clip={tiny_clip_dir}") == ("clip", {"model_id": str(tiny_clip_dir)})
    assert parse_spec("hpsv2=/w/hps.safetensors") == ("hpsv2", {"checkpoint": "/w/hps.safetensors"})
    assert parse_spec(f"pickscore={tiny_clip_dir}")[1] == {"model_id": str(tiny_clip_dir),
                                                          "processor_id": str(tiny_clip_dir)}
    imgs, prompts = _images(2), ["a cat", "a red house"]
    by_spec = get_reward(f"clip={tiny_clip_dir}", device="cpu").score(imgs, prompts)
    by_kwargs = get_reward("clip", model_id=str(tiny_clip_dir), device="cpu").score(imgs, prompts)
    assert torch.equal(by_spec, by_kwargs)
    with pytest.raises(UnknownReward, match="reward 'verifier=/x': verifier takes no local path"):
        parse_spec("verifier=/x")
    with pytest.raises(UnknownReward, match="imagereward takes no local path"):
        parse_spec("imagereward=/x.pt")  # its package would unpickle the file
    with pytest.raises(UnknownReward, match="give the path after '='"):
        parse_spec("clip=")
    with pytest.raises(UnknownReward, match="unknown reward model 'clipp'"):
        parse_spec("clipp=/x")
    with pytest.raises(UnknownReward, match="judges: clip is given twice"):
        build_rewards(["clip", f"clip={tiny_clip_dir}"], option="judges")


def test_every_model_is_checked_before_any_is_loaded(tiny_clip_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = []
    monkeypatch.setattr(models.CLIPScore, "load", lambda self: loaded.append(self.model_id))
    with pytest.raises(ModelNotFound) as err:
        load_rewards([f"clip={tiny_clip_dir}", "pickscore"], option="judges")
    msg = str(err.value)
    assert msg.startswith("pickscore: model yuvalkirstain/PickScore_v1 is not on this machine")
    assert "(--judges pickscore=PATH)" in msg
    assert loaded == []  # the first judge was not loaded before the second was found missing
    judges = load_rewards([f"clip={tiny_clip_dir}", "verifier"], option="judges")
    assert loaded == [str(tiny_clip_dir)] and list(judges) == ["clip", "verifier"]  # loaded now, not at first score
    with pytest.raises(MissingDependency, match="hpsv2=PATH|open_clip_torch"):
        build_rewards(["hpsv2"])  # no checkpoint (or no package): found before anything loads


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
