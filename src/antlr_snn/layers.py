"""``nn.Module`` layers: a linear synapse followed by LIF neurons (networks: :mod:`antlr_snn.network`).

Every spiking layer takes input spikes ``[T, B, *features]`` (or the output of the layer
below) and returns a :class:`SpikeOutput`. The neuron constants, the gradient method, the
lambdas and ``single_spike`` are part of each layer's state (``state_dict``): loading a state
into a layer built with other settings is refused with an error that names them.

Layers run in the dtype of their weights: autocast does not change them, on any backend.

Which implementation runs is decided in one place, :func:`antlr_snn.kernels.backend_for`; a
fully connected layer on a backend that fuses it (numba on the CPU) runs in one piece, every
other layer as ``synapse -> neuron`` (:mod:`antlr_snn.synapses`, :mod:`antlr_snn.methods`).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from antlr_snn import kernels, methods
from antlr_snn.checks import is_int
from antlr_snn.errors import UserError
from antlr_snn.kernels import ops
from antlr_snn.neuron import METHODS, LIFParameters, method_config
from antlr_snn.synapses import Conv, Dense, Module

__all__ = ["SpikeOutput", "LIFLayer", "LIFConv2d", "LIF", "check_spikes", "METHODS", "NEURON_DEFAULTS"]

#: The neuron and method keywords every spiking layer takes, with their defaults.
NEURON_DEFAULTS = {"method": "antlr", "lambda_act": 1.0, "lambda_tim": 1.0, "alpha_v": 0.99,
                   "alpha_i": 0.99, "beta_v": None, "beta_i": 1.0, "beta_bias": None,
                   "threshold": 1.0, "single_spike": False, "surrogate_scale": 1.0,
                   "surrogate_width": 3.0, "vstar_min": 1e-2, "eps_derivative": "backward"}


class SpikeOutput(NamedTuple):
    """What a layer or a network returns (a named tuple: ``torch.func``, export and module
    hooks see its tensors).

    Attributes:
        spikes: ``[T, B, *features]`` float 0/1. Its autograd gradient is dL/dS.
        shift: zeros of the same shape; its autograd gradient is dL/dt (the timing channel).
        voltage: membrane potential V (Eq. 1); its gradient is added to dL/dV.
        layers: for a network, the outputs of every spiking layer, the last one included.
        method: the gradient method of the layer that made it.
    """

    spikes: torch.Tensor
    shift: torch.Tensor
    voltage: torch.Tensor
    layers: tuple = ()
    method: Optional[str] = None

    @property
    def hidden(self) -> tuple:
        """Outputs of the hidden layers (all but the last)."""
        return tuple(self.layers[:-1])

    @property
    def num_steps(self) -> int:
        return self.spikes.shape[0]


SpikeInput = Union[torch.Tensor, SpikeOutput]


def check_spikes(x, rank: int, layout: str, features: Optional[tuple] = None,
                 dtype: torch.dtype = None, expect: str = "") -> torch.Tensor:
    """Raw input spikes, validated and as ``dtype``; ``UserError`` names the problem.

    ``T`` must be >= 1; an empty batch is allowed and gives empty outputs. The binary check
    reads the data; :func:`antlr_snn.kernels.set_checks` turns it off.
    """
    if not isinstance(x, torch.Tensor):
        raise UserError(f"input spikes must be a torch.Tensor or a SpikeOutput, got "
                        f"{type(x).__name__}")
    if x.dim() != rank:
        raise UserError(f"input spikes must have rank {rank} {layout}, got shape "
                        f"{tuple(x.shape)}")
    if x.shape[0] < 1:
        raise UserError(f"input spikes need at least one time step (T >= 1 on dim 0), got "
                        f"shape {tuple(x.shape)}")
    if features is not None:
        got = tuple(x.shape[rank - len(features):])
        if any(f is not None and f != g for f, g in zip(features, got)):
            raise UserError(f"input spikes of shape {tuple(x.shape)} ({layout}) do not fit the "
                            f"layer, which expects {expect or tuple(features)}")
    if x.is_complex():
        raise UserError("input spikes must be real, got a complex tensor")
    x = x.to(dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype()))
    if kernels.checks_enabled():  # an opaque operator: no graph break, any transform
        ops.check_spikes(x)
    return x


def _no_autocast(forward):
    """Run a layer in the dtype of its weights whatever autocast says: the same numbers on
    every backend (the custom operators are outside autocast's lists anyway)."""
    @functools.wraps(forward)
    def wrapped(self, x):
        s = x.spikes if isinstance(x, SpikeOutput) else x
        device = s.device.type if isinstance(s, torch.Tensor) else "cpu"
        with torch.autocast(device, enabled=False):
            return forward(self, x)
    return wrapped


class _Neurons(nn.Module):
    """LIF neurons (Eq. 1-3) with a gradient method: the part every spiking layer shares."""

    def __init__(self, **kwargs):
        super().__init__()
        unknown = set(kwargs) - set(NEURON_DEFAULTS)
        if unknown:
            raise UserError(f"unknown layer argument(s) {', '.join(sorted(unknown))}; the neuron "
                            f"and method take {', '.join(NEURON_DEFAULTS)}")
        kw = {**NEURON_DEFAULTS, **kwargs}
        self._cfg = method_config(kw["method"], kw["lambda_act"], kw["lambda_tim"],
                                  kw["single_spike"], kw["eps_derivative"])
        self._params = LIFParameters.create(**{k: kw[k] for k in LIFParameters._fields})

    # read-only: a method that disagreed with its lambdas would be a silent bug
    params = property(lambda self: self._params, doc="The neuron constants (LIFParameters).")
    cfg = property(lambda self: self._cfg, doc="The method (MethodConfig).")
    method = property(lambda self: self._cfg.method)
    lambda_act = property(lambda self: self._cfg.lambda_act)
    lambda_tim = property(lambda self: self._cfg.lambda_tim)
    single_spike = property(lambda self: self._cfg.single_spike)
    eps_derivative = property(lambda self: self._cfg.eps_derivative)

    def neuron_kwargs(self) -> dict:
        """The keywords that rebuild these neurons exactly."""
        return {**self._params._asdict(), **self._cfg._asdict()}

    def spec(self) -> dict:
        """A JSON-able description that :func:`network_from_spec` rebuilds."""
        raise UserError(f"{type(self).__name__} with a custom synapse cannot be described; "
                        f"save and rebuild it yourself")

    def get_extra_state(self) -> dict:
        return {"neuron": self.neuron_kwargs()}

    def set_extra_state(self, state) -> None:
        saved = state.get("neuron") if isinstance(state, dict) else None
        if not isinstance(saved, dict):
            raise UserError(f"{type(self).__name__}: the state holds no neuron settings")
        mine = self.neuron_kwargs()
        diff = [k for k in sorted(set(saved) | set(mine)) if saved.get(k) != mine.get(k)]
        if diff:
            pairs = ", ".join(f"{k}={saved.get(k)!r} (this layer: {mine.get(k)!r})" for k in diff)
            raise UserError(f"{type(self).__name__}: the state was saved with other neuron "
                            f"settings: {pairs}; build the layer with the saved settings")

    def extra_repr(self) -> str:
        cfg, parts = self._cfg, [f"method={self.method!r}"]
        if cfg.method == "antlr":
            parts.append(f"lambda_act={cfg.lambda_act}, lambda_tim={cfg.lambda_tim}")
        if cfg.single_spike:
            parts.append("single_spike=True")
        if cfg.eps_derivative != "backward":
            parts.append(f"eps_derivative={cfg.eps_derivative!r}")
        default = LIFParameters.create()
        for k, v in self._params._asdict().items():
            if v != getattr(default, k):
                parts.append(f"{k}={v:.6g}")
        return ", ".join(parts)

    def _neurons(self, x, x_d, bias, backend: str) -> SpikeOutput:
        S, d, V = methods.lif(x, x_d, bias, self._params, self._cfg, backend)
        return SpikeOutput(S, d, V, method=self.method)

    def _synapse_and_neurons(self, syn, s_in, d_in, bias) -> SpikeOutput:
        x = syn(s_in)
        backend = kernels.backend_for(x).name  # of the current: autocast may have lowered it
        x_d = None if self.method == "bptt" else methods.timing_current(d_in, s_in, syn, x.shape)
        return self._neurons(x, x_d, bias, backend)

    def _input(self, x, rank: int, layout: str, features: tuple, dtype, expect: str) -> tuple:
        """``(spikes, shift or None)`` of ``x``, a SpikeOutput or raw spikes."""
        if isinstance(x, SpikeOutput):
            got = tuple(x.spikes.shape[rank - len(features):])
            if x.spikes.dim() != rank or any(f is not None and f != g
                                             for f, g in zip(features, got)):
                raise UserError(f"the layer below gives spikes of shape "
                                f"{tuple(x.spikes.shape)} but {type(self).__name__} expects "
                                f"{layout} with {expect}")
            return x.spikes.to(dtype), x.shift
        return check_spikes(x, rank, layout, features, dtype, expect), None


def _positive_int(name: str, n, extra: str = "") -> int:
    if not is_int(n, 1):
        raise UserError(f"{name} must be a positive integer{extra}, got {n!r}")
    return int(n)


def _float_dtype(dtype):
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise UserError(f"dtype must be a floating point torch.dtype (the weights are trained), "
                        f"got {dtype!r}")
    return dtype


class LIFLayer(_Neurons):
    """A fully connected layer of current-based LIF neurons (Eq. 1-3) trained by ``method``.

    Args:
        in_features, out_features: sizes.
        method: ``"antlr"`` (Eq. 8), ``"activation"`` (Eq. 6, 9), ``"timing"`` (Eq. 7, 10) or
            ``"bptt"`` (Fig. 2a).
        lambda_act, lambda_tim: weights of the two channels in Eq. 8 (``"antlr"`` only).
        alpha_v, alpha_i, beta_v, beta_i, beta_bias, threshold: constants of Eq. 1-3;
            ``beta_v``/``beta_bias`` of ``None`` give ``1 / max_k eps_raw[k]``.
        single_spike: each neuron fires at most once per sample, and is held at reset after.
        surrogate_scale, surrogate_width: sigma(V) = scale * exp(-width |V - threshold|).
        vstar_min: lower clamp of V* in dt/dV = -1/V*.
        eps_derivative: ``"backward"`` or ``"central"`` kernel derivative (Eq. 7).
        replicas: ``R`` independent copies of the layer, run as one batch (inputs
            ``[T, R, B, N]``); ``None`` for an ordinary layer.

    Example:
        >>> import torch
        >>> from antlr_snn import LIFLayer
        >>> layer = LIFLayer(4, 3, threshold=0.5)
        >>> out = layer(torch.bernoulli(torch.full((20, 2, 4), 0.3)))
        >>> tuple(out.spikes.shape), layer
        ((20, 2, 3), LIFLayer(4, 3, method='antlr', lambda_act=1.0, lambda_tim=1.0, threshold=0.5))
    """

    def __init__(self, in_features: int, out_features: int, *, replicas: Optional[int] = None,
                 device=None, dtype=None, **neuron):
        super().__init__(**neuron)
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        if replicas is not None:
            _positive_int("replicas", replicas, " or None")
        self.replicas = replicas
        lead = () if replicas is None else (replicas,)
        kw = {"device": device, "dtype": _float_dtype(dtype)}
        self.weight = nn.Parameter(torch.empty(*lead, out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.zeros(*lead, out_features, **kw))
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        return self.in_features

    def reset_parameters(self) -> None:
        """Weights as in ``torch.nn.Linear`` (uniform in +-1/sqrt(in)); bias 0 (authors' code)."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.zero_()

    def spec(self) -> dict:
        return {"type": "LIFLayer", "in_features": self.in_features,
                "out_features": self.out_features, "replicas": self.replicas,
                "neuron": self.neuron_kwargs()}

    def extra_repr(self) -> str:
        rep = f", replicas={self.replicas}" if self.replicas else ""
        return f"{self.in_features}, {self.out_features}, {super().extra_repr()}{rep}"

    @_no_autocast
    def forward(self, x: SpikeInput) -> SpikeOutput:
        rank, layout = (3, "[T, B, N]") if self.replicas is None else (4, "[T, R, B, N]")
        s_in, d_in = self._input(x, rank, layout, (self.in_features,), self.weight.dtype,
                                 f"in_features={self.in_features}")
        if self.replicas is not None and s_in.shape[1] != self.replicas:
            raise UserError(f"input has {s_in.shape[1]} replicas on dim 1 but the layer has "
                            f"{self.replicas}")
        backend = kernels.backend_for(s_in, self.weight)
        if backend.fuses_dense:  # the fused fast path (numba): gather rows per input spike
            S, d, V = methods.dense_lif(s_in, d_in, self.weight, self.bias, self._params,
                                        self._cfg, backend.name)
            return SpikeOutput(S, d, V, method=self.method)
        bias = self.bias if self.replicas is None else self.bias.unsqueeze(-2)
        return self._synapse_and_neurons(Dense(self.weight), s_in, d_in, bias)


def _pair(v, name: str) -> tuple:
    v = (v, v) if is_int(v) else tuple(v)
    if len(v) != 2 or not all(is_int(a, 0) for a in v):
        raise UserError(f"{name} must be an int or a pair of ints >= 0, got {v!r}")
    return v


class LIFConv2d(_Neurons):
    """A 2-d convolution (no bias) followed by LIF neurons, on spikes ``[T, B, C, H, W]``.

    ``.weight`` is ``[C_out, C_in, k, k]``; ``.bias`` is V_bias, one per output channel
    ``[C_out]``. The neuron and method keywords are those of :class:`LIFLayer`.

    Example:
        >>> import torch
        >>> from antlr_snn import LIFConv2d
        >>> conv = LIFConv2d(2, 4, 3, stride=2, padding=1)
        >>> out = conv(torch.bernoulli(torch.full((10, 3, 2, 8, 8), 0.2)))
        >>> tuple(out.spikes.shape), tuple(conv.weight.shape)
        ((10, 3, 4, 4, 4), (4, 2, 3, 3))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *, stride=1,
                 padding=0, device=None, dtype=None, **neuron):
        super().__init__(**neuron)
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if min(self.kernel_size) < 1:
            raise UserError(f"kernel_size must be >= 1, got {kernel_size!r}")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        if min(self.stride) < 1:
            raise UserError(f"stride must be >= 1, got {stride!r}")
        kw = {"device": device, "dtype": _float_dtype(dtype)}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size,
                                               **kw))
        self.bias = nn.Parameter(torch.zeros(out_channels, **kw))
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        """Weights as in ``torch.nn.Conv2d`` (uniform in +-1/sqrt(fan_in)); bias 0."""
        bound = 1.0 / math.sqrt(self.fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.zero_()

    def spec(self) -> dict:
        return {"type": "LIFConv2d", "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding),
                "neuron": self.neuron_kwargs()}

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, {super().extra_repr()}")

    @_no_autocast
    def forward(self, x: SpikeInput) -> SpikeOutput:
        s_in, d_in = self._input(x, 5, "[T, B, C, H, W]", (self.in_channels, None, None),
                                 self.weight.dtype, f"in_channels={self.in_channels}")
        syn = Conv(self.weight, self.stride, self.padding)
        return self._synapse_and_neurons(syn, s_in, d_in, self.bias.view(-1, 1, 1))


class LIF(_Neurons):
    """LIF neurons behind any linear torch module (``nn.Conv1d(..., bias=False)``,
    ``nn.AvgPool2d``, a user's own), applied per step to ``[T * B, *features]``.

    Args:
        synapse: the module; it must be linear in its input (affine works too: its bias is
            then a constant input current).
        bias_shape: shape of a trainable V_bias, broadcast against the per-sample current
            (e.g. ``(C, 1)`` for ``nn.Conv1d``); ``None`` for no V_bias.
        **neuron: the neuron and method keywords of :class:`LIFLayer`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from antlr_snn import LIF
        >>> pool = LIF(nn.AvgPool2d(2), threshold=0.3)
        >>> tuple(pool(torch.bernoulli(torch.full((10, 3, 2, 8, 8), 0.5))).spikes.shape)
        (10, 3, 2, 4, 4)
    """

    def __init__(self, synapse: nn.Module, bias_shape: Optional[Sequence[int]] = None,
                 **neuron):
        super().__init__(**neuron)
        if not isinstance(synapse, nn.Module):
            raise UserError(f"synapse must be a torch.nn.Module, got {type(synapse).__name__}")
        self.synapse = synapse
        ref = next(iter(synapse.parameters()), None)
        kw = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.bias = (nn.Parameter(torch.zeros(*bias_shape, **kw)) if bias_shape is not None
                     else None)

    @_no_autocast
    def forward(self, x: SpikeInput) -> SpikeOutput:
        ref = next(iter(self.synapse.parameters()), None)
        dtype = ref.dtype if ref is not None else None
        if isinstance(x, SpikeOutput):
            s_in, d_in = x.spikes.to(dtype or x.spikes.dtype), x.shift
        else:
            s_in, d_in = check_spikes(x, x.dim() if isinstance(x, torch.Tensor) else 3,
                                      "[T, B, *features]", None, dtype), None
            if s_in.dim() < 3:
                raise UserError(f"input spikes must be [T, B, *features], got shape "
                                f"{tuple(s_in.shape)}")
        bias = self.bias if self.bias is not None else s_in.new_zeros(())
        return self._synapse_and_neurons(Module(self.synapse), s_in, d_in, bias)
