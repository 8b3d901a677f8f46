"""Compiled CPU kernels (numba) of the ``numba`` backend (:mod:`antlr_snn.kernels.numba_cpu`).

Every function here works on contiguous numpy arrays that share memory with torch tensors and
writes its results into arrays the caller allocated. The arithmetic mirrors the pure-PyTorch
reference operation by operation (same order, same dtype), so that spikes agree exactly and
real numbers to rounding. Constants travel in a small array ``c`` of the data's dtype so that
float32 data is computed in float32, as torch does.

Layouts: a time series is ``[T, M, N]`` with ``M`` rows (the flattened batch, replica-major).
Row ``m`` of a step belongs to replica ``(m // rows_per_rep) % R``. Rows are independent: each
row kernel ``*_rows`` has a serial driver and a parallel one (``prange``, numba's threads),
and the caller picks the parallel one for large work.
Sparse spikes are CSR over the ``T * M`` rows: ``rowptr[T*M+1]``, column ``idx`` and ``val``;
the synapse's event kernels (CSR scan, weight and input gradients) are in
:mod:`antlr_snn.kernels._numba_synapse`.

All kernels are compiled with ``cache=True`` into the user cache folder that
:mod:`antlr_snn.kernels.numba_cpu` sets: the first call in a fresh environment compiles (a few
seconds each), later processes load the cache. Compilation happens per dtype (float32,
float64) on first use; the parallel drivers compile only when first used.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# indices into the constant array ``c``
AI, AV, BI, BV, BB, TH, SCALE, WIDTH, VMIN, LACT, LTIM, ONE, ZERO, HALF = range(14)


@njit(cache=True, nogil=True, inline="always")
def _gather_row(rowptr, idx, val, wr, row, out):
    """``out = sum_e val[e] wr[idx[e]]`` over the events of CSR row ``row`` (``wr [K, N]``)."""
    for n in range(out.shape[0]):
        out[n] = 0
    for e in range(rowptr[row], rowptr[row + 1]):
        w = wr[idx[e]]
        v = val[e]
        for n in range(out.shape[0]):
            out[n] += v * w[n]


@njit(cache=True, nogil=True)
def _lif_row(x, sparse, rowptr, idx, val, wt, bias, rows_per_rep, c, single_spike,
             keep_current, S, V, I, m):
    """Eq. 1-3 for all steps of row ``m``; mirrors :func:`antlr_snn.neuron.lif_forward`.

    The synaptic input (before the beta_i scale) is ``x [T, M, N]``, or with ``sparse`` it is
    gathered step by step from the CSR spikes and ``wt [R, K, N]`` exactly as
    a dense projection would, without storing it. ``bias [Rb, N]``: row m uses
    ``bias[(m // rows_per_rep) % Rb]``. Single-spike neurons are held at reset (V = I = 0)
    after their spike. With ``keep_current`` also stores I.
    """
    T, M, N = S.shape
    Rb = bias.shape[0]
    Rw = wt.shape[0]
    ai, av, bi, bv, bb, th = c[AI], c[AV], c[BI], c[BV], c[BB], c[TH]
    one, zero = c[ONE], c[ZERO]
    xr = np.zeros(N, dtype=S.dtype)
    i_t = np.zeros(N, dtype=S.dtype)
    v_t = np.zeros(N, dtype=S.dtype)
    keep = np.ones(N, dtype=S.dtype)
    alive = np.ones(N, dtype=S.dtype)
    bterm = np.empty(N, dtype=S.dtype)
    rb = (m // rows_per_rep) % Rb
    for n in range(N):
        bterm[n] = bb * bias[rb, n]
    for t in range(T):
        if sparse:
            _gather_row(rowptr, idx, val, wt[(m // rows_per_rep) % Rw], t * M + m, xr)
            xt = xr
        else:
            xt = x[t, m]
        St = S[t, m]
        Vt = V[t, m]
        if single_spike:
            for n in range(N):
                i = (i_t[n] * keep[n] * ai + bi * xt[n]) * alive[n]
                v = (v_t[n] * keep[n] * av + bv * i + bterm[n]) * alive[n]
                sp = one if v >= th else zero
                sp = sp * alive[n]
                alive[n] = alive[n] * (one - sp)
                i_t[n] = i
                v_t[n] = v
                keep[n] = one - sp
                St[n] = sp
                Vt[n] = v
        else:
            for n in range(N):
                i = i_t[n] * keep[n] * ai + bi * xt[n]
                v = v_t[n] * keep[n] * av + bv * i + bterm[n]
                sp = one if v >= th else zero
                i_t[n] = i
                v_t[n] = v
                keep[n] = one - sp
                St[n] = sp
                Vt[n] = v
        if keep_current:
            It = I[t, m]
            for n in range(N):
                It[n] = i_t[n]


@njit(cache=True, nogil=True)
def lif_forward(x, sparse, rowptr, idx, val, wt, bias, rows_per_rep, c, single_spike,
                keep_current, S, V, I):
    """:func:`_lif_row` over every row, serially."""
    for m in range(S.shape[1]):
        _lif_row(x, sparse, rowptr, idx, val, wt, bias, rows_per_rep, c, single_spike,
                 keep_current, S, V, I, m)


@njit(cache=True, nogil=True, parallel=True)
def lif_forward_parallel(x, sparse, rowptr, idx, val, wt, bias, rows_per_rep, c, single_spike,
                         keep_current, S, V, I):
    """:func:`_lif_row` over every row, rows in parallel."""
    for m in prange(S.shape[1]):
        _lif_row(x, sparse, rowptr, idx, val, wt, bias, rows_per_rep, c, single_spike,
                 keep_current, S, V, I, m)


@njit(cache=True, nogil=True)
def _adjoint_row(gs, sig, gd, gv, S, V, c, flags, A, Ad, usum, m):
    """dL/dV (Eq. 8) and the reverse recursions of :func:`antlr_snn.neuron.adjoint` for row m.

    ``sig`` is sigma(V), computed by the caller with torch's vectorised exp (the very values
    of :func:`antlr_snn.neuron.surrogate`); ``A`` may be the same array (each row of ``sig``
    is read before that row of ``A`` is written). ``flags``: [use_act, use_tim, use_gv,
    single_spike, want_ad, central]. Writes A (adjoint of I), optionally ``Ad`` (the timing
    channel, backward or central kernel derivative) and ``usum[m] = sum_t U``.
    """
    T, M, N = S.shape
    ai, av, bv = c[AI], c[AV], c[BV]
    vmin = c[VMIN]
    lact, ltim = c[LACT], c[LTIM]
    one, zero = c[ONE], c[ZERO]
    use_act, use_tim, use_gv, single = flags[0], flags[1], flags[2], flags[3]
    want_ad, central = flags[4], flags[5]
    u = np.zeros(N, dtype=S.dtype)
    a = np.zeros(N, dtype=S.dtype)
    q = np.zeros(N, dtype=S.dtype)
    a_next = np.zeros(N, dtype=S.dtype)
    us = np.zeros(N, dtype=S.dtype)
    g = np.empty(N, dtype=S.dtype)
    keep = np.empty(N, dtype=S.dtype)
    first = np.full(N, T, dtype=np.int64)
    if single:
        for t in range(T):
            St = S[t, m]
            for n in range(N):
                if St[n] != 0 and first[n] == T:
                    first[n] = t
    for t in range(T - 1, -1, -1):
        St = S[t, m]
        # dL/dV[t] (Eq. 8), in the reference's order of operations; simple loops vectorise
        if use_act:
            sgt = sig[t, m]
            gst = gs[t, m]
            for n in range(N):
                g[n] = zero + lact * sgt[n] * gst[n]
        else:
            for n in range(N):
                g[n] = zero
        if use_tim:  # only at spikes: S = 0 contributes an exact zero
            gdt = gd[t, m]
            Vt = V[t, m]
            for n in range(N):
                if St[n] != 0:
                    prev = zero
                    if t > 0:
                        prev = (one - S[t - 1, m, n]) * V[t - 1, m, n]
                    vs = Vt[n] - prev
                    if vs < vmin:
                        vs = vmin
                    g[n] = g[n] - ltim * St[n] * gdt[n] / vs
        if use_gv:
            gvt = gv[t, m]
            for n in range(N):
                g[n] = g[n] + gvt[n]
        if single:  # held at reset after the spike: nothing there depends on the inputs
            for n in range(N):
                if first[n] < t:
                    g[n] = zero
        for n in range(N):
            keep[n] = one - St[n]
        for n in range(N):
            a_next[n] = a[n]
        for n in range(N):
            u[n] = u[n] * keep[n] * av + g[n]
        for n in range(N):
            a[n] = a[n] * keep[n] * ai + bv * u[n]
        for n in range(N):
            us[n] += u[n]
        At = A[t, m]
        for n in range(N):
            At[n] = a[n]
        if want_ad and central:
            for n in range(N):
                q[n] = q[n] * keep[n] * ai + g[n]
            Adt = Ad[t, m]
            for n in range(N):
                Adt[n] = (av * a[n] + bv * ai * q[n] - keep[n] * a_next[n]) / (one + one)
        elif want_ad:
            Adt = Ad[t, m]
            for n in range(N):
                Adt[n] = a[n] - keep[n] * a_next[n]
    for n in range(N):
        usum[m, n] = us[n]


@njit(cache=True, nogil=True)
def adjoint_backward(gs, sig, gd, gv, S, V, c, flags, A, Ad, usum):
    """:func:`_adjoint_row` over every row, serially."""
    for m in range(S.shape[1]):
        _adjoint_row(gs, sig, gd, gv, S, V, c, flags, A, Ad, usum, m)


@njit(cache=True, nogil=True, parallel=True)
def adjoint_backward_parallel(gs, sig, gd, gv, S, V, c, flags, A, Ad, usum):
    """:func:`_adjoint_row` over every row, rows in parallel."""
    for m in prange(S.shape[1]):
        _adjoint_row(gs, sig, gd, gv, S, V, c, flags, A, Ad, usum, m)


@njit(cache=True, nogil=True)
def _bptt_row(gs, gv, sig, S, V, I, c, flags, GI, gvsum, m):
    """Adjoint of Eq. 1-3 with the reset path attached, row m; mirrors
    :func:`antlr_snn.neuron.bptt_backward`.

    ``sig`` is sigma(V) as computed by torch; ``GI`` may be the same array (each row of
    ``sig`` is read before that row of ``GI`` is written). ``flags``: [use_gs, use_gv,
    single_spike]. Writes ``GI`` (the current gets beta_i GI) and ``gvsum[m] = sum_t dL/dV``.
    """
    T, M, N = S.shape
    ai, av, bv = c[AI], c[AV], c[BV]
    one, zero = c[ONE], c[ZERO]
    use_gs, use_gv, single = flags[0], flags[1], flags[2]
    gi_next = np.zeros(N, dtype=S.dtype)
    gv_next = np.zeros(N, dtype=S.dtype)
    vs = np.zeros(N, dtype=S.dtype)
    first = np.full(N, T, dtype=np.int64)
    if single:
        for t in range(T):
            St = S[t, m]
            for n in range(N):
                if St[n] != 0 and first[n] == T:
                    first[n] = t
    for t in range(T - 1, -1, -1):
        St = S[t, m]
        Vt = V[t, m]
        It = I[t, m]
        Gt = GI[t, m]
        for n in range(N):
            gsp = zero
            if use_gs:
                gsp = gs[t, m, n]
            if t < T - 1:  # s_t enters step t+1 through the reset factor (1 - s_t)
                gsp = gsp - ai * It[n] * gi_next[n] - av * Vt[n] * gv_next[n]
            alive = one
            if single and first[n] < t:
                alive = zero
            keep = one - St[n]
            gvt = gsp * (sig[t, m, n] * alive) + av * keep * gv_next[n]
            if use_gv:
                gvt = gvt + gv[t, m, n]
            if single:
                gvt = gvt * alive
            git = bv * gvt + ai * keep * gi_next[n]
            if single:
                git = git * alive
            gv_next[n] = gvt
            gi_next[n] = git
            vs[n] += gvt
            Gt[n] = git
    for n in range(N):
        gvsum[m, n] = vs[n]


@njit(cache=True, nogil=True)
def bptt_backward(gs, gv, sig, S, V, I, c, flags, GI, gvsum):
    """:func:`_bptt_row` over every row, serially."""
    for m in range(S.shape[1]):
        _bptt_row(gs, gv, sig, S, V, I, c, flags, GI, gvsum, m)


@njit(cache=True, nogil=True, parallel=True)
def bptt_backward_parallel(gs, gv, sig, S, V, I, c, flags, GI, gvsum):
    """:func:`_bptt_row` over every row, rows in parallel."""
    for m in prange(S.shape[1]):
        _bptt_row(gs, gv, sig, S, V, I, c, flags, GI, gvsum, m)


@njit(cache=True, nogil=True)
def binary_check(s):
    """0 if every entry of the flat array ``s`` is 0 or 1, 1 if one is NaN, else 2."""
    bad = 0
    for k in range(s.size):  # branch-free count: vectorises
        x = s[k]
        bad += (x != 0) & (x != 1)
    if bad == 0:
        return 0
    for k in range(s.size):
        if s[k] != s[k]:
            return 1
    return 2


@njit(cache=True, nogil=True)
def surrogate_arg(v, c, out, i0, i1):
    """``out = (-width) * |v - threshold|`` over the flat range [i0, i1): the argument of the
    surrogate's exp, rounded exactly as torch's sub/abs/mul steps round it."""
    th, negw = c[TH], -c[WIDTH]
    vs = v[i0:i1]
    os_ = out[i0:i1]
    for i in range(vs.size):  # zero-based: no negative-index wraparound, so it vectorises
        os_[i] = negw * abs(vs[i] - th)


# --------------------------------------------------------------------------- parallel drivers
# Each splits a range kernel's work into ``n`` contiguous chunks, one per numba thread.

@njit(cache=True, nogil=True, parallel=True)
def surrogate_arg_parallel(v, c, out, n):
    """:func:`surrogate_arg` over the whole flat array, ``n`` chunks in parallel."""
    size = v.size
    for k in prange(n):
        surrogate_arg(v, c, out, size * k // n, size * (k + 1) // n)
