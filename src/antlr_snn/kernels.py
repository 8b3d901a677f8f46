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

The public functions (``events``, ``project``, ``weight_grad``, ``lif_recurrence``,
``lif_layer``, ``adjoint_recurrence``, ``lif_backward``, ``input_grads``, ``bptt_forward``,
``bptt_backward``, ``binary_check``) dispatch: the fast path is taken only for CPU tensors of dtype
float32/float64 with the backend ``"auto"``; CUDA and every other case use the reference
(the ``lif_backward``/``input_grads``/``bptt_forward`` helpers return None there and the
callers in :mod:`antlr_snn.methods` run their pure-PyTorch code). This module computes; the
autograd Functions that use it live in :mod:`antlr_snn.methods`.
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

from antlr_snn import buffers
from antlr_snn.neuron import LIFParameters
from antlr_snn.neuron import adjoint_recurrence as reference_adjoint_recurrence
from antlr_snn.neuron import lif_recurrence as reference_lif_recurrence
from antlr_snn.errors import UserError

__all__ = ["project", "weight_grad", "lif_recurrence", "lif_layer", "adjoint_recurrence",
           "lif_backward", "events", "input_grads", "binary_check", "zeros_like", "bptt_forward",
           "bptt_backward", "Events",
           "reference_project", "reference_weight_grad", "reference_lif_recurrence",
           "reference_adjoint_recurrence", "get_backend", "set_backend", "use_backend",
           "fast_available", "BACKENDS", "SPARSE_MAX_DENSITY", "NARROW_LAYER",
           "PARALLEL_MIN_WORK", "calls"]

BACKENDS = ("auto", "reference")

#: Input spikes denser than this fraction of entries use the dense (BLAS) projection and
#: weight gradient. Measured on the project's 2-core CPU at 784 -> 800, T=100, B=16, float32
#: (forward projection + recurrence + weight gradient): the gather path was still ~1.8x faster
#: than the dense products at 10% density; latency-coded MNIST is at ~0.25%.
SPARSE_MAX_DENSITY = 0.1

#: How often each fast kernel ran in this process (for tests and benchmarks).
calls: Counter = Counter()

