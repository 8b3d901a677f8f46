"""Why does ANTLR train worst on simulated N-MNIST? A gradient probe of the real trainer.

Trains exactly as ``antlr-snn train`` does (same seeds, data order, ``training.train_step``
with its NaN-to-0 and elementwise clip, Adam, StepLR; no checkpoints) and every ``--every``
steps probes the batch about to be trained on, before the step, with one extra forward and one
backward per loss term (nothing in the library is hooked; the probe only reads):

* per spiking layer, the two terms of Eq. 8, ``g_act = lambda_act sigma(V) dL/dS`` and
  ``g_tim = -lambda_tim S dL/dt / V*``, as sums of magnitudes, and the weight gradient each
  one gives on its own (the adjoint of :mod:`antlr_snn.neuron` on that term, then the
  synapse's transpose; their sum is checked against autograd's weight gradient);
* V* at the spikes: how often the clamp ``vstar_min`` is hit, and the share of the timing
  term that comes from the clamped spikes;
* the fraction of weight and bias gradient entries beyond the trainer's ``grad_clip``;
* silent outputs (samples with no output spike, samples whose target neuron is silent, per
  output neuron), and each loss term's share of every layer's weight gradient.

Writes one JSON line per probe to ``--out`` and prints a summary per epoch. Settings that the
trainer fixes can be overridden to test a remedy (``--beta``, ``--alo-weight``, ``--vstar-min``,
``--lambda-act``, ``--lambda-tim``, ``--count-target``); the defaults are the trainer's.

Findings and tables: docs/reproduction.md, Fig. 8. Example (about 3 minutes on an idle core,
8 on the shared 2-core machine; ``--report`` tabulates the key figures per 50 steps)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/event_gap.py --method antlr \
        --dataset nmnist-sim --max-train 2000 --max-eval 500 --epochs 2 --out gap.jsonl
    python benchmarks/event_gap.py --report gap.jsonl --window 50
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time

import numpy as np
import torch

from antlr_snn import losses, training
from antlr_snn.distributed import Runtime
from antlr_snn.layers import LIFConv2d, LIFLayer
from antlr_snn.network import network_from_spec
from antlr_snn.neuron import adjoint, fired_before, surrogate, vstar
from antlr_snn.synapses import Conv, Dense
from antlr_snn.training import TrainConfig, load_splits


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--method", default="antlr")
    a("--dataset", default="nmnist-sim")
    a("--arch", default="fc")
    a("--hidden", type=int, nargs="*", default=None)
    a("--channels", type=int, nargs=2, default=[16, 32])
    a("--num-steps", type=int, default=None)
    a("--epochs", type=int, default=2)
    a("--batch-size", type=int, default=16)
    a("--lr", type=float, default=1e-3)
    a("--grad-clip", type=float, default=1.0)
    a("--seed", type=int, default=0)
    a("--max-train", type=int, default=2000)
    a("--max-eval", type=int, default=500)
    a("--every", type=int, default=10, help="probe every N steps (0: never)")
    a("--beta", type=float, default=None, help="latency loss beta [trainer's: 1/6]")
    a("--alo-weight", type=float, default=None, help="at-least-one-spike weight [0.05]")
    a("--count-target", type=float, default=None, help="count target of the true class")
    a("--vstar-min", type=float, default=None, help="vstar_min of every layer")
    a("--vstar-min-out", type=float, default=None, help="vstar_min of the output layer only")
    a("--lambda-act", type=float, default=None)
    a("--lambda-tim", type=float, default=None)
    a("--out", default=None, help="JSON lines of the probes")
    a("--report", nargs="+", default=None, metavar="JSONL",
      help="only print a table of the key figures of earlier probe files, per --window steps")
    a("--window", type=int, default=50)
    return p.parse_args()


def make_config(args) -> TrainConfig:
    event = args.dataset != "mnist"
    hidden = args.hidden if args.hidden is not None else ([] if args.arch == "conv" else [800])
    return TrainConfig(method=args.method, dataset=args.dataset, hidden=hidden,
                       num_steps=args.num_steps or (300 if event else 100), epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, grad_clip=args.grad_clip,
                       seed=args.seed, max_train=args.max_train, max_eval=args.max_eval,
                       arch=args.arch, channels=list(args.channels))


def build(cfg, features, args):
    """``training.build_network`` with the neuron overrides of ``args``."""
    spec = training.architecture(cfg, features)
    over = {k: v for k, v in (("vstar_min", args.vstar_min), ("lambda_act", args.lambda_act),
                              ("lambda_tim", args.lambda_tim)) if v is not None}
    for layer in spec:
        if "neuron" in layer:
            layer["neuron"] = {**layer["neuron"], **over}
    if args.vstar_min_out is not None:
        spec[-1]["neuron"] = {**spec[-1]["neuron"], "vstar_min": args.vstar_min_out}
    return network_from_spec(spec)


def loss_terms(out, y, net, cfg, args) -> dict:
    """The trainer's loss (``training.task_loss``, plus the no-spike penalty when ``net`` is
    given), term by term, with the overrides of ``args``."""
    preset = cfg.preset
    if preset["loss"] == "count":
        n = args.count_target if args.count_target is not None else cfg.target_count
        target = torch.nn.functional.one_hot(y, out.spikes.shape[-1]).to(out.spikes.dtype)
        terms = {"count": losses.count_loss(out, n * target)}
    else:
        beta = args.beta if args.beta is not None else 1.0 / 6.0
        terms = {"latency": losses.latency_loss(out, y, beta=beta)}
        if preset["extra"] == "at_least_one_spike":
            w = args.alo_weight if args.alo_weight is not None else 0.05
            terms["at_least_one"] = losses.at_least_one_spike_loss(out, y, weight=w)
    if preset["extra"] == "no_spike_penalty" and net is not None:
        terms["no_spike"] = losses.no_spike_penalty(net, out)
    return terms


def patch_task_loss(args):
    """Make ``training.train_step`` use the overridden loss settings (none given: unchanged;
    train_step adds the no-spike penalty itself)."""
    if args.beta is None and args.alo_weight is None and args.count_target is None:
        return
    training.task_loss = lambda out, labels, cfg: sum(
        loss_terms(out, labels, None, cfg, args).values())


def synapse_of(layer):
    w = layer.weight.detach().clone().requires_grad_()
    if isinstance(layer, LIFLayer):
        return w, Dense(w)
    if isinstance(layer, LIFConv2d):
        return w, Conv(w, layer.stride, layer.padding)
    raise TypeError(type(layer).__name__)


def weight_part(layer, s_in, A):
    """dL/dW of the part of dL/dV whose adjoint is ``A``: the synapse's transpose of beta_i A."""
    w, syn = synapse_of(layer)
    x = syn(s_in)
    (gw,) = torch.autograd.grad(x, w, grad_outputs=A * layer.params.beta_i)
    return gw


