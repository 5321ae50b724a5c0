"""On-policy preference pairs: sample candidates from a generator, keep the best-of-n anti pair and its mirror.

``pluralign data generate`` (:mod:`pluralign.onpolicy.cli`). This package sits above data, rewards, trainers
and eval: it samples with eval's pipeline code, scores with an intent scorer and writes the pair schema of
``pluralign.data``; the toy world plugs its scorer in through the ``pluralign.scorers`` entry points.
"""
