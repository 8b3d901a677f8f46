"""``nn.Module`` wrappers: :class:`LIFLayer` and :class:`SpikingNetwork`.

The modules hold parameters and validate input; the dynamics live in :mod:`antlr_snn.neuron`
and the gradient methods in :mod:`antlr_snn.methods`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import nn

from antlr_snn import kernels
from antlr_snn.methods import METHODS, LIFFunction, bptt_forward, method_config
from antlr_snn.neuron import LIFParameters
from antlr_snn.errors import UserError


@dataclass
class SpikeOutput:
    """What a layer or a network returns.

    Attributes:
        spikes: ``[T, *batch, N]`` float 0/1. Its autograd gradient is dL/dS.
        shift: zeros of the same shape; its autograd gradient is dL/dt (the timing channel).
        voltage: membrane potential V (Eq. 1); its gradient is added to dL/dV.
        layers: for a network, the outputs of every layer, the last one included.
    """

    spikes: torch.Tensor
    shift: torch.Tensor
    voltage: torch.Tensor
    layers: tuple = field(default=())

    @property
    def hidden(self) -> tuple:
        """Outputs of the hidden layers (all but the last)."""
        return tuple(self.layers[:-1])

    @property
    def num_steps(self) -> int:
        return self.spikes.shape[0]


SpikeInput = Union[torch.Tensor, SpikeOutput]


def check_spikes(x: torch.Tensor, in_features: int, replicas: Optional[int] = None) -> torch.Tensor:
    """Validate raw input spikes and return them as floating point; ``ValueError`` names the problem.

    ``T`` must be >= 1; an empty batch (``B = 0``) is allowed and gives empty outputs.
    """
    if not isinstance(x, torch.Tensor):
        raise UserError(f"input spikes must be a torch.Tensor or a SpikeOutput, got {type(x).__name__}")
    rank = 3 if replicas is None else 4
    layout = "[T, B, N]" if replicas is None else "[T, R, B, N]"
    if x.dim() != rank:
        raise UserError(f"input spikes must have rank {rank} {layout}, got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise UserError(f"input spikes need at least one time step (T >= 1 on dim 0), "
                         f"got shape {tuple(x.shape)}")
    if x.shape[-1] != in_features:
        raise UserError(f"input has {x.shape[-1]} features but the layer expects in_features="
                         f"{in_features} (shape {tuple(x.shape)})")
    if replicas is not None and x.shape[1] != replicas:
        raise UserError(f"input has {x.shape[1]} replicas on dim 1 but the layer has {replicas}")
    if x.is_complex():
        raise UserError("input spikes must be real, got a complex tensor")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    problem = kernels.binary_check(x)  # one compiled pass on CPU
    if problem == "nan":
        raise UserError("input spikes contain NaN")
    if problem == "nonbinary":
        raise UserError("input spikes must be binary (0 or 1); found other values")
    return x


class LIFLayer(nn.Module):
    """A fully connected layer of current-based LIF neurons (Eq. 1-3) trained by ``method``.

    Args:
        in_features, out_features: sizes.
        method: ``"antlr"`` (Eq. 8), ``"activation"`` (Eq. 6, 9), ``"timing"`` (Eq. 7, 10) or
            ``"bptt"`` (Fig. 2a).
        lambda_act, lambda_tim: weights of the two channels in Eq. 8 (``"antlr"`` only).
        alpha_v, alpha_i, beta_v, beta_i, beta_bias, threshold: constants of Eq. 1-3;
            ``beta_v``/``beta_bias`` of ``None`` give ``1 / max_k eps_raw[k]``.
        single_spike: each neuron fires at most once per sample.
        surrogate_scale, surrogate_width: sigma(V) = scale * exp(-width |V - threshold|).
        vstar_min: lower clamp of V* in dt/dV = -1/V*.
        replicas: ``R`` independent copies of the layer, run as one batch (inputs
            ``[T, R, B, N]``); ``None`` for an ordinary layer.

    Example:
        >>> import torch
        >>> from antlr_snn import LIFLayer
        >>> layer = LIFLayer(4, 3)
        >>> out = layer(torch.bernoulli(torch.full((20, 2, 4), 0.3)))
        >>> tuple(out.spikes.shape)
        (20, 2, 3)
    """

    def __init__(self, in_features: int, out_features: int, *, method: str = "antlr",
                 lambda_act: float = 1.0, lambda_tim: float = 1.0, alpha_v: float = 0.99,
                 alpha_i: float = 0.99, beta_v: Optional[float] = None, beta_i: float = 1.0,
                 beta_bias: Optional[float] = None, threshold: float = 1.0,
                 single_spike: bool = False, surrogate_scale: float = 1.0,
                 surrogate_width: float = 3.0, vstar_min: float = 1e-2,
                 replicas: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise UserError(f"{name} must be a positive integer, got {n!r}")
        if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool)
                                     or replicas < 1):
            raise UserError(f"replicas must be a positive integer or None, got {replicas!r}")
        if not isinstance(single_spike, bool):
            raise UserError(f"single_spike must be a bool, got {single_spike!r}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise UserError(f"dtype must be a floating point torch.dtype (the weights are "
                             f"trained), got {dtype!r}")
        self.in_features, self.out_features = in_features, out_features
        self.method = method
        self.cfg = method_config(method, lambda_act, lambda_tim, single_spike)
        self.params = LIFParameters.create(
            alpha_v=alpha_v, alpha_i=alpha_i, beta_v=beta_v, beta_i=beta_i, beta_bias=beta_bias,
            threshold=threshold, surrogate_scale=surrogate_scale,
            surrogate_width=surrogate_width, vstar_min=vstar_min)
        self.replicas = replicas
        lead = () if replicas is None else (replicas,)
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(*lead, out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.zeros(*lead, out_features, **kw))
        self.reset_parameters()

    @property
    def lambda_act(self) -> float:
        return self.cfg.lambda_act

    @property
    def lambda_tim(self) -> float:
        return self.cfg.lambda_tim

    @property
    def single_spike(self) -> bool:
        return self.cfg.single_spike

    def reset_parameters(self) -> None:
        """Weights as in ``torch.nn.Linear`` (uniform in +-1/sqrt(in)); bias 0 (authors' code)."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.zero_()

    def extra_repr(self) -> str:
        rep = f", replicas={self.replicas}" if self.replicas else ""
        return (f"{self.in_features}, {self.out_features}, method={self.method!r}, "
                f"lambda_act={self.lambda_act}, lambda_tim={self.lambda_tim}, "
                f"single_spike={self.single_spike}{rep}")

    def forward(self, x: SpikeInput) -> SpikeOutput:
        if isinstance(x, SpikeOutput):
            s_in, d_in = x.spikes, x.shift
            if s_in.shape[-1] != self.in_features:
                raise UserError(f"previous layer has {s_in.shape[-1]} neurons but this layer "
                                 f"expects in_features={self.in_features}")
        else:
            s_in, d_in = check_spikes(x, self.in_features, self.replicas), None
        s_in = s_in.to(self.weight.dtype)
        if self.method == "bptt":
            S, V = bptt_forward(s_in, self.weight, self.bias, self.params, self.single_spike)
            return SpikeOutput(S, kernels.zeros_like(S), V)
        if d_in is not None and not d_in.requires_grad:
            d_in = None  # e.g. coming from a bptt layer: no timing channel to feed
        S, d, V = LIFFunction.apply(s_in, d_in, self.weight, self.bias, self.params, self.cfg)
        return SpikeOutput(S, d, V)


class SpikingNetwork(nn.Module):
    """A stack of :class:`LIFLayer`; layer l sees the spikes of layer l-1 at the same step.

    Args:
        sizes: ``[N_in, N_1, ..., N_out]``.
        **kwargs: passed to every :class:`LIFLayer` (``method``, ``lambda_act``, ...).

    Example:
        >>> import torch
        >>> from antlr_snn import SpikingNetwork, encode, losses
        >>> net = SpikingNetwork([784, 100, 10], method="antlr")
        >>> x = encode.latency(torch.rand(8, 784), num_steps=30)
        >>> out = net(x)
        >>> loss = losses.latency_loss(out, torch.randint(0, 10, (8,)))
        >>> loss.backward()
        >>> tuple(net.layers[0].weight.grad.shape)
        (100, 784)
    """

    def __init__(self, sizes: Sequence[int], **kwargs):
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2:
            raise UserError(f"sizes needs at least an input and an output size, got {sizes}")
        self.sizes = sizes
        self.layers = nn.ModuleList(LIFLayer(a, b, **kwargs) for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def method(self) -> str:
        return self.layers[-1].method

    def forward(self, x: SpikeInput) -> SpikeOutput:
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return SpikeOutput(x.spikes, x.shift, x.voltage, tuple(outs))


__all__ = ["LIFLayer", "SpikingNetwork", "SpikeOutput", "check_spikes", "METHODS"]
