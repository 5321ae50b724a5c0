#!/usr/bin/env bash
# Real colour photographs that no verifier rule was calibrated, tuned or diagnosed on, for
# `python -m pluralign.rewards.holdout --photos ...` (docs/rewards_journal.md, "Photos no rule was looked at on").
#
#   scripts/unseen_photos.sh [DIR]        # default DIR: /tmp/pluralign-unseen-photos; prints the --photos value
#
# china.jpg and flower.jpg ship inside scikit-learn's wheel (sklearn.datasets.load_sample_images; fetched with
# pip, not installed), grace_hopper.jpg with matplotlib (already a dependency). Needs only the package index.
set -euo pipefail
dir="${1:-/tmp/pluralign-unseen-photos}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
mkdir -p "$dir/wheel"
"$python" -m pip download "scikit-learn==1.9.1" --no-deps --only-binary=:all: -d "$dir/wheel" -q
"$python" - "$dir" <<'PY'
import glob, shutil, sys, zipfile
import matplotlib.cbook

out = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{out}/wheel/scikit_learn-1.9.1-*.whl")[0]) as wheel:
    for name in ("china.jpg", "flower.jpg"):
        with wheel.open(f"sklearn/datasets/images/{name}") as src, open(f"{out}/{name}", "wb") as dst:
            shutil.copyfileobj(src, dst)
shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), f"{out}/grace_hopper.jpg")
PY
echo "$dir/china.jpg,$dir/flower.jpg,$dir/grace_hopper.jpg"
