"""Best-of-n: a prompt pair's K candidates under P_a and K under P_o -> one anti pair (or a reason to drop it).

* chosen: among the P_a candidates that keep the content (content score >= ``min_content``), the one the
  scorer rates highest for the requested attributes;
* rejected: among the P_o candidates that keep the content, the one that shows the attributes least (the
  cleanest). Among equally clean ones (scores within ``TIE`` of each other) it is the chosen image's
  same-seed partner when that one qualifies: a scorer that rates each P_o candidate against its own
  same-seed image (the verifiers with references) rates them all equal, and the pair is then the same-seed
  pair its margin was measured on;
* margin = attribute score of chosen - attribute score of rejected. The pair is kept when the margin is
  positive and at least ``min_margin``, and, when ``min_chosen`` is given, the chosen image itself scores at
  least that (a margin alone accepts an image that shows the attributes only a little more than the clean
  one does).

Other ties go to the higher content score, then to the lower candidate index, so the choice is a pure
function of the scores. ``choose_by="content"`` picks the chosen image by content instead, among the candidates
that would be accepted (see :func:`select_pair`).

With ``n_pairs`` > 1 an accepted prompt pair also gives the next best content-keeping P_a candidates, in order of
score, each against the same rejected image, for as long as each passes the same margin and floor (``more_chosen``):
best-of-n samples hold more than one image that shows the request, and distinct images teach more than one
image repeated.

With ``content_pair`` an accepted prompt pair also names ``content_rejected``: of the P_a candidates that lost the
content and still follow the request (they out-score the rejected P_o image, and reach ``min_chosen`` when it is
given), the one the scorer rates highest for the attributes (ties to the lower index). Under P_a the chosen image
beats it: both show the request, only the chosen one kept the subject. Best-of-n discards such samples; as a
rejected image they teach following the request without overdoing it until the subject is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TIE = 1e-9  # attribute scores this close (relative to the larger magnitude, at least 1) are equal

# Why a prompt pair gives no rows, in the order they are checked.
REASONS = {
    "no_attributes": "the row requests no attribute",
    "unscored": "the scorer gave no attribute score (NaN) to every candidate",
    "content_lost_a": "no P_a candidate keeps P_o's content",
    "content_lost_o": "no P_o candidate keeps P_o's content",
    "weak_chosen": "the chosen image's attribute score is below min_chosen_score: it does not show the attributes outright",
    "below_min_margin": "the margin (chosen - rejected attribute score) is below min_margin or not positive",
}


@dataclass
class Decision:
    """What best-of-n made of one prompt pair; ``chosen``/``rejected`` index the P_a / P_o candidates."""

    accepted: bool
    reason: str | None = None  # a key of REASONS when not accepted
    chosen: int | None = None
    rejected: int | None = None
    margin: float | None = None
    scores_a: list[float] = field(default_factory=list)
    scores_o: list[float] = field(default_factory=list)
    content_a: list[float] = field(default_factory=list)
    content_o: list[float] = field(default_factory=list)
    more_chosen: list[int] = field(default_factory=list)  # further P_a candidates paired with ``rejected``
    content_rejected: int | None = None  # the P_a candidate that lost the content, rejected under P_a (content_pair)

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "reason": self.reason, "chosen": self.chosen, "rejected": self.rejected,
                "margin": self.margin, "scores_a": self.scores_a, "scores_o": self.scores_o,
                "content_a": self.content_a, "content_o": self.content_o, "more_chosen": self.more_chosen,
                "content_rejected": self.content_rejected}


def _floats(x) -> list[float]:
    return [float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]


CHOOSE_BY = ("attribute", "content")


def select_pair(scores_a, scores_o, content_a, content_o, *, min_content: float, min_margin: float,
                min_chosen: float | None = None, has_attributes: bool = True, n_pairs: int = 1,
                content_pair: bool = False, choose_by: str = "attribute") -> Decision:
    """The decision for one prompt pair from its candidates' attribute and content scores (up to ``n_pairs``
    chosen images, and with ``content_pair`` the content-losing P_a candidate to reject under P_a).

    ``choose_by="content"``: of the P_a candidates that would be accepted (they keep the content and pass
    ``min_chosen`` and ``min_margin`` against the rejected image), the chosen one is the one with the highest
    content score, ties to the higher attribute score. The highest attribute score picks the sample that draws
    the request hardest, and with a judge whose probabilities saturate that is often the one that kept the least
    of the subject; this picks the one that follows the request and keeps the subject best."""
    if choose_by not in CHOOSE_BY:
        raise ValueError(f"select_pair: choose_by {choose_by!r} is not one of {CHOOSE_BY}")
    sa, so, ca, co = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (scores_a, scores_o, content_a, content_o))
    if not (len(sa) == len(ca) and len(so) == len(co)):
        raise ValueError(f"select_pair: {len(sa)} P_a scores but {len(ca)} content scores, or {len(so)} P_o scores "
                         f"but {len(co)} content scores")
    d = Decision(False, scores_a=_floats(sa), scores_o=_floats(so), content_a=_floats(ca), content_o=_floats(co))
    if not has_attributes:
        d.reason = "no_attributes"
        return d
    ok_a = (ca >= min_content) & ~np.isnan(sa)
    ok_o = (co >= min_content) & ~np.isnan(so)
    if np.isnan(sa).all() or np.isnan(so).all():
        d.reason = "unscored"
        return d
    if not ok_a.any():
        d.reason = "content_lost_a"
        return d
    if not ok_o.any():
        d.reason = "content_lost_o"
        return d
    idx_a = np.flatnonzero(ok_a)
    d.chosen = int(idx_a[np.argmax(sa[idx_a])])  # argmax: the first of equal scores
    idx_o = np.flatnonzero(ok_o)
    low = so[idx_o].min()
    ties = [int(j) for j in idx_o if so[j] - low <= TIE * max(1.0, abs(low))]

    def rejected_for(chosen: int) -> int:
        """Of the equally clean P_o candidates, the chosen one's same-seed partner, else the surest content."""
        return min(ties, key=lambda j: (j != chosen, -co[j], j))

    d.rejected = rejected_for(d.chosen)
    d.margin = float(sa[d.chosen] - so[d.rejected])

    def refused(j: int) -> str | None:
        """Why P_a candidate ``j`` cannot be chosen against ``d.rejected`` (None: it can)."""
        if min_chosen is not None and sa[j] < min_chosen:
            return "weak_chosen"
        margin = sa[j] - so[d.rejected]
        return "below_min_margin" if margin <= 0 or margin < min_margin else None

    d.reason = refused(d.chosen)
    if d.reason:
        return d
    d.accepted = True
    # refused() only asks the attribute score to reach a floor, so in order of that score the passing candidates
    # come first; by content, they are picked out of the order
    if choose_by == "content":
        passing = sorted((int(j) for j in idx_a if not refused(int(j))), key=lambda j: (-ca[j], -sa[j], j))
        d.chosen = passing[0]  # the highest-scoring candidate passes, so there is one
        d.rejected = rejected_for(d.chosen)  # ties are equally clean: margins unchanged
        d.margin = float(sa[d.chosen] - so[d.rejected])
    else:
        passing = [int(j) for j in sorted(idx_a, key=lambda j: (-sa[j], j)) if not refused(int(j))]
    d.more_chosen = [j for j in passing if j != d.chosen][:n_pairs - 1]
    if content_pair:
        follows = (sa > so[d.rejected]) & (sa >= min_chosen if min_chosen is not None else True)
        lost_a = np.flatnonzero((ca < min_content) & ~np.isnan(sa) & follows)
        if len(lost_a):
            d.content_rejected = int(lost_a[np.argmax(sa[lost_a])])
    return d
