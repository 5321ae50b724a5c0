"""Tokenizers built from files shipped with the package, so tiny models need no download.

* CLIP: a prefix of OpenAI's CLIP byte-level BPE merges (see ``assets/clip_bpe`` and
  ``scripts/derive_clip_bpe.py``). Token ids agree with the full CLIP tokenizer on every
  token the prefix covers.
* T5: a deterministic unigram tokenizer whose vocabulary is the whole-word tokens of the
  same CLIP vocabulary plus single characters, so any text tokenizes without ``<unk>``.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
CLIP_BPE_DIR = ASSETS / "clip_bpe"
CLIP_MAX_LENGTH = 77


def clip_tokenizer(max_length: int = CLIP_MAX_LENGTH):
    """A ``CLIPTokenizer`` loaded from the shipped BPE files.

    transformers 5 ignores ``vocab_file=``/``merges_file=`` keyword arguments, so we always go
    through ``from_pretrained(dir)``, the same path a hub checkpoint takes.
    """
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(CLIP_BPE_DIR))
    tok.model_max_length = max_length
    return tok


@lru_cache(maxsize=1)
def _t5_pieces(num_words: int) -> tuple[tuple[str, float], ...]:
    vocab = json.loads((CLIP_BPE_DIR / "vocab.json").read_text(encoding="utf-8"))
    words = [t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isalpha() and len(t) > 5]
    words = sorted(dict.fromkeys(words), key=lambda w: vocab[w + "</w>"])[:num_words]
    chars = [chr(c) for c in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -1.0 - 0.001 * i) for i, w in enumerate(words)]
    pieces += [(c, -6.0) for c in chars] + [("▁" + c, -5.0) for c in chars]
    return tuple(pieces)


def t5_tokenizer(num_words: int = 2000, max_length: int = 64):
    """A small deterministic T5 tokenizer (unigram model over words + characters)."""
    from transformers import T5Tokenizer

    tok = T5Tokenizer(vocab=list(_t5_pieces(num_words)), extra_ids=0)
    tok.model_max_length = max_length
    return tok


def copy_clip_license(dst: Path) -> None:
    """Put the vocabulary's licence beside any tokenizer we save."""
    shutil.copy(CLIP_BPE_DIR / "LICENSE-open_clip.txt", Path(dst) / "LICENSE-open_clip.txt")
