"""The ``"triton"`` backend: the neuron's time loops as fused Triton kernels (GPU).

One kernel per direction and layer, over the flattened lanes ``[T, L]`` (``L`` = batch x
neurons, any feature shape): each program takes a block of lanes and walks t in registers.

* forward: Eq. 1-3, writing S, V (and I for BPTT) once per step;
* backward: sigma(V), V*, Eq. 8, the adjoint traces U and A (and Q for the central kernel
  derivative), A_diff and the sum of U, in one reverse sweep;
* BPTT: the adjoint of Eq. 1-3 with the reset path, in one reverse sweep.

The synapse is not fused: ``fuses_dense`` is False, so a layer runs its dense product or
convolution through torch (cuBLAS/cuDNN) and autograd, and only the neuron runs here. Every
kernel mirrors :mod:`antlr_snn.neuron` operation by operation, without FMA contraction, so
spikes equal the reference's; exp and division are the accurate ones (libdevice ``exp``,
``div_rn``), so gradients agree to a few ulp.

dtypes: float32 and float64 are computed in their own precision; bfloat16 and float16
inputs are computed with float32 state and the results (S, V, I, gradients) stored in the
input's dtype, so the backward pass sees V rounded to it. The neuron constants travel in a
small device tensor cached per value (no host-to-device copy once warm, so a training step
with ``antlr_snn.set_checks(False)`` launches kernels only and can be captured in a CUDA
graph).

Without a GPU, ``TRITON_INTERPRET=1`` (set before this module is imported) runs the same
kernels on CPU tensors with Triton's interpreter; that is how the test suite checks them.

Example:
    >>> import torch
    >>> from antlr_snn.kernels.triton_gpu import TritonBackend
    >>> from antlr_snn.neuron import LIFParameters
    >>> be = TritonBackend()
    >>> dev = "cuda" if torch.cuda.is_available() else "cpu"
    >>> x = torch.full((5, 1, 2), 3.0, device=dev)
    >>> if be.supports(x):                    # CUDA, or the interpreter on the CPU
    ...     S = be.lif_forward(x, torch.zeros(2, device=dev), LIFParameters.create(),
    ...                        False, False)[0]
    ... else:
    ...     S = torch.tensor([0.0, 0, 0, 0, 1])[:, None, None].expand(5, 1, 2)
    >>> S[:, 0, 0].tolist()
    [0.0, 0.0, 0.0, 0.0, 1.0]
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import triton
import triton.language as tl

from antlr_snn.errors import UserError

__all__ = ["TritonBackend", "INTERPRETED", "DTYPES", "LAUNCH_OPTIONS"]

#: Input dtypes the kernels take (half precisions computed in float32).
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

# indices into the constant tensor (see _constants); constexpr, so that kernels may read them
_AI, _AV, _BI, _BV, _TH, _SCALE, _NEGW, _VMIN, _LACT, _LTIM, _BVAI = map(tl.constexpr, range(11))


def _interpreting() -> bool:
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # triton < 3.3
        import os
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: True when this module's kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` at
#: import): they then take CPU tensors.
INTERPRETED = _interpreting()

if INTERPRETED:  # numpy's exp; the interpreter has no libdevice
    _math = tl.math
else:  # tl.exp is ex2.approx on NVIDIA GPUs; libdevice's exp is CUDA's accurate expf/exp
    from triton.language.extra import libdevice as _math


@triton.jit
def _first_spike(s_ptr, lanes, mask, T, Lw, BLOCK: tl.constexpr):
    """Index of each lane's first spike, ``T`` where it never fires."""
    first = tl.zeros([BLOCK], dtype=tl.int32) + T
    off = lanes
    for t in range(T):
        s = tl.load(s_ptr + off, mask=mask, other=0)
        first = tl.where((s != 0) & (first == T), t, first)
        off += Lw
    return first