def _norm(t):
    return 0.0 if t is None else float(t.double().norm())


def _cos(a, b):
    na, nb = _norm(a), _norm(b)
    return float((a.double() * b.double()).sum() / (na * nb)) if na > 0 and nb > 0 else None


def probe(net, x, y, cfg, args) -> dict:
    """Everything above for one batch, at the current weights (no step taken)."""
    layers = net.spiking_layers
    seen = {}
    hooks = [m.register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, (inp[0], out)))
             for i, m in enumerate(layers)]
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    terms = loss_terms(out, y, net, cfg, args)
    weights = [m.weight for m in layers]
    biases = [m.bias for m in layers]
    probes, slots = [], []  # tensors whose gradient we want: S and d of each layer
    for i in range(len(layers)):
        o = seen[i][1]
        for kind, t in (("s", o.spikes), ("d", o.shift)):
            if t.requires_grad:
                slots.append((i, kind))
                probes.append(t)
    per_term, g_at = {}, {}
    names = list(terms)
    for k, name in enumerate(names):
        grads = torch.autograd.grad(terms[name], weights + biases + probes,
                                    retain_graph=k < len(names) - 1, allow_unused=True)
        per_term[name] = grads
        for (i, kind), g in zip(slots, grads[2 * len(layers):]):
            if g is not None:
                g_at[(i, kind)] = g_at.get((i, kind), 0) + g
    L = len(layers)
    total_w = [sum(per_term[n][i] for n in names if per_term[n][i] is not None) for i in range(L)]
    total_b = [sum(per_term[n][L + i] for n in names if per_term[n][L + i] is not None)
               for i in range(L)]
    rec = {"loss": {n: float(v.detach()) for n, v in terms.items()}, "layers": []}
    for i, m in enumerate(layers):
        inp, o = seen[i]
        s_in = inp.spikes if hasattr(inp, "spikes") else inp
        S, V = o.spikes.detach(), o.voltage.detach()
        p, c = m.params, m.cfg
        B = S.shape[1]
        gs, gd = g_at.get((i, "s")), g_at.get((i, "d"))
        alive = 1 - fired_before(S) if c.single_spike else 1.0
        g_act = c.lambda_act * surrogate(V, p) * gs * alive if gs is not None else None
        prev = torch.zeros_like(V)
        prev[1:] = (1 - S[:-1]) * V[:-1]
        raw = (V - prev)[S > 0]
        g_tim = (-c.lambda_tim * S * gd / vstar(S, V, p) * alive) if gd is not None else None
        lay = {"spikes_per_sample": float(S.sum()) / B,
               "silent_neurons": float((S.amax(0) == 0).float().mean()),
               "g_act_l1": _norm(None) if g_act is None else float(g_act.abs().sum()) / B,
               "g_tim_l1": _norm(None) if g_tim is None else float(g_tim.abs().sum()) / B}
        if raw.numel():
            clamped = raw < p.vstar_min
            lay.update(vstar_median=float(raw.median()), vstar_clamped=float(clamped.float().mean()),
                       vstar_below_0p05=float((raw < 0.05).float().mean()))
            if g_tim is not None:
                gt = g_tim[S > 0].abs()
                tot = float(gt.sum())
                lay["tim_share_from_clamped"] = float(gt[clamped].sum()) / tot if tot else None
                lay["tim_share_from_vstar_below_0p05"] = (float(gt[raw < 0.05].sum()) / tot
                                                          if tot else None)
        parts = {}
        for name, g in (("act", g_act), ("tim", g_tim)):
            if g is not None:
                parts[name] = weight_part(m, s_in.detach(), adjoint(g, S, p)[0])
        for name, gw in parts.items():
            lay[f"W_{name}_norm"] = _norm(gw)
        if len(parts) == 2:
            lay["W_cos_act_tim"] = _cos(parts["act"], parts["tim"])
        through = [per_term[n][i] for n in names if n != "no_spike" and per_term[n][i] is not None]
        if parts and through:
            ref = sum(through)
            lay["check_rel_err"] = _norm(sum(parts.values()) - ref) / max(_norm(ref), 1e-30)
        for n in names:
            lay[f"W_term_{n}_norm"] = _norm(per_term[n][i])
        clip = cfg.grad_clip if cfg.grad_clip > 0 else 1.0  # not clipping: what +-1 would do
        for tag, g in (("W", total_w[i]), ("b", total_b[i])):
            if not isinstance(g, torch.Tensor):
                continue
            g = g.nan_to_num(nan=0.0)
            lay[f"{tag}_norm"] = _norm(g)
            gc = g.clamp(-clip, clip)
            lay[f"{tag}_clip_frac"] = float((g.abs() > clip).float().mean())
            lay[f"{tag}_clip_norm_ratio"] = _norm(gc) / max(_norm(g), 1e-30)
            lay[f"{tag}_clip_cos"] = _cos(gc, g)
        rec["layers"].append(lay)
    S = out.spikes.detach()
    fired = S.amax(0) > 0  # [B, N]
    first = torch.where(fired, S.argmax(0).double(), torch.full_like(fired, S.shape[0],
                                                                     dtype=torch.float64))
    pred = training._decide(out, cfg.preset["decision"])
    rec["output"] = {
        "batch_accuracy": float((pred == y).float().mean()),
        "no_output_spike": float((~fired.any(-1)).float().mean()),
        "target_silent": float((~fired.gather(-1, y[:, None])).float().mean()),
        "silent_per_neuron": (~fired).float().mean(0).tolist(),
        "first_spike_target": float(first.gather(-1, y[:, None]).mean()),
        "first_spike_earliest": float(first.min(-1).values.mean())}
    return rec


