"""Diagnosis: why the grain rule finds no grain on set 3's DepartmentStore (and on the held-out gravel at 128 px).

Reference grain at severities 0.3, 0.65 and 1 on a centre square of each of set 3's photos, at 64, 256 and 1024 px,
through the rules' whole pipeline at the shipped threshold. It prints the statistic, the largest band's even rise,
the smallest change of the residual's top (98th) percentile, and I_o's own 35th-percentile residual per tap as a
sigma: where that is as large as the grain, grain moves no quantile of the frame's residual.

    scripts/unseen_photos.sh /tmp/pluralign-unseen-photos 3     # once
    python scripts/grain_under_texture.py                       # about 20 s
"""

from __future__ import annotations

import numpy as np
from vignette_dark_corners import square

from pluralign.rewards import reference_degradations as R
from pluralign.rewards.rules import _features, _log_change, load_rules, paired_statistics

SET3 = "/tmp/pluralign-unseen-photos/set3"


def main() -> int:
    rule = load_rules()["film_grain"]
    rng = np.random.default_rng(0)
    print(f"threshold {rule.threshold:.4f}\n| photo | px | statistic | even rise | top change | I_o's 35th percentile, taps 1/2/4 |"
          "\n|---|---:|---|---|---|---|")
    for name in ("DepartmentStore", "quokka"):
        for size in (64, 256, 1024):
            o = square(f"{SET3}/{name}.jpg", size)
            a = [np.clip(R.degrade(o, "film_grain", s, rng), 0, 1).astype(np.float32) for s in (0.3, 0.65, 1.0)]
            fa, fo = _features(a, {"_grain_light"})["_grain_light"], _features([o] * 3, {"_grain_light"})["_grain_light"]
            even = _log_change(rule, fa[:, :6].reshape(-1, 2, 3), fo[:, :6].reshape(-1, 2, 3)).min(axis=1).max(axis=1)
            top = _log_change(rule, fa[:, 6:9], fo[:, 6:9]).min(axis=1)
            st = paired_statistics({"g": rule}, a, [o] * 3)["g"]
            print(f"| {name} | {size} | {' '.join(f'{v:.2f}' for v in st)} | {' '.join(f'{v:.2f}' for v in even)} | "
                  f"{' '.join(f'{v:+.2f}' for v in top)} | {' / '.join(f'{v:.4f}' for v in fo[0, 3:6])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
