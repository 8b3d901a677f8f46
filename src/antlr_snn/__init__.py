"""antlr-snn: spiking neural networks that learn with few spikes, by ANTLR.

The combined activation- and timing-based learning rule of Kim et al., NeurIPS 2020, with the
activation, timing and BPTT methods beside it, as composable PyTorch modules.

Example:
    >>> import torch
    >>> import antlr_snn
    >>> net = antlr_snn.SpikingNetwork([784, 800, 10], method="antlr")
    >>> out = net(antlr_snn.encode.latency(torch.rand(4, 784), num_steps=100))
    >>> tuple(out.spikes.shape)
    (100, 4, 10)
"""
from antlr_snn import decode, encode, losses
from antlr_snn.layers import METHODS, LIFLayer, SpikeOutput, SpikingNetwork
from antlr_snn.neuron import LIFParameters

__version__ = "0.1.0"
__all__ = ["LIFLayer", "SpikingNetwork", "SpikeOutput", "LIFParameters", "METHODS",
           "losses", "encode", "decode", "__version__"]