def summarize(recs):
    """Means over probes of the main figures, per layer."""
    if not recs:
        return {}
    L = len(recs[0]["layers"])
    keys = sorted({k for r in recs for lay in r["layers"] for k in lay})
    out = {"layers": []}
    for i in range(L):
        lay = {}
        for k in keys:
            vals = [r["layers"][i].get(k) for r in recs]
            vals = [v for v in vals if isinstance(v, (int, float)) and v is not None]
            if vals:
                lay[k] = float(np.mean(vals))
        out["layers"].append(lay)
    for k in ("no_output_spike", "target_silent", "first_spike_target", "first_spike_earliest"):
        out[k] = float(np.mean([r["output"][k] for r in recs]))
    out["silent_per_neuron"] = np.mean([r["output"]["silent_per_neuron"] for r in recs],
                                       0).round(3).tolist()
    for n in recs[0]["loss"]:
        out[f"loss_{n}"] = float(np.mean([r["loss"][n] for r in recs]))
    return out


def show(tag, summ):
    print(f"  [{tag}] outputs: no spike {summ['no_output_spike']:.3f}, target silent "
          f"{summ['target_silent']:.3f}, first spike (target) {summ['first_spike_target']:.1f},"
          f" earliest {summ['first_spike_earliest']:.1f}; silent per neuron "
          f"{summ['silent_per_neuron']}")
    print("   " + ", ".join(f"{k} {v:.4g}" for k, v in summ.items() if k.startswith("loss_")))
    for i, lay in enumerate(summ["layers"]):
        print(f"   layer {i}: " + ", ".join(f"{k} {v:.4g}" for k, v in lay.items()))


