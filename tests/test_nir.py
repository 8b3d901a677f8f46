"""NIR export and load: exact round trips through ``.nir`` files, the mapping against NIR's
own equations (tests/nir_reference.py), foreign graphs, and one-line errors.

The real clients (snnTorch) and the command line are in tests/test_nir_clients.py.
"""
from __future__ import annotations

import sys
import warnings

import nir
import numpy as np
import pytest
import torch
from torch import nn

import nir_reference as ref
from antlr_snn import LIF, Flatten, LIFConv2d, LIFLayer, SpikingNetwork, Unflatten
from antlr_snn import nir as antlr_nir
from antlr_snn.errors import DataNotFound, UserError

pytestmark = pytest.mark.usefixtures("one_thread")

# constants unlike the defaults, and unlike each other, so that a swapped term shows
FC_A = dict(alpha_v=0.93, alpha_i=0.85, beta_v=0.3, beta_i=1.4, beta_bias=0.5, threshold=0.6,
            method="timing")
FC_B = dict(alpha_v=0.8, alpha_i=0.9, threshold=0.45, beta_i=0.7, lambda_tim=0.3)


def fc_net(dtype=torch.float32, bias=True):
    torch.manual_seed(1)
    net = SpikingNetwork([LIFLayer(12, 9, dtype=dtype, **FC_A),
                          LIFLayer(9, 5, dtype=dtype, **FC_B)])
    with torch.no_grad():
        for layer in net.spiking_layers:
            layer.weight.mul_(4.0)
            layer.bias.uniform_(-1.0, 1.5) if bias else layer.bias.zero_()
    return net


def conv_net(dtype=torch.float32):
    torch.manual_seed(2)
    layers = [Unflatten((2, 9, 9)),
              LIFConv2d(2, 4, 3, stride=2, padding=1, dtype=dtype, alpha_v=0.9, alpha_i=0.8,
                        threshold=0.5),                                   # -> 4 x 5 x 5
              LIF(nn.AvgPool2d(2), bias_shape=(4, 1, 1), alpha_v=0.85, alpha_i=0.95,
                  beta_i=3.0, threshold=0.3),                             # -> 4 x 2 x 2
              LIF(nn.AvgPool2d(2, stride=1, divisor_override=1), alpha_v=0.9, alpha_i=0.7,
                  threshold=0.4),                                         # sum -> 4 x 1 x 1
              Flatten(),
              LIF(nn.Linear(4, 6, dtype=dtype), alpha_v=0.97, alpha_i=0.6, beta_i=2.0),
              LIFLayer(6, 3, dtype=dtype, alpha_v=0.75, alpha_i=0.92, threshold=0.35)]
    net = SpikingNetwork(layers)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0) if p.dim() > 1 else p.uniform_(-0.5, 1.0)
    return net.to(dtype)


def spikes_in(shape, T=40, p=0.3, seed=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((T, *shape), p, dtype=dtype), generator=g)


def all_spikes(net, x):
    with torch.no_grad():
        return [o.spikes for o in net(x).layers]


def through_file(graph, tmp_path):
    path = tmp_path / "net.nir"
    antlr_nir.write(graph, str(path))
    return nir.read(str(path))


@pytest.mark.parametrize("make, features", [(fc_net, 12), (conv_net, 162)])
def test_round_trip_through_a_file_gives_the_same_spikes(make, features, tmp_path):
    net = make()
    x = spikes_in((6, features))
    want = all_spikes(net, x)
    for layer_spikes in want:  # every layer fires, some neurons more than once (I reset matters)
        assert layer_spikes.sum() > 0 and layer_spikes.sum(0).max() >= 2
    back = antlr_nir.load(through_file(antlr_nir.export(net, dt=1e-3, reset="v_only"),
                                       tmp_path))
    got = all_spikes(back, x)
    assert len(got) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    for a, b in zip(back.spiking_layers, net.spiking_layers):
        assert type(a) is type(b) and a.neuron_kwargs() == b.neuron_kwargs()
    if make is fc_net:  # same layer types, constants and shapes: the state loads as it is
        back.load_state_dict(net.state_dict())


@pytest.mark.parametrize("make, features", [(fc_net, 12), (conv_net, 162)])
def test_mapping_matches_nir_equations(make, features, tmp_path):
    """Euler steps of NIR's CubaLIF with our reset (I too) reproduce every spike; with NIR's
    own reset (V only) they do not: the mismatch the docs measure."""
    net = make(torch.float64)
    x = spikes_in((6, features), dtype=torch.float64)
    want = all_spikes(net, x)[-1]
    x_in = x.unflatten(-1, (2, 9, 9)) if make is conv_net else x
    for dt in (1e-3, 1e-4):
        graph = through_file(antlr_nir.export(net, dt=dt, reset="v_only"), tmp_path)
        assert torch.equal(ref.run(graph, x_in, dt, reset_current=True, strict=False), want)
        assert not torch.equal(ref.run(graph, x_in, dt), want)


