"""``antlr-snn export``: a checkpoint's network as a NIR graph, for neuromorphic hardware and
the other simulators (:mod:`antlr_snn.nir`; docs/nir.md).

Writes the ``.nir`` (HDF5) file atomically and prints one JSON object: the file, the network,
``dt`` and the graph's nodes. NIR's neurons reset V only where ours also reset I; ``--reset``
says what to do about it (a one-line warning by default, see docs/nir.md for its cost).

Example:
    antlr-snn export --checkpoint runs/mnist/best.pt --out net.nir
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings

from antlr_snn.checkpoints import network_from_checkpoint
from antlr_snn.errors import UserError
from antlr_snn.experiments import common
from antlr_snn.network import describe_spec
from antlr_snn.nir import DEFAULT_DT, RESETS, NIRResetWarning, export, write


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--checkpoint", required=True, help="best.pt or checkpoint.pt written by `antlr-snn train`")
    a("--out", required=True, help="the .nir file to write")
    a("--dt", type=float, default=DEFAULT_DT, help="seconds per time step: the time constants "
      f"are tau = dt / (1 - alpha) [{DEFAULT_DT:g}, the step snnTorch's importer assumes]")
    a("--reset", choices=RESETS, default="warn", help="NIR resets V only, our neurons also I: "
      "warn (export, one warning line), v_only (export silently), error (refuse) [warn]")


def run(args) -> int:
    if not (math.isfinite(args.dt) and args.dt > 0):
        raise UserError(f"--dt must be a number of seconds > 0, got {args.dt:g}")
    if os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a folder; give the .nir file to write")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError(f"--out {args.out}: the folder {folder} does not exist")
    ckpt = common.load_checkpoint(args.checkpoint)
    net = network_from_checkpoint(ckpt, args.checkpoint, use="model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NIRResetWarning)
        graph = export(net, dt=args.dt, reset=args.reset)
    for w in caught:
        if issubclass(w.category, NIRResetWarning):
            msg = str(w.message).replace("reset='v_only'", "--reset v_only")
            print(f"antlr-snn export: warning: {msg}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    write(graph, args.out)
    print(json.dumps({"out": os.path.abspath(args.out), "network": describe_spec(ckpt["layers"]),
                      "dt": args.dt, "reset": args.reset,
                      "nodes": {k: type(n).__name__ for k, n in graph.nodes.items()},
                      "checkpoint": os.path.abspath(args.checkpoint)}))
    return 0