REPORT = (("acc", lambda r: r["output"].get("batch_accuracy")),
          ("no out", lambda r: r["output"]["no_output_spike"]),
          ("tgt sil", lambda r: r["output"]["target_silent"]),
          ("t_first", lambda r: r["output"]["first_spike_earliest"]),
          ("L_lat", lambda r: r["loss"].get("latency", r["loss"].get("count"))),
          ("h spk", lambda r: r["layers"][0]["spikes_per_sample"]),
          ("o spk", lambda r: r["layers"][-1]["spikes_per_sample"]),
          ("h |W_act|", lambda r: r["layers"][0].get("W_act_norm")),
          ("h |W_tim|", lambda r: r["layers"][0].get("W_tim_norm")),
          ("h clip%", lambda r: 100 * r["layers"][0].get("W_clip_frac", float("nan"))),
          ("h kept", lambda r: r["layers"][0].get("W_clip_norm_ratio")),
          ("o |W_act|", lambda r: r["layers"][-1].get("W_act_norm")),
          ("o |W_tim|", lambda r: r["layers"][-1].get("W_tim_norm")),
          ("o clip%", lambda r: 100 * r["layers"][-1].get("W_clip_frac", float("nan"))),
          ("o V*<min%", lambda r: 100 * r["layers"][-1].get("vstar_clamped", float("nan"))),
          ("o tim@clamp%", lambda r: 100 * (r["layers"][-1].get("tim_share_from_clamped")
                                             or float("nan"))),
          ("h V*<min%", lambda r: 100 * r["layers"][0].get("vstar_clamped", float("nan"))),
          ("h tim@clamp%", lambda r: 100 * (r["layers"][0].get("tim_share_from_clamped")
                                             or float("nan"))))


