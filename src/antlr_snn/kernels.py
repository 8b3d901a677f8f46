"""Kernels of the hot path: the input projection, the two time recursions and the weight gradient.

Two implementations of each:

* the **reference**, pure PyTorch (``reference_project``, ``reference_weight_grad``,
  ``reference_lif_recurrence``, ``reference_adjoint_recurrence``); it runs on any device and
  dtype and defines the numbers;
* a **fast CPU path** compiled with numba (:mod:`antlr_snn._numba_kernels`): the time
  recursions run as compiled loops instead of ~10 small PyTorch ops per step, the backward
  pass computes dL/dV (Eq. 8) and both adjoint traces in one sweep, and sparse input spikes
  (latency code: well under 1% of the entries) are projected and turned into the weight
  gradient by gathering/scattering weight rows per spike instead of dense products.

The public functions (``project``, ``weight_grad``, ``lif_recurrence``, ``adjoint_recurrence``,
``lif_backward``, ``bptt``) dispatch: the fast path is taken only for CPU tensors of dtype
float32/float64 with the backend ``"auto"``; CUDA and every other case use the reference.
Spikes from the fast path equal the reference's exactly (up to ties of V with the threshold
within rounding, which the tests never meet); real numbers agree to rounding (~1e-15 relative
in float64), because sums may be formed in another order.

The backend is chosen by the environment variable ``ANTLR_SNN_KERNELS=auto|reference`` (read
at import), by :func:`set_backend`, or temporarily with ``with kernels.use_backend("reference"):``.

Weights are ``[N, N_in]`` with inputs ``[T, *batch, N_in]``, or ``[R, N, N_in]`` for ``R``
independent replica networks with inputs ``[T, R, B, N_in]``.

Example:
    >>> import torch
    >>> from antlr_snn import kernels
    >>> s = torch.zeros(5, 2, 3); s[1, 0, 2] = 1.0
    >>> w = torch.arange(12.0).reshape(4, 3)
    >>> torch.equal(kernels.project(s, w), kernels.reference_project(s, w))
    True
    >>> with kernels.use_backend("reference"):
    ...     kernels.get_backend()
    'reference'
"""
from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from typing import NamedTuple, Optional

import torch

from antlr_snn.neuron import LIFParameters
from antlr_snn.neuron import adjoint_recurrence as reference_adjoint_recurrence
from antlr_snn.neuron import lif_recurrence as reference_lif_recurrence

__all__ = ["project", "weight_grad", "lif_recurrence", "adjoint_recurrence", "lif_backward",
           "events", "bptt", "Events", "reference_project", "reference_weight_grad",
           "reference_lif_recurrence", "reference_adjoint_recurrence", "get_backend",
           "set_backend", "use_backend", "fast_available", "BACKENDS", "SPARSE_MAX_DENSITY",
           "calls"]

BACKENDS = ("auto", "reference")

#: Input spikes denser than this fraction of entries use the dense (BLAS) projection and
#: weight gradient. Measured on a 2-core CPU at 784 -> 800, T=100, B=16, float32: the gather
#: and the dense product cost the same near 6% density; latency-coded MNIST is at ~0.25%.
SPARSE_MAX_DENSITY = 0.04

#: How often each fast kernel ran in this process (for tests and benchmarks).
calls: Counter = Counter()

_FAST_DTYPES = (torch.float32, torch.float64)
_nk = None            # the compiled module, imported on first use
_nk_error: Optional[BaseException] = None


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


_backend = _check_backend(os.environ.get("ANTLR_SNN_KERNELS", "auto").strip().lower() or "auto")


def get_backend() -> str:
    """``"auto"`` (fast CPU path where it applies) or ``"reference"`` (pure PyTorch)."""
    return _backend


