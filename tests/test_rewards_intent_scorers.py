"""Intent scorers: directional CLIP/BLIP scores, the VLM judge (on a tiny random LLaVA built from config),
the verifiers on the toy world's labelled pairs, spec parsing and plugins, and the accuracy command."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

# the module-scoped tiny BLIP ITM of the reward-model tests (tests/ is on sys.path under pytest)
from test_rewards_models import tiny_blip_dir  # noqa: F401

from pluralign.eval.fixtures import save_tiny_clip
from pluralign.hub import ModelNotFound
from pluralign.rewards import intent_scorers as IS
from pluralign.rewards import scorer_accuracy as SA
from pluralign.rewards.directional import NULL_CAPTION, content_probability, directional_score
from pluralign.rewards.registry import get_reward
from pluralign.rewards.triplets import load_triplets, triplets_from_rows
from pluralign.rewards.vlm_judge import CONTENT_QUESTION, VLMJudge, answer_token_ids
from pluralign.toy import world, world_pairs

TOY = "pluralign.toy.world_pairs:intent_pairs"


def _images(n, seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)) for _ in range(n)]


# ------------------------------------------------------------------------------ a tiny VLM

VLM_WORDS = ("<pad> <unk> <s> </s> <image> user assistant : ? . , \" ( ) a b yes no does the description fit this "
             "image show answer or which better matches prompt first second red blue green circle square on light "
             "background blurry badly underexposed far too dark soft and blurred all over").split()
CHAT = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
        "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}assistant : "
        "{% endif %}")


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    """A random 1-layer LLaVA (CLIP vision tower, Llama text model) and a word-level tokenizer with a chat
    template, saved like a hub checkpoint. The initialiser range is raised so that answer probabilities move
    with the image and the question (at 0.02 every P(yes) is 0.5 to four decimals)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    d = tmp_path_factory.mktemp("tiny-vlm")
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VLM_WORDS)}, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=32, patch_size=8, hidden_size=16,
                           intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, initializer_range=0.5),
        text_config=dict(model_type="llama", vocab_size=len(VLM_WORDS), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                         initializer_range=0.5),
        image_token_index=VLM_WORDS.index("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", initializer_range=0.5)
    LlavaForConditionalGeneration(cfg).save_pretrained(d)
    LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                   tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", chat_template=CHAT,
                   num_additional_image_tokens=1).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def judge(tiny_vlm_dir):
    return VLMJudge(str(tiny_vlm_dir), device="cpu", batch_size=4).ensure_loaded()


def test_judge_yes_no_probabilities_are_read_from_the_answer_tokens(judge, tiny_vlm_dir):
    imgs = _images(5)
    questions = [CONTENT_QUESTION.format(prompt=p) for p in ["a red circle", "a blue square", "a red circle",
                                                              "a green circle", "a blue square"]]
    p = judge.yes_probability(imgs, questions)
    assert p.shape == (5,) and p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
    assert np.ptp(p) > 1e-3  # the image and the question move the answer
    # the probability is P(yes) / (P(yes) + P(no)) of the next token after the chat template's assistant turn
    text = judge.prompt_text(questions[0], 1)
    assert text.startswith("user : <image> ") and text.endswith("assistant : ")
    inputs = judge.processor(images=[imgs[0]], text=[text], return_tensors="pt")
    with torch.no_grad():
        lp = torch.log_softmax(judge.model(**inputs).logits[0, -1].float(), -1)
    yes, no = VLM_WORDS.index("yes"), VLM_WORDS.index("no")
    assert judge._answers["yes"] == [yes] and judge._answers["no"] == [no]
    assert p[0] == pytest.approx(float(torch.sigmoid(lp[yes] - lp[no])), abs=1e-6)
    # batching (right-padded rows, logits read at each row's last token) changes nothing; a fresh load repeats it
    one = VLMJudge(str(tiny_vlm_dir), device="cpu", batch_size=1)
    np.testing.assert_allclose(one.yes_probability(imgs, questions), p, atol=1e-6)
    # as a RewardModel (pluralign audit --rewards vlm=DIR): P(yes) that the image shows the prompt
    r = get_reward(f"vlm={tiny_vlm_dir}", device="cpu").score(imgs[:2], ["a red circle", "a blue square"])
    np.testing.assert_allclose(r.numpy(), p[:2], atol=1e-6)