def test_time_constants_and_gains_have_the_stated_values():
    net = fc_net()
    graph = antlr_nir.export(net, dt=2e-3, reset="v_only")
    n, p = graph.nodes["l0_cubalif"], net.layers[0].params
    assert np.allclose(n.tau_syn, 2e-3 / 0.15) and np.allclose(n.tau_mem, 2e-3 / 0.07)
    assert np.allclose(n.r, 1 / 0.07) and np.allclose(n.w_in, 1.4 * 0.3 / 0.15)
    assert np.allclose(n.v_leak, 0.5 * net.layers[0].bias.detach().double().numpy() / 0.07)
    assert np.all(n.v_threshold == 0.6) and np.all(n.v_reset == 0)
    assert np.array_equal(graph.nodes["l0_linear"].weight, net.layers[0].weight.detach().numpy())
    assert graph.metadata["antlr_snn"]["dt"] == 2e-3 and p.beta_v == 0.3


def test_an_edited_graph_loads_with_its_own_constants():
    """The metadata's exact constants are used only while the node still agrees with them."""
    graph = antlr_nir.export(fc_net(), dt=1e-3, reset="v_only")
    graph.nodes["l1_cubalif"].tau_mem = np.full(5, 1e-3 / 0.5)
    layer = antlr_nir.load(graph).layers[1]
    assert layer.params.alpha_v == pytest.approx(0.5) and layer.params.alpha_i == 0.9


def foreign_graph(dt=1e-4, sizes=(8, 6, 3), alphas=((0.8, 0.9), (0.7, 0.95)),
                  thresholds=(0.7, 0.5)):
    """A graph as snnTorch's export writes its ``Synaptic`` neurons (tau = dt / (1 - alpha),
    r = tau_mem / dt, w_in = tau_syn / dt, v_leak = 0) behind ``Affine`` synapses."""
    rng = np.random.default_rng(4)
    nodes = {"input": nir.Input(input_type={"input": np.array([sizes[0]])})}
    for k, ((a, b), thr) in enumerate(zip(alphas, thresholds)):
        n = sizes[k + 1]
        full = lambda v: np.full(n, v)  # noqa: E731
        nodes[f"fc{k}"] = nir.Affine(weight=rng.uniform(-0.2, 0.6, (n, sizes[k])).astype("f4"),
                                     bias=rng.uniform(-0.05, 0.1, n).astype("f4"))
        tau_syn, tau_mem = dt / (1 - a), dt / (1 - b)
        nodes[f"lif{k}"] = nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem),
                                       r=full(tau_mem / dt), v_leak=full(0.0),
                                       v_threshold=full(thr), w_in=full(tau_syn / dt))
    nodes["output"] = nir.Output(output_type={"output": np.array([sizes[-1]])})
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])))


def test_foreign_graph_loads_with_our_reset():
    graph = foreign_graph()
    with pytest.warns(antlr_nir.NIRResetWarning, match="loaded network"):
        net = antlr_nir.load(graph, dt=1e-4)
    assert [type(m.synapse) for m in net.layers] == [nn.Linear, nn.Linear]  # Affine: a bias
    assert net.layers[0].params.alpha_i == pytest.approx(0.8)
    assert net.layers[0].params.alpha_v == pytest.approx(0.9)
    x = spikes_in((5, 8), T=60)
    ours = all_spikes(net.double(), x.double())[-1]
    assert ours.sum() > 0
    assert torch.equal(ours, ref.run(graph, x, 1e-4, reset_current=True, strict=False))


def test_scalar_parameters_broadcast_over_the_layer():
    graph = foreign_graph()
    for k in ("lif0", "lif1"):
        node = graph.nodes[k]
        for field in ("tau_syn", "tau_mem", "r", "w_in", "v_threshold", "v_leak", "v_reset"):
            setattr(node, field, np.asarray(getattr(node, field)[0]))
    net = antlr_nir.load(graph, dt=1e-4, reset="v_only")
    assert [m.synapse.out_features for m in net.layers] == [6, 3]


