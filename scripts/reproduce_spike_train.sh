#!/usr/bin/env bash
# Reproduce the numbers in docs/experiments-spike-train.md (random spike-train matching, Fig. 6,
# and the estimated loss landscapes, Fig. 5). Measured on 2 CPU cores (no GPU): about 10 min.
# Usage: scripts/reproduce_spike_train.sh [OUT]   (default OUT=runs/reproduce-spike-train)
set -euo pipefail
OUT=${1:-runs/reproduce-spike-train}
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # two runs at a time, one core each
CMD="python -m antlr_snn"
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*"; }

# Fig. 6: 10-50-50-5, 16 trials x 5000 iterations (paper: 100 x 50000), 1 and 3 target spikes
log "spike-train: 1 and 3 target spikes"
$CMD spike-train --trials 16 --iterations 5000 --target-spikes 1 --quiet --out "$OUT/st-5out-1spike" &
$CMD spike-train --trials 16 --iterations 5000 --target-spikes 3 --quiet --out "$OUT/st-5out-3spike" &
wait
# the other timing gradients of the loss instead of the default central difference: Table 1's
# literal backward difference and the continuous-time derivative; the activation method does
# not use dL/dt, so its numbers are those of the first run
log "spike-train: backward and continuous kappa*, 1 target spike"
$CMD spike-train --trials 16 --iterations 5000 --kappa-derivative backward --methods antlr,timing \
    --quiet --out "$OUT/st-5out-1spike-backward" &
$CMD spike-train --trials 16 --iterations 5000 --kappa-derivative continuous --methods antlr,timing \
    --quiet --out "$OUT/st-5out-1spike-continuous" &
wait
log "spike-train: 3 target spikes with the continuous kappa*; the Sec. 3.4 network 10-50-50-1"
$CMD spike-train --trials 16 --iterations 5000 --target-spikes 3 --kappa-derivative continuous \
    --methods antlr,timing --quiet --out "$OUT/st-5out-3spike-continuous" &
$CMD spike-train --trials 16 --iterations 5000 --outputs 1 --quiet --out "$OUT/st-1out-1spike" &
wait

# Fig. 5: one optimum per seed, 15x15 grid (default), then one 51x51 grid
log "landscape: seeds 0-4 (15x15) and seed 0 at 51x51"
for seed in 0 1 2 3 4; do
    $CMD landscape --seed "$seed" --quiet --out "$OUT/landscape-seed$seed"
done
$CMD landscape --seed 0 --grid 51 --quiet --out "$OUT/landscape-seed0-grid51"

python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
seeds = {}
for d in sorted(os.listdir(out)):
    path = os.path.join(out, d, "results.json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    if r["experiment"] == "spike-train":
        print(f"{d}: {r['ordering_by_final_loss']}  (wall {r['wall_s']:.0f} s)")
        for m, s in r["methods"].items():
            f = s["final_loss"]
            it0 = s["median_iterations_to_first_zero"]
            print(f"    {m:>10s} final loss {f['mean']:.4g} +- {f['std']:.3g}, zero in "
                  f"{100 * s['zero_fraction']:.0f}% (ever {100 * s['ever_zero_fraction']:.0f}%), "
                  f"mean loss over the run {s.get('mean_loss_over_run', float('nan')):.3g}, "
                  f"median iterations to zero {'-' if it0 is None else int(it0)}")
    else:
        fmt = lambda v: "n/a" if v is None else f"{v:+.3f}"
        g = r["grid"]
        print(f"{d}: span {g['span']}, region {100 * g['region_fraction']:.0f}%, "
              f"fd check {fmt(r['finite_difference_check']['pearson_grid'])} "
              f"(wall {r['wall_s']:.0f} s)")
        for m, s in r["methods"].items():
            print(f"    {m:>10s} r(grid) {fmt(s['pearson_grid'])}  r(region) "
                  f"{fmt(s['pearson_region'])}")
            if g["points_per_axis"] == 15:
                seeds.setdefault(m, []).append((s["pearson_grid"], s["pearson_region"]))
for m, rs in seeds.items():
    mean = lambda k: sum(v[k] for v in rs if v[k] is not None) / max(1, sum(v[k] is not None for v in rs))
    print(f"landscape mean over {len(rs)} seeds (15x15): {m:>10s} r(grid) {mean(0):+.3f}  "
          f"r(region) {mean(1):+.3f}")
PY
log "done; results in $OUT"
