"""The frozen reference computed ahead for chunks of micro-steps (``reference_chunk``)."""

import pytest
from test_trainer_helpers import cfg

from pluralign.trainers import train
from pluralign.trainers.reference import ReferenceAhead, chunk_of


def test_chunks_start_at_multiples_of_the_size_wherever_a_run_starts():
    assert list(chunk_of(0, 4)) == [0, 1, 2, 3]
    assert list(chunk_of(6, 4)) == [4, 5, 6, 7]
    assert list(chunk_of(7, 1)) == [7]
    with pytest.raises(ValueError, match="at least 1"):
        chunk_of(3, 0)


def _ahead(size, log):
    def reference(inputs):
        log.append(list(inputs))
        return [f"ref{k}" for k in inputs]
    return ReferenceAhead(size, lambda k: k, reference)


def test_one_reference_call_per_chunk_in_step_order():
    log = []
    ahead = _ahead(3, log)
    assert [ahead.take(k) for k in range(7)] == [(k, f"ref{k}") for k in range(7)]
    assert log == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_a_run_resumed_inside_a_chunk_recomputes_the_whole_chunk():
    """The batch the reference sees is the uninterrupted run's, so every float it returns is too."""
    log = []
    ahead = _ahead(4, log)
    assert ahead.take(6) == (6, "ref6")
    assert log == [[4, 5, 6, 7]]
    assert ahead.take(7) == (7, "ref7") and len(log) == 1
    ahead.take(8)
    assert log[-1] == [8, 9, 10, 11]


def test_a_reference_that_drops_steps_is_an_error():
    ahead = ReferenceAhead(2, lambda k: k, lambda inputs: inputs[:1])
    with pytest.raises(RuntimeError, match="1 results for 2 micro-steps"):
        ahead.take(0)


@pytest.mark.slow
def test_chunked_reference_trains_the_same_adapter_in_fewer_calls(tiny_pipeline_dir, tmp_path, monkeypatch):
    """Six steps with the reference in chunks of 4: two reference calls of 4 steps' latents instead of six, and
    the same adapter up to float rounding (a larger batch may round differently)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    model = tiny_pipeline_dir("sd")
    common = dict(max_steps=6, learning_rate=3e-3, export_kohya=False, sft_weight=1e3, preserve_null_weight=1e4,
                  preserve_null_rows="chosen")
    sizes, forward = [], UNet2DConditionModel.forward

    def counting(self, sample, *args, **kwargs):
        sizes.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counting)
    one = train(cfg(tmp_path / "one", model, **common))
    per_step, sizes[:] = list(sizes), []
    four = train(cfg(tmp_path / "four", model, reference_chunk=4, **common))
    chunked = list(sizes)
    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    rows = 3 * 2  # train_batch_size 2: chosen + rejected, and the null prompt on the chosen half
    assert per_step == [rows] * 12
    assert chunked == [4 * rows] + [rows] * 4 + [4 * rows] + [rows] * 2
    a = load_file(str(one.adapter_dir / "pytorch_lora_weights.safetensors"))
    b = load_file(str(four.adapter_dir / "pytorch_lora_weights.safetensors"))
    # Relative to the largest weight. The CPU's kernels round a batch of 24 rows differently from one of 6: the
    # difference read 1e-5 to 2.2e-5 on weights of 0.99, by thread count. A reference handed to the wrong
    # micro-steps moves them by 3.5e-2.
    scale = max(v.abs().max().item() for v in a.values())
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4 * scale
    assert max(v.abs().max().item() for k, v in a.items() if "lora.up" in k) > 1e-3  # it trained
    assert one.history[-1]["loss"] == pytest.approx(four.history[-1]["loss"], rel=1e-4)
