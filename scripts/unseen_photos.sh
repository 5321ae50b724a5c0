#!/usr/bin/env bash
# Real colour photographs that no verifier rule was calibrated, tuned or diagnosed on, for
# `python -m pluralign.rewards.holdout --photos ...` (docs/rewards_journal.md, "Photos no rule was looked at on").
#
#   scripts/unseen_photos.sh [DIR] [SET]   # default DIR: /tmp/pluralign-unseen-photos; prints the --photos value
#
# SET 1 (default): china.jpg and flower.jpg from inside scikit-learn's wheel (sklearn.datasets.load_sample_images),
# grace_hopper.jpg from matplotlib (already a dependency). SET 2 (written to DIR/set2; added 2026-12-07, when a
# prototype of a rule change had been read on set 1): bus.jpg and zidane.jpg from inside ultralytics' wheel
# (ultralytics/assets), t1.jpg from inside insightface's (insightface/data/images): every colour photograph those
# wheels ship at 720 px or more on the short side. SET 3 (written to DIR/set3; added 2026-12-07, late, when set 1 had
# been read to diagnose the leak rule on double exposures): quokka.jpg from inside imgaug's wheel and
# DepartmentStore.jpg from inside mahotas' (mahotas/demos/data): every colour photograph those wheels ship at 640 px or
# more on the short side. Wheels are fetched with pip, not installed. Needs only the package index.
set -euo pipefail
dir="${1:-/tmp/pluralign-unseen-photos}"
set_id="${2:-1}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
case "$set_id" in
  1) out="$dir"; wheels=("scikit-learn==1.9.1") ;;
  2) out="$dir/set2"; wheels=("ultralytics==8.4.190" "insightface==2.1") ;;
  3) out="$dir/set3"; wheels=("imgaug==0.4.0" "mahotas==1.4.19") ;;
  *) echo "unknown set $set_id: give 1, 2 or 3" >&2; exit 2 ;;
esac
mkdir -p "$out" "$dir/wheel"
for w in "${wheels[@]}"; do
  "$python" -m pip download "$w" --no-deps --only-binary=:all: -d "$dir/wheel" -q
done
"$python" - "$dir" "$out" "$set_id" <<'PY'
import glob, shutil, sys, zipfile

root, out, set_id = sys.argv[1:]
members = {  # wheel file pattern -> photos inside it
    "1": {"scikit_learn-1.9.1-*.whl": ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"]},
    "2": {"ultralytics-8.4.190-*.whl": ["ultralytics/assets/bus.jpg", "ultralytics/assets/zidane.jpg"],
          "insightface-2.1-*.whl": ["insightface/data/images/t1.jpg"]},
    "3": {"imgaug-0.4.0-*.whl": ["imgaug/quokka.jpg"],
          "mahotas-1.4.19-*.whl": ["mahotas/demos/data/DepartmentStore.jpg"]},
}[set_id]
for pattern, names in members.items():
    with zipfile.ZipFile(glob.glob(f"{root}/wheel/{pattern}")[0]) as wheel:
        for name in names:
            with wheel.open(name) as src, open(f"{out}/{name.rsplit('/', 1)[1]}", "wb") as dst:
                shutil.copyfileobj(src, dst)
if set_id == "1":
    import matplotlib.cbook

    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), f"{out}/grace_hopper.jpg")
PY
case "$set_id" in
  1) echo "$out/china.jpg,$out/flower.jpg,$out/grace_hopper.jpg" ;;
  2) echo "$out/bus.jpg,$out/zidane.jpg,$out/t1.jpg" ;;
  3) echo "$out/quokka.jpg,$out/DepartmentStore.jpg" ;;
esac
