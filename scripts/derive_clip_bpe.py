"""Derive the shipped CLIP BPE tokenizer files from OpenAI's CLIP vocabulary.

The source is ``bpe_simple_vocab_16e6.txt.gz`` as shipped inside the ``open_clip_torch``
wheel (MIT licence). We keep the first ``--num-merges`` merges: byte-level BPE with a prefix
of the merge list is still a valid BPE tokenizer with exactly CLIP's behaviour on the tokens
it covers, and the vocabulary stays small enough for tiny text encoders.

    pip download --no-deps open_clip_torch -d /tmp/oc && cd /tmp/oc && unzip -o *.whl
    python scripts/derive_clip_bpe.py /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz
"""

import argparse
import gzip
import json
from pathlib import Path


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte -> printable unicode map (same table as the reference tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--num-merges", type=int, default=8000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "pluralign/assets/clip_bpe")
    args = parser.parse_args()

    lines = gzip.open(args.source, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]][: args.num_merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens, {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
