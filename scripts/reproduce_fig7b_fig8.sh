#!/usr/bin/env bash
# Fig. 7b (single-spike restriction) and Fig. 8 (N-MNIST shape, on the *simulated* N-MNIST since
# the real recordings are not shipped) at reduced scale; numbers go to docs/reproduction.md.
# Usage: scripts/reproduce_fig7b_fig8.sh [OUT]   (default runs/reproduce-extra)
set -euo pipefail
OUT=${1:-runs/reproduce-extra}
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
mkdir -p "$OUT"
for method in antlr activation timing; do
    start=$(date +%s)
    python -m antlr_snn train --method "$method" --single-spike --trials 2 --epochs 5 --quiet \
        --out "$OUT/single-spike-$method"
    echo "single-spike $method: $(( $(date +%s) - start )) s" | tee -a "$OUT/wall.txt"
done
for method in antlr activation timing; do
    start=$(date +%s)
    python -m antlr_snn train --dataset nmnist-sim --method "$method" --epochs 2 \
        --max-train 2000 --max-eval 500 --quiet --out "$OUT/nmnist-sim-$method"
    echo "nmnist-sim $method: $(( $(date +%s) - start )) s" | tee -a "$OUT/wall.txt"
done
for method in antlr timing; do  # the output V* floor for event data (reproduction.md, Fig. 8)
    python -m antlr_snn train --dataset nmnist-sim --method "$method" --epochs 2 \
        --max-train 2000 --max-eval 500 --output-vstar-min 0.1 --quiet \
        --out "$OUT/nmnist-sim-$method-vstar0.1"
done
python -m antlr_snn train --dataset nmnist-sim --method antlr --epochs 2 --max-train 2000 \
    --max-eval 500 --output-vstar-min 0.1 --lr 3e-4 --trials 3 --quiet \
    --out "$OUT/nmnist-sim-antlr-vstar0.1-lr3e-4"
python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| run | test accuracy (%) | spikes / sample | spikes to decision | trials |")
print("|---|---|---|---|---|")
for d in sorted(os.listdir(out)):
    path = os.path.join(out, d, "results.json")
    if os.path.exists(path):
        r = json.load(open(path))
        f = lambda k, s=1.0: f"{s * r[k]['mean']:.1f} ± {s * r[k]['std']:.1f}"
        print(f"| {d} | {f('test_accuracy', 100)} | {f('spikes_per_sample')} | "
              f"{f('spikes_to_decision')} | {r['test_accuracy']['n']} |")
PY