def test_judge_attribute_questions_use_the_taxonomy_phrasing(judge):
    imgs = _images(3, seed=1)
    p = judge.attribute_probability(imgs, [["blurry"], ["blurry", "underexposed"], []])
    assert ((p[:2] >= 0) & (p[:2] <= 1)).all() and np.isnan(p[2])
    q = 'Does the description "{}" fit this image? Answer yes or no.'
    each = judge.yes_probability([imgs[1], imgs[1]], [q.format("blurry"), q.format("badly underexposed")])
    assert p[1] == pytest.approx(each.mean(), abs=1e-9)
    with pytest.raises(KeyError, match="unknown attribute 'blury'"):
        judge.attribute_probability(imgs[:1], [["blury"]])


def test_judge_falls_back_to_a_plain_prompt_without_a_chat_template(tiny_vlm_dir):
    plain = VLMJudge(str(tiny_vlm_dir), device="cpu").ensure_loaded()
    plain.processor.chat_template = None
    assert plain.prompt_text("does this image show a red circle ?", 2) == (
        "<image>\n<image>\ndoes this image show a red circle ?\nAnswer:")
    p = plain.yes_probability(_images(2), ["does this image show a red circle ?"] * 2)
    assert ((p >= 0) & (p <= 1)).all()


def test_pairwise_order_is_seeded_random_and_swapping_the_pair_flips_it(judge, tiny_vlm_dir):
    a, b = _images(8, seed=2), _images(8, seed=3)
    prompts = ["a red circle on a light blue background"] * 8
    ab = judge.pairwise(a, b, prompts)
    ba = judge.pairwise(b, a, prompts)
    assert ab.p_first.shape == (8,) and ((ab.p_first >= 0) & (ab.p_first <= 1)).all()
    # the model saw the same thing, so the probability flips exactly and a tie stays a tie
    np.testing.assert_allclose(ba.p_first, 1 - ab.p_first, atol=1e-6)
    assert (ba.swapped == ~ab.swapped).all() and (ba.tie == ab.tie).all()
    np.testing.assert_allclose(ba.wins, 1 - ab.wins)
    # the order is random over pairs (both orders occur), fixed by the seed, and changes with it
    assert 0 < ab.swapped.sum() < 8
    np.testing.assert_array_equal(judge.pairwise(a, b, prompts).p_first, ab.p_first)
    other = VLMJudge(str(tiny_vlm_dir), device="cpu", seed=1)
    assert (other.pairwise(a, b, prompts).swapped != ab.swapped).any()
    # ties: |p1 - p2| below the tolerance counts one half
    loose = VLMJudge(str(tiny_vlm_dir), device="cpu", tie_tolerance=1.0).pairwise(a, b, prompts)
    assert loose.tie.all() and (loose.wins == 0.5).all()
    strict = ab.wins[~ab.tie]
    assert set(np.unique(strict)) <= {0.0, 1.0}
    np.testing.assert_array_equal(strict, (ab.p_first[~ab.tie] > 0.5).astype(float))


def test_judge_without_weights_says_what_to_fetch(tmp_path):
    scorer = IS.build_intent_scorer("judge:org/not-a-vlm", device="cpu")
    with pytest.raises(ModelNotFound) as err:
        scorer.check_available()
    msg = str(err.value)
    assert msg.startswith("judge: vision-language model org/not-a-vlm is not on this machine")
    assert "`hf download org/not-a-vlm`" in msg and "(--scorer judge:DIR)" in msg
    with pytest.raises(ModelNotFound):  # loading checks first, and never reaches the network
        scorer.ensure_loaded()
    with pytest.raises(FileNotFoundError, match=f"judge: vision-language model '{tmp_path}/none'"):
        IS.build_intent_scorer(f"judge:{tmp_path}/none").check_available()
    with pytest.raises(ValueError, match="name the vision-language model"):
        IS.build_intent_scorer("judge")
    with pytest.raises(ValueError, match="name the vision-language model"):
        get_reward("vlm").check_available()


