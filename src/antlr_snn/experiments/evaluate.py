"""``antlr-snn evaluate``: score a checkpoint of ``antlr-snn train`` on a test split.

Reads only the test split (``t10k-*`` for IDX folders) and prints one JSON object: accuracy
(fraction, by the method's decision rule) and the accuracies by both rules, spikes per sample
(hidden + output, in total and up to the decision), and what was evaluated.

Example:
    antlr-snn evaluate --checkpoint runs/mnist/best.pt
"""
from __future__ import annotations

import argparse
import json
import os

from antlr_snn.checkpoints import network_from_checkpoint
from antlr_snn.network import describe_spec, spec_in_features, spec_out_features
from antlr_snn.experiments import common
from antlr_snn.training import EVENT_DATASETS, TrainConfig, evaluate, load_splits
from antlr_snn.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from antlr_snn.data import DATASETS
    a = p.add_argument
    a("--checkpoint", required=True, help="best.pt or checkpoint.pt written by `antlr-snn train`")
    a("--dataset", default=None, help=f"data set: {', '.join(DATASETS)} (default: the one the "
      "checkpoint was trained on)")
    a("--data-dir", default=None, help="data folder (default: the training run's, if any)")
    a("--num-steps", type=int, default=None, help="time steps T (default: the training run's)")
    a("--max-eval", type=int, default=None, help="score only N test samples (evenly spaced)")
    a("--device", choices=("cpu", "cuda"), default="cpu")


def run(args) -> int:
    common.check_device(args.device)
    for flag, v in (("--num-steps", args.num_steps), ("--max-eval", args.max_eval)):
        if v is not None and v < 1:
            raise UserError(f"{flag} must be a positive integer, got {v}")
    ckpt = common.load_checkpoint(args.checkpoint)
    net = network_from_checkpoint(ckpt, args.checkpoint)  # checks every key used below
    dataset = args.dataset or ckpt["dataset"]
    from antlr_snn.data import DATASETS
    if dataset not in DATASETS:
        where = "" if args.dataset else f"checkpoint {args.checkpoint}: "
        raise UserError(f"{where}unknown data set {dataset!r}; choose one of "
                         f"{', '.join(DATASETS)}")
    if dataset == "nmnist-sim" and args.data_dir is not None:
        raise UserError("--data-dir: nmnist-sim is generated, it takes no data folder")
    same = dataset == ckpt["dataset"]
    data_dir = args.data_dir if args.data_dir is not None else (
        ckpt.get("data_dir") if same else None)
    if data_dir is not None and not isinstance(data_dir, str):
        raise UserError(f"checkpoint {args.checkpoint}: bad 'data_dir' (must be a folder name; "
                         f"got {data_dir!r}); give --data-dir")
    if args.num_steps is not None:
        num_steps = args.num_steps
    else:
        num_steps = ckpt["num_steps"] if same else (300 if dataset in EVENT_DATASETS else 100)
    if dataset not in EVENT_DATASETS and num_steps < ckpt["t_max"]:
        raise UserError(f"--num-steps must be >= {ckpt['t_max']} for the latency code")
    cfg = TrainConfig(method=ckpt["method"], dataset=dataset, data_dir=data_dir,
                      num_steps=num_steps, max_eval=args.max_eval, t_max=ckpt["t_max"])
    test = load_splits(cfg, args.device, splits=("test",))["test"]
    want = spec_in_features(ckpt["layers"])
    if test.features != want:
        raise UserError(f"{args.checkpoint} holds a network with {want} inputs, but "
                        f"{dataset} gives {test.features}")
    outputs = spec_out_features(ckpt["layers"])
    if test.num_classes != outputs:
        raise UserError(f"{args.checkpoint} holds a network with {outputs} outputs, "
                        f"but {dataset} has {test.num_classes} classes")
    res = evaluate(net.to(args.device), test, ckpt["decision"])
    res = {"accuracy": res.pop("accuracy"), **res, "method": ckpt["method"], "dataset": dataset,
           "num_steps": num_steps, "network": describe_spec(ckpt["layers"]),
           "checkpoint": os.path.abspath(args.checkpoint)}
    print(json.dumps(common.to_jsonable(res)))
    return 0
