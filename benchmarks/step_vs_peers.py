"""One training step of antlr-snn against snnTorch, SpikingJelly and Norse, side by side.

    python benchmarks/step_vs_peers.py --out docs/benchmarks.md --json bench.json   # all CPU
    python benchmarks/step_vs_peers.py --sections conv --conv-T 300                 # one part
    python benchmarks/step_vs_peers.py --sections compare --compare-with /work/wt-old/src
    python benchmarks/step_vs_peers.py --sections cuda --quick                      # on a GPU

Sections (``--sections``, default: every one that applies here):

* ``main``: 784-800-10, T = 100, batch 16, latency-coded real MNIST digits (CPU): this
  project's four methods and ANTLR on the reference backend against the peers; training step,
  inference, peak memory; the fast backend's exactness; where an ANTLR step's time goes.
* ``conv``: a conv LIF layer (2x34x34 input, 16 channels, 5x5, stride 2, then 3600 -> 10)
  on simulated N-MNIST, T = ``--conv-T``, batch 16 (CPU): ours (ANTLR, BPTT) against
  SpikingJelly's ``Conv2d`` + multi-step ``LIFNode``.
* ``scaling``: T = 300 / 1000, 3200 hidden neurons, the N-MNIST shape (CPU).
* ``compare`` (with ``--compare-with SRC``): the fully connected ANTLR and BPTT steps of this
  checkout against the code in ``SRC`` (an older checkout's ``src``), each in a worker
  process, in interleaved rounds. The older checkout is not written to
  (``PYTHONDONTWRITEBYTECODE``, its numba cache in a user cache folder).
* ``cuda`` (when CUDA is present): ours on the triton and on the reference backend, snnTorch,
  Norse with ``torch.compile``, SpikingJelly's native CUDA and triton implementations (one
  worker process each), at 784-800-10 T = 100 B = 16, at T = 300, and at 784-4x2048-10
  T = 100 B = 256.
* ``compile``: the numba kernels' compile cost in a fresh process.

Every system of a table runs on the same batch with weights scaled to the same firing
(~0.3 spikes per hidden neuron per sample, ~0.5 per output neuron) and takes its steps in
alternation with the others (round-robin, the order rotating every round); the tables give
medians. See :mod:`benchmarks.common` for the shared parts and each peer's module for how it
is written.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: the repository root and src on the path
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root / "src"), str(_root)]

from antlr_snn.files import atomic_write_text  # noqa: E402
from benchmarks import common, report  # noqa: E402
from benchmarks.common import ROOT, Local, Worker, alternate, config  # noqa: E402

SECTIONS = ("main", "conv", "scaling", "compare", "cuda", "compile")
PEERS = ("snntorch", "spikingjelly", "norse")


def _table(handles, reps, memory=True, infer=True):
    """Train (and inference) medians, page faults, rates and memory of built handles."""
    train, _, faults = alternate(handles, "step", reps)
    out = {"train": train, "faults": faults, "load": os.getloadavg()}
    if infer:
        out["infer"] = alternate(handles, "infer", reps, warmup=1)[0]
    if memory:
        out["memory"] = {n: g.memory(k) for n, (g, k) in handles.items()}
    print({n: round(1e3 * v, 1) for n, v in train.items()}, flush=True)
    return out


def _build(group, names, cfg, device="cpu", labels=None):
    """``label -> (group, key)`` for the systems ``names``, built and calibrated in
    ``group``; also their info (scales, rates, module, label)."""
    handles, info = {}, {}
    for n in names:
        label = (labels or {}).get(n, n)
        try:
            info[label] = group.build(label, n, cfg, device)
        except (RuntimeError, ImportError) as exc:  # a peer's backend missing here: no row
            print(f"  {label}: not run ({exc})", flush=True)
            continue
        handles[label] = (group, label)
        print(f"  {label}: scales {np.round(info[label]['scales'], 3).tolist()}, rates "
              f"{np.round(info[label]['rates'], 2).tolist()}", flush=True)
    return handles, info


def section_main(args, res):
    from benchmarks.ours import breakdown, exactness
    cfg = config("mnist")
    x, _ = common.make_batch(cfg)
    local = Local()
    handles, info = _build(local, ["antlr", "activation", "timing", "bptt", "antlr_ref",
                                   *PEERS], cfg)
    load0 = os.getloadavg()
    res["main"] = {**_table(handles, args.reps), "info": info, "load0": load0, "cfg": cfg,
                   "input_spikes": x.sum().item() / cfg["batch"]}
    res["main"]["exact"] = exactness(cfg, info["antlr"]["scales"])
    res["main"]["breakdown"] = breakdown(local.systems["antlr"])
    if args.threads_also:
        n0 = torch.get_num_threads()
        torch.set_num_threads(args.threads_also)
        res["threads_also"] = {"threads": args.threads_also, **_table(handles, args.reps,
                                                                      memory=False)}
        torch.set_num_threads(n0)
    local.close()


def section_conv(args, res):
    cfg = config("conv", T=args.conv_T)
    x, _ = common.make_batch(cfg)
    local = Local()
    handles, info = _build(local, ["antlr", "bptt", "spikingjelly"], cfg)
    res["conv"] = {**_table(handles, args.reps), "info": info, "cfg": cfg,
                   "input_spikes": x.sum().item() / cfg["batch"]}
    local.close()


def section_scaling(args, res):
    n0 = torch.get_num_threads()
    if args.scaling_threads:
        torch.set_num_threads(args.scaling_threads)
    res["scaling"], res["scaling_threads"] = {}, torch.get_num_threads()
    for cname in ("mnist", "mnist_T300", "mnist_T1000", "mnist_H3200", "nmnist"):
        cfg = config(cname)
        x, _ = common.make_batch(cfg)
        print(cname, flush=True)
        local = Local()
        handles, info = _build(local, ["antlr", "bptt", *PEERS], cfg)
        res["scaling"][cname] = {**_table(handles, max(3, args.reps // 2)), "info": info,
                                 "cfg": cfg,
                                 "input_spikes": x.sum().item() / cfg["batch"]}
        local.close()
        gc.collect()
    torch.set_num_threads(n0)


def section_compare(args, res):
    """This checkout against ``--compare-with`` on the fully connected steps."""
    old_src = Path(args.compare_with).resolve()
    if not (old_src / "antlr_snn" / "__init__.py").is_file():
        raise SystemExit(f"--compare-with {old_src}: no antlr_snn package there (give the "
                         f"checkout's src folder)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "antlr-snn"
    env_old = {"PYTHONDONTWRITEBYTECODE": "1",
               "NUMBA_CACHE_DIR": str(cache / ("bench-numba-" + hashlib.sha1(
                   str(old_src).encode()).hexdigest()[:12]))}
    tmp = tempfile.TemporaryDirectory()
    cfg = config("mnist", batch_file=str(Path(tmp.name) / "batch.pt"))
    torch.save(common.make_batch(config("mnist")), cfg["batch_file"])  # one input for both
    groups = {"current": Worker(ROOT / "src"), "before": Worker(old_src, env_old)}
    handles, info = {}, {}
    try:
        for method in ("antlr", "bptt"):
            ref = groups["current"].build(f"{method} current", method, cfg)
            info[f"{method} current"] = ref
            info[f"{method} before"] = groups["before"].build(f"{method} before", method, cfg,
                                                               scales=ref["scales"])
            for who in ("current", "before"):
                handles[f"{method} {who}"] = (groups[who], f"{method} {who}")
        for k, v in info.items():
            print(f"  {k}: {v['module']}, rates {np.round(v['rates'], 3).tolist()}", flush=True)
        train, raw, _ = alternate(handles, "step", args.compare_reps)
        infer, raw_i, _ = alternate({k: v for k, v in handles.items() if k.startswith("antlr")},
                                    "infer", args.compare_reps)
    finally:
        for g in groups.values():
            g.close()
        tmp.cleanup()
    res["compare"] = {"src": str(old_src), "cfg": cfg, "train": train, "raw": raw, "infer": infer,
                      "raw_infer": raw_i, "info": info, "reps": args.compare_reps}
    for m in ("antlr", "bptt"):
        print(f"{m}: current / before = {train[m + ' current'] / train[m + ' before']:.3f}")


CUDA_CONFIGS = ("mnist", "mnist_T300", "large")
CUDA = "cuda"  # the device of the cuda section


def section_cuda(args, res):
    from benchmarks.ours import exactness
    res["cuda"] = {}
    sj = {impl: Worker(ROOT / "src", {"SJ_LIF_CUDA_IMPLEMENTATION": impl})
          for impl in ("cuda", "triton")}
    try:
        for cname in CUDA_CONFIGS:
            cfg = config(cname)
            print(f"cuda {cname}", flush=True)
            local = Local()
            handles, info = _build(local, ["antlr_triton", "antlr_ref", "snntorch",
                                           "norse_compiled"], cfg, CUDA)
            for impl, w in sj.items():
                h, i = _build(w, ["spikingjelly"], cfg, CUDA,
                              {"spikingjelly": f"spikingjelly_{impl}"})
                handles.update(h)
                info.update(i)
            res["cuda"][cname] = {**_table(handles, args.reps), "info": info, "cfg": cfg}
            res["cuda"][cname]["exact"] = exactness(cfg, info["antlr_triton"]["scales"],
                                                    CUDA, "triton")
            for label in list(handles):
                handles[label][0].drop(label)
            local.close()
            _save(args, res)  # per shape: a time limit that stops the run keeps the others
    finally:
        for w in sj.values():
            w.close()


def _save(args, res) -> None:
    """The results so far (``--json``) and their report (``--out``)."""
    if getattr(args, "json", None):
        atomic_write_text(args.json, json.dumps(res, indent=1, default=str))
    if getattr(args, "out", None):
        report.write(res, args.out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default=None,
                    help=f"comma-separated, of {', '.join(SECTIONS)} (default: all that apply)")
    ap.add_argument("--reps", type=int, default=21, help="alternating rounds (default 21)")
    ap.add_argument("--quick", action="store_true", help="7 rounds; no scaling, no compile")
    ap.add_argument("--conv-T", type=int, default=300, help="time steps of the conv row")
    ap.add_argument("--compare-with", default=None, metavar="SRC",
                    help="an older checkout's src folder to time against this one")
    ap.add_argument("--compare-reps", type=int, default=41,
                    help="interleaved rounds of the comparison (default 41)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every system")
    ap.add_argument("--threads-also", type=int, default=None,
                    help="repeat the main table's timings with this many threads")
    ap.add_argument("--scaling-threads", type=int, default=None,
                    help="torch threads for the scaling runs (default: as the main table)")
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--from-json", default=None, help="only rewrite the report from --json")
    args = ap.parse_args(argv)
    if args.from_json:
        text = report.write(json.loads(Path(args.from_json).read_text()), args.out)
        print(text)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.reps = min(args.reps, 7)
        args.compare_reps = min(args.compare_reps, 15)
    if args.sections:
        sections = [s.strip() for s in args.sections.split(",")]
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            ap.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    else:
        sections = ["main", "conv"] + ([] if args.quick else ["scaling", "compile"])
        sections += ["compare"] if args.compare_with else []
        sections += ["cuda"] if torch.cuda.is_available() else []
    if "compare" in sections and not args.compare_with:
        ap.error("the compare section needs --compare-with SRC")
    if "cuda" in sections and not torch.cuda.is_available():
        ap.error("the cuda section needs CUDA")
    res = {"sections": sections, "machine": common.machine()}
    for name in sections:
        print(f"== {name}", flush=True)
        if name == "compile":
            from benchmarks.ours import compile_cost
            res["compile"] = compile_cost()
        else:
            globals()[f"section_{name}"](args, res)
        _save(args, res)  # after every section: a crash later keeps what was measured
    print(report.write(res, args.out))


if __name__ == "__main__":
    main()