def test_answer_tokens_must_exist(judge):
    assert answer_token_ids(judge.tokenizer, "A", "m") == [VLM_WORDS.index("a")]
    with pytest.raises(ValueError, match="vlm judge m: its tokenizer has no single token for the answer 'maybe'"):
        answer_token_ids(judge.tokenizer, "maybe", "m")


def test_judge_scorer_reads_attributes_and_content(tiny_vlm_dir, judge):
    scorer = IS.build_intent_scorer(f"judge:{tiny_vlm_dir}", device="cpu").ensure_loaded()
    imgs = _images(3, seed=4)
    po = ["a red circle", "a blue square", "a green circle"]
    s = scorer.attribute_score(imgs, po, [p + ", blurry" for p in po], [["blurry"], ["underexposed"], []])
    np.testing.assert_allclose(s, judge.attribute_probability(imgs, [["blurry"], ["underexposed"], []]), atol=1e-9)
    c = scorer.content_score(imgs, po)
    np.testing.assert_allclose(c, judge.yes_probability(imgs, [CONTENT_QUESTION.format(prompt=p) for p in po]), atol=1e-9)


# ------------------------------------------------------------------------------ CLIP / BLIP directional


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.mark.parametrize("name", ["clip", "blip"])
def test_directional_score_is_the_difference_under_the_two_prompts(name, tiny_clip_dir, tiny_blip_dir):  # noqa: F811
    path = tiny_clip_dir if name == "clip" else tiny_blip_dir
    scorer = IS.build_intent_scorer(f"{name}={path}", device="cpu", batch_size=2)
    assert scorer.name == f"{name}:{path}" and isinstance(scorer, IS.PromptAwareScorer)
    scorer.check_available()
    scorer.ensure_loaded()
    imgs = _images(3, seed=5)
    po = ["a red house", "a cat", "a dog"]
    pa = ["a blurry red house", "a dark cat", "a blurry dog photo"]
    s = scorer.attribute_score(imgs, po, pa, [["blurry"], ["underexposed"], ["blurry"]])
    model = scorer.model
    expected = (model.score(imgs, pa) - model.score(imgs, po)).double().numpy()
    assert s.shape == (3,) and np.isfinite(s).all() and np.abs(s).max() > 0
    np.testing.assert_allclose(s, expected, atol=1e-6)
    np.testing.assert_allclose(directional_score(model, imgs, po, pa), -s, atol=1e-6)  # antisymmetric
    np.testing.assert_allclose(directional_score(model, imgs, po, po), 0.0, atol=1e-6)
    c = scorer.content_score(imgs, po)
    assert c.shape == (3,) and ((c >= 0) & (c <= 1)).all()
    if name == "blip":  # ITM already gives a match probability
        np.testing.assert_allclose(c, model.score(imgs, po).double().numpy(), atol=1e-6)
    else:  # CLIP's own zero-shot probability of P_o against a caption that names nothing
        margin = (model.score(imgs, po) - model.score(imgs, [NULL_CAPTION] * 3)).double().numpy()
        np.testing.assert_allclose(c, 1 / (1 + np.exp(-margin)), atol=1e-6)
    np.testing.assert_allclose(content_probability(model, imgs, po), c)


def test_prompt_aware_scorers_name_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as err:
        IS.build_intent_scorer("clip", device="cpu").check_available()
    assert "openai/clip-vit-large-patch14 is not on this machine" in str(err.value)
    assert "(--scorer clip:DIR)" in str(err.value)
    with pytest.raises(FileNotFoundError, match="blip: model '/nonexistent/blip'"):
        IS.build_intent_scorer("blip:/nonexistent/blip").check_available()


# ------------------------------------------------------------------------------ verifiers on the toy world


@pytest.fixture(scope="module")
def toy_triplets():
    return load_triplets(TOY, n=27, seed=1000)


