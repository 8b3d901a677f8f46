"""What NIR's reset costs: a trained network of ``antlr-snn train`` exported to NIR and run by
other libraries, against the network itself, on the test digits.

    python benchmarks/nir_agreement.py --checkpoint runs/mnist/best.pt [--json out.json]

The checkpoint's network is exported (``antlr_snn.nir.export``, reset="v_only"), written and
read back as a ``.nir`` file, then run on the test split of its data set (coded as in
training) by:

- **NIR reference**: ``tests/nir_reference.py``, the CubaLIF equations stepped by Euler in
  float64 with NIR's reset (V only); with ``reset I too`` it also resets I, as Eq. 1-2 do (a
  check of the mapping: it must agree fully);
- **Norse 1.1.0** (``norse.torch.from_nir``) and **snnTorch 1.0.0** (``import_from_nir``).

snnTorch's importer refuses a CubaLIF with ``v_leak`` != 0 (our V_bias) and Norse's feeds
``v_leak`` to the synaptic current as well as to V, so the same comparison is repeated with
every V_bias set to 0 (in our network and in the graph) where all three run NIR as defined.

Each system's output spikes ``[T, samples, 10]`` are compared with ours: the fraction of
equal entries, the spikes both have over the spikes either has (Jaccard), the fraction of
(sample, neuron) pairs with the same first spike step, the fraction of samples given the
same class (the checkpoint's decision rule), and the accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import nir_reference as ref  # noqa: E402
from antlr_snn import decode  # noqa: E402
from antlr_snn import nir as antlr_nir  # noqa: E402
from antlr_snn.checkpoints import network_from_checkpoint  # noqa: E402
from antlr_snn.training import TrainConfig, load_splits  # noqa: E402


def first_steps(S):
    T = S.shape[0]
    return torch.where(S.amax(0) > 0, S.argmax(0), torch.full_like(S[0], T, dtype=torch.long))


def compare(ours, theirs, labels, decision: str) -> dict:
    decide = decode.earliest_spike if decision == "earliest_spike" else decode.most_spikes
    both, either = (ours * theirs).sum().item(), ((ours + theirs) > 0).sum().item()
    return {"spike_agreement": (ours == theirs).double().mean().item(),
            "jaccard": both / either if either else 1.0,
            "first_spike_agreement": (first_steps(ours) == first_steps(theirs))
            .double().mean().item(),
            "decision_agreement": (decide(ours) == decide(theirs)).double().mean().item(),
            "accuracy": (decide(theirs) == labels).double().mean().item(),
            "output_spikes_per_sample": theirs.sum().item() / theirs.shape[1]}


def measure(net, x, labels, dt: float, decision: str, with_bias: bool) -> dict:
    ckpt_graph = antlr_nir.export(net, dt=dt, reset="v_only")
    with tempfile.TemporaryDirectory() as d:
        antlr_nir.write(ckpt_graph, os.path.join(d, "net.nir"))
        graph = antlr_nir.read(os.path.join(d, "net.nir"))
    meta = graph.metadata["antlr_snn"]
    x_in = x.unflatten(-1, tuple(net.layers[0].shape)) if "flat_input" in meta else x
    with torch.no_grad():
        ours = net(x).spikes
        total = sum(o.spikes.sum().item() for o in net(x).layers)
    n = x.shape[1]
    rows = {"antlr-snn": {**compare(ours, ours, labels, decision), "spikes_per_sample": total / n}}
    counts = {True: {}, False: {}}
    runs = {"NIR reference, reset I too": lambda: ref.run(graph, x_in, dt, True, strict=False,
                                                          counts=counts[True]),
            "NIR reference (V-only reset)": lambda: ref.run(graph, x_in, dt, counts=counts[False]),
            "Norse 1.1.0": lambda: ref.run_norse(graph, x_in, dt),
            "snnTorch 1.0.0": lambda: ref.run_snntorch(graph, x_in)}
    for name, run in runs.items():
        t0 = time.perf_counter()
        try:
            S = run().to(ours.dtype)
        except (AssertionError, NotImplementedError) as exc:
            rows[name] = {"refused": f"{type(exc).__name__}: {exc}"}
            continue
        rows[name] = {**compare(ours, S, labels, decision), "seconds": time.perf_counter() - t0}
        if name.startswith("NIR reference"):
            rows[name]["spikes_per_sample"] = sum(counts["I too" in name].values()) / n
        print(name, "with" if with_bias else "without", "V_bias:", rows[name], flush=True)
    return rows


def table(rows: dict) -> str:
    head = ("| system | output spikes equal | Jaccard | first spike equal | same class | "
            "accuracy | output spikes / sample | all spikes / sample |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for name, r in rows.items():
        if "refused" in r:
            lines.append(f"| {name} | refuses the graph: {r['refused']} |||||||")
            continue
        lines.append(f"| {name} | {r['spike_agreement']:.4f} | {r['jaccard']:.3f} | "
                     f"{r['first_spike_agreement']:.3f} | {r['decision_agreement']:.3f} | "
                     f"{r['accuracy']:.3f} | {r['output_spikes_per_sample']:.2f} | "
                     + (f"{r['spikes_per_sample']:.1f} |" if "spikes_per_sample" in r else "|"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dt", type=float, default=antlr_nir.DEFAULT_DT)
    ap.add_argument("--max-eval", type=int, default=None, help="score N test samples")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    net = network_from_checkpoint(ckpt, args.checkpoint)
    cfg = TrainConfig(method=ckpt["method"], dataset=ckpt["dataset"],
                      data_dir=ckpt.get("data_dir"), num_steps=ckpt["num_steps"],
                      max_eval=args.max_eval, t_max=ckpt["t_max"])
    test = load_splits(cfg, splits=("test",))["test"]
    x, labels = next(test.batches([torch.arange(test.n)]))
    out = {"checkpoint": os.path.abspath(args.checkpoint), "samples": int(test.n),
           "num_steps": cfg.num_steps, "dt": args.dt, "decision": ckpt["decision"],
           "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"}
    out["with_bias"] = measure(net, x, labels, args.dt, ckpt["decision"], True)
    for layer in net.spiking_layers:
        layer.bias.data.zero_()
    out["without_bias"] = measure(net, x, labels, args.dt, ckpt["decision"], False)
    print(f"\n{out['samples']} test samples, T = {out['num_steps']}, dt = {args.dt:g} s, "
          f"decision {out['decision']}\n\nWith the trained V_bias:\n\n{table(out['with_bias'])}"
          f"\n\nV_bias set to 0 in both:\n\n{table(out['without_bias'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
