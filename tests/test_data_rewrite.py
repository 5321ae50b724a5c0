"""Template rewriting keeps the subject, is seeded, and records the attributes; the LLM path runs
end to end on a tiny random model built from config."""

import random

import pytest

from pluralign.data import rewrite as R
from pluralign.data.taxonomy import ATTRIBUTES, CATEGORIES, DIMENSIONS, attributes_in, category_of


def test_taxonomy_shape():
    assert len(DIMENSIONS) == 11
    assert len(CATEGORIES) == 5 and sum(len(v) for v in CATEGORIES.values()) == 28
    covered = {a.subclass for a in ATTRIBUTES.values()}
    assert covered == {s for subs in CATEGORIES.values() for s in subs}
    for name in ["blurry", "motion_blur", "defocused", "noisy", "jpeg_artifacts", "underexposed", "overexposed",
                 "low_contrast", "muted", "color_cast", "chromatic_aberration", "vignette", "flat_lighting",
                 "small_subject", "off_center", "tilted", "obstructed", "grief", "decay", "surreal"]:
        assert name in ATTRIBUTES
    assert ATTRIBUTES["blurry"].verifier == "sharpness" and ATTRIBUTES["blurry"].direction == -1
    assert ATTRIBUTES["vignette"].verifier == "vignetting" and ATTRIBUTES["vignette"].direction == -1
    assert ATTRIBUTES["overexposed"].direction == +1 and ATTRIBUTES["grief"].degradation is None
    assert category_of("tilted") == "composition_and_structure"
    assert "muted" in attributes_in("color_and_tone")
    assert attributes_in("emotion_and_subject", degradable=True) == ()
    for a in ATTRIBUTES.values():
        assert len(a.templates) >= 2


def test_rewrite_keeps_subject_and_records_attributes():
    p = "a red bicycle leaning against a brick wall."
    r = R.apply_attributes(p, ["blurry", "underexposed"], seed=3)
    assert "a red bicycle leaning against a brick wall" in r.text
    assert r.attributes == ["blurry", "underexposed"]
    assert any(t in r.text for t in ATTRIBUTES["blurry"].templates)
    assert any(t in r.text for t in ATTRIBUTES["underexposed"].templates)
    assert r.text == R.rewrite_prompt(p, ["blurry", "underexposed"], seed=3)
    texts = {R.rewrite_prompt(p, ["blurry", "underexposed"], seed=s) for s in range(20)}
    assert len(texts) > 3


def test_rewrite_limits():
    with pytest.raises(ValueError, match="1 to 4"):
        R.apply_attributes("a cat", [], 0)
    with pytest.raises(ValueError, match="1 to 4"):
        R.apply_attributes("a cat", ["blurry"] * 5, 0)
    with pytest.raises(ValueError, match="empty"):
        R.apply_attributes("  ", ["blurry"], 0)
    with pytest.raises(KeyError, match="unknown attribute"):
        R.apply_attributes("a cat", ["sparkly"], 0)


def test_sample_attributes_respects_category_count_and_exclusivity():
    for seed in range(200):
        rng = random.Random(seed)
        attrs = R.sample_attributes(rng, "lighting_and_exposure")
        assert 1 <= len(attrs) <= 4 and len(set(attrs)) == len(attrs)
        assert all(ATTRIBUTES[a].category == "lighting_and_exposure" and ATTRIBUTES[a].degradation for a in attrs)
        assert not {"underexposed", "overexposed"} <= set(attrs)
    sizes = {len(R.sample_attributes(random.Random(s), None)) for s in range(100)}
    assert sizes == {1, 2, 3, 4}


def test_keeps_subject():
    assert R.keeps_subject("a dog on a beach", "a dog on a beach, blurry")
    assert not R.keeps_subject("a dog on a beach", "a cat in space")


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Rewrite the image prompt below so that the picture shows a dog on a beach, blurry and dark."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    cfg = GPT2Config(vocab_size=fast.vocab_size, n_positions=256, n_embd=32, n_layer=1, n_head=2)
    d = tmp_path_factory.mktemp("tiny-lm")
    GPT2LMHeadModel(cfg).save_pretrained(d)
    fast.save_pretrained(d)
    return d


def test_llm_rewriter_code_path(tiny_lm_dir):
    rw = R.LLMRewriter(str(tiny_lm_dir), max_new_tokens=8)
    instruction = rw.prompt_for("a dog on a beach", ["blurry"])
    assert "a dog on a beach" in instruction and "blurry" in instruction and "only" in instruction
    out = rw("a dog on a beach", ["blurry", "underexposed"], seed=1)
    assert out.attributes == ["blurry", "underexposed"]
    assert out.method in {"llm", "llm_fallback"}
    # a random model does not keep the subject: the template rewrite is used and the reason recorded
    assert out.method == "llm_fallback" and out.notes
    assert "a dog on a beach" in out.text
    assert out.text == rw("a dog on a beach", ["blurry", "underexposed"], seed=1).text


def test_llm_rewriter_accepts_faithful_output():
    def fake_pipe(text, **kw):
        assert kw["do_sample"] is False and kw["return_full_text"] is False
        return [{"generated_text": " a dog on a beach, photographed completely out of focus\nextra"}]

    out = R.LLMRewriter("fake", pipeline=fake_pipe)("a dog on a beach", ["defocused"])
    assert out.method == "llm" and out.text == "a dog on a beach, photographed completely out of focus"
