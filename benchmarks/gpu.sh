#!/usr/bin/env bash
# On a machine with a GPU, from a checkout with `pip install -e .[test,bench]` done:
#   1. the triton backend's tests on CUDA (equal to the reference; a whole training step
#      without host synchronisation, and replayed from a CUDA graph);
#   2. one short CLI training run on CUDA (the trainer's path end to end);
#   3. the CUDA rows of the benchmark: ours (triton, reference), snnTorch, Norse with
#      torch.compile, SpikingJelly native CUDA / triton; 784-800-10 T = 100 and T = 300 at
#      batch 16, 784-4x2048-10 T = 100 at batch 256.
# Meant to finish in under 5 minutes; each part has its own time limit, so that a slow part
# does not take the others' time. Results go to $OUT (default benchmarks/out): the test log,
# cuda.json and cuda.md (the tables for the README's Speed section and docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))" \
    || exit 1
status=0
timeout 110 "$PY" -m pytest -q -p no:cacheprovider --durations=5 tests/test_triton.py \
    2>&1 | tee "$OUT/test_triton.log" || status=1
timeout 30 "$PY" -m antlr_snn train --device cuda --epochs 1 --max-train 256 --max-eval 64 \
    --quiet --out "$OUT/train-cuda" 2>&1 | tail -3 | tee "$OUT/train-cuda.log" || status=1
timeout 150 "$PY" benchmarks/step_vs_peers.py --sections cuda --reps 5 \
    --json "$OUT/cuda.json" --out "$OUT/cuda.md" 2>&1 | tee "$OUT/bench-cuda.log" || status=1
exit $status
