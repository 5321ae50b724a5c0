"""A plain (non-editable) install carries what the demo needs: the toy checkpoints, the toy recipes
and the toy suite's entry point, found relative to the installed package."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import pluralign, pluralign.toy.paths as p
from pluralign.toy.demo import _check_checkpoints, parse_demo
from pluralign.eval.suite import load_suite
site = SITE
assert pluralign.__file__.startswith(site), pluralign.__file__
assert str(p.aligned_dir()).startswith(site), p.aligned_dir()
_check_checkpoints()
cfg, train = parse_demo([])
assert train.max_steps == 1800 and train.preserve_null_weight == 300000.0, train
rows = load_suite("toy", 9)
assert len(rows) == 9 and "shape" in rows[0].meta
print("ok")
"""


@pytest.mark.slow
def test_wheel_install_runs_the_demo_setup(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("pluralign-*.whl")
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    env = {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", CHECK.replace("SITE", repr(str(site)))], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
