"""A reusable, resumable trainer for latency-coded classification (Sec. 4.2, 4.3; Fig. 7, 8).

:func:`train_trial` trains one network (one seed) and scores the test split with the
best-validation model. It checkpoints every epoch and every ``checkpoint_every`` steps with
everything needed to continue bit for bit: model, optimizer, scheduler, epoch, step in the
epoch's data order, the data-order generator and the global RNG states. Under
``torch.distributed`` with ``ddp=True`` it trains one model with DistributedDataParallel: every
global batch is split across ranks and the loss is scaled so that the averaged gradient equals
the gradient of the whole batch; logs, checkpoints and plots come from rank 0.

Per-method presets (Sec. 4.2): ``activation``/``bptt``: count loss (targets 1/0, 10/0 on event
data), most-spikes decision; ``timing``: latency loss + no-spike penalty, earliest spike;
``antlr``: latency loss + at-least-one-spike term, earliest spike. Their constants (targets,
beta, weights, strength), the neuron's threshold, surrogate width and lambdas, and the optional
spike-budget regulariser (:func:`antlr_snn.losses.spike_budget_loss`) are
:class:`TrainConfig` fields whose defaults are the paper's and the authors' values.
"""
from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch

from antlr_snn import decode, encode, losses
from antlr_snn import files
from antlr_snn.data import EVENT_DATASETS  # noqa: F401 (re-export)
from antlr_snn.data.splits import Split, load_splits  # noqa: F401 (re-export)
from antlr_snn.distributed import Runtime, all_sum, from_lead
from antlr_snn.errors import UserError, one_line
from antlr_snn.checkpoints import check_checkpoint, state_dict_problem
from antlr_snn.topology import (ARCHS, CONV_LAYERS, EVAL_BATCH, architecture,  # noqa: F401
                                build_network, check_network_fits, input_shape, model_metadata,
                                training_memory)

PRESETS = {
    "antlr": {"loss": "latency", "extra": "at_least_one_spike", "decision": "earliest_spike"},
    "timing": {"loss": "latency", "extra": "no_spike_penalty", "decision": "earliest_spike"},
    "activation": {"loss": "count", "extra": None, "decision": "most_spikes"},
    "bptt": {"loss": "count", "extra": None, "decision": "most_spikes"},
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (and nothing that only controls how it runs)."""

    method: str = "antlr"
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    hidden: list = field(default_factory=lambda: [800])
    num_steps: int = 100
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    lr_step: int = 10
    lr_gamma: float = 0.1
    grad_clip: float = 1.0
    single_spike: bool = False
    seed: int = 0
    trials: int = 1
    max_train: Optional[int] = None
    max_eval: Optional[int] = None
    t_max: int = 24
    arch: str = "fc"
    channels: list = field(default_factory=lambda: [16, 32])
    # the neurons (every layer) and the losses; the defaults are the paper's / authors' values
    lambda_act: float = 1.0          # antlr's channel weights (Eq. 8)
    lambda_tim: float = 1.0
    threshold: float = 1.0
    surrogate_width: float = 3.0     # sigma(V) = exp(-width |V - threshold|)
    latency_beta: float = 1.0 / 6.0  # softmax(-beta t) of the latency loss (antlr, timing)
    at_least_one_weight: float = 0.05  # antlr's at-least-one-spike term
    target_correct: Optional[float] = None  # count loss (activation, bptt): None = 1, 10 on events
    target_wrong: float = 0.0
    no_spike_strength: float = 100.0   # timing's no-spike penalty
    spike_reg: float = 0.0           # spike-budget regulariser (losses.spike_budget_loss), 0 = off
    spike_budget: float = 0.0
    output_vstar_min: Optional[float] = None  # None: the neuron's 1e-2 (see architecture)

    @property
    def preset(self) -> dict:
        return PRESETS[self.method]

    @property
    def target_count(self) -> float:
        """The count loss's target for the label's neuron."""
        if self.target_correct is not None:
            return float(self.target_correct)
        return 10.0 if self.dataset in EVENT_DATASETS else 1.0


def progress(iterable=None, total: Optional[int] = None, desc: str = "", disable: bool = False,
             **kwargs):
    """A tqdm progress bar on stderr; a silent pass-through when disabled or tqdm is absent
    (tqdm comes with the ``experiments`` extra)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        disable = True
    if disable:
        return _NoBar(iterable)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True,
                leave=kwargs.pop("leave", True), **kwargs)


