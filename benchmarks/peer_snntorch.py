"""snnTorch: ``Synaptic`` neurons (current-based LIF, surrogate BPTT), written the fast way:
the input projection of all steps in one ``nn.Linear`` call, then the neuron loop, layer by
layer. Decays 0.99, threshold 1, zero reset, zero biases, fast-sigmoid surrogate."""
from __future__ import annotations

import torch

from benchmarks.common import DECAY, System, weight_shapes


class SnnTorch(System):
    label = "snnTorch Synaptic (BPTT)"

    def __init__(self, cfg, device="cpu"):
        super().__init__(cfg, device)
        import snntorch as snn
        from snntorch import surrogate
        torch.manual_seed(0)
        grad = surrogate.fast_sigmoid()
        self.fcs = [torch.nn.Linear(n_in, n_out) for n_out, n_in in weight_shapes(cfg)]
        for fc in self.fcs:
            torch.nn.init.zeros_(fc.bias)
        self.lifs = [snn.Synaptic(alpha=DECAY, beta=DECAY, spike_grad=grad,
                                  reset_mechanism="zero") for _ in self.fcs]
        self.mods = torch.nn.ModuleList([*self.fcs, *self.lifs]).to(self.device)
        self.make_opt()

    def parameters(self):
        return self.mods.parameters()

    def weights(self):
        return [fc.weight for fc in self.fcs]

    @staticmethod
    def _layer(cur_seq, lif):
        syn, mem = lif.init_synaptic()
        out = []
        for cur in cur_seq:
            spk, syn, mem = lif(cur, syn, mem)
            out.append(spk)
        return torch.stack(out)

    def forward(self):
        s, outs = self.x, []
        for fc, lif in zip(self.fcs, self.lifs):
            s = self._layer(fc(s), lif)
            outs.append(s)
        return outs
