"""antlr-snn: spiking neural networks that learn with few spikes, by ANTLR.

The combined activation- and timing-based learning rule of Kim et al., NeurIPS 2020, with the
activation, timing and BPTT methods beside it, as composable PyTorch modules for any linear
synapse (fully connected, convolutional, pooling, a user's own).

Example:
    >>> import torch
    >>> import antlr_snn
    >>> net = antlr_snn.SpikingNetwork([784, 800, 10], method="antlr")
    >>> out = net(antlr_snn.encode.latency(torch.rand(4, 784), num_steps=100))
    >>> tuple(out.spikes.shape)
    (100, 4, 10)
"""
from antlr_snn import decode, encode, kernels, losses
from antlr_snn.errors import UserError
from antlr_snn.kernels import set_checks
from antlr_snn.layers import LIF, METHODS, LIFConv2d, LIFLayer, SpikeOutput
from antlr_snn.network import Flatten, SpikingNetwork, Unflatten, network_from_spec
from antlr_snn.neuron import LIFParameters, MethodConfig

__version__ = "0.2.0"
__all__ = ["LIFLayer", "LIFConv2d", "LIF", "Flatten", "Unflatten", "SpikingNetwork", "SpikeOutput",
           "LIFParameters", "MethodConfig", "METHODS", "UserError", "network_from_spec",
           "set_checks", "losses", "encode", "decode", "kernels", "__version__"]