def test_verifiers_rank_the_toy_worlds_degraded_image_first(toy_triplets):
    t = toy_triplets
    assert len(t) == 27 and t.skipped == 0 and all(len(a) == 1 for a in t.attributes)
    scorer = IS.build_intent_scorer("verifiers")
    sa = scorer.attribute_score(t.image_a, t.prompt_o, t.prompt_a, t.attributes)
    so = scorer.attribute_score(t.image_o, t.prompt_o, t.prompt_a, t.attributes)
    semantic = np.array([a[0] in world.SEMANTIC_ATTRIBUTES for a in t.attributes])
    assert semantic.sum() == 6 and np.isnan(sa[semantic]).all()  # scene content: no rule measures it
    assert (sa[~semantic] > so[~semantic]).mean() >= 0.9
    # per image: VerifierReward's direction * log(verifier) of the requested attribute
    reward = get_reward("verifier").score(t.image_a[:1], [t.attributes[0][0].replace("_", " ")])
    assert sa[0] == pytest.approx(float(reward[0]), abs=1e-5)
    np.testing.assert_array_equal(scorer.content_score(t.image_a, t.prompt_o), 1.0)
    # paired with I_o as reference: margin in threshold units, so I_o against itself sits at -1 (statistic 0)
    pa = scorer.attribute_score(t.image_a, t.prompt_o, t.prompt_a, t.attributes, references=t.image_o)
    po = scorer.attribute_score(t.image_o, t.prompt_o, t.prompt_a, t.attributes, references=t.image_o)
    np.testing.assert_allclose(po[~semantic], -1.0, atol=1e-9)
    assert np.isnan(po[semantic]).all() and np.isnan(pa[semantic]).all()
    assert (pa[~semantic] > 0).mean() >= 0.9  # the calibrated rules fire on the toy world's degradations
    sim = scorer.content_score(t.image_a, t.prompt_o, references=t.image_o)
    assert ((sim >= 0) & (sim <= 1)).all() and sim.mean() > 0.5
    np.testing.assert_allclose(scorer.content_score(t.image_o, t.prompt_o, references=t.image_o), 1.0, atol=1e-9)


def test_verifiers_cannot_score_prompt_only_attributes(toy_triplets):
    t = toy_triplets
    s = IS.build_intent_scorer("verifiers").attribute_score(t.image_a[:3], t.prompt_o[:3], t.prompt_a[:3],
                                                            [["grief"], [], [t.attributes[2][0], "grief"]])
    assert np.isnan(s[0]) and np.isnan(s[1]) and np.isfinite(s[2])
    with pytest.raises(ValueError, match="verifiers scorer: got 3 images but 2 prompts P_o"):
        IS.build_intent_scorer("verifiers").attribute_score(t.image_a[:3], t.prompt_o[:2], t.prompt_a[:3], "blurry")


# ------------------------------------------------------------------------------ combining, specs, plugins


class _Fixed:
    """A plugin written to the bare interface: no base class, no ``references`` parameter."""

    def __init__(self, name, scores, content):
        self.name, self.scores, self.content = name, np.asarray(scores, float), np.asarray(content, float)
        self.calls = []

    def check_available(self):
        self.calls.append("check")

    def ensure_loaded(self):
        self.calls.append("load")
        return self

    def attribute_score(self, images, prompts_o, prompts_a, attributes):
        return self.scores[: len(images)]

    def content_score(self, images, prompts_o):
        return self.content[: len(images)]


def test_combined_scorer_means_z_scores_and_takes_the_lowest_content():
    a = _Fixed("a", [1.0, 2.0, 3.0, np.nan], [0.9, 0.8, 0.2, 1.0])
    b = _Fixed("b", [300.0, 100.0, 200.0, 50.0], [0.5, 0.9, 0.9, 0.9])
    both = IS.CombinedScorer([a, b])
    assert both.name == "a,b"
    s = both.attribute_score([None] * 4, ["o"] * 4, ["a"] * 4, "blurry")
    za, zb = IS.zscore(a.scores), IS.zscore(b.scores)
    np.testing.assert_allclose(s[:3], (za[:3] + zb[:3]) / 2)
    assert s[3] == pytest.approx(zb[3])  # a NaN is left out of that image's mean
    np.testing.assert_allclose(both.content_score([None] * 4, ["o"] * 4), [0.5, 0.8, 0.2, 0.9])
    both.check_available()
    both.ensure_loaded()
    assert a.calls == b.calls == ["check", "load"]
    np.testing.assert_array_equal(IS.zscore(np.array([4.0])), [0.0])
    np.testing.assert_array_equal(IS.zscore(np.array([2.0, 2.0, np.nan])), [0.0, 0.0, np.nan])


