"""Norse: ``LIFCell`` (current-based LIF, surrogate BPTT), the input projection of all steps
in one ``nn.Linear`` call, then the cell loop, layer by layer. ``compiled``: each cell wrapped
in ``torch.compile`` (the step fused by inductor; the loop over t stays in Python, so that the
compile time does not grow with T). Decays 0.99 (dt * tau_inv = 0.01), threshold 1, zero
reset, zero biases."""
from __future__ import annotations

import torch

from benchmarks.common import DECAY, System, weight_shapes


class Norse(System):
    def __init__(self, cfg, device="cpu", compiled=False):
        super().__init__(cfg, device)
        import norse.torch as nt
        torch.manual_seed(0)
        self.label = "Norse LIFCell (BPTT)" + (", torch.compile" if compiled else "")
        inv = torch.tensor((1.0 - DECAY) / 1e-3)
        p = nt.LIFParameters(tau_syn_inv=inv, tau_mem_inv=inv, v_th=torch.tensor(1.0),
                             v_reset=torch.tensor(0.0))
        self.fcs = [torch.nn.Linear(n_in, n_out) for n_out, n_in in weight_shapes(cfg)]
        for fc in self.fcs:
            torch.nn.init.zeros_(fc.bias)
        self.cells = [nt.LIFCell(p=p, dt=1e-3) for _ in self.fcs]
        self.mods = torch.nn.ModuleList([*self.fcs, *self.cells]).to(self.device)
        if compiled:  # every instance and layer shape is a new graph: room for all of them
            from torch import _dynamo
            _dynamo.config.cache_size_limit = max(64, _dynamo.config.cache_size_limit)
        self.steps = [torch.compile(c) if compiled else c for c in self.cells]
        self.make_opt()

    def parameters(self):
        return self.mods.parameters()

    def weights(self):
        return [fc.weight for fc in self.fcs]

    @staticmethod
    def _layer(cur_seq, cell):
        state, out = None, []
        for cur in cur_seq:
            z, state = cell(cur, state)
            out.append(z)
        return torch.stack(out)

    def forward(self):
        s, outs = self.x, []
        for fc, cell in zip(self.fcs, self.steps):
            s = self._layer(fc(s), cell)
            outs.append(s)
        return outs
