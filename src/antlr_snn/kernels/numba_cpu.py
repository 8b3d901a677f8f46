"""The ``"numba"`` backend: the time loops compiled for the CPU (float32 and float64).

The recursions run as compiled loops instead of ~10 small PyTorch operations per step; the
backward pass computes dL/dV (Eq. 8) and both adjoint traces in one sweep. For a fully
connected layer (``fuses_dense``) sparse input spikes (latency code: well under 1% of the
entries) are projected and turned into the weight gradient by gathering / scattering weight
rows per spike instead of dense products. Spikes equal the reference's exactly (up to ties of
V with the threshold within rounding); real numbers agree to rounding (~1e-15 relative in
float64), because sums may be formed in another order.

numba compiles each kernel on first use into a user cache folder (``$NUMBA_CACHE_DIR`` if
set, else ``$XDG_CACHE_HOME/antlr-snn/numba`` or ``~/.cache/antlr-snn/numba``), never into
the installed package. Large work runs on ``torch.get_num_threads()`` numba threads.

Example:
    >>> import torch
    >>> from antlr_snn.kernels.numba_cpu import NumbaBackend
    >>> from antlr_snn.kernels.reference import ReferenceBackend
    >>> from antlr_snn.neuron import LIFParameters
    >>> x, p = torch.rand(20, 3, 4), LIFParameters.create(threshold=0.1)
    >>> fast = NumbaBackend().lif_forward(x, torch.zeros(4), p, False, False)
    >>> ref = ReferenceBackend().lif_forward(x, torch.zeros(4), p, False, False)
    >>> torch.equal(fast[0], ref[0])
    True
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import numpy as np
import torch

import numba

from antlr_snn import buffers


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "antlr-snn", "numba")


if not os.environ.get("NUMBA_CACHE_DIR"):  # the user's own choice wins
    numba.config.CACHE_DIR = _cache_dir()

from antlr_snn.kernels import _numba as nk  # noqa: E402 (after the cache folder is set)
from antlr_snn.kernels import _numba_synapse as nks  # noqa: E402

__all__ = ["NumbaBackend", "Events", "SPARSE_MAX_DENSITY", "NARROW_LAYER", "PARALLEL_MIN_WORK"]

#: Input spikes denser than this fraction of entries use the dense (BLAS) projection and
#: weight gradient. Measured on the project's 2-core CPU at 784 -> 800, T=100, B=16, float32
#: (forward projection + recurrence + weight gradient): the gather path was still ~1.8x faster
#: than the dense products at 10% density; latency-coded MNIST is at ~0.25%.
SPARSE_MAX_DENSITY = 0.1
#: Layers with at most this many neurons compute the gradients for the layer below in one
#: compiled pass; wider layers use BLAS products.
NARROW_LAYER = 64
#: Kernels over at least this many elements run on several threads.
PARALLEL_MIN_WORK = 1 << 17

_DTYPES = (torch.float32, torch.float64)


def _np(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a detached, contiguous CPU tensor."""
    t = t.detach()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t.contiguous().numpy()


def _consts(p, dtype, lambda_act: float = 0.0, lambda_tim: float = 0.0) -> np.ndarray:
    c = np.zeros(14, dtype=np.float32 if dtype == torch.float32 else np.float64)
    for i, v in ((nk.AI, p.alpha_i), (nk.AV, p.alpha_v), (nk.BI, p.beta_i), (nk.BV, p.beta_v),
                 (nk.BB, p.beta_bias), (nk.TH, p.threshold), (nk.SCALE, p.surrogate_scale),
                 (nk.WIDTH, p.surrogate_width), (nk.VMIN, p.vstar_min), (nk.LACT, lambda_act),
                 (nk.LTIM, lambda_tim), (nk.ONE, 1.0), (nk.ZERO, 0.0), (nk.HALF, 0.5)):
        c[i] = v
    return c


def _threads(work: int) -> int:
    """numba threads for ``work`` elements: 1 below :data:`PARALLEL_MIN_WORK`."""
    n = max(1, torch.get_num_threads()) if work >= PARALLEL_MIN_WORK else 1
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    if n > 1:
        numba.set_num_threads(n)
    return n


def _rows3(shape: tuple) -> tuple:
    """``[T, M, N]`` view of a ``[T, *shape]`` tensor: M the first dim after T (1 when there
    is none), N the rest. Rows are independent, so any such view serves the neuron."""
    shape = tuple(shape)
    if len(shape) <= 2:
        return (shape[0], 1, shape[-1] if len(shape) == 2 else 1)
    return (shape[0], shape[1], math.prod(shape[2:]))


def _np_dtype(dtype: torch.dtype):
    return np.float32 if dtype == torch.float32 else np.float64