def test_spec_grammar_and_errors(tiny_clip_dir):
    assert IS.split_spec("clip:/m") == IS.split_spec("clip=/m") == ("clip", "/m")
    assert IS.split_spec("verifiers") == ("verifiers", None)
    combined = IS.build_intent_scorer(f"verifiers, clip:{tiny_clip_dir}")
    assert isinstance(combined, IS.CombinedScorer) and combined.name == f"verifiers,clip:{tiny_clip_dir}"
    assert isinstance(combined.scorers[0], IS.VerifierScorer) and combined.scorers[1].model.model_id == str(tiny_clip_dir)
    assert IS.build_intent_scorer("blip").model.model_id == "Salesforce/blip-itm-large-coco"
    with pytest.raises(ValueError, match=r"unknown scorer 'clp' in 'clp'; did you mean 'clip'\? registered scorers: "
                                         r"verifiers, clip, blip, judge"):
        IS.build_intent_scorer("clp")
    with pytest.raises(ValueError, match="gives verifiers twice"):
        IS.build_intent_scorer("verifiers,verifiers")
    with pytest.raises(ValueError, match="empty"):
        IS.build_intent_scorer("")
    with pytest.raises(ValueError, match="an empty entry between commas"):
        IS.build_intent_scorer("verifiers,,clip")
    with pytest.raises(ValueError, match="verifiers take no model or path"):
        IS.build_intent_scorer("verifiers:/x")
    with pytest.raises(ValueError, match="built in"):
        IS.register_scorer("clip", lambda arg, device="auto": None)


def test_plugins_come_from_the_entry_point_group(monkeypatch):
    import importlib.metadata as md

    made = []

    def factory(arg, device="auto"):
        made.append((arg, device))
        return _Fixed("toyish", [1.0], [1.0])

    ep = SimpleNamespace(name="toyish", load=lambda: factory)
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda **kw: [ep] if kw.get("group") == IS.ENTRY_POINT_GROUP else real(**kw))
    assert "toyish" in IS.registered_scorers()
    assert IS.build_intent_scorer("toyish:/ckpt", device="cpu").name == "toyish"
    assert made == [("/ckpt", "cpu")]
    combined = IS.build_intent_scorer("verifiers,toyish")
    assert [s.name for s in combined.scorers] == ["verifiers", "toyish"]
    with pytest.raises(ValueError, match="did you mean 'toyish'"):
        IS.build_intent_scorer("toyis")
    monkeypatch.setitem(IS._PLUGINS, "local", lambda arg, device="auto": _Fixed("local", [0.0], [1.0]))
    assert IS.build_intent_scorer("local").name == "local"


# ------------------------------------------------------------------------------ triplets and the accuracy command


def test_triplets_join_anti_and_mirror_rows_and_read_a_pair_dataset(tmp_path):
    import datasets

    from pluralign.data.pairs import FEATURES, encode_png

    rows = world_pairs.intent_pairs(4, seed=7)
    t = triplets_from_rows(rows + [{"kind": "anti", "pair_id": "lonely", "prompt": "x", "chosen": rows[0]["chosen"],
                                    "rejected": rows[0]["rejected"], "attributes": []}])
    assert len(t) == 4 and t.skipped == 1
    assert t.prompt_o[0] == rows[1]["prompt"] and t.prompt_a[0] == rows[0]["prompt"]
    assert np.array_equal(np.asarray(t.image_a[0]), np.asarray(rows[0]["chosen"]))
    assert np.array_equal(np.asarray(t.image_o[0]), np.asarray(rows[0]["rejected"]))
    stored = [{k: (encode_png(v) if k in ("chosen", "rejected") else v) for k, v in r.items() if k in FEATURES}
              for r in rows]
    datasets.Dataset.from_list(stored, features=FEATURES).save_to_disk(str(tmp_path / "pairs"))
    back = load_triplets(str(tmp_path / "pairs"), n=3)
    assert len(back) == 3 and back.prompt_a == t.prompt_a[:3] and back.attributes == t.attributes[:3]
    assert np.array_equal(np.asarray(back.image_o[2]), np.asarray(t.image_o[2]))
    with pytest.raises(ValueError, match="give their number"):
        load_triplets(TOY, n=0)
    with pytest.raises(ValueError, match="not a registered pair set"):
        load_triplets("nope")
    with pytest.raises(ValueError, match=r"'os:getcwd': calling it as f\(n, seed\) failed"):
        load_triplets("os:getcwd", n=2)
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="this folder is not a saved dataset"):
        load_triplets(str(tmp_path / "images"), n=2)
    with pytest.raises(ValueError, match="no anti row with a mirror row"):
        triplets_from_rows([rows[0]])