def set_backend(name: str) -> None:
    """Select ``"auto"`` or ``"reference"`` for the whole process."""
    global _backend
    _backend = _check_backend(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the enclosed code with backend ``name``."""
    global _backend
    old, _backend = _backend, _check_backend(name)
    try:
        yield
    finally:
        _backend = old


def _numba():
    """The compiled kernels module, or None when numba is unavailable."""
    global _nk, _nk_error
    if _nk is None and _nk_error is None:
        try:
            from antlr_snn import _numba_kernels
            _nk = _numba_kernels
        except Exception as exc:  # numba missing or broken: stay on the reference path
            _nk_error = exc
    return _nk


def fast_available() -> bool:
    """True when the compiled CPU kernels can be used (numba imports)."""
    return _numba() is not None


def _fast(*tensors) -> bool:
    """The fast path applies: backend auto, numba present, all CPU float32/64 of one dtype."""
    if _backend != "auto":
        return False
    dtype = None
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype not in _FAST_DTYPES or t.is_sparse:
            return False
        if dtype is None:
            dtype = t.dtype
        elif t.dtype != dtype:
            return False
    return _numba() is not None


def _np(t: torch.Tensor):
    """A numpy view of a detached, contiguous CPU tensor."""
    t = t.detach()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t.contiguous().numpy()


def _consts(p: LIFParameters, dtype, lambda_act: float = 0.0, lambda_tim: float = 0.0):
    import numpy as np
    from antlr_snn._numba_kernels import AI, AV, BI, BV, BB, TH, SCALE, WIDTH, VMIN, LACT, LTIM, ONE, ZERO
    c = np.zeros(13, dtype=np.float32 if dtype == torch.float32 else np.float64)
    for i, v in ((AI, p.alpha_i), (AV, p.alpha_v), (BI, p.beta_i), (BV, p.beta_v),
                 (BB, p.beta_bias), (TH, p.threshold), (SCALE, p.surrogate_scale),
                 (WIDTH, p.surrogate_width), (VMIN, p.vstar_min), (LACT, lambda_act),
                 (LTIM, lambda_tim), (ONE, 1.0), (ZERO, 0.0)):
        c[i] = v
    return c


def _surrogate(v: torch.Tensor, p: LIFParameters) -> torch.Tensor:
    """:func:`antlr_snn.neuron.surrogate` with in-place steps: the same values, bit for bit,
    from torch's vectorised exp, with one buffer instead of four."""
    out = torch.sub(v.detach(), p.threshold)
    out.abs_().mul_(-p.surrogate_width).exp_()
    return out.mul_(p.surrogate_scale)


def _rows(x: torch.Tensor) -> int:
    """Rows per step of a ``[T, *batch, N]`` tensor."""
    return math.prod(x.shape[1:-1])


# --------------------------------------------------------------------------- reference
def reference_project(s: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x[t, ..., j] = sum_i w_ji s[t, ..., i]`` for every step at once (dense product)."""
    return s @ weight.transpose(-1, -2)


def reference_weight_grad(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``sum_{t, batch} a[t, ..., j] s[t, ..., i]``: shape of the weight (dense product)."""
    if a.dim() == 4 and s.dim() == 4:  # replicas: [T, R, B, N]
        return torch.einsum("trbo,trbi->roi", a, s)
    return a.reshape(-1, a.shape[-1]).transpose(0, 1) @ s.reshape(-1, s.shape[-1])


# --------------------------------------------------------------------------- sparse events
class Events(NamedTuple):
    """The nonzero entries of a spike tensor ``[T, *batch, K]`` as CSR over its rows."""

    rowptr: object   # numpy int64 [T * M + 1]
    idx: object      # numpy int32 [nnz]
    val: object      # numpy [nnz], the spike values (1.0 for binary spikes)
    shape: tuple     # the spike tensor's shape
    rows_per_rep: int  # rows of one replica within a step (B), or all rows of a step

    @property
    def nnz(self) -> int:
        return int(self.rowptr[-1])


def _replica_layout(s_shape: tuple, weight: torch.Tensor) -> Optional[int]:
    """Rows per replica for spikes of ``s_shape`` against ``weight``; None if not fast-able."""
    if weight.dim() == 2:
        return max(1, math.prod(s_shape[1:-1])) if len(s_shape) >= 2 else None
    if weight.dim() == 3 and len(s_shape) == 4 and s_shape[1] == weight.shape[0]:
        return max(1, s_shape[2])
    return None


def events(s: torch.Tensor, weight: torch.Tensor,
           max_density: Optional[float] = None) -> Optional[Events]:
    """Sparse form of the spikes ``s`` for :func:`project` and :func:`weight_grad`.

    Returns None (use the dense path) unless the fast backend applies and at most
    ``max_density`` (default :data:`SPARSE_MAX_DENSITY`) of the entries are nonzero.
    The scan stops as soon as that bound is exceeded.
    """
    if not _fast(s, weight) or s.dim() < 2 or s.shape[-1] != weight.shape[-1]:
        return None
    rpr = _replica_layout(tuple(s.shape), weight)
    if rpr is None:
        return None
    nk = _numba()
    density = SPARSE_MAX_DENSITY if max_density is None else max_density
    s2 = _np(s).reshape(-1, s.shape[-1])
    max_nnz = int(density * s2.size)
    # torch-allocated buffers (numpy views), so that torch's memory accounting sees them
    rowptr = torch.empty(s2.shape[0] + 1, dtype=torch.int64).numpy()
    idx = torch.empty(max_nnz, dtype=torch.int32).numpy()
    val = torch.empty(max_nnz, dtype=s.dtype).numpy()
    nnz = nk.scan_events(s2, max_nnz, rowptr, idx, val)
    calls["events"] += 1
    if nnz < 0:
        return None
    return Events(rowptr, idx[:nnz], val[:nnz], tuple(s.shape), rpr)


def _events_match(ev: Optional[Events], s: torch.Tensor) -> bool:
    return ev is not None and tuple(s.shape) == ev.shape


def _wt(weight: torch.Tensor):
    """Weights as ``[R, K, N]`` (transposed, contiguous) numpy for row gathers."""
    w = weight.detach()
    w3 = w.unsqueeze(0) if w.dim() == 2 else w
    return w3.transpose(-1, -2).contiguous().numpy()


# --------------------------------------------------------------------------- dispatch
def project(s: torch.Tensor, weight: torch.Tensor, events: Optional[Events] = None) -> torch.Tensor:
    """``x[t, ..., j] = sum_i w_ji s[t, ..., i]`` for every step at once.

    With ``events`` (from :func:`events`, for this ``s``) the projection gathers one weight
    row per spike; otherwise it is the dense product. No autograd graph is built by the
    sparse path, so pass ``events`` only where gradients are handled by hand.
    """
    if not (_events_match(events, s) and _fast(s, weight)):
        return reference_project(s, weight)
    nk = _numba()
    n_out = weight.shape[-2]
    out = torch.empty(*s.shape[:-1], n_out, dtype=s.dtype)
    nk.project_csr(events.rowptr, events.idx, events.val, _wt(weight), events.rows_per_rep,
                   out.numpy().reshape(-1, n_out))
    calls["project"] += 1
    return out


def weight_grad(a: torch.Tensor, s: torch.Tensor, events: Optional[Events] = None) -> torch.Tensor:
    """``sum_{t, batch} a[t, ..., j] s[t, ..., i]``: shape of the weight.

    With ``events`` of ``s`` it scatters ``a`` into the rows of the spiking inputs only.
    """
    if not (_events_match(events, s) and _fast(a, s) and a.shape[:-1] == s.shape[:-1]):
        return reference_weight_grad(a, s)
    nk = _numba()
    n_out, k = a.shape[-1], s.shape[-1]
    replicas = a.dim() == 4 and s.dim() == 4
    R = s.shape[1] if replicas else 1
    rpr = max(1, s.shape[2]) if replicas else max(1, _rows(s))
    g = torch.empty(R, n_out, k, dtype=a.dtype)
    nk.weight_grad_csr(events.rowptr, events.idx, events.val, _np(a).reshape(-1, n_out), rpr,
                       g.numpy())
    calls["weight_grad"] += 1
    return g if replicas else g[0]


def _bias_rows(bias: torch.Tensor, x: torch.Tensor):
    """``bias`` as ``[R, N]`` plus rows per replica, or None when its broadcast is unusual."""
    n = x.shape[-1]
    if bias.numel() == n and (bias.dim() == 1 or all(d == 1 for d in bias.shape[:-1])):
        return bias.reshape(1, n), max(1, _rows(x))
    if x.dim() == 4 and bias.dim() == 3 and bias.shape == (x.shape[1], 1, n):
        return bias.reshape(x.shape[1], n), max(1, x.shape[2])
    return None


def lif_recurrence(x: torch.Tensor, bias: torch.Tensor, p: LIFParameters,
                   single_spike: bool = False):
    """Eq. 1-3 given the synaptic input for all steps; see :func:`antlr_snn.neuron.lif_recurrence`."""
    return _lif_forward(x, bias, p, single_spike, keep_current=False)[:2]


def _lif_forward(x, bias, p, single_spike, keep_current):
    """(S, V, I or None); I only on the fast path with ``keep_current``."""
    b = _bias_rows(bias, x) if (x.dim() >= 2 and _fast(x, bias)) else None
    if b is None:
        S, V = reference_lif_recurrence(x, bias, p, single_spike)
        return S, V, None
    bias2, rpr = b
    nk = _numba()
    T, n = x.shape[0], x.shape[-1]
    S = torch.empty_like(x, memory_format=torch.contiguous_format)
    V = torch.empty_like(S)
    I = torch.empty_like(S) if keep_current else torch.empty(1, 1, 1, dtype=x.dtype)
    shape3 = (T, -1, n)
    nk.lif_forward(_np(x).reshape(shape3), _np(bias2), rpr, _consts(p, x.dtype),
                   bool(single_spike), bool(keep_current), S.numpy().reshape(shape3),
                   V.numpy().reshape(shape3), I.numpy().reshape(I.shape[0], -1, I.shape[-1]))
    calls["lif_forward"] += 1
    return S, V, (I if keep_current else None)


def adjoint_recurrence(g: torch.Tensor, S: torch.Tensor, p: LIFParameters):
    """The two reverse recursions (U, A); see :func:`antlr_snn.neuron.adjoint_recurrence`."""
    if not (_fast(g, S) and g.dim() >= 2 and g.shape == S.shape):
        return reference_adjoint_recurrence(g, S, p)
    out = _adjoint(None, None, g, S, S, p, 0.0, 0.0, False, want_ad=False, want_u=True)
    return out[0], out[1]


def _adjoint(gs, gd, gv, S, V, p, lam_act, lam_tim, single, want_ad, want_u):
    import numpy as np
    nk = _numba()
    T, n = S.shape[0], S.shape[-1]
    shape3 = (T, -1, n)
    dummy = np.zeros((1, 1, 1), dtype=_np(S).dtype)
    # sigma(V) from torch's exp (the reference's very values); A overwrites it row by row
    # (the kernel reads sig[t, m] before it writes A[t, m]), which saves one [T, M, N] buffer
    sig = _surrogate(V, p) if gs is not None else None
    A = sig if sig is not None else torch.empty(S.shape, dtype=S.dtype)
    U = torch.empty(S.shape, dtype=S.dtype) if want_u else None
    Ad = torch.empty(S.shape, dtype=S.dtype) if want_ad else None
    usum = torch.empty(S.shape[1:], dtype=S.dtype)
    flags = np.array([gs is not None, gd is not None, gv is not None, bool(single), want_ad,
                      want_u], dtype=np.bool_)
    arr = lambda t: dummy if t is None else _np(t).reshape(shape3)  # noqa: E731
    nk.adjoint_backward(arr(gs), arr(sig), arr(gd), arr(gv), _np(S).reshape(shape3),
                        _np(V).reshape(shape3),                        _consts(p, S.dtype, lam_act, lam_tim), flags, arr(U),
                        A.numpy().reshape(shape3), arr(Ad), usum.numpy().reshape(-1, n))
    calls["adjoint"] += 1
    return U, A, Ad, usum


def lif_backward(grad_s, grad_d, grad_v, S, V, p: LIFParameters, lambda_act: float,
                 lambda_tim: float, single_spike: bool, want_ad: bool):
    """Fused backward of one layer: Eq. 8 (dL/dV) and the adjoint recursions in one sweep.

    Returns ``(A, Ad, usum)``: the adjoint of I, ``Ad[t] = A[t] - (1 - S[t]) A[t+1]`` (or None
    unless ``want_ad``) and ``sum_t U`` of shape ``S.shape[1:]``; or None where the fast path
    does not apply (then use ``methods.dl_dv`` and :func:`adjoint_recurrence`).
    """
    if not (_fast(grad_s, grad_d, grad_v, S, V) and S.dim() >= 2 and S.shape == V.shape):
        return None
    for t in (grad_s, grad_d, grad_v):
        if t is not None and t.shape != S.shape:
            return None
    gs = grad_s if lambda_act != 0.0 else None
    gd = grad_d if lambda_tim != 0.0 else None
    _, A, Ad, usum = _adjoint(gs, gd, grad_v, S, V, p, lambda_act, lambda_tim, single_spike,
                              want_ad=want_ad, want_u=False)
    return A, Ad, usum


# --------------------------------------------------------------------------- BPTT
class _BPTTFunction(torch.autograd.Function):
    """Eq. 1-3 with the reset path attached (Fig. 2a), forward and backward compiled.

    Gives the same numbers as autograd through :func:`antlr_snn.methods.bptt_forward`.
    """

    @staticmethod
    def forward(ctx, s_in, weight, bias, p: LIFParameters, single_spike: bool):
        ev = events(s_in, weight)
        x = project(s_in, weight, events=ev)
        bias_view = bias.reshape((weight.shape[0],) if weight.dim() == 2
                                 else (weight.shape[0], 1, weight.shape[1]))
        S, V, I = _lif_forward(x, bias_view, p, single_spike, keep_current=True)
        ctx.save_for_backward(s_in, weight, S, V, I)
        ctx.p, ctx.single, ctx.events = p, single_spike, ev
        ctx.set_materialize_grads(False)
        return S, V

    @staticmethod
    def backward(ctx, grad_s, grad_v):
        import numpy as np
        s_in, weight, S, V, I = ctx.saved_tensors
        p = ctx.p
        nk = _numba()
        T, n = S.shape[0], S.shape[-1]
        shape3 = (T, -1, n)
        dummy = np.zeros((1, 1, 1), dtype=_np(S).dtype)
        GI = _surrogate(V, p)  # sigma(V); overwritten in place by dL/dI, row by row
        gvsum = torch.empty(S.shape[1:], dtype=S.dtype)
        flags = np.array([grad_s is not None, grad_v is not None, bool(ctx.single)], dtype=np.bool_)
        arr = lambda t: dummy if t is None else _np(t).reshape(shape3)  # noqa: E731
        nk.bptt_backward(arr(grad_s), arr(grad_v), arr(GI), _np(S).reshape(shape3), _np(V).reshape(shape3),
                         _np(I).reshape(shape3), _consts(p, S.dtype), flags,
                         GI.numpy().reshape(shape3), gvsum.numpy().reshape(-1, n))
        calls["bptt_backward"] += 1
        need_s, need_w, need_b = ctx.needs_input_grad[:3]
        gs_in = gw = gb = None
        if need_w:
            gw = weight_grad(GI, s_in, events=ctx.events).mul_(p.beta_i)
        if need_b:
            bshape = (weight.shape[0],) if weight.dim() == 2 else (weight.shape[0], 1, weight.shape[1])
            gb = p.beta_bias * gvsum.sum_to_size(bshape).reshape(weight.shape[:-1])
        if need_s:
            gs_in = (GI @ weight).mul_(p.beta_i)
        return gs_in, gw, gb, None, None


def bptt(s_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, p: LIFParameters,
         single_spike: bool = False):
    """Compiled BPTT layer ``(S, V)``, or None where the fast path does not apply."""
    if not (_fast(s_in, weight, bias) and s_in.dim() >= 2
            and _replica_layout(tuple(s_in.shape), weight) is not None):
        return None
    if s_in.shape[-1] != weight.shape[-1]:
        return None
    return _BPTTFunction.apply(s_in, weight, bias, p, bool(single_spike))