def _bias_rows(bias: torch.Tensor, shape: tuple, M: int, N: int) -> np.ndarray:
    """``bias`` broadcast to a per-step ``shape`` as ``[1, N]`` (the same for every row) or
    ``[M, N]``."""
    b = bias.detach()
    if b.dim() < len(shape):
        b = b.reshape((1,) * (len(shape) - b.dim()) + tuple(b.shape))
    if len(shape) >= 2 and b.shape[0] == 1:
        return _np(b.expand((1,) + tuple(shape[1:])).reshape(1, N))
    return _np(b.expand(shape).reshape(M, N))


def surrogate(v: torch.Tensor, p) -> torch.Tensor:
    """:func:`antlr_snn.neuron.surrogate`, the same values bit for bit, with one buffer and
    two passes: the exp's argument in one compiled pass (rounded as torch's sub, abs and mul
    round it), then torch's own vectorised exp."""
    v = v.detach().contiguous()
    out = buffers.empty(v.shape, v.dtype)
    flat = out.numpy().reshape(-1)
    src, c = _np(v).reshape(-1), _consts(p, v.dtype)
    n = _threads(flat.size)
    if n > 1:
        nk.surrogate_arg_parallel(src, c, flat, n)
    else:
        nk.surrogate_arg(src, c, flat, 0, flat.size)
    out.exp_()
    return out if p.surrogate_scale == 1.0 else out.mul_(p.surrogate_scale)  # x * 1 == x


class Events(NamedTuple):
    """The nonzero entries of spikes ``[T, *batch, K]`` as CSR over their ``T * M`` rows.

    ``nnz`` is -1 when the spikes were too dense for the sparse path.
    """

    rowptr: torch.Tensor  # int64 [T * M + 1]
    idx: torch.Tensor     # int32 [capacity]
    val: torch.Tensor     # [capacity], the spike values

    @property
    def nnz(self) -> int:
        return int(self.rowptr[-1]) if self.rowptr.numel() else -1


def _replica_rows(s_shape: tuple, weight: torch.Tensor) -> int:
    """Rows per replica of spikes ``s_shape`` against ``weight`` ``[N, K]`` or ``[R, N, K]``."""
    if weight.dim() == 3:
        return max(1, s_shape[2])
    return max(1, math.prod(s_shape[1:-1]))