@triton.jit(do_not_specialize=["T", "L"])
def _forward_kernel(x_ptr, bterm_ptr, c_ptr, s_ptr, v_ptr, i_ptr, T, L,
                    SINGLE: tl.constexpr, KEEP_I: tl.constexpr, CT: tl.constexpr,
                    BLOCK: tl.constexpr):
    """Eq. 1-3 (:func:`antlr_snn.neuron.lif_forward`) on a block of lanes."""
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < L
    Lw = L.to(tl.int64)
    ai = tl.load(c_ptr + _AI)
    av = tl.load(c_ptr + _AV)
    bi = tl.load(c_ptr + _BI)
    bv = tl.load(c_ptr + _BV)
    th = tl.load(c_ptr + _TH)
    bterm = tl.load(bterm_ptr + lanes, mask=mask, other=0.0).to(CT)
    i_t = tl.zeros([BLOCK], dtype=CT)
    v_t = tl.zeros([BLOCK], dtype=CT)
    keep = tl.zeros([BLOCK], dtype=CT) + 1
    alive = tl.zeros([BLOCK], dtype=CT) + 1
    off = lanes
    for _ in range(T):
        x = tl.load(x_ptr + off, mask=mask, other=0.0).to(CT)
        i_t = i_t * keep * ai + bi * x
        v_t = v_t * keep * av + bv * i_t + bterm
        if SINGLE:  # held at reset after the spike
            i_t = i_t * alive
            v_t = v_t * alive
        s = (v_t >= th).to(CT)
        if SINGLE:
            s = s * alive
            alive = alive * (1 - s)
        keep = 1 - s
        tl.store(s_ptr + off, s.to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(v_ptr + off, v_t.to(v_ptr.dtype.element_ty), mask=mask)
        if KEEP_I:
            tl.store(i_ptr + off, i_t.to(i_ptr.dtype.element_ty), mask=mask)
        off += Lw


@triton.jit(do_not_specialize=["T", "L"])
def _backward_kernel(gs_ptr, gd_ptr, gv_ptr, s_ptr, v_ptr, c_ptr, a_ptr, ad_ptr, usum_ptr, T, L,
                     USE_ACT: tl.constexpr, USE_TIM: tl.constexpr, USE_GV: tl.constexpr,
                     SINGLE: tl.constexpr, WANT_AD: tl.constexpr, CENTRAL: tl.constexpr,
                     CT: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    """Eq. 8 (:func:`antlr_snn.neuron.dl_dv`) and :func:`antlr_snn.neuron.adjoint`, t = T-1..0."""
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < L
    Lw = L.to(tl.int64)
    ai = tl.load(c_ptr + _AI)
    av = tl.load(c_ptr + _AV)
    bv = tl.load(c_ptr + _BV)
    th = tl.load(c_ptr + _TH)
    scale = tl.load(c_ptr + _SCALE)
    negw = tl.load(c_ptr + _NEGW)
    vmin = tl.load(c_ptr + _VMIN)
    lact = tl.load(c_ptr + _LACT)
    ltim = tl.load(c_ptr + _LTIM)
    bvai = tl.load(c_ptr + _BVAI)
    if SINGLE:
        first = _first_spike(s_ptr, lanes, mask, T, Lw, BLOCK)
    u = tl.zeros([BLOCK], dtype=CT)
    a = tl.zeros([BLOCK], dtype=CT)
    q = tl.zeros([BLOCK], dtype=CT)
    us = tl.zeros([BLOCK], dtype=CT)
    off = lanes + (T - 1).to(tl.int64) * Lw
    s_t = tl.load(s_ptr + off, mask=mask, other=0.0).to(CT)
    v_t = tl.load(v_ptr + off, mask=mask, other=0.0).to(CT)
    for k in range(T):
        t = T - 1 - k
        prev_off = off - Lw
        has_prev = mask & (prev_off >= 0)  # t > 0
        # S[t-1], V[t-1] (0 at t = 0): V* now, the carried S[t], V[t] of the next step
        s_p = tl.load(s_ptr + prev_off, mask=has_prev, other=0.0).to(CT)
        v_p = tl.load(v_ptr + prev_off, mask=has_prev, other=0.0).to(CT)
        g = tl.zeros([BLOCK], dtype=CT)
        if USE_ACT:
            gs = tl.load(gs_ptr + off, mask=mask, other=0.0).to(CT)
            g = g + lact * (scale * _math.exp(negw * tl.abs(v_t - th))) * gs
        if USE_TIM:
            vs = tl.maximum(v_t - (1 - s_p) * v_p, vmin)
            gd = tl.load(gd_ptr + off, mask=mask, other=0.0).to(CT)
            if F64:
                g = g - ltim * s_t * gd / vs
            else:  # fp32 '/' is approximate on NVIDIA GPUs
                g = g - tl.math.div_rn(ltim * s_t * gd, vs)
        if USE_GV:
            g = g + tl.load(gv_ptr + off, mask=mask, other=0.0).to(CT)
        if SINGLE:  # 0 after the spike: V is held there
            g = g * (1 - (first < t).to(CT))
        keep = 1 - s_t
        a_next = a
        u = u * keep * av + g
        a = a * keep * ai + bv * u
        us = us + u
        tl.store(a_ptr + off, a.to(a_ptr.dtype.element_ty), mask=mask)
        if WANT_AD:
            if CENTRAL:
                q = q * keep * ai + g
                ad = (av * a + bvai * q - keep * a_next) * 0.5
            else:
                ad = a - keep * a_next
            tl.store(ad_ptr + off, ad.to(ad_ptr.dtype.element_ty), mask=mask)
        s_t = s_p
        v_t = v_p
        off = prev_off
    tl.store(usum_ptr + lanes, us.to(usum_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "L"])
def _bptt_kernel(gs_ptr, gv_ptr, s_ptr, v_ptr, i_ptr, c_ptr, gi_ptr, gvsum_ptr, T, L,
                 USE_GS: tl.constexpr, USE_GV: tl.constexpr, SINGLE: tl.constexpr,
                 CT: tl.constexpr, BLOCK: tl.constexpr):
    """:func:`antlr_snn.neuron.bptt_backward` (reset path attached), t = T-1..0."""
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < L
    Lw = L.to(tl.int64)
    ai = tl.load(c_ptr + _AI)
    av = tl.load(c_ptr + _AV)
    bv = tl.load(c_ptr + _BV)
    th = tl.load(c_ptr + _TH)
    scale = tl.load(c_ptr + _SCALE)
    negw = tl.load(c_ptr + _NEGW)
    if SINGLE:
        first = _first_spike(s_ptr, lanes, mask, T, Lw, BLOCK)
    gi_next = tl.zeros([BLOCK], dtype=CT)
    gv_next = tl.zeros([BLOCK], dtype=CT)
    gvs = tl.zeros([BLOCK], dtype=CT)
    off = lanes + (T - 1).to(tl.int64) * Lw
    for k in range(T):
        t = T - 1 - k
        s = tl.load(s_ptr + off, mask=mask, other=0.0).to(CT)
        v = tl.load(v_ptr + off, mask=mask, other=0.0).to(CT)
        i = tl.load(i_ptr + off, mask=mask, other=0.0).to(CT)
        gs = tl.zeros([BLOCK], dtype=CT)
        if USE_GS:
            gs = tl.load(gs_ptr + off, mask=mask, other=0.0).to(CT)
        # S[t] enters step t+1 through the reset factor (1 - S[t]); none at the last step
        gs = tl.where(k > 0, gs - ai * i * gi_next - av * v * gv_next, gs)
        keep = 1 - s
        sg = scale * _math.exp(negw * tl.abs(v - th))  # sigma(V)
        if SINGLE:
            alive = 1 - (first < t).to(CT)
            sg = sg * alive
        gv = gs * sg + av * keep * gv_next
        if USE_GV:
            gv = gv + tl.load(gv_ptr + off, mask=mask, other=0.0).to(CT)
        if SINGLE:
            gv = gv * alive
        gi = bv * gv + ai * keep * gi_next
        if SINGLE:
            gi = gi * alive
        tl.store(gi_ptr + off, gi.to(gi_ptr.dtype.element_ty), mask=mask)
        gvs = gvs + gv
        gi_next = gi
        gv_next = gv
        off -= Lw
    tl.store(gvsum_ptr + lanes, gvs.to(gvsum_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["N"])
def _binary_kernel(x_ptr, flag_ptr, N, BLOCK: tl.constexpr):
    """``flag = max`` of 2 (NaN), 1 (neither 0 nor 1) or 0 over a block of entries."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < N, other=0)
    code = tl.where(x != x, 2, tl.where((x != 0) & (x != 1), 1, 0))
    tl.atomic_max(flag_ptr, tl.max(code, axis=0))


# ----------------------------------------------------------------------------- host side
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in DTYPES:
        raise UserError(f"the triton backend takes {', '.join(str(d)[6:] for d in DTYPES)} "
                        f"tensors, got {str(dtype).replace('torch.', '')}")
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@functools.lru_cache(maxsize=64)
def _constants_cached(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _constants(p, dtype, device, lambda_act: float = 0.0, lambda_tim: float = 0.0):
    """The neuron constants as a device tensor of the compute dtype (each rounded from the
    Python float as torch rounds a scalar operand); ``beta_v alpha_i`` is formed in double
    first, as the reference's Python expression forms it."""
    values = (p.alpha_i, p.alpha_v, p.beta_i, p.beta_v, p.threshold, p.surrogate_scale,
              -p.surrogate_width, p.vstar_min, lambda_act, lambda_tim, p.beta_v * p.alpha_i)
    # (in the order of the indices _AI ... _BVAI)
    return _constants_cached(tuple(map(float, values)), dtype, torch.device(device))


#: Compile options of every launch: no contraction of a multiply and an add into an FMA (the
#: reference rounds each operation; a contracted one can move V across the threshold).
LAUNCH_OPTIONS = {"num_warps": 4, "enable_fp_fusion": False}


def _launch(kernel, L: int, *args, **meta):
    """Launch ``kernel`` over ``L`` lanes: blocks of 128 on a GPU (one lane per thread);
    one large block in the interpreter, where each operation is a numpy call."""
    block = min(4096, triton.next_power_of_2(max(L, 1))) if INTERPRETED else 128
    grid = (triton.cdiv(L, block),)
    kernel[grid](*args, BLOCK=block, **LAUNCH_OPTIONS, **meta)


def _flat(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().contiguous()


class TritonBackend:
    """Fused Triton kernels for CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``)."""

    name = "triton"
    fuses_dense = False

    def supports(self, t: torch.Tensor) -> bool:
        device_ok = t.device.type == "cuda" or (INTERPRETED and t.device.type == "cpu")
        return device_ok and t.dtype in DTYPES and t.layout == torch.strided

    def lif_forward(self, x, bias, p, single_spike, keep_current):
        cdt = _compute_dtype(x.dtype)
        x = _flat(x)
        T, L = x.shape[0], math.prod(x.shape[1:])
        S, V = torch.empty_like(x), torch.empty_like(x)
        I = torch.empty_like(x) if keep_current else None
        if T * L == 0:
            return S, V, I
        b = bias.detach()
        b = b if x.dtype == cdt else b.to(cdt)  # half inputs: the bias term in float32 too
        bterm = (p.beta_bias * b).to(cdt).broadcast_to(x.shape[1:]).contiguous()
        _launch(_forward_kernel, L, x, bterm, _constants(p, cdt, x.device), S, V,
                I if I is not None else S, T, L, SINGLE=bool(single_spike),
                KEEP_I=bool(keep_current), CT=_tl_dtype(cdt))
        return S, V, I

    def lif_backward(self, grad_s, grad_d, grad_v, S, V, p, cfg, want_diff):
        cdt = _compute_dtype(S.dtype)
        gs = _flat(grad_s) if cfg.lambda_act != 0.0 else None
        gd = _flat(grad_d) if cfg.lambda_tim != 0.0 else None
        gv = _flat(grad_v)
        S, V = _flat(S), _flat(V)
        T, L = S.shape[0], math.prod(S.shape[1:])
        A = torch.empty_like(S)
        Ad = torch.empty_like(S) if want_diff else None
        usum = S.new_empty(S.shape[1:])
        if T * L == 0:
            return A, Ad, usum.zero_()
        c = _constants(p, cdt, S.device, cfg.lambda_act, cfg.lambda_tim)
        _launch(_backward_kernel, L, *(t if t is not None else S for t in (gs, gd, gv)), S, V,
                c, A, Ad if Ad is not None else A, usum, T, L, USE_ACT=gs is not None,
                USE_TIM=gd is not None, USE_GV=gv is not None, SINGLE=bool(cfg.single_spike),
                WANT_AD=bool(want_diff), CENTRAL=cfg.eps_derivative == "central",
                CT=_tl_dtype(cdt), F64=cdt == torch.float64)
        return A, Ad, usum

    def bptt_backward(self, grad_s, grad_v, S, V, I, p, single_spike):
        cdt = _compute_dtype(S.dtype)
        gs, gv = _flat(grad_s), _flat(grad_v)
        S, V, I = _flat(S), _flat(V), _flat(I)
        T, L = S.shape[0], math.prod(S.shape[1:])
        GI = torch.empty_like(S)
        gvsum = S.new_empty(S.shape[1:])
        if T * L == 0:
            return GI, gvsum.zero_()
        _launch(_bptt_kernel, L, gs if gs is not None else S, gv if gv is not None else S, S,
                V, I, _constants(p, cdt, S.device), GI, gvsum, T, L, USE_GS=gs is not None,
                USE_GV=gv is not None, SINGLE=bool(single_spike), CT=_tl_dtype(cdt))
        return GI, gvsum

    def binary_check(self, x: torch.Tensor) -> Optional[str]:
        if x.numel() == 0:
            return None
        flat = x.detach().contiguous()
        flag = torch.zeros(1, dtype=torch.int32, device=x.device)
        block = 4096 if INTERPRETED else 1024
        _binary_kernel[(triton.cdiv(flat.numel(), block),)](flat, flag, flat.numel(),
                                                            BLOCK=block)
        return (None, "nonbinary", "nan")[int(flag.item())]  # the one host sync: a check