def test_a_pair_set_registers_through_its_entry_point_group(monkeypatch):
    import importlib.metadata as md

    from pluralign.rewards import triplets

    ep = SimpleNamespace(name="toyset", load=lambda: world_pairs.intent_pairs)
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == triplets.ENTRY_POINT_GROUP else real(**kw))
    by_name, direct = load_triplets("toyset", n=5, seed=3), load_triplets(TOY, n=5, seed=3)
    assert by_name.prompt_a == direct.prompt_a and by_name.pair_id == direct.pair_id
    with pytest.raises(ValueError, match=r"not a registered pair set \(toyset under 'pluralign.pair_sets'\)"):
        load_triplets("toyst")


def test_accuracy_command_reports_per_attribute_rates_with_cis(tmp_path, capsys):
    out = tmp_path / "acc"
    assert SA.main(["--scorers", "verifiers", "--pairs", TOY, "--n", "24", "--output", str(out), "--n_boot", "200"]) == 0
    payload = json.loads((out / "scorer_accuracy.json").read_text())
    r = payload["scorers"]["verifiers"]
    # two rows per attribute; the six semantic rows have no rule, so they count as unscored, not as misses
    assert payload["n"] == 24 and r["accuracy"]["n"] == 18 and r["unscored"] == 6
    assert r["accuracy"]["rate"] >= 0.9 and r["accuracy"]["ci95"][0] <= r["accuracy"]["rate"] <= r["accuracy"]["ci95"][1]
    assert {a: v["n"] for a, v in r["per_attribute"].items()} == {a: 0 if a in world.SEMANTIC_ATTRIBUTES else 2
                                                                  for a in world.ATTRIBUTES}
    assert r["content"] == {"I_a": 1.0, "I_o": 1.0}
    md = (out / "scorer_accuracy.md").read_text()
    assert "| verifiers | " in md and "| blurry | " in md
    assert "wrote" in capsys.readouterr().out
    # the same numbers from the function, and a combined scorer through a+b
    t = load_triplets(TOY, n=24, seed=1000)
    assert SA.accuracy(IS.build_intent_scorer("verifiers"), t, n_boot=200)["accuracy"] == r["accuracy"]
    fixed = IS.CombinedScorer([IS.VerifierScorer(), _Fixed("zero", np.zeros(48), np.full(48, 0.7))])
    assert SA.accuracy(fixed, t, n_boot=200)["content"] == pytest.approx({"I_a": 0.7, "I_o": 0.7})  # min of 1 and 0.7
    assert SA._spec("verifiers+clip:/m") == "verifiers,clip:/m"


def test_accuracy_command_checks_scorers_before_reading_pairs(tmp_path, capsys):
    from pluralign.config import run_module

    argv = ["--scorers", "verifiers,judge:org/not-a-vlm", "--pairs", "does-not-exist", "--output", str(tmp_path / "o")]
    assert run_module(lambda: SA.main(argv), "scorer_accuracy") == 2
    err = capsys.readouterr().err
    assert "org/not-a-vlm is not on this machine" in err and "does-not-exist" not in err
    assert not (tmp_path / "o").exists()
