#!/usr/bin/env bash
# Diagnosis photographs for the paired verifier rules: real colour photos from OpenCV's sample data (inside the
# opencv-python source archive on PyPI) and SciPy's raccoon face (inside the scipy 1.9.3 wheel). Rules are diagnosed
# on these and on gradio's photos; the unseen set (scripts/unseen_photos.sh) stays for the final check of a change
# (docs/rewards.md).
#
#   scripts/diagnosis_photos.sh [DIR] [SET]   # default DIR: /tmp/pluralign-diagnosis-photos; prints the --photos value
#
# SET 1 (default): eight OpenCV photos and the raccoon face. SET 2: ten other OpenCV colour photos (aerial view,
# plant, fruit, dog, notebook, graffiti, street, desk, toys), written to DIR/set2; the same archive.
# Needs only the package index (about 130 MB of downloads; nothing is installed).
set -euo pipefail
dir="${1:-/tmp/pluralign-diagnosis-photos}"
set_id="${2:-1}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
case "$set_id" in
  1) files="baboon.jpg building.jpg butterfly.jpg fruits.jpg home.jpg messi5.jpg smarties.png squirrel_cls.jpg"; out="$dir" ;;
  2) files="aero1.jpg aloeL.jpg apple.jpg chicky_512.png ela_original.jpg graf1.png leuvenA.jpg orange.jpg rubberwhale1.png stuff.jpg"
     out="$dir/set2" ;;
  *) echo "unknown set $set_id: give 1 or 2" >&2; exit 2 ;;
esac
mkdir -p "$out"
mkdir -p "$dir/download"
if [ ! -f "$dir/download/opencv.tar.gz" ]; then
  # pip cannot download this sdist without building its metadata; take the file the simple index names
  index=$(curl -fsS https://pypi.org/simple/opencv-python/)
  url=$(grep -o 'https://[^"#]*opencv-python-4\.10\.0\.84\.tar\.gz' <<<"$index" | head -1 || true)
  [ -n "$url" ] || { echo "opencv-python 4.10.0.84 sdist not found on the package index" >&2; exit 1; }
  curl -fsS -o "$dir/download/opencv.tar.gz.part" "$url" && mv "$dir/download/opencv.tar.gz.part" "$dir/download/opencv.tar.gz"
fi
members=()
for f in $files; do members+=("opencv-python-4.10.0.84/opencv/samples/data/$f"); done
tar xzf "$dir/download/opencv.tar.gz" -C "$dir/download" "${members[@]}"
# the last scipy whose wheel ships face.dat; its wheels stop at CPython 3.11, and the photo is the same in every one
if [ "$set_id" = 1 ]; then
  "$python" -m pip download "scipy==1.9.3" --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux2014_x86_64 -d "$dir/download" -q
fi
# shellcheck disable=SC2086
"$python" - "$dir" "$out" "$set_id" $files <<'PY'
import bz2, glob, sys, zipfile
from pathlib import Path

import numpy as np
from PIL import Image

dl, out, set_id, files = sys.argv[1] + "/download", sys.argv[2], sys.argv[3], sys.argv[4:]
names = [Path(f).stem for f in files]
for f, name in zip(files, names):
    Image.open(f"{dl}/opencv-python-4.10.0.84/opencv/samples/data/{f}").convert("RGB").save(f"{out}/{name}.png")
if set_id == "1":
    with zipfile.ZipFile(glob.glob(f"{dl}/scipy-1.9.3-*.whl")[0]) as wheel:
        face = np.frombuffer(bz2.decompress(wheel.read("scipy/misc/face.dat")), dtype=np.uint8).reshape(768, 1024, 3)
    Image.fromarray(face).save(f"{out}/face.png")
    names.append("face")
print(",".join(f"{out}/{n}.png" for n in sorted(names)))  # sorted: the holdout draws photos by position
PY