_FAST_DTYPES = (torch.float32, torch.float64)
_nk = None            # the compiled module, imported on first use
_nk_error: Optional[BaseException] = None


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise UserError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def _backend_from_env() -> str:
    name = os.environ.get("ANTLR_SNN_KERNELS", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        import warnings
        warnings.warn(f"ANTLR_SNN_KERNELS={name!r} is not one of {', '.join(BACKENDS)}; using 'auto'",
                      stacklevel=2)
        return "auto"
    return name


_backend = _backend_from_env()


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


#: Compiled kernels over at least this many elements split their independent rows across
#: ``torch.get_num_threads()`` threads (the kernels release the GIL).
PARALLEL_MIN_WORK = 1 << 17
_pool = None
_pool_key = None


def _run_rows(kernel, rows: int, work: int, *args) -> None:
    """``kernel(*args, m0, m1)`` over rows ``[0, rows)``, split across threads when large."""
    n = min(max(1, torch.get_num_threads()), rows) if work >= PARALLEL_MIN_WORK else 1
    if n <= 1:
        kernel(*args, 0, rows)
        return
    global _pool, _pool_key
    key = (os.getpid(), n)  # a forked child must not reuse the parent's (dead) threads
    if _pool_key != key:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="antlr_snn")
        _pool_key = key
    bounds = [rows * i // n for i in range(n + 1)]
    futures = [_pool.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, n)]
    kernel(*args, bounds[0], bounds[1])
    for f in futures:
        f.result()


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
    """:func:`antlr_snn.neuron.surrogate`, the same values bit for bit, with one buffer and
    two passes instead of four buffers and five passes: the exp's argument in one compiled
    pass (rounded as torch's sub, abs and mul round it), then torch's own vectorised exp."""
    v = v.detach()
    if _fast(v) and v.is_contiguous():
        out = buffers.empty(v.shape, v.dtype)
        flat = out.numpy().reshape(-1)
        _run_rows(_numba().surrogate_arg, flat.size, flat.size, _np(v).reshape(-1),
                  _consts(p, v.dtype), flat)
        out.exp_()
    else:
        out = torch.sub(v, p.threshold)
        out.abs_().mul_(-p.surrogate_width).exp_()
    return out if p.surrogate_scale == 1.0 else out.mul_(p.surrogate_scale)  # x * 1 == x


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
    rowptr = buffers.empty((s2.shape[0] + 1,), torch.int64).numpy()
    idx = buffers.empty((max_nnz,), torch.int32).numpy()
    val = buffers.empty((max_nnz,), s.dtype).numpy()
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
    rpr = _replica_layout(tuple(s.shape), weight) if s.dim() >= 2 else None
    if not (_events_match(events, s) and _fast(s, weight) and rpr is not None
            and s.shape[-1] == weight.shape[-1]):
        return reference_project(s, weight)
    nk = _numba()
    n_out = weight.shape[-2]
    out = buffers.empty((*s.shape[:-1], n_out), s.dtype)
    nk.project_csr(events.rowptr, events.idx, events.val, _wt(weight), rpr,
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
    start, erow, evals = nk.bucket_events(events.rowptr, events.idx, events.val, rpr, R, k)
    blocks = R * ((k + 15) // 16)
    _run_rows(nk.weight_grad_blocks, blocks, g.numel(), start, erow, evals,
              _np(a).reshape(-1, n_out), g.numpy())
    calls["weight_grad"] += 1
    return g if replicas else g[0]


def _bias_rows(bias: torch.Tensor, shape: tuple):
    """``bias`` as ``[R, N]`` plus rows per replica for outputs of ``shape``, or None when its
    broadcast is unusual (then the reference path handles it)."""
    n = shape[-1]
    if bias.numel() == n and (bias.dim() == 1 or all(d == 1 for d in bias.shape[:-1])):
        return bias.reshape(1, n), max(1, math.prod(shape[1:-1]))
    if len(shape) == 4 and bias.dim() == 3 and tuple(bias.shape) == (shape[1], 1, n):
        return bias.reshape(shape[1], n), max(1, shape[2])
    return None


def lif_recurrence(x: torch.Tensor, bias: torch.Tensor, p: LIFParameters,
                   single_spike: bool = False):
    """Eq. 1-3 given the synaptic input for all steps; see :func:`antlr_snn.neuron.lif_recurrence`."""
    out = _lif_forward(bias, p, single_spike, False, x=x)
    if out is None:
        return reference_lif_recurrence(x, bias, p, single_spike)
    return out[:2]


def lif_layer(s_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, p: LIFParameters,
              single_spike: bool = False, events: Optional[Events] = None):
    """Projection and recurrence of one layer, ``(S, V)``, with no autograd graph.

    ``bias`` has its broadcast shape (``[N]``, or ``[R, 1, N]`` for replicas). With ``events``
    of ``s_in`` the compiled kernel gathers each step's input on the fly (no ``[T, B, N]``
    buffer for it); otherwise it is ``lif_recurrence(project(s_in, weight), ...)``.
    """
    if _events_match(events, s_in) and _fast(s_in, weight, bias):
        out = _lif_forward(bias, p, single_spike, False, s_in=s_in, weight=weight, events=events)
        if out is not None:
            return out[:2]
    with torch.no_grad():
        x = project(s_in, weight)
    return lif_recurrence(x, bias, p, single_spike)


def _lif_forward(bias, p, single_spike, keep_current, x=None, s_in=None, weight=None,
                 events=None):
    """Compiled Eq. 1-3: ``(S, V, I or None)``, or None where the fast path does not apply.

    The input is ``x`` (dense synaptic input) or ``events`` of ``s_in`` with ``weight``.
    """
    import numpy as np
    sparse = events is not None
    src = s_in if sparse else x
    if src is None or src.dim() < 2 or not _fast(src, bias, weight if sparse else None):
        return None
    shape = tuple(src.shape[:-1]) + ((weight.shape[-2],) if sparse else (src.shape[-1],))
    b = _bias_rows(bias, shape)
    if b is None:
        return None
    bias2, rpr = b
    nk = _numba()
    dtype = src.dtype
    T, n = shape[0], shape[-1]
    S = buffers.empty(shape, dtype)
    V = buffers.empty(shape, dtype)
    I = buffers.empty(shape, dtype) if keep_current else torch.empty(1, 1, 1, dtype=dtype)
    shape3 = (T, -1, n)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    if sparse:
        xs = np.zeros((1, 1, 1), dtype=np_dtype)
        rowptr, idx, val, wt = events.rowptr, events.idx, events.val, _wt(weight)
    else:
        xs = _np(x).reshape(shape3)
        rowptr, idx = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
        val, wt = np.zeros(0, dtype=np_dtype), np.zeros((1, 1, 1), dtype=np_dtype)
    S3 = S.numpy().reshape(shape3)
    _run_rows(nk.lif_forward, S3.shape[1], S.numel(), xs, sparse, rowptr, idx, val, wt,
              _np(bias2), rpr, _consts(p, dtype), bool(single_spike), bool(keep_current), S3,
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
    A = sig if sig is not None else buffers.empty(S.shape, S.dtype)
    U = buffers.empty(S.shape, S.dtype) if want_u else None
    Ad = buffers.empty(S.shape, S.dtype) if want_ad else None
    usum = torch.empty(S.shape[1:], dtype=S.dtype)
    flags = np.array([gs is not None, gd is not None, gv is not None, bool(single), want_ad,
                      want_u], dtype=np.bool_)
    arr = lambda t: dummy if t is None else _np(t).reshape(shape3)  # noqa: E731
    S3 = _np(S).reshape(shape3)
    _run_rows(nk.adjoint_backward, S3.shape[1], S.numel(), arr(gs), arr(sig), arr(gd), arr(gv),
              S3, _np(V).reshape(shape3), _consts(p, S.dtype, lam_act, lam_tim), flags, arr(U),
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


#: Layers with at most this many neurons compute the gradients for the layer below in one
#: compiled pass (:func:`input_grads`); wider layers use BLAS products.
NARROW_LAYER = 64


def input_grads(A: torch.Tensor, A_diff: Optional[torch.Tensor], weight: torch.Tensor,
                s_in: torch.Tensor, p: LIFParameters, want_s: bool, want_d: bool,
                events: Optional[Events] = None):
    """``(beta_i A @ W, -beta_i (A_diff @ W) * s_in)`` (each None unless wanted), or None
    where the fast path does not apply; for narrow layers (``N <= NARROW_LAYER``) only.

    With ``events`` of ``s_in`` the timing channel is evaluated at the spikes only (it is
    zero elsewhere)."""
    if not (want_s or want_d) or A.shape[-1] > NARROW_LAYER:
        return None
    if not _fast(A, A_diff, weight, s_in) or A.shape[:-1] != s_in.shape[:-1] or A.dim() < 2:
        return None
    replicas = weight.dim() == 3
    if replicas and not (A.dim() == 4 and A.shape[1] == weight.shape[0]):
        return None
    import numpy as np
    nk = _numba()
    K, N = s_in.shape[-1], A.shape[-1]
    rpr = A.shape[2] if replicas else max(1, _rows(A))
    w3 = weight.detach()
    w3 = (w3.unsqueeze(0) if w3.dim() == 2 else w3).contiguous()
    gs = buffers.empty(s_in.shape, A.dtype) if want_s else None
    gd = buffers.empty(s_in.shape, A.dtype) if want_d else None
    dummy = np.zeros((1, 1), dtype=_np(A).dtype)
    flat = lambda t, n: dummy if t is None else _np(t).reshape(-1, n)  # noqa: E731
    A2 = flat(A, N)
    sparse = _events_match(events, s_in)
    if sparse:
        rowptr, idx, val = events.rowptr, events.idx, events.val
    else:
        rowptr, idx = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
        val = np.zeros(0, dtype=A2.dtype)
    _run_rows(nk.input_grads, A2.shape[0], s_in.numel(), A2, flat(A_diff if want_d else None, N),
              w3.numpy(), flat(s_in, K), sparse, rowptr, idx, val, rpr, _consts(p, A.dtype),
              bool(want_s), bool(want_d), flat(gs, K), flat(gd, K))
    calls["input_grads"] += 1
    return gs, gd


def zeros_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.zeros_like(t)`` (contiguous); on the fast path filled by one compiled loop on
    the calling thread, which avoids a multi-threaded fill (a wait on a busy machine)."""
    if not _fast(t):
        return torch.zeros_like(t, memory_format=torch.contiguous_format)
    out = buffers.empty(t.shape, t.dtype)
    if out.numel():
        flat = out.numpy().reshape(-1)
        _numba().fill_zero(flat, 0, flat.size)
    return out


def binary_check(x: torch.Tensor) -> Optional[str]:
    """``None`` if every entry of ``x`` is 0 or 1; else ``"nan"`` (some entry is NaN) or
    ``"nonbinary"``. One compiled pass on CPU (the reference needs several torch passes)."""
    if _fast(x) and x.is_contiguous() and x.numel() > 0:
        code = _numba().binary_check(_np(x).reshape(-1))
        calls["binary_check"] += 1
        return (None, "nan", "nonbinary")[int(code)]
    if torch.isnan(x).any():
        return "nan"
    if ((x != 0) & (x != 1)).any():
        return "nonbinary"
    return None


# --------------------------------------------------------------------------- BPTT
def bptt_forward(s_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, p: LIFParameters,
                 single_spike: bool = False, keep_current: bool = True):
    """Compiled Eq. 1-3 keeping the current I for the BPTT adjoint: ``(S, V, I, events)``
    (I is None without ``keep_current``), or None where the fast path does not apply.
    ``bias`` is ``[N]`` or ``[R, N]`` (replicas)."""
    if not (_fast(s_in, weight, bias) and s_in.dim() >= 2 and s_in.shape[-1] == weight.shape[-1]
            and _replica_layout(tuple(s_in.shape), weight) is not None):
        return None
    bias_view = bias.reshape((weight.shape[0],) if weight.dim() == 2
                             else (weight.shape[0], 1, weight.shape[1]))
    if _bias_rows(bias_view, tuple(s_in.shape[:-1]) + (weight.shape[-2],)) is None:
        return None
    ev = events(s_in, weight)
    if ev is not None:
        out = _lif_forward(bias_view, p, single_spike, keep_current, s_in=s_in, weight=weight,
                           events=ev)
    else:
        with torch.no_grad():
            x = project(s_in, weight)
        out = _lif_forward(bias_view, p, single_spike, keep_current, x=x)
    return (*out, ev)


def bptt_backward(grad_s, grad_v, S: torch.Tensor, V: torch.Tensor, I: torch.Tensor,
                  p: LIFParameters, single_spike: bool):
    """Compiled adjoint of Eq. 1-3 with the reset path attached: ``(dL/dI, sum_t dL/dV)``,
    the latter of shape ``S.shape[1:]`` (for the bias). Inputs come from :func:`bptt_forward`."""
    import numpy as np
    nk = _numba()
    T, n = S.shape[0], S.shape[-1]
    shape3 = (T, -1, n)
    dummy = np.zeros((1, 1, 1), dtype=_np(S).dtype)
    GI = _surrogate(V, p)  # sigma(V); overwritten in place by dL/dI, row by row
    gvsum = torch.empty(S.shape[1:], dtype=S.dtype)
    flags = np.array([grad_s is not None, grad_v is not None, bool(single_spike)], dtype=np.bool_)
    arr = lambda t: dummy if t is None else _np(t).reshape(shape3)  # noqa: E731
    S3 = _np(S).reshape(shape3)
    _run_rows(nk.bptt_backward, S3.shape[1], S.numel(), arr(grad_s), arr(grad_v), arr(GI), S3,
              _np(V).reshape(shape3), _np(I).reshape(shape3), _consts(p, S.dtype), flags,
              GI.numpy().reshape(shape3), gvsum.numpy().reshape(-1, n))
    calls["bptt_backward"] += 1
    return GI, gvsum
