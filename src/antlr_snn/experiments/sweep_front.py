"""The accuracy-spike front of ``antlr-snn sweep``: dominance, pruning, and the output files.

A trial's point is ``(validation accuracy, validation spikes per sample to the decision)`` at
its best-validation epoch (the model in its ``best.pt``); accuracy is maximised, spikes are
minimised. A point *dominates* another when it is at least as good in both and better in one.

**Pruning** (:func:`should_prune`). Optuna's pruners take one objective, and pruning on
accuracy alone would cut exactly the low-spike end of the front. The rule here is the median
rule made two-dimensional: after epoch ``e`` (from ``warmup`` on, never after the last), a
trial is pruned when at least ``fraction`` of the completed trials of its study were, after
their own epoch ``e``, at a point that dominates its point, and at least ``min_trials``
completed trials reached epoch ``e``. Points are "best so far": the best validation accuracy
up to ``e`` with the spikes of that epoch, which is what the trial would report if it stopped.
With one objective this is the median rule; a trial on the current front is never pruned.

Example:
    >>> dominates((0.9, 30.0), (0.9, 40.0)), dominates((0.9, 30.0), (0.95, 80.0))
    (True, False)
    >>> pareto([(0.9, 30.0), (0.95, 80.0), (0.85, 35.0), (0.95, 90.0)])
    [0, 1]
    >>> should_prune((0.8, 50.0), [(0.9, 40.0), (0.85, 45.0), (0.7, 10.0)], 0.5, 3)
    True
"""
from __future__ import annotations

import math
import os

from antlr_snn.files import atomic_write_json, write_csv

#: One colour per method, the same in every figure.
COLOURS = {"antlr": "tab:blue", "activation": "tab:orange", "timing": "tab:green",
           "bptt": "tab:red"}
OBJECTIVES = {"val_accuracy": "maximize", "val_spikes_to_decision": "minimize"}


def dominates(a, b) -> bool:
    """``a = (accuracy, spikes)`` dominates ``b``: no worse in both, better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto(points) -> list:
    """Indices of the points no other point dominates (equal points all stay), in order."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def should_prune(point, peers, fraction: float, min_trials: int) -> bool:
    """The pruning rule of the module docstring for ``point`` against ``peers`` (the points
    of the completed trials at the same epoch)."""
    if len(peers) < max(1, min_trials):
        return False
    return sum(dominates(q, point) for q in peers) >= fraction * len(peers)


def best_so_far(curve: list, epoch: int):
    """``(accuracy, spikes to decision, record)`` of the best-validation epoch up to
    ``epoch`` (the first of equal accuracies, as the trainer keeps it), or None."""
    best = None
    for rec in curve:
        if rec["epoch"] <= epoch and (best is None or rec["val_accuracy"] > best["val_accuracy"]):
            best = rec
    return None if best is None else (best["val_accuracy"], best["val_spikes_to_decision"], best)


# ----------------------------------------------------------------------------- records

def trial_record(method: str, t) -> dict:
    """What the outputs say about one trial (an Optuna ``FrozenTrial``)."""
    ua, sa = t.user_attrs, t.system_attrs
    curve = ua.get("curve") or []
    best = best_so_far(curve, math.inf)
    result = ua.get("result") or {}
    rec = {"method": method, "trial": t.number, "state": t.state.name,
           "val_accuracy": None, "val_spikes_to_decision": None, "val_spikes_per_sample": None,
           "best_epoch": None, "epochs_run": len(curve),
           "test_accuracy": result.get("test_accuracy"),
           "test_spikes_to_decision": result.get("test_spikes_to_decision"),
           "test_spikes_per_sample": result.get("test_spikes_per_sample"),
           "retry_of": sa.get("retry_of"), "note": ua.get("error") or ua.get("note"),
           "worker": ua.get("worker"), "dir": ua.get("dir"), "settings": dict(t.params),
           "config": ua.get("config")}
    if best is not None:
        rec.update(val_accuracy=best[0], val_spikes_to_decision=best[1],
                   val_spikes_per_sample=best[2]["val_spikes_per_sample"],
                   best_epoch=best[2]["epoch"])
    if t.state.name == "COMPLETE" and t.values is not None:
        rec["val_accuracy"], rec["val_spikes_to_decision"] = t.values
    return rec


def fronts(records: list) -> list:
    """The per-method fronts: the completed records no record of the same method dominates,
    sorted by method order and spikes; each marked ``on_overall_front`` (against every
    method's completed records)."""
    done = [r for r in records if r["state"] == "COMPLETE" and r["val_accuracy"] is not None]
    pts = [(r["val_accuracy"], r["val_spikes_to_decision"]) for r in done]
    overall = set(pareto(pts))
    out = []
    for method in dict.fromkeys(r["method"] for r in records):
        idx = [i for i, r in enumerate(done) if r["method"] == method]
        for k in pareto([pts[i] for i in idx]):
            out.append({**done[idx[k]], "on_overall_front": idx[k] in overall})
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in records))}
    return sorted(out, key=lambda r: (order[r["method"]], r["val_spikes_to_decision"],
                                      -r["val_accuracy"], r["trial"]))


