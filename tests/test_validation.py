"""Bad input to layers, losses, encoders and decoders raises a clear error naming the problem;
empty batches (B = 0) run and give empty outputs wherever no batch mean is taken."""
import math

import pytest
import torch

from antlr_snn import LIFLayer, SpikeOutput, SpikingNetwork, decode, encode, losses


def output(T=6, B=2, N=3, p=0.3):
    S = torch.bernoulli(torch.full((T, B, N), p))
    return SpikeOutput(S, torch.zeros_like(S), torch.zeros_like(S))


# --------------------------------------------------------------------------- empty shapes
@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_zero_time_steps_rejected(method):
    with pytest.raises(ValueError, match="at least one time step"):
        SpikingNetwork([4, 3, 2], method=method)(torch.zeros(0, 2, 4))
    with pytest.raises(ValueError, match="at least one time step"):
        LIFLayer(4, 3, method=method, replicas=2)(torch.zeros(0, 2, 1, 4))


@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_empty_batch_gives_empty_outputs(method):
    out = SpikingNetwork([4, 3, 2], method=method)(torch.zeros(5, 0, 4))
    assert tuple(out.spikes.shape) == (5, 0, 2)
    assert decode.earliest_spike(out).shape == (0,)
    assert decode.most_spikes(out).shape == (0,)
    assert decode.spike_counts(out)["total"].shape == (0,)
    assert tuple(encode.latency(torch.zeros(0, 4), 30).shape) == (30, 0, 4)
    assert tuple(encode.rate(torch.zeros(0, 2, 2), 30).shape) == (30, 0, 4)


def test_batch_mean_losses_reject_an_empty_batch():
    out = output(B=0)
    labels = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="batch is empty"):
        losses.latency_loss(out, labels)
    with pytest.raises(ValueError, match="batch is empty"):
        losses.at_least_one_spike_loss(out, labels)
    with pytest.raises(ValueError, match="batch is empty"):
        losses.count_loss(out, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="batch is empty"):
        losses.spike_train_loss(out, torch.zeros(6, 0, 3))
    assert losses.spike_train_loss(out, torch.zeros(6, 0, 3), reduction="none").shape == (0,)


@pytest.mark.parametrize("shape", [(0, 2, 3), (5, 2, 0), (5,)])
@pytest.mark.parametrize("fn", [decode.earliest_spike, decode.most_spikes, decode.decision_step])
def test_decoders_reject_empty_time_or_neurons(fn, shape):
    with pytest.raises(ValueError, match=r"\[T, \*batch, N\]"):
        fn(torch.zeros(shape))


def test_decoders_accept_bool_spikes():
    S = torch.zeros(5, 2, 3); S[3, 0, 1] = 1; S[1, 0, 2] = 1; S[4, 0, 2] = 1
    assert decode.earliest_spike(S.bool()).tolist() == decode.earliest_spike(S).tolist() == [2, -1]
    assert decode.most_spikes(S.bool()).tolist() == decode.most_spikes(S).tolist() == [2, -1]
    assert decode.decision_step(S.bool()).tolist() == [1, 4]


# --------------------------------------------------------------------------- labels
@pytest.mark.parametrize("labels, fragment", [
    (torch.tensor([0, 5]), r"labels must be integers in \[0, 2\].*\[0, 5\]"),
    (torch.tensor([0, -1]), r"labels must be integers in \[0, 2\].*\[-1, 0\]"),
    (torch.tensor([0.5, 1.0]), r"labels must be integers in \[0, 2\].*float"),
])
@pytest.mark.parametrize("loss", [losses.latency_loss, losses.at_least_one_spike_loss])
def test_losses_validate_labels(loss, labels, fragment):
    with pytest.raises(ValueError, match=fragment):
        loss(output(), labels)


def test_labels_must_be_a_tensor():
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        losses.at_least_one_spike_loss(output(), [0, 1])


# --------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("S", [torch.full((5, 2, 3), math.nan), torch.full((5, 2, 3), 0.5),
                               torch.full((5, 2, 3), 2, dtype=torch.long)])
@pytest.mark.parametrize("fn", [decode.earliest_spike, decode.most_spikes, decode.decision_step])
def test_decoders_reject_nan_and_nonbinary(fn, S):
    with pytest.raises(ValueError, match="NaN" if S.is_floating_point() and S.isnan().any()
                       else "binary"):
        fn(S)


@pytest.mark.parametrize("beta", [math.inf, math.nan, 0.0, -1.0, True])
def test_latency_beta_finite_positive(beta):
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        losses.latency_loss(output(), torch.tensor([0, 1]), beta=beta)


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_weights_and_strengths_finite_nonnegative(value):
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        losses.at_least_one_spike_loss(output(), torch.tensor([0, 1]), weight=value)
    net = SpikingNetwork([4, 3])
    out = net(torch.zeros(5, 2, 4))
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        losses.no_spike_penalty(net, out, strength=value)


def test_zero_weight_and_strength_still_allowed():
    assert losses.at_least_one_spike_loss(output(), torch.tensor([0, 1]), weight=0.0).item() == 0
    net = SpikingNetwork([4, 3])
    assert losses.no_spike_penalty(net, net(torch.zeros(5, 2, 4)), strength=0).item() == 0


@pytest.mark.parametrize("value", ["no", 1, None])
def test_single_spike_must_be_bool(value):
    with pytest.raises(ValueError, match="single_spike must be a bool"):
        LIFLayer(4, 3, single_spike=value)


@pytest.mark.parametrize("value", [True, False, 0, 2.0, "2"])
def test_replicas_positive_int(value):
    with pytest.raises(ValueError, match="replicas must be a positive integer or None"):
        LIFLayer(4, 3, replicas=value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "float32"])
def test_layer_dtype_must_be_floating(dtype):
    with pytest.raises(ValueError, match="dtype must be a floating point torch.dtype"):
        LIFLayer(4, 3, dtype=dtype)


def test_accuracy_shapes_must_match():
    with pytest.raises(ValueError, match="pred and labels must have the same shape"):
        decode.accuracy(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):  # would broadcast to [2, 2]
        decode.accuracy(torch.zeros(2, 1), torch.zeros(2))


def test_encoders_reject_complex_images():
    with pytest.raises(ValueError, match="images must be real"):
        encode.latency(torch.tensor([[0.5 + 0j]]), 30)