class _NoBar:
    """What :func:`progress` returns when no bar is shown."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable or ())

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def set_description(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def adam(params, lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam``, fused (one kernel over all parameters) where torch supports it.

    Same update rule; on a 2-core CPU the fused step of a 784-800-10 network takes ~0.2 ms
    against ~2 ms for the default multi-tensor one. Older torch (no fused CPU Adam) falls back.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr)


# ----------------------------------------------------------------------------- steps

def _decide(out, decision: str) -> torch.Tensor:
    return decode.earliest_spike(out) if decision == "earliest_spike" else decode.most_spikes(out)


def _spike_sums(out, decision: str) -> tuple:
    counts = decode.spike_counts(out, decision)
    return (counts["total"].sum(), counts["to_decision"].sum(), counts["hidden"].sum(),
            counts["output"].sum())


def task_loss(out, labels, cfg: TrainConfig) -> torch.Tensor:
    """The method's loss (the value logged as ``train_loss``)."""
    if cfg.preset["loss"] == "count":
        target = torch.nn.functional.one_hot(labels, out.spikes.shape[-1]).to(out.spikes.dtype)
        wrong = cfg.target_wrong
        return losses.count_loss(out, wrong + (cfg.target_count - wrong) * target)
    loss = losses.latency_loss(out, labels, beta=cfg.latency_beta)
    if cfg.preset["extra"] == "at_least_one_spike":
        loss = loss + losses.at_least_one_spike_loss(out, labels, weight=cfg.at_least_one_weight)
    return loss


def regularisers(net, out, cfg: TrainConfig):
    """The terms added to the task loss for the gradient only: timing's no-spike penalty and
    the spike-budget regulariser (``cfg.spike_reg > 0``), on the spikes the decision costs."""
    total = 0.0
    if cfg.preset["extra"] == "no_spike_penalty":
        total = total + losses.no_spike_penalty(net, out, strength=cfg.no_spike_strength)
    if cfg.spike_reg > 0:
        total = total + losses.spike_budget_loss(out, cfg.spike_reg, cfg.spike_budget,
                                                 decision=cfg.preset["decision"])
    return total


def train_step(model, net, opt, batch, n_global: int, cfg: TrainConfig, rt: Runtime):
    """One optimizer step; returns [loss sum, correct, spikes, spikes to decision, n] (float64).

    ``batch`` of ``None`` means this rank got no sample of a short last batch: it still runs a
    zero-weighted forward and backward on a blank sample, so that DDP's all-reduce matches up.
    """
    opt.zero_grad(set_to_none=True)
    x, y = batch if batch is not None else (None, None)
    if batch is None:
        p0 = net.layers[0].weight
        x = torch.zeros(cfg.num_steps, 1, net.in_features, dtype=p0.dtype, device=p0.device)
        y = torch.zeros(1, dtype=torch.long, device=p0.device)
    out = model(x)
    loss = task_loss(out, y, cfg)
    total = loss + regularisers(net, out, cfg)
    # DDP averages over ranks: weigh by this rank's share so the result is the batch mean
    n_local = 0 if batch is None else len(y)
    (total * (n_local * rt.world / n_global if rt.ddp else 1.0)).backward()
    stats = torch.zeros(5, dtype=torch.float64)
    if n_local:
        spikes = _spike_sums(out, cfg.preset["decision"])
        stats = torch.stack([loss.detach() * n_local,
                             (_decide(out, cfg.preset["decision"]) == y).sum(),
                             spikes[0], spikes[1],
                             torch.tensor(n_local, device=y.device)]).double().cpu()
    for p in net.parameters():  # authors: NaN gradients to 0, then clip elementwise
        if p.grad is not None:
            p.grad.nan_to_num_(nan=0.0)
            if cfg.grad_clip > 0:
                p.grad.clamp_(-cfg.grad_clip, cfg.grad_clip)
    opt.step()
    return all_sum(stats, rt)