class NumbaBackend:
    """Compiled CPU kernels (float32, float64)."""

    name = "numba"
    fuses_dense = True

    def supports(self, t: torch.Tensor) -> bool:
        return t.device.type == "cpu" and t.dtype in _DTYPES and t.layout == torch.strided

    # ----------------------------------------------------------------- the neuron
    def lif_forward(self, x, bias, p, single_spike, keep_current):
        T, M, N = _rows3(x.shape)
        return self._forward(x, None, None, _bias_rows(bias, tuple(x.shape[1:]), M, N), 1, p,
                             single_spike, keep_current, tuple(x.shape), M, N)

    def _forward(self, x, events, weight, bias2, rows_per_rep, p, single_spike, keep_current,
                 shape, M, N):
        """Eq. 1-3 on the rows ``[T, M, N]`` of outputs of ``shape``; the input is the current
        ``x`` or the CSR ``events`` of a dense layer's input spikes with ``weight``."""
        dtype = (x if x is not None else weight).dtype
        T = shape[0]
        S = buffers.empty(shape, dtype)
        V = buffers.empty(shape, dtype)
        I = buffers.empty(shape, dtype) if keep_current else None
        np_dtype = _np_dtype(dtype)
        dummy3 = np.zeros((1, 1, 1), dtype=np_dtype)
        if events is not None:
            nnz = events.nnz
            xs, sparse = dummy3, True
            rowptr, idx = events.rowptr.numpy(), events.idx.numpy()[:nnz]
            val, wt = events.val.numpy()[:nnz], _wt(weight)
        else:
            xs, sparse = _np(x).reshape(T, M, N), False
            rowptr, idx = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
            val, wt = np.zeros(0, dtype=np_dtype), dummy3
        S3, V3 = S.numpy().reshape(T, M, N), V.numpy().reshape(T, M, N)
        I3 = I.numpy().reshape(T, M, N) if I is not None else dummy3
        kernel = nk.lif_forward_parallel if _threads(S.numel()) > 1 and M > 1 else nk.lif_forward
        kernel(xs, sparse, rowptr, idx, val, wt, bias2, rows_per_rep, _consts(p, dtype),
               bool(single_spike), bool(keep_current), S3, V3, I3)
        return S, V, I

    def lif_backward(self, grad_s, grad_d, grad_v, S, V, p, cfg, want_diff):
        T, M, N = shape3 = _rows3(S.shape)
        gs = grad_s if cfg.lambda_act != 0.0 else None
        gd = grad_d if cfg.lambda_tim != 0.0 else None
        dummy = np.zeros((1, 1, 1), dtype=_np_dtype(S.dtype))
        # sigma(V) from torch's exp (the reference's very values); A overwrites it row by row
        sig = surrogate(V, p) if gs is not None else None
        A = sig if sig is not None else buffers.empty(S.shape, S.dtype)
        Ad = buffers.empty(S.shape, S.dtype) if want_diff else None
        usum = torch.empty(S.shape[1:], dtype=S.dtype)
        flags = np.array([gs is not None, gd is not None, grad_v is not None,
                          bool(cfg.single_spike), bool(want_diff),
                          cfg.eps_derivative == "central"], dtype=np.bool_)
        arr = lambda t: dummy if t is None else _np(t).reshape(shape3)  # noqa: E731
        kernel = (nk.adjoint_backward_parallel if _threads(S.numel()) > 1 and M > 1
                  else nk.adjoint_backward)
        kernel(arr(gs), arr(sig), arr(gd), arr(grad_v), _np(S).reshape(shape3),
               _np(V).reshape(shape3), _consts(p, S.dtype, cfg.lambda_act, cfg.lambda_tim),
               flags, A.numpy().reshape(shape3), arr(Ad), usum.numpy().reshape(M, N))
        return A, Ad, usum

    def bptt_backward(self, grad_s, grad_v, S, V, I, p, single_spike):
        T, M, N = shape3 = _rows3(S.shape)
        dummy = np.zeros((1, 1, 1), dtype=_np_dtype(S.dtype))
        GI = surrogate(V, p)  # sigma(V); overwritten in place by GI, row by row
        gvsum = torch.empty(S.shape[1:], dtype=S.dtype)
        flags = np.array([grad_s is not None, grad_v is not None, bool(single_spike)],
                         dtype=np.bool_)
        arr = lambda t: dummy if t is None else _np(t).reshape(shape3)  # noqa: E731
        g3 = GI.numpy().reshape(shape3)
        kernel = (nk.bptt_backward_parallel if _threads(S.numel()) > 1 and M > 1
                  else nk.bptt_backward)
        kernel(arr(grad_s), arr(grad_v), g3, _np(S).reshape(shape3), _np(V).reshape(shape3),
               _np(I).reshape(shape3), _consts(p, S.dtype), flags, g3,
               gvsum.numpy().reshape(M, N))
        return GI, gvsum

    def binary_check(self, x: torch.Tensor) -> Optional[str]:
        if x.numel() == 0:
            return None
        code = nk.binary_check(_np(x).reshape(-1))
        return (None, "nan", "nonbinary")[int(code)]

    # ----------------------------------------------------------------- a dense synapse
    def events(self, s: torch.Tensor, max_density: float = SPARSE_MAX_DENSITY) -> Events:
        """CSR of the spikes ``s [T, *batch, K]``; ``nnz == -1`` when denser than
        ``max_density`` (the scan stops as soon as that bound is exceeded)."""
        s2 = _np(s).reshape(-1, s.shape[-1])
        cap = int(max_density * s2.size)
        rowptr = torch.empty(s2.shape[0] + 1, dtype=torch.int64)
        idx = torch.empty(cap, dtype=torch.int32)
        val = torch.empty(cap, dtype=s.dtype)
        nnz = nks.scan_events(s2, cap, rowptr.numpy(), idx.numpy(), val.numpy())
        if nnz < 0:
            rowptr[-1] = -1
        return Events(rowptr, idx, val)

    def dense_forward(self, s_in, weight, bias, p, single_spike, keep_current):
        """Projection ``s_in @ W^T`` and Eq. 1-3 of a fully connected layer: ``(S, V, I,
        events)``. ``weight`` is ``[N, K]`` (``bias [N]``) or ``[R, N, K]`` for ``R``
        replica networks on ``s_in [T, R, B, K]`` (``bias [R, N]``)."""
        ev = self.events(s_in)
        n_out = weight.shape[-2]
        shape = tuple(s_in.shape[:-1]) + (n_out,)
        rows = (shape[0], math.prod(shape[1:-1]), n_out)
        rpr = _replica_rows(tuple(s_in.shape), weight)
        bias2 = _np(bias.reshape(-1, n_out))
        x = None
        if ev.nnz < 0:
            with torch.no_grad():
                x = torch.matmul(s_in, weight.transpose(-1, -2)) if weight.dim() == 2 else \
                    torch.einsum("trbk,rnk->trbn", s_in, weight)
        S, V, I = self._forward(x, ev if x is None else None, weight, bias2, rpr, p,
                                single_spike, keep_current, shape, rows[1], rows[2])
        return S, V, I, ev

    def dense_backward(self, A, A_diff, s_in, weight, ev: Events, p, want_s, want_d, want_w):
        """``(beta_i A @ W, -beta_i (A_diff @ W) * s_in, beta_i A^T s_in)``, each None unless
        wanted: Eq. 9, Eq. 10 and the weight gradient of a fully connected layer."""
        gs = gd = gw = None
        sparse = ev.nnz >= 0
        if want_w:
            gw = self._weight_grad(A, s_in, ev) if sparse else _reference_weight_grad(A, s_in)
            if p.beta_i != 1.0:
                gw.mul_(p.beta_i)
        if (want_s or want_d) and A.shape[-1] <= NARROW_LAYER:
            gs, gd = self._narrow_input_grads(A, A_diff, weight, s_in, ev, p, want_s, want_d)
        else:
            if want_s:
                gs = _times_weight(A, weight)
                if p.beta_i != 1.0:
                    gs.mul_(p.beta_i)
            if want_d:
                gd = _times_weight(A_diff, weight).mul_(-p.beta_i).mul_(s_in)
        return gs, gd, gw

    def _weight_grad(self, A, s_in, ev: Events):
        n_out, k = A.shape[-1], s_in.shape[-1]
        replicas = A.dim() == 4 and s_in.dim() == 4
        R = s_in.shape[1] if replicas else 1
        rpr = max(1, s_in.shape[2]) if replicas else max(1, math.prod(s_in.shape[1:-1]))
        nnz = ev.nnz
        g = torch.empty(R, n_out, k, dtype=A.dtype)
        start, erow, evals = nks.bucket_events(ev.rowptr.numpy(), ev.idx.numpy()[:nnz],
                                              ev.val.numpy()[:nnz], rpr, R, k)
        blocks = R * ((k + 15) // 16)
        a2 = _np(A).reshape(-1, n_out)
        n = _threads(g.numel())
        if n > 1:
            nks.weight_grad_parallel(start, erow, evals, a2, g.numpy(), blocks, n)
        else:
            nks.weight_grad_blocks(start, erow, evals, a2, g.numpy(), 0, blocks)
        return g if replicas else g[0]

    def _narrow_input_grads(self, A, A_diff, weight, s_in, ev, p, want_s, want_d):
        K, N = s_in.shape[-1], A.shape[-1]
        rpr = A.shape[2] if weight.dim() == 3 else max(1, math.prod(A.shape[1:-1]))
        w3 = weight.detach()
        w3 = (w3.unsqueeze(0) if w3.dim() == 2 else w3).contiguous()
        gs = buffers.empty(s_in.shape, A.dtype) if want_s else None
        gd = buffers.empty(s_in.shape, A.dtype) if want_d else None
        dummy = np.zeros((1, 1), dtype=_np_dtype(A.dtype))
        flat = lambda t, n: dummy if t is None else _np(t).reshape(-1, n)  # noqa: E731
        A2 = flat(A, N)
        sparse = ev.nnz >= 0
        if sparse:
            nnz = ev.nnz
            rowptr, idx, val = ev.rowptr.numpy(), ev.idx.numpy()[:nnz], ev.val.numpy()[:nnz]
        else:
            rowptr, idx = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
            val = np.zeros(0, dtype=A2.dtype)
        args = (A2, flat(A_diff if want_d else None, N), w3.numpy(), flat(s_in, K), sparse,
                rowptr, idx, val, rpr, _consts(p, A.dtype), bool(want_s), bool(want_d),
                flat(gs, K), flat(gd, K))
        n = _threads(s_in.numel())
        if n > 1:
            nks.input_grads_parallel(*args, n)
        else:
            nks.input_grads(*args, 0, A2.shape[0])
        return gs, gd


def _times_weight(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``a @ W``: ``[T, *batch, N] x [N, K]``, or per replica ``[T, R, B, N] x [R, N, K]``
    without the copy of W per step that torch.matmul's broadcasting would make."""
    if weight.dim() == 3:
        return torch.einsum("trbn,rnk->trbk", a, weight)
    return torch.matmul(a, weight)


def _wt(weight: torch.Tensor) -> np.ndarray:
    """Weights as ``[R, K, N]`` (transposed, contiguous) numpy for row gathers."""
    w = weight.detach()
    w3 = w.unsqueeze(0) if w.dim() == 2 else w
    return w3.transpose(-1, -2).contiguous().numpy()


def _reference_weight_grad(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``sum_{t, batch} a[t, ..., j] s[t, ..., i]`` by dense products (the weight's shape)."""
    if a.dim() == 4 and s.dim() == 4:  # replicas: [T, R, B, N]
        return torch.einsum("trbo,trbi->roi", a, s)
    return a.reshape(-1, a.shape[-1]).transpose(0, 1) @ s.reshape(-1, s.shape[-1])
