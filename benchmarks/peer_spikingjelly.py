"""SpikingJelly: multi-step ``LIFNode`` (membrane-only LIF, hard reset to 0, sigmoid
surrogate, BPTT) after ``layer.Linear`` or ``layer.Conv2d`` in multi-step mode (the synapse of
all steps in one call; biases 0, trained). ``tau = 1 / (1 - 0.99)`` with ``decay_input=False``: decay 0.99 per
step, threshold 1.

Backends: on the CPU SpikingJelly runs its torch implementation. On CUDA, SpikingJelly 2.x
picks its implementation per process from ``SJ_LIF_CUDA_IMPLEMENTATION`` (``cuda``: its native
kernels, ``triton``, ``torch``; read at import), so the driver runs each CUDA backend in a
worker process of its own. (Releases before 2.0 chose ``backend="cupy"`` on the neuron
instead; they are not supported here.)
"""
from __future__ import annotations

import os

import torch

from benchmarks.common import DECAY, System, weight_shapes


def _nodes(n: int):
    from spikingjelly.activation_based import neuron, surrogate
    return [neuron.LIFNode(tau=1.0 / (1.0 - DECAY), decay_input=False, v_threshold=1.0,
                           v_reset=0.0, surrogate_function=surrogate.Sigmoid(), step_mode="m")
            for _ in range(n)]


def implementation(device) -> str:
    """The LIF implementation SpikingJelly runs on ``device`` (2.x; "?" where unknown)."""
    if torch.device(device).type != "cuda":
        return "torch"
    try:
        from spikingjelly._ops.lif import _selection  # private: for the label only
        return _selection.diagnostics(torch.device(device))["implementation"]
    except Exception:  # noqa: BLE001 (another release)
        return os.environ.get("SJ_LIF_CUDA_IMPLEMENTATION", "?")


class SpikingJelly(System):
    """Fully connected ``Linear -> LIFNode`` layers, or (``cfg["conv"]``) ``Conv2d ->
    LIFNode -> Flatten -> Linear -> LIFNode``."""

    def __init__(self, cfg, device="cpu"):
        super().__init__(cfg, device)
        from spikingjelly.activation_based import functional, layer
        self.functional = functional
        torch.manual_seed(0)
        shapes = weight_shapes(cfg)
        if cfg.get("conv"):
            c, k, s = cfg["conv"]
            self.syn = [layer.Conv2d(2, c, k, stride=s, step_mode="m"),
                        layer.Linear(shapes[1][1], shapes[1][0], step_mode="m")]
            self.flat = layer.Flatten(step_mode="m")
        else:
            self.syn = [layer.Linear(n_in, n_out, step_mode="m") for n_out, n_in in shapes]
            self.flat = None
        for m in self.syn:
            torch.nn.init.zeros_(m.bias)
        self.nodes = _nodes(len(self.syn))
        self.mods = torch.nn.ModuleList([*self.syn, *self.nodes]).to(self.device)
        self.make_opt()
        with torch.no_grad():
            self.forward()
        kind = "conv + LIFNode" if cfg.get("conv") else "LIFNode"
        self.label = f"SpikingJelly {kind} multi-step ({implementation(device)})"

    def parameters(self):
        return self.mods.parameters()

    def weights(self):
        return [m.weight for m in self.syn]

    def forward(self):
        self.functional.reset_net(self.mods)
        s, outs = self.x, []
        for i, (syn, node) in enumerate(zip(self.syn, self.nodes)):
            if i == 1 and self.flat is not None:
                s = self.flat(s)
            s = node(syn(s))
            outs.append(s)
        return outs