def front_text(front: list, method: str, limit: int = 5) -> str:
    """``'85.0%@12 91.2%@31'``: a method's front (at most ``limit`` points, ends kept)."""
    pts = [r for r in front if r["method"] == method]
    if len(pts) > limit:
        pts = [pts[round(i * (len(pts) - 1) / (limit - 1))] for i in range(limit)]
    return " ".join(f"{100 * r['val_accuracy']:.1f}%@{r['val_spikes_to_decision']:.0f}"
                    for r in pts) or "-"


# ----------------------------------------------------------------------------- files

CSV_COLUMNS = ("method", "trial", "state", "val_accuracy", "val_spikes_to_decision",
               "val_spikes_per_sample", "best_epoch", "epochs_run", "test_accuracy",
               "test_spikes_to_decision", "test_spikes_per_sample", "on_front", "retry_of",
               "note", "worker", "dir")


def write_outputs(out: str, records: list, studies: dict, meta: dict) -> list:
    """``front.json``, ``front.png`` and ``trials.csv`` in ``out`` (atomically); returns
    the front. ``studies`` maps method -> study name, ``meta`` goes into front.json."""
    front = fronts(records)
    point_keys = ("method", "trial", "val_accuracy", "val_spikes_to_decision",
                  "val_spikes_per_sample", "best_epoch", "test_accuracy",
                  "test_spikes_to_decision", "test_spikes_per_sample", "on_overall_front",
                  "settings", "config")
    points = []
    for r in front:
        p = {k: r[k] for k in point_keys}
        p["checkpoint"] = os.path.join(r["dir"], "best.pt") if r["dir"] else None
        p["config_file"] = os.path.join(r["dir"], "config.json") if r["dir"] else None
        p["worker"] = r["worker"]
        points.append(p)
    counts = {}
    for method, name in studies.items():
        states = [r["state"] for r in records if r["method"] == method]
        counts[method] = {"study": name, **{s.lower(): states.count(s) for s in
                                            ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}}
    atomic_write_json(os.path.join(out, "front.json"), {
        "format": "antlr-snn-sweep-front/1", **meta, "objectives": OBJECTIVES,
        "studies": counts, "front": points})
    on_front = {(r["method"], r["trial"]) for r in front}
    params = sorted({k for r in records for k in r["settings"]})
    rows = [[*(r.get(c) if c != "on_front" else (r["method"], r["trial"]) in on_front
               for c in CSV_COLUMNS), *(r["settings"].get(k) for k in params)]
            for r in records]
    write_csv(os.path.join(out, "trials.csv"), rows, [*CSV_COLUMNS, *params])
    plot_front(records, front, os.path.join(out, "front.png"), meta.get("dataset", ""))
    return front


def plot_front(records: list, front: list, path: str, title: str = "") -> None:
    """Validation accuracy against spikes to the decision: every completed trial (dots),
    pruned trials at their last point (x), and each method's front (a staircase)."""
    from matplotlib.figure import Figure

    from antlr_snn.experiments.common import save_figure
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for i, method in enumerate(dict.fromkeys(r["method"] for r in records)):
        colour = COLOURS.get(method, f"C{4 + i}")
        mine = [r for r in records if r["method"] == method and r["val_accuracy"] is not None]
        done = [r for r in mine if r["state"] == "COMPLETE"]
        pruned = [r for r in mine if r["state"] == "PRUNED"]
        pts = [r for r in front if r["method"] == method]
        ax.scatter([r["val_spikes_to_decision"] for r in done],
                   [100 * r["val_accuracy"] for r in done], s=12, alpha=0.35, color=colour)
        ax.scatter([r["val_spikes_to_decision"] for r in pruned],
                   [100 * r["val_accuracy"] for r in pruned], s=12, alpha=0.35, marker="x",
                   color=colour)
        ax.plot([r["val_spikes_to_decision"] for r in pts], [100 * r["val_accuracy"] for r in pts],
                "o-", drawstyle="steps-post", color=colour, markersize=5,
                label=f"{method}: {len(pts)} on the front of {len(done)} completed"
                      + (f", {len(pruned)} pruned" if pruned else ""))
    ax.set_xlabel("validation spikes per sample to the decision")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"accuracy-spike front{': ' + title if title else ''}", fontsize=10)
    ax.grid(alpha=0.3)
    if records:
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
