"""The trainer's network topologies (``--arch fc|conv``), built from a
:class:`~antlr_snn.training.TrainConfig`, and the memory a run of them needs.

Example:
    >>> from antlr_snn.training import TrainConfig
    >>> describe_spec(architecture(TrainConfig(arch="conv", hidden=[]), 784))
    '1x28x28-c16-c32-10'
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from antlr_snn import memory
from antlr_snn.checkpoints import CHECKPOINT_FORMAT
from antlr_snn.data import EVENT_DATASETS
from antlr_snn.errors import UserError, allocation_failure
from antlr_snn.network import SpikingNetwork, describe_spec, network_from_spec

if TYPE_CHECKING:  # the trainer imports this module
    from antlr_snn.training import TrainConfig

EVAL_BATCH = {True: 256, False: 32}  # static / event data; fixed so results never depend on it

ARCHS = ("fc", "conv")
#: The conv topology (``--arch conv``): two strided convolutions, then the fully connected
#: output layer. Channels come from ``TrainConfig.channels`` (default 16, 32).
CONV_LAYERS = ((5, 2, 2), (3, 2, 1))  # (kernel, stride, padding) per conv layer


def input_shape(features: int, dataset: str) -> tuple:
    """The image shape ``[C, H, W]`` of a flat input of ``features`` (for ``--arch conv``)."""
    known = {784: (1, 28, 28), 2312: (2, 34, 34)}
    if features in known:
        return known[features]
    raise UserError(f"--arch conv needs image-shaped input; {dataset} gives {features} "
                    f"features per step, of no known image shape (use --arch fc)")


def architecture(cfg: "TrainConfig", features: int, num_classes: int = 10) -> list:
    """The layer description (``SpikingNetwork.spec()``) of ``cfg``'s network for inputs of
    ``features`` per step: ``fc`` is features-hidden-classes; ``conv`` unflattens the image,
    runs :data:`CONV_LAYERS` with ``cfg.channels`` and ends in a fully connected layer
    (through ``cfg.hidden`` sizes, if any) to the ``num_classes`` outputs.

    ``cfg.output_vstar_min`` (if set) replaces the output layer's ``vstar_min``, the floor of
    V* in its timing gradient dt/dV = -1/V* (Eq. 8): on dense event input most output spikes
    graze the threshold (V* < 1e-2), and their clamped -100 dominates the latency loss's
    gradient (docs/reproduction.md, Fig. 8)."""
    neuron = {**_neuron_defaults(), "method": cfg.method, "single_spike": cfg.single_spike,
              "lambda_act": cfg.lambda_act, "lambda_tim": cfg.lambda_tim,
              "threshold": cfg.threshold, "surrogate_width": cfg.surrogate_width}
    if cfg.arch == "fc":
        sizes = [features, *cfg.hidden, num_classes]
        spec = [{"type": "LIFLayer", "in_features": a, "out_features": b, "replicas": None,
                 "neuron": neuron} for a, b in zip(sizes[:-1], sizes[1:])]
        return _output_vstar_min(spec, cfg)
    c, h, w = input_shape(features, cfg.dataset)
    spec = [{"type": "Unflatten", "shape": [c, h, w]}]
    for out, (k, stride, pad) in zip(cfg.channels, CONV_LAYERS):
        spec.append({"type": "LIFConv2d", "in_channels": c, "out_channels": out,
                     "kernel_size": [k, k], "stride": [stride, stride], "padding": [pad, pad],
                     "neuron": neuron})
        c, h, w = out, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    spec.append({"type": "Flatten"})
    sizes = [c * h * w, *cfg.hidden, num_classes]
    spec += [{"type": "LIFLayer", "in_features": a, "out_features": b, "replicas": None,
              "neuron": neuron} for a, b in zip(sizes[:-1], sizes[1:])]
    return _output_vstar_min(spec, cfg)


def _output_vstar_min(spec: list, cfg: "TrainConfig") -> list:
    if cfg.output_vstar_min is not None:
        spec[-1] = {**spec[-1], "neuron": {**spec[-1]["neuron"],
                                           "vstar_min": float(cfg.output_vstar_min)}}
    return spec


def _neuron_defaults() -> dict:
    from antlr_snn.layers import LIFLayer
    return LIFLayer(1, 1).neuron_kwargs()


def build_network(cfg: "TrainConfig", in_features: int, device: str = "cpu",
                  num_classes: int = 10) -> SpikingNetwork:
    """The network of ``cfg`` (:func:`architecture`) on ``device``; a one-line
    ``MemoryError`` naming the sizes when it does not fit in memory."""
    spec = architecture(cfg, in_features, num_classes)
    try:
        return network_from_spec(spec).to(device)
    except (MemoryError, RuntimeError) as exc:
        reason = allocation_failure(exc)
        if reason is None:
            raise
        raise MemoryError(f"not enough memory for the {describe_spec(spec)} network on "
                          f"{device} ({reason}); use smaller --hidden sizes") from None


def check_network_fits(cfg: TrainConfig, in_features: int, device: str = "cpu",
                       world: int = 1, num_classes: int = 10) -> None:
    """Fail early (before a run folder is written) when the run cannot be trained here.

    The estimate (:func:`training_memory`) covers the parameters with their gradients and
    Adam's moments and the peak of a training step and of an evaluation batch; with it (and
    :data:`antlr_snn.memory.RESERVE`) the run must fit in the available memory. The network
    itself must also be allocatable.
    """
    need, what = training_memory(cfg, in_features, device, world, num_classes)
    memory.check_fits(need, device, what,
                      "use a smaller --batch-size, --num-steps or --hidden",
                      memory.local_processes() if device == "cpu" else 1)
    build_network(cfg, in_features, device, num_classes)  # allocated and dropped: it fits


def training_memory(cfg: TrainConfig, in_features: int, device: str = "cpu",
                    world: int = 1, num_classes: int = 10) -> tuple:
    """``(bytes, description)``: the estimated peak memory of one process of the run, the
    larger of a training step (its share of the global batch under DDP) and an evaluation
    batch (:func:`antlr_snn.memory.step_memory`)."""
    spec = architecture(cfg, in_features, num_classes)
    layers = memory.spec_layers(spec, in_features)
    local = -(-cfg.batch_size // world) if world > 1 and cfg.trials == 1 else cfg.batch_size
    compiled = device == "cpu"
    train = memory.step_memory(cfg.num_steps, local, layers, cfg.method, compiled=compiled)
    evaluation = memory.step_memory(cfg.num_steps, EVAL_BATCH[cfg.dataset not in EVENT_DATASETS],
                                    layers, train=False, compiled=compiled)
    what = (f"training the {describe_spec(spec)} network ({cfg.method}, batch {local} x {cfg.num_steps} "
            f"steps; evaluation batches of {EVAL_BATCH[cfg.dataset not in EVENT_DATASETS]})")
    return max(train, evaluation), what


def model_metadata(net: SpikingNetwork, cfg: TrainConfig) -> dict:
    """What :func:`network_from_checkpoint` needs to rebuild ``net`` and code its input."""
    return {"format": CHECKPOINT_FORMAT, "layers": net.spec(), "method": net.method,
            "dataset": cfg.dataset, "data_dir": cfg.data_dir, "num_steps": cfg.num_steps,
            "t_max": cfg.t_max, "decision": cfg.preset["decision"]}