@torch.no_grad()
def evaluate(net, split: Split, decision: str, rt: Runtime = Runtime(), workers: int = 0) -> dict:
    """Accuracy (both decision rules) and spikes per sample on ``split``; ranks share batches."""
    bs = EVAL_BATCH[split.static]
    batches = list(torch.arange(split.n).split(bs))
    mine = batches[rt.rank::rt.world] if rt.ddp else batches
    sums = torch.zeros(7, dtype=torch.float64)
    for x, y in split.batches(mine, workers):
        out = net(x)
        earliest, most = decode.earliest_spike(out), decode.most_spikes(out)
        sp = _spike_sums(out, decision)
        sums += torch.stack([(earliest == y).sum(), (most == y).sum(), *sp,
                             torch.tensor(len(y), device=y.device)]).double().cpu()
    sums = all_sum(sums, rt)
    n = sums[6].item()
    res = {"accuracy_earliest_spike": sums[0].item() / n,
           "accuracy_most_spikes": sums[1].item() / n,
           "spikes_per_sample": sums[2].item() / n, "spikes_to_decision": sums[3].item() / n,
           "hidden_spikes_per_sample": sums[4].item() / n,
           "output_spikes_per_sample": sums[5].item() / n, "n": int(n), "decision": decision}
    res["accuracy"] = res[f"accuracy_{decision}"]
    return res


# ----------------------------------------------------------------------------- one trial