def report(paths, window: int) -> None:
    """A markdown table of :data:`REPORT` per ``window`` steps for each probe file."""
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        recs = [r for r in rows if "layers" in r]
        end = [r for r in rows if "test" in r]
        print(f"\n{path}" + (f" (test accuracy {end[0]['test']['accuracy']:.3f})" if end else ""))
        print("| steps | " + " | ".join(k for k, _ in REPORT) + " |")
        print("|---" * (len(REPORT) + 1) + "|")
        for lo in range(0, recs[-1]["step"] + 1, window):
            chunk = [r for r in recs if lo <= r["step"] < lo + window]
            if not chunk:
                continue
            vals = []
            for _, f in REPORT:
                v = [f(r) for r in chunk]
                v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
                vals.append(f"{np.mean(v):.3g}" if v else "-")
            print(f"| {lo}-{lo + window - 1} | " + " | ".join(vals) + " |")


def main():
    args = parse()
    if args.report:
        return report(args.report, args.window)
    cfg = make_config(args)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    splits = load_splits(cfg)
    patch_task_loss(args)
    seed = cfg.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    net = build(cfg, splits["train"].features, args)
    net.in_features = splits["train"].features
    opt = training.adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    gen = torch.Generator().manual_seed(seed)
    rt = Runtime(progress=False, verbose=False)
    decision = cfg.preset["decision"]
    sink = open(args.out, "w", encoding="utf-8") if args.out else None
    best, step, t0 = (-1.0, None, 0), 0, time.time()
    print(f"{cfg.method} on {cfg.dataset} ({cfg.arch}), lr {cfg.lr}, {splits['train'].n} "
          f"train samples, {cfg.epochs} epochs, overrides "
          f"{ {k: v for k, v in vars(args).items() if v is not None and k in ('beta', 'alo_weight', 'count_target', 'vstar_min', 'vstar_min_out', 'lambda_act', 'lambda_tim', 'grad_clip')} }",
          flush=True)
    for epoch in range(cfg.epochs):
        order = torch.randperm(splits["train"].n, generator=gen)
        batches = list(order.split(cfg.batch_size))
        sums, recs = torch.zeros(5, dtype=torch.float64), []
        for i, (x, y) in enumerate(splits["train"].batches(batches)):
            if args.every and step % args.every == 0:
                rec = probe(net, x, y, cfg, args)
                rec.update(step=step, epoch=epoch + 1, lr=opt.param_groups[0]["lr"])
                recs.append(rec)
                if sink:
                    sink.write(json.dumps(rec) + "\n")
                    sink.flush()
            sums += training.train_step(net, net, opt, (x, y), len(y), cfg, rt)
            step += 1
        val = training.evaluate(net, splits["val"], decision)
        if val["accuracy"] > best[0]:
            best = (val["accuracy"], copy.deepcopy(net.state_dict()), epoch + 1)
        sched.step()
        print(f"epoch {epoch + 1}: train loss {sums[0] / sums[4]:.4f} acc {sums[1] / sums[4]:.4f}"
              f" | val acc {val['accuracy']:.4f} spikes {val['spikes_per_sample']:.1f} (to "
              f"decision {val['spikes_to_decision']:.1f}), output spikes "
              f"{val['output_spikes_per_sample']:.2f} | {time.time() - t0:.0f} s", flush=True)
        half = len(recs) // 2
        if recs:
            show(f"epoch {epoch + 1}, first half of probes", summarize(recs[:max(half, 1)]))
            if half:
                show(f"epoch {epoch + 1}, second half", summarize(recs[half:]))
    net.load_state_dict(best[1])
    test = training.evaluate(net, splits["test"], decision)
    print(f"TEST (best val epoch {best[2]}): acc {test['accuracy']:.4f} spikes "
          f"{test['spikes_per_sample']:.1f} to decision {test['spikes_to_decision']:.1f} "
          f"| {time.time() - t0:.0f} s", flush=True)
    if sink:
        sink.write(json.dumps({"test": test, "best_epoch": best[2]}) + "\n")
        sink.close()


if __name__ == "__main__":
    main()
