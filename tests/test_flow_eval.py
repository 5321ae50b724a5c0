"""``run_eval`` on the tiny SD3 and Flux pipelines with a LoRA: generation, the dial, every output."""

import json

import numpy as np
import pytest
from PIL import Image

from pluralign.eval.suite import EvalRow

pytestmark = pytest.mark.slow

ROWS = [EvalRow("a red circle on white", "a red circle on white, very dark", ["underexposed"], 11),
        EvalRow("a blue square", "a blue square, blurry", ["blurry"], 12)]


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_run_eval_with_lora(family, tiny_pipeline_dir, tmp_path):
    from pluralign.eval.fixtures import save_random_lora
    from pluralign.eval.runner import EvalConfig, run_eval

    base = tiny_pipeline_dir(family)
    adapter = save_random_lora(base, tmp_path / "lora", scale=30.0)
    out = tmp_path / "eval"
    config = EvalConfig(base=str(base), adapter=str(adapter), weights=[0.0, 1.0], num_inference_steps=2,
                        guidance_scale=3.5, height=32, width=32, batch_size=2, bootstrap=100, content_checker="none",
                        device="cpu", output=str(out))
    run_eval(config, rows=ROWS, judges={})
    results = json.loads((out / "results.json").read_text())
    assert results["checks"]["weight0_equals_base"]["passed"]
    for variant in ("base", "adapter_w0", "adapter_w1"):
        for i in range(len(ROWS)):
            for which in "oa":
                assert Image.open(out / "images" / variant / f"{i:05d}_{which}.png").size == (32, 32)
    base_o = np.asarray(Image.open(out / "images" / "base" / "00000_o.png"), dtype=np.int16)
    lora_o = np.asarray(Image.open(out / "images" / "adapter_w1" / "00000_o.png"), dtype=np.int16)
    assert np.abs(base_o - lora_o).max() > 5          # the LoRA is applied at weight 1
    assert (out / "report.md").exists()