def test_reset_warning_and_refusal():
    net = fc_net()
    with pytest.warns(antlr_nir.NIRResetWarning, match="resets only V"):
        graph = antlr_nir.export(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        antlr_nir.export(net, reset="v_only")
        antlr_nir.load(graph)  # our own graph: exact, no warning
    with pytest.raises(UserError, match="refused"):
        antlr_nir.export(net, reset="error")
    with pytest.raises(UserError, match="refused"):
        antlr_nir.load(foreign_graph(), dt=1e-4, reset="error")
    with pytest.raises(UserError, match="reset must be one of"):
        antlr_nir.export(net, reset="I")


def _edit(change):
    graph = foreign_graph()
    change(graph)
    return graph


def _set(node, **fields):
    return lambda g: [setattr(g.nodes[node], k, v) for k, v in fields.items()]


def _insert(after, name, node):
    def change(g):
        g.nodes[name] = node
        g.edges = [(a, name) if a == after else (a, b) for a, b in g.edges] + [
            (name, next(b for a, b in g.edges if a == after))]
    return change


@pytest.mark.parametrize("change, needles", [
    (_set("lif0", tau_syn=np.linspace(1e-3, 2e-3, 6)), ["'lif0'", "tau_syn differs"]),
    (_set("lif1", v_reset=np.full(3, 0.2)), ["'lif1'", "v_reset=0.2"]),
    (_set("lif0", tau_mem=np.full(6, 5e-5)), ["'lif0'", "tau_mem", "not longer than the step"]),
    (_set("lif1", v_threshold=np.full(3, -1.0)), ["'lif1'", "threshold=-1", "> 0"]),
    (_set("lif0", v_threshold=np.ones(4)), ["'lif0'", "does not fit"]),
    (lambda g: g.edges.append(("lif1", "fc1")), ["several inputs or outputs"]),
    (_insert("input", "delay", nir.Delay(delay=np.ones(8))),
     ["'delay'", "Delay", "does not load"]),
    (_insert("fc0", "scale", nir.Affine(weight=np.eye(6, dtype="f4"), bias=np.zeros(6, "f4"))),
     ["'scale' follows the synapse 'fc0'"]),
    (_insert("lif1", "fc2", nir.Linear(weight=np.eye(3, dtype="f4"))),
     ["ends in the synapse 'fc2'"]),
    (_insert("input", "leaky", nir.LIF(tau=np.ones(8), r=np.ones(8), v_leak=np.zeros(8),
                                       v_threshold=np.ones(8))),
     ["'leaky'", "LIF neuron without a synaptic current"]),
])
def test_inexpressible_graphs_are_refused_naming_the_node(change, needles):
    with pytest.raises(UserError) as exc:
        antlr_nir.load(_edit(change), dt=1e-4, reset="v_only")
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)


def test_load_needs_a_time_step_for_foreign_graphs():
    with pytest.raises(UserError, match="give dt"):
        antlr_nir.load(foreign_graph())
    with pytest.raises(UserError, match="dt must be"):
        antlr_nir.load(foreign_graph(), dt=-1.0)


@pytest.mark.parametrize("make, kwargs, needles", [
    (lambda: LIFLayer(3, 2, single_spike=True), {}, ["single_spike", "held at reset"]),
    (lambda: LIFLayer(3, 2, alpha_v=1.0), {}, ["alpha_v=1", "no finite NIR time constant"]),
    (lambda: LIFLayer(3, 2, alpha_i=1.0), {}, ["alpha_i=1"]),
    (lambda: LIFLayer(3, 2, replicas=2), {}, ["replicas"]),
    (lambda: SpikingNetwork([LIF(nn.MaxPool2d(2))]), {"input_shape": (1, 4, 4)},
     ["layer 0 (LIF)", "MaxPool2d"]),
    (lambda: SpikingNetwork([LIFConv2d(1, 2, 3)]), {}, ["input_shape", "LIFConv2d"]),
    (lambda: SpikingNetwork([LIFLayer(4, 4), Unflatten((1, 2, 2)), LIFConv2d(1, 1, 1)]), {},
     ["layer 1 (Unflatten)", "no reshape node"]),
    (lambda: LIFLayer(3, 2), {"dt": 0.0}, ["dt must be"]),
    (lambda: LIFLayer(3, 2), {"dt": float("nan")}, ["dt must be"]),
    (lambda: nn.Linear(3, 2), {}, ["SpikingNetwork or a spiking layer", "Linear"]),
])
def test_inexpressible_networks_are_refused(make, kwargs, needles):
    with pytest.raises(UserError) as exc:
        antlr_nir.export(make(), reset="v_only", **kwargs)
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)


def test_missing_nir_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)  # `import nir` raises ImportError
    with pytest.raises(UserError, match=r"pip install 'antlr-snn\[nir\]'"):
        antlr_nir.export(fc_net(), reset="v_only")


def test_damaged_or_missing_files(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not an HDF5 file")
    with pytest.raises(UserError, match="bad.nir is not a readable NIR graph"):
        antlr_nir.load(str(bad))
    with pytest.raises(DataNotFound, match="no NIR file"):
        antlr_nir.read(str(tmp_path / "none.nir"))