def train_trial(cfg: TrainConfig, trial: int, out_dir: str, splits: dict, rt: Runtime,
                on_epoch=None) -> dict:
    """Train trial ``trial`` (seed ``cfg.seed + trial``) in ``out_dir``; return its test result.

    ``on_epoch(out_dir, record)`` runs on the writing rank after each epoch (e.g. to plot).
    """
    seed, lead = cfg.seed + trial, rt.rank == 0 or not rt.ddp
    path = {k: os.path.join(out_dir, f) for k, f in (
        ("ckpt", "checkpoint.pt"), ("best", "best.pt"), ("log", "metrics.jsonl"))}
    decision = cfg.preset["decision"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    net = build_network(cfg, splits["train"].features, rt.device, splits["train"].num_classes)
    net.in_features = splits["train"].features  # for the blank sample of a short batch
    opt = adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    gen = torch.Generator().manual_seed(seed)
    st = {"epoch": 0, "step": 0, "global_step": 0, "best_val": -1.0, "best_epoch": 0,
          "sums": torch.zeros(5, dtype=torch.float64), "wall": 0.0, "finished": False,
          "result": None, "metrics_bytes": 0, "gen_epoch_start": gen.get_state()}
    log = files.JsonlLog(path["log"])

    def load():
        if not (rt.resume and os.path.exists(path["ckpt"])):
            return None
        ckpt = files.load_checkpoint(path["ckpt"])
        check_checkpoint(ckpt, path["ckpt"], net.spec(), use="resume")
        return ckpt
    ckpt = from_lead(load, rt)
    if ckpt is not None:
        try:
            net.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            files.set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            reason = (state_dict_problem(exc) if isinstance(exc, RuntimeError)
                      else one_line(exc))
            raise UserError(f"checkpoint {path['ckpt']} cannot be resumed: its saved states do "
                             f"not fit this run ({type(exc).__name__}: {reason})") from None
        st.update(ckpt["state"])
        if st["finished"]:
            if not isinstance(st["result"], dict):
                raise UserError(f"checkpoint {path['ckpt']}: a finished run without a result")
            return st["result"]
    if lead:
        log.truncate(st["metrics_bytes"])  # drop lines (or a torn line) written after the ckpt
        if ckpt is not None:
            files.read_jsonl(log.path)  # a damaged log fails now, not after the next epoch
    t_start, wall0 = time.time(), st["wall"]

    def save():
        if lead:
            st.update(wall=wall0 + time.time() - t_start, metrics_bytes=log.size())
            files.save_checkpoint(path["ckpt"], {
                **model_metadata(net, cfg), "state_dict": net.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "state": st,
                "rng": files.rng_state(), "config": asdict(cfg), "trial": trial, "seed": seed})

    model = net
    if rt.ddp and rt.world > 1:
        ids = [torch.device(rt.device).index] if rt.device.startswith("cuda") else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
    train = splits["train"]
    for epoch in range(st["epoch"], cfg.epochs):
        gen.set_state(st["gen_epoch_start"])
        order = torch.randperm(train.n, generator=gen)
        glob = list(order.split(cfg.batch_size))
        local = [torch.tensor_split(b, rt.world)[rt.rank] for b in glob] if rt.ddp else glob
        bar = progress(total=len(glob), initial=st["step"], leave=False,
                              desc=f"trial {trial} epoch {epoch + 1}/{cfg.epochs}",
                              disable=not (lead and rt.progress))
        for i, batch in enumerate(train.batches(local[st["step"]:], rt.workers), st["step"]):
            st["sums"] += train_step(model, net, opt, batch, len(glob[i]), cfg, rt)
            st["step"], st["global_step"] = i + 1, st["global_step"] + 1
            s = st["sums"]
            bar.update(1)
            bar.set_postfix(loss=f"{s[0] / s[4]:.4f}", acc=f"{s[1] / s[4]:.3f}",
                            spikes=f"{s[2] / s[4]:.1f}", refresh=False)
            if rt.checkpoint_every and st["global_step"] % rt.checkpoint_every == 0 \
                    and i + 1 < len(glob):
                save()
        bar.close()
        val = evaluate(net, splits["val"], decision, rt, rt.workers)
        s = st["sums"]
        rec = {"trial": trial, "epoch": epoch + 1, "step": st["global_step"],
               "lr": opt.param_groups[0]["lr"], "train_loss": (s[0] / s[4]).item(),
               "train_accuracy": (s[1] / s[4]).item(),
               "train_spikes_per_sample": (s[2] / s[4]).item(),
               "train_spikes_to_decision": (s[3] / s[4]).item(),
               **{f"val_{k}": v for k, v in val.items() if k not in ("n", "decision")}}
        rec["best"] = val["accuracy"] > st["best_val"]
        if rec["best"]:
            st.update(best_val=val["accuracy"], best_epoch=epoch + 1)
            if lead:
                files.save_checkpoint(path["best"], {
                    **model_metadata(net, cfg), "state_dict": net.state_dict(),
                    "epoch": epoch + 1, "val_accuracy": val["accuracy"], "trial": trial,
                    "seed": seed, "config": asdict(cfg)})
        rec["wall_time_s"] = wall0 + time.time() - t_start
        if lead:
            log.append(rec)
        sched.step()
        st.update(epoch=epoch + 1, step=0, sums=torch.zeros(5, dtype=torch.float64),
                  gen_epoch_start=gen.get_state())
        save()
        if lead:
            if on_epoch is not None:
                on_epoch(out_dir, rec)
            if rt.verbose:
                print(f"trial {trial} epoch {epoch + 1}/{cfg.epochs}: loss {rec['train_loss']:.4f}"
                      f" train {rec['train_accuracy']:.4f} val {val['accuracy']:.4f} spikes/sample"
                      f" {val['spikes_per_sample']:.1f} (to decision "
                      f"{val['spikes_to_decision']:.1f})", flush=True)
    def load_best():
        ckpt = files.load_checkpoint(path["best"])
        check_checkpoint(ckpt, path["best"], net.spec(), use="model")
        return ckpt["state_dict"]
    best = from_lead(load_best, rt)
    try:
        net.load_state_dict(best)
    except RuntimeError as exc:
        raise UserError(f"{path['best']}: weights do not fit the network it describes "
                         f"({state_dict_problem(exc)})") from None
    test = evaluate(net, splits["test"], decision, rt, rt.workers)
    result = {"trial": trial, "seed": seed, "best_epoch": st["best_epoch"],
              "val_accuracy": st["best_val"], **{f"test_{k}": v for k, v in test.items()},
              "wall_time_s": wall0 + time.time() - t_start}
    st.update(finished=True, result=result)
    save()  # the result lives in the checkpoint; the application writes results.json
    return result
