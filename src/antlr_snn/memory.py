"""How much memory a run needs, estimated from its shapes before it starts.

A training step holds, at its peak, a handful of ``[T, B, N]`` tensors per layer (spikes,
voltages, the time shifts, the gradients of both channels, the adjoint traces; the sparse
form of the input), plus the parameters with their gradients and Adam's two moments.
:func:`step_memory` adds these up from per-layer tensor counts; the counts
(:data:`TRAIN_TENSORS`, :data:`EVAL_TENSORS`) were measured (peak resident memory of a few
training steps in a fresh process, tests/test_memory.py) and rounded up, so the estimate is
at least the measured peak and at most about 1.5 times it. A new kind of layer needs only its
:class:`LayerShape` (and, if its step holds other tensors, its own counts).

Example:
    >>> layers = dense_layers([784, 800, 10])
    >>> round(step_memory(100, 16, layers, "antlr") / 2 ** 20, 1)   # MiB
    55.2
    >>> round(step_memory(100, 256, layers, train=False) / 2 ** 20, 1)
    280.1
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional, Sequence

__all__ = ["LayerShape", "dense_layers", "spec_layers", "step_memory", "available_memory", "check_fits",
           "TRAIN_TENSORS", "EVAL_TENSORS", "REPLICA_EXTRA", "PARAM_COPIES",
           "RESERVE", "format_bytes", "local_processes"]


class LayerShape(NamedTuple):
    """One layer as the memory estimate sees it: input features, neurons, parameters."""

    inputs: int
    neurons: int
    params: int
    dense: bool = True  # the weights are an [neurons, inputs] matrix


def dense_layers(sizes: Sequence[int]) -> list:
    """The :class:`LayerShape` of each fully connected layer of a ``sizes`` network."""
    return [LayerShape(a, b, (a + 1) * b) for a, b in zip(sizes[:-1], sizes[1:])]


def spec_layers(spec: Sequence[dict], in_features: int) -> list:
    """The :class:`LayerShape` of each spiking layer of a network description
    (``SpikingNetwork.spec()``: ``LIFLayer``, ``LIFConv2d``, ``Flatten``, ``Unflatten``), for
    flat inputs of ``in_features`` per step."""
    shape, out = (in_features,), []
    for layer in spec:
        kind = layer["type"]
        if kind == "Unflatten":
            shape = tuple(layer["shape"])
        elif kind == "Flatten":
            shape = (math.prod(shape),)
        elif kind == "LIFLayer":
            n_in, n = math.prod(shape), layer["out_features"]
            out.append(LayerShape(n_in, n, (n_in + 1) * n))
            shape = (n,)
        elif kind == "LIFConv2d":
            c, h, w = shape
            (kh, kw), (sh, sw), (ph, pw) = layer["kernel_size"], layer["stride"], layer["padding"]
            co = layer["out_channels"]
            shape = (co, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
            out.append(LayerShape(c * h * w, math.prod(shape), co * (c * kh * kw + 1),
                                  dense=False))
        else:
            raise ValueError(f"no memory model for a {kind!r} layer")
    return out


#: ``[T, B, N]`` tensors alive at the peak of a training step: per input feature of the
#: network and per neuron of every layer, by method (measured; see the module docstring).
TRAIN_TENSORS = {"input": 2.8, "antlr": 6.5, "activation": 6.5, "timing": 6.0, "bptt": 5.5}
#: Replica networks (``replicas=R``, one sample each) hold about this many more per neuron.
REPLICA_EXTRA = 1.5
#: The same for a forward pass without gradients (validation and test).
EVAL_TENSORS = {"input": 1.25, "neuron": 2.3}
#: Copies of the parameters while training: weights, gradients, Adam's two moments.
PARAM_COPIES = 4
#: Kept free beyond the estimate: the interpreter, the kernels' compilation, the allocator.
RESERVE = 256 << 20


def step_memory(num_steps: int, batch: int, layers: Sequence[LayerShape], method: str = "antlr",
                replicas: Optional[int] = None, train: bool = True, itemsize: int = 4,
                compiled: bool = True) -> int:
    """Bytes at the peak of one training step (``train``) or one forward pass without
    gradients, for ``layers`` at ``num_steps`` steps and ``batch`` samples (per replica
    with ``replicas`` replica networks, as ``LIFLayer(replicas=R)``).

    ``itemsize`` is the bytes of one number (4 for float32); ``compiled``: the compiled CPU
    kernels run the step (not on CUDA, nor with ``ANTLR_SNN_KERNELS=reference``).
    """
    copies = max(1, replicas or 1)
    rows = num_steps * batch * copies  # one [T, B, N] tensor holds rows * N numbers
    params = sum(layer.params for layer in layers) * copies
    if not train:
        numbers = rows * (EVAL_TENSORS["input"] * layers[0].inputs
                          + EVAL_TENSORS["neuron"] * sum(layer.neurons for layer in layers))
        return int(math.ceil((numbers + params) * itemsize))
    per_neuron = TRAIN_TENSORS.get(method, max(TRAIN_TENSORS.values()))
    if replicas is not None:
        per_neuron += REPLICA_EXTRA
    numbers = rows * (TRAIN_TENSORS["input"] * layers[0].inputs
                      + per_neuron * sum(layer.neurons for layer in layers))
    numbers += PARAM_COPIES * params
    return int(math.ceil(numbers * itemsize))


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _cgroup_room() -> Optional[int]:
    """Bytes this process's cgroup still allows (v2 ``memory.max``, v1 ``limit_in_bytes``)."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < 1 << 60:  # v1 "no limit" is huge
            return max(0, lim - use)
    return None


def available_memory(device: str = "cpu") -> Optional[int]:
    """Bytes a new allocation can get on ``device``: on the CPU the smaller of Linux's
    ``MemAvailable`` and the room left in the process's cgroup; on CUDA the free device
    memory; ``None`` where unknown."""
    if str(device).startswith("cuda"):
        try:
            import torch
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # no CUDA, or a driver that cannot say
            return None
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room()
    known = [v for v in (avail, room) if v is not None]
    return min(known) if known else None


def format_bytes(n: float) -> str:
    """``'1.5 GiB'``, ``'320 MiB'``, ``'5.4 TiB'``.

    >>> format_bytes(3 * 2 ** 30 // 2), format_bytes(320 * 2 ** 20), format_bytes(6e12)
    ('1.5 GiB', '320 MiB', '5.5 TiB')
    """
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2 ** 20:.0f} MiB"


def check_fits(need: int, device: str, what: str, reduce: str,
               processes: int = 1) -> None:
    """A one-line ``MemoryError`` when ``need`` bytes (per process, ``processes`` processes
    sharing the memory) plus :data:`RESERVE` do not fit in the available memory of
    ``device``. ``what`` describes the work, ``reduce`` what to make smaller."""
    avail = available_memory(device)
    if avail is None:
        return
    total = processes * need
    if total + processes * RESERVE <= avail:
        return
    each = f" ({processes} processes x {format_bytes(need)})" if processes > 1 else ""
    raise MemoryError(f"not enough memory: {what} needs about {format_bytes(total)}{each}, "
                      f"{format_bytes(avail)} available on {device}; {reduce}")


def local_processes() -> int:
    """Processes of this run on this machine (``LOCAL_WORLD_SIZE`` under torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1
