#!/usr/bin/env bash
# Reproduce the latency-coded MNIST numbers of docs/reproduction.md (Fig. 7a, reduced scale):
# antlr, activation and timing on the embedded 5,000 MNIST digits (4,000/500/500), 784-800-10,
# T = 100, batch 16, EPOCHS epochs, TRIALS trials (seeds 0..TRIALS-1) each, then one table.
# Usage: scripts/reproduce_train.sh [OUT] [EPOCHS] [DATASET] [TRIALS]
#   (defaults: runs/reproduce-train, 5, mnist (the embedded digits), 3);
#   DATASET fashion-mnist reads /usr/share/datasets/fashion-mnist (dataset-fashion-mnist).
set -euo pipefail
OUT=${1:-runs/reproduce-train}
EPOCHS=${2:-5}
DATASET=${3:-mnist}
TRIALS=${4:-3}
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
mkdir -p "$OUT"
for method in antlr activation timing; do
    start=$(date +%s)
    python -m antlr_snn train --method "$method" --dataset "$DATASET" --trials "$TRIALS" \
        --epochs "$EPOCHS" --quiet --out "$OUT/$method"
    echo "$method: $(( $(date +%s) - start )) s wall for $TRIALS trial(s)" | tee -a "$OUT/wall.txt"
done
python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| method | test accuracy (%) | spikes / sample | spikes to decision |")
print("|---|---|---|---|")
for m in ("antlr", "activation", "timing"):
    r = json.load(open(os.path.join(out, m, "results.json")))
    def ms(key, scale=1.0):
        v = r[key]
        return f"{scale * v['mean']:.1f} ± {scale * v['std']:.1f}"
    print(f"| {m} | {ms('test_accuracy', 100)} | {ms('spikes_per_sample')} | {ms('spikes_to_decision')} |")
PY
