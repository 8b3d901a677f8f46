"""Backends: one small interface, the reference and the fast implementations, and the choice.

Every backend implements :class:`Backend` (the equations are those of
:mod:`antlr_snn.neuron`, whose pure-PyTorch functions are the ``"reference"`` backend):

* ``lif_forward(x, bias, p, single_spike, keep_current) -> (S, V, I or None)``: Eq. 1-3 on a
  current ``x [T, *shape]``;
* ``lif_backward(grad_s, grad_d, grad_v, S, V, p, cfg, want_diff) -> (A, A_diff, U_sum)``:
  Eq. 8 and the adjoint recursions;
* ``bptt_backward(grad_s, grad_v, S, V, I, p, single_spike) -> (GI, GV_sum)``: BPTT with the
  reset path;
* ``binary_check(x) -> None | "nan" | "nonbinary"``.

A backend's methods take only tensors that its ``supports`` accepts; they never hand a call on
to another backend.

Backends with ``fuses_dense = True`` (``"numba"``) also run a fully connected layer in one
piece (``dense_forward`` / ``dense_backward``), gathering weight rows per input spike.

The choice is made once per call, in :func:`backend_for`, and nowhere else:

* ``"auto"`` (default): ``"numba"`` for CPU float32/float64 tensors, ``"triton"`` for CUDA
  tensors when triton is installed, ``"reference"`` otherwise;
* a name forces that backend; ``ANTLR_SNN_KERNELS=name`` sets it at import, and
  :func:`set_backend` / :func:`use_backend` change it.

Example:
    >>> import torch
    >>> from antlr_snn import kernels
    >>> kernels.backend_for(torch.zeros(3)).name in ("numba", "reference")
    True
    >>> with kernels.use_backend("reference"):
    ...     kernels.backend_for(torch.zeros(3)).name
    'reference'
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Optional, Protocol

import torch

from antlr_snn.errors import UserError
from antlr_snn.kernels.reference import ReferenceBackend

__all__ = ["Backend", "BACKENDS", "backend_for", "get_backend", "set_backend", "use_backend",
           "available", "get", "binary_check", "set_checks", "checks_enabled"]

BACKENDS = ("auto", "reference", "numba", "triton")


class Backend(Protocol):
    """What a backend implements (see the module docstring)."""

    name: str
    fuses_dense: bool

    def supports(self, t: torch.Tensor) -> bool: ...

    def lif_forward(self, x, bias, p, single_spike, keep_current): ...

    def lif_backward(self, grad_s, grad_d, grad_v, S, V, p, cfg, want_diff): ...

    def bptt_backward(self, grad_s, grad_v, S, V, I, p, single_spike): ...

    def binary_check(self, x) -> Optional[str]: ...


_reference = ReferenceBackend()
_loaded: dict = {"reference": _reference}
_failed: dict = {}


def _load(name: str):
    """The backend ``name``, or None when its package is missing or broken (warned once)."""
    if name in _loaded:
        return _loaded[name]
    if name in _failed:
        return None
    try:
        if name == "numba":
            from antlr_snn.kernels.numba_cpu import NumbaBackend
            backend = NumbaBackend()
        elif name == "triton":
            from antlr_snn.kernels.triton_gpu import TritonBackend
            backend = TritonBackend()
        else:
            raise UserError(f"unknown kernel backend {name!r}")
    except ImportError as exc:
        _failed[name] = exc
        if name == "numba":  # numba is a core dependency: a broken install must not be silent
            warnings.warn(f"antlr-snn: the numba backend is unavailable ({exc}); using the "
                          f"pure-PyTorch reference, about 4x slower on the CPU", stacklevel=3)
        elif name == "triton":  # asked for by a CUDA tensor (or by available("triton"))
            warnings.warn(f"antlr-snn: the triton backend is unavailable ({exc}); CUDA tensors "
                          f"take the pure-PyTorch reference, many times slower (pip install "
                          f"'antlr-snn[gpu]')", stacklevel=3)
        return None
    _loaded[name] = backend
    return backend


def available(name: str) -> bool:
    """True when backend ``name`` can be loaded here (its package imports)."""
    return _load(_check_name(name)) is not None if name != "auto" else True


def get(name: str):
    """The backend object ``name`` (``UserError`` when it is unavailable)."""
    backend = _load(_check_name(name))
    if backend is None:
        raise UserError(f"kernel backend {name!r} is unavailable: {_failed.get(name)}")
    return backend


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise UserError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def _backend_from_env() -> str:
    name = os.environ.get("ANTLR_SNN_KERNELS", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        warnings.warn(f"ANTLR_SNN_KERNELS={name!r} is not one of {', '.join(BACKENDS)}; "
                      f"using 'auto'", stacklevel=2)
        return "auto"
    return name


_choice = _backend_from_env()
_checks = True


def get_backend() -> str:
    """The backend setting: ``"auto"`` or a backend name."""
    return _choice


def set_backend(name: str) -> None:
    """Select ``name`` (one of :data:`BACKENDS`) for the whole process."""
    global _choice
    _choice = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the enclosed code with backend ``name``."""
    global _choice
    old, _choice = _choice, _check_name(name)
    try:
        yield
    finally:
        _choice = old


def backend_for(*tensors: Optional[torch.Tensor], strict: bool = True):
    """The backend that runs a call on ``tensors`` (the one place where it is chosen). A
    forced backend that is unavailable or cannot take them is an error, or with
    ``strict=False`` (the input checks, which must run on any tensor) gives way to the
    automatic choice."""
    given = [t for t in tensors if t is not None]
    if _choice != "auto":
        backend = get(_choice) if strict else _load(_choice)
        for t in given:
            if backend is None or not backend.supports(t):
                if not strict:
                    return _auto(given)
                raise UserError(f"kernel backend {_choice!r} cannot run on {t.device.type} "
                                f"{str(t.dtype).replace('torch.', '')} tensors; use "
                                f"kernels.use_backend('auto')")
        return backend
    return _auto(given)


def _auto(tensors):
    candidates = ("numba",) if tensors[0].device.type == "cpu" else ("triton",)
    for name in candidates:
        backend = _load(name)
        if backend is not None and all(t is None or backend.supports(t) for t in tensors):
            return backend
    return _reference


def binary_check(x: torch.Tensor) -> Optional[str]:
    """``None`` if every entry of ``x`` is 0 or 1, else ``"nan"`` or ``"nonbinary"``: one pass
    of the chosen backend where it takes ``x``, else of the automatic choice."""
    return backend_for(x, strict=False).binary_check(x)


def set_checks(enabled: bool) -> None:
    """Turn input validation (binary spikes, shapes) on or off for the whole process.

    The checks read the data and so synchronise with the device; switch them off for
    CUDA-graph capture or the last bit of speed once a pipeline is known to be right.
    """
    global _checks
    if not isinstance(enabled, bool):
        raise UserError(f"set_checks takes True or False, got {enabled!r}")
    _checks = enabled


def checks_enabled() -> bool:
    """Whether input validation is on (see :func:`set_checks`)."""
    return _checks
