#!/usr/bin/env bash
# A second set of diagnosis photographs for the paired verifier rules: real colour photos from OpenCV's sample
# data (inside the opencv-python source archive on PyPI) and SciPy's raccoon face (inside the scipy 1.9.3 wheel).
# Rules are diagnosed on these and on gradio's photos; the unseen set (scripts/unseen_photos.sh) stays for the
# final check of a change (docs/rewards.md).
#
#   scripts/diagnosis_photos.sh [DIR]     # default DIR: /tmp/pluralign-diagnosis-photos; prints the --photos value
#
# Needs only the package index (about 130 MB of downloads; nothing is installed).
set -euo pipefail
dir="${1:-/tmp/pluralign-diagnosis-photos}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
photos="fruits baboon building butterfly home messi5 squirrel_cls smarties"
mkdir -p "$dir/download"
if [ ! -f "$dir/download/opencv.tar.gz" ]; then
  # pip cannot download this sdist without building its metadata; take the file the simple index names
  url=$(curl -fsS https://pypi.org/simple/opencv-python/ | grep -o 'https://[^"#]*opencv-python-4\.10\.0\.84\.tar\.gz' | head -1)
  [ -n "$url" ] || { echo "opencv-python 4.10.0.84 sdist not found on the package index" >&2; exit 1; }
  curl -fsS -o "$dir/download/opencv.tar.gz.part" "$url" && mv "$dir/download/opencv.tar.gz.part" "$dir/download/opencv.tar.gz"
fi
members=""
for p in $photos; do members="$members opencv-python-4.10.0.84/opencv/samples/data/$p.*"; done
# shellcheck disable=SC2086
tar xzf "$dir/download/opencv.tar.gz" -C "$dir/download" --wildcards $members
"$python" -m pip download "scipy==1.9.3" --no-deps --only-binary=:all: -d "$dir/download" -q
"$python" - "$dir" $photos <<'PY'
import bz2, glob, shutil, sys, zipfile

import numpy as np
from PIL import Image

out, names = sys.argv[1], sys.argv[2:]
for name in names:
    (src,) = glob.glob(f"{out}/download/opencv-python-*/opencv/samples/data/{name}.*")
    Image.open(src).convert("RGB").save(f"{out}/{name}.png")
with zipfile.ZipFile(glob.glob(f"{out}/download/scipy-1.9.3-*.whl")[0]) as wheel:
    face = np.frombuffer(bz2.decompress(wheel.read("scipy/misc/face.dat")), dtype=np.uint8).reshape(768, 1024, 3)
Image.fromarray(face).save(f"{out}/face.png")
print(",".join(f"{out}/{n}.png" for n in sorted(names + ["face"])))  # sorted: the holdout draws photos by position
PY
