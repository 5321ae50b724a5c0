#!/usr/bin/env bash
# One short intent-DPO run per family (SD1.5, SDXL, SD3.5-Medium, FLUX.1-dev) on random-init models of
# real shape at real resolution: bf16, 8-bit AdamW, gradient checkpointing. Prints a markdown table of
# s/step, pairs/s and peak GPU memory, then one of `data generate` on the same pipelines (2 prompt pairs,
# K=2, verifiers scorer: images/s and accepted pairs; --generate 0 skips it). No downloads.
#   scripts/gpu_smoke.sh                      # all families on GPU 0
#   scripts/gpu_smoke.sh --families sdxl,flux --steps 8
#   scripts/gpu_smoke.sh --dry-run            # CPU self-check with tiny models (no GPU numbers)
#   scripts/gpu_smoke.sh --sharded            # FSDP and DeepSpeed ZeRO-2 runs: kill, resume, export (tests/test_sharded.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
if [[ " $* " != *" --dry-run "* ]]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_smoke.sh: ERROR: no CUDA GPU visible to torch; this script measures GPU training." >&2
    echo "             Run it on a GPU machine, or use --dry-run for the CPU self-check." >&2
    exit 2
  fi
fi
if [[ " $* " == *" --sharded "* ]]; then
  # FSDP FULL_SHARD and DeepSpeed ZeRO-2 through the stock launcher, one process per visible GPU (1, 2 or 4):
  # train, hard kill after a checkpoint, resume, and compare the export with a single-process run
  export WANDB_MODE="${WANDB_MODE:-disabled}" HF_HUB_OFFLINE=1 PLURALIGN_SHARDED_ON_GPU=1
  exec "$PY" -m pytest tests/test_sharded.py -q -s -k killed
fi
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" WANDB_MODE="${WANDB_MODE:-disabled}" HF_HUB_OFFLINE=1
exec "$PY" scripts/gpu_smoke.py "$@"
