"""One accuracy-spike figure from the studies of several sweeps (each sweep's own front.png
shows only its own storage).

    python scripts/plot_fronts.py OUT.png "TITLE" STORAGE_URL:STUDY:METHOD [...]

Example (docs/figures/front-mnist.png)::

    python scripts/plot_fronts.py docs/figures/front-mnist.png "embedded MNIST, 3 epochs" \
        sqlite:///runs/sweep-mnist/sweep.db:mnist-antlr:antlr \
        sqlite:///runs/sweep-mnist/sweep.db:mnist-activation:activation \
        sqlite:///runs/sweep-mnist-timing/sweep.db:mnist-timing:timing
"""
import sys

import optuna

from antlr_snn.experiments import sweep_front


def main(argv) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, title, *studies = argv
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    records = []
    for item in studies:
        url, study, method = item.rsplit(":", 2)
        trials = optuna.load_study(study_name=study, storage=url).trials
        records += [sweep_front.trial_record(method, t) for t in trials]
    front = sweep_front.fronts(records)
    sweep_front.plot_front(records, front, out, title)
    for r in front:
        print(f"{r['method']:<10} trial {r['trial']:>3}: {100 * r['val_accuracy']:5.1f}% at "
              f"{r['val_spikes_to_decision']:7.1f} spikes to the decision"
              + ("  (overall front)" if r["on_overall_front"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
