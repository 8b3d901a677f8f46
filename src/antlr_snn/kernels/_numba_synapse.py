"""Compiled CPU kernels (numba) of the fully connected synapse of the ``numba`` backend
(:meth:`antlr_snn.kernels.numba_cpu.NumbaBackend.dense_forward` / ``dense_backward``): the
input spikes as events (CSR), regrouped per input column for the weight gradient ``A^T S``,
and the input gradients of a narrow layer in one pass. The neuron recursions, and the
conventions (layouts, the constant array ``c``, the cache): :mod:`antlr_snn.kernels._numba`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from antlr_snn.kernels._numba import BI, ZERO


@njit(cache=True, nogil=True)
def scan_events(s, max_nnz, rowptr, idx, val):
    """CSR of the nonzeros of ``s [rows, K]``; returns nnz, or -1 once it exceeds ``max_nnz``."""
    rows, K = s.shape
    nnz = 0
    rowptr[0] = 0
    B = 64
    for m in range(rows):
        sm = s[m]
        for k0 in range(0, K, B):
            blk = sm[k0:min(k0 + B, K)]
            cnt = 0
            for k in range(blk.size):  # vectorised (integer) test: is the block all zeros?
                cnt += blk[k] != 0
            if cnt != 0:
                for k in range(blk.size):
                    x = blk[k]
                    if x != 0:
                        if nnz >= max_nnz:
                            return -1
                        idx[nnz] = k0 + k
                        val[nnz] = x
                        nnz += 1
        rowptr[m + 1] = nnz
    return nnz


@njit(cache=True, nogil=True)
def bucket_events(rowptr, idx, val, rows_per_rep, R, K):
    """The CSR events regrouped by (replica, input column): ``(start, erow, evals)`` with the
    events of column ``c = r * K + k`` at ``start[c]:start[c + 1]``, in increasing row order."""
    rows = rowptr.size - 1
    nnz = rowptr[rows]
    start = np.zeros(R * K + 1, dtype=np.int64)
    for m in range(rows):
        r = (m // rows_per_rep) % R
        for e in range(rowptr[m], rowptr[m + 1]):
            start[r * K + idx[e] + 1] += 1
    for i in range(R * K):
        start[i + 1] += start[i]
    fill = start[:-1].copy()
    erow = np.empty(nnz, dtype=np.int64)
    evals = np.empty(nnz, dtype=val.dtype)
    for m in range(rows):
        r = (m // rows_per_rep) % R
        for e in range(rowptr[m], rowptr[m + 1]):
            c = r * K + idx[e]
            erow[fill[c]] = m
            evals[fill[c]] = val[e]
            fill[c] += 1
    return start, erow, evals


@njit(cache=True, nogil=True)
def weight_grad_blocks(start, erow, evals, a, g, b0, b1):
    """``g[r, :, k] = sum over events (m, k) of val a[m]`` (the weight gradient ``A^T S``) for
    the column blocks ``b0 <= b < b1`` of 16 columns (numbered over all replicas).

    ``g [R, N, K]`` is written directly in the weight's layout: a block's columns are summed
    in a small contiguous buffer, then written transposed. Blocks are independent, so ranges
    of them may run in parallel threads.
    """
    N = a.shape[1]
    R, _, K = g.shape
    KB = 16
    nb = (K + KB - 1) // KB
    buf = np.zeros((KB, N), dtype=g.dtype)
    for b in range(b0, min(b1, R * nb)):
        r = b // nb
        k0 = (b % nb) * KB
        k1 = min(k0 + KB, K)
        gr = g[r]
        c0 = r * K + k0
        if start[c0] == start[r * K + k1]:  # no spikes in these columns
            for n in range(N):
                for k in range(k0, k1):
                    gr[n, k] = 0
            continue
        for kk in range(k1 - k0):
            bk = buf[kk]
            for n in range(N):
                bk[n] = 0
            for q in range(start[c0 + kk], start[c0 + kk + 1]):
                am = a[erow[q]]
                v = evals[q]
                for n in range(N):
                    bk[n] += v * am[n]
        for n in range(N):
            for kk in range(k1 - k0):
                gr[n, k0 + kk] = buf[kk, n]


@njit(cache=True, nogil=True, inline="always")
def _vec_mat(v, wr, acc):
    """``acc[k] = sum_j v[j] wr[j, k]`` (a row of the input gradient), accumulated in order."""
    for k in range(acc.shape[0]):
        acc[k] = 0
    for j in range(v.shape[0]):
        vj = v[j]
        wj = wr[j]
        for k in range(acc.shape[0]):
            acc[k] += vj * wj[k]


@njit(cache=True, nogil=True)
def input_grads(a, ad, w, s, sparse, rowptr, idx, val, rows_per_rep, c, want_s, want_d, gs, gd,
                m0, m1):
    """Gradients for the layer below when this layer is narrow (few neurons, N <= 64).

    ``gs[m] = beta_i (a[m] @ w[r])`` (activation channel) and
    ``gd[m] = (-beta_i (ad[m] @ w[r])) * s[m]`` (timing channel), row by row, ``w [R, N, K]``;
    one pass instead of two dense products and three elementwise passes. With ``sparse`` (the
    CSR of ``s``) ``gd`` is computed only at the spikes and is 0 elsewhere (where the dense
    formula gives +-0, or NaN for a non-finite ``ad``).
    """
    rows, N = a.shape
    R, _, K = w.shape
    bi = c[BI]
    mbi = -bi
    zero = c[ZERO]
    acc = np.empty(K, dtype=gs.dtype)
    for m in range(m0, min(m1, rows)):
        r = (m // rows_per_rep) % R
        if want_s:
            _vec_mat(a[m], w[r], acc)
            gsm = gs[m]
            for k in range(K):
                gsm[k] = acc[k] * bi
        if want_d and sparse:
            adm = ad[m]
            gdm = gd[m]
            for k in range(K):
                gdm[k] = zero
            for e in range(rowptr[m], rowptr[m + 1]):
                k = idx[e]
                dot = zero
                for j in range(N):
                    dot += adm[j] * w[r, j, k]
                gdm[k] = dot * mbi * val[e]
        elif want_d:
            _vec_mat(ad[m], w[r], acc)
            gdm = gd[m]
            sm = s[m]
            for k in range(K):
                gdm[k] = acc[k] * mbi * sm[k]


# --------------------------------------------------------------------------- parallel drivers
# Each splits a range kernel's work into ``n`` contiguous chunks, one per numba thread.

@njit(cache=True, nogil=True, parallel=True)
def weight_grad_parallel(start, erow, evals, a, g, nblocks, n):
    """:func:`weight_grad_blocks` over blocks ``[0, nblocks)``, ``n`` chunks in parallel."""
    for k in prange(n):
        weight_grad_blocks(start, erow, evals, a, g, nblocks * k // n, nblocks * (k + 1) // n)


@njit(cache=True, nogil=True, parallel=True)
def input_grads_parallel(a, ad, w, s, sparse, rowptr, idx, val, rows_per_rep, c, want_s, want_d,
                         gs, gd, n):
    """:func:`input_grads` over every row, ``n`` chunks of rows in parallel."""
    rows = a.shape[0]
    for k in prange(n):
        input_grads(a, ad, w, s, sparse, rowptr, idx, val, rows_per_rep, c, want_s, want_d, gs,
                    gd, rows * k // n, rows * (k + 1) // n)
