"""Encoders, decisions, spike accounting and input validation."""
import math

import pytest
import torch

from antlr_snn import LIFLayer, SpikeOutput, SpikingNetwork, decode, encode


def test_latency_code_exact_steps():
    x = torch.tensor([[1.0, 0.5, 0.0, 0.01, 0.25], [0.2, 1e-6, 1.0, 0.0, 0.999]])
    s = encode.latency(x, num_steps=30)
    assert s.shape == (30, 2, 5)
    assert s.sum(0).tolist() == [[1, 1, 0, 1, 1], [1, 1, 1, 0, 1]]  # once each, x = 0 never
    steps = s.argmax(0)
    expected = [[math.floor(24 * (1 - v)) for v in row] for row in x.tolist()]
    for b in range(2):
        for i in range(5):
            if x[b, i] > 0:
                assert steps[b, i].item() == expected[b][i]
    assert steps[0, 0] == 0 and steps[0, 1] == 12 and steps[1, 1] == 23


def test_latency_code_images_and_errors():
    imgs = torch.rand(3, 28, 28)
    assert encode.latency(imgs, num_steps=100).shape == (100, 3, 784)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode.latency(imgs * 255, num_steps=100)
    with pytest.raises(ValueError, match="NaN"):
        encode.latency(torch.full((1, 3), math.nan), num_steps=100)
    with pytest.raises(ValueError, match="t_max"):
        encode.latency(imgs, num_steps=10)


def test_rate_code_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[0.0, 0.25, 1.0]])
    s = encode.rate(x.expand(2000, 3), num_steps=50, generator=g)
    rates = s.mean(dim=(0, 1))
    assert rates[0] == 0 and rates[2] == 1
    assert abs(rates[1].item() - 0.25) < 0.01


def test_decisions_and_ties():
    T = 6
    S = torch.zeros(T, 4, 3)
    S[2, 0, 1] = S[2, 0, 2] = 1; S[4, 0, 2] = 1   # tie at step 2 -> 1; most spikes -> 2
    S[3, 1, 0] = S[1, 1, 2] = 1                   # earliest 2; most: tie 1-1 -> earlier (2)
    S[0, 2, 0] = S[5, 2, 1] = S[4, 2, 1] = 1      # earliest 0; most 1
    assert decode.earliest_spike(S).tolist() == [1, 2, 0, -1]
    assert decode.most_spikes(S).tolist() == [2, 2, 1, -1]
    S2 = torch.zeros(4, 1, 3); S2[1, 0, 0] = S2[1, 0, 2] = 1
    assert decode.most_spikes(S2).tolist() == [0]  # same count, same time -> lowest index
    labels = torch.tensor([1, 2, 1, 0])
    assert decode.accuracy(decode.earliest_spike(S), labels) == 0.5  # silent sample is wrong


def test_spike_counts_to_decision():
    T = 8
    hid = torch.zeros(T, 2, 4)
    outp = torch.zeros(T, 2, 2)
    hid[0, 0, 0] = hid[3, 0, 1] = hid[6, 0, 2] = 1
    outp[3, 0, 1] = outp[7, 0, 0] = 1      # sample 0 decides at step 3
    hid[1, 1, :] = 1                       # sample 1 never decides
    z = torch.zeros_like
    out = SpikeOutput(outp, z(outp), z(outp),
                      layers=(SpikeOutput(hid, z(hid), z(hid)), SpikeOutput(outp, z(outp), z(outp))))
    c = decode.spike_counts(out)
    assert c["total"].tolist() == [5, 4]
    assert c["to_decision"].tolist() == [3, 4]   # steps 0..3 inclusive: 2 hidden + 1 output
    assert c["hidden"].tolist() == [3, 4] and c["output"].tolist() == [2, 0]
    assert decode.decision_step(out).tolist() == [3, T - 1]
    # one layer's spikes, as a tensor or a SpikeOutput: the output layer alone
    for single in (outp, SpikeOutput(outp, z(outp), z(outp))):
        c1 = decode.spike_counts(single)
        assert c1["total"].tolist() == [2, 0] and c1["to_decision"].tolist() == [1, 0]
        assert c1["hidden"].tolist() == [0, 0]
    with pytest.raises(TypeError, match="SpikeOutput or a spike tensor"):
        decode.spike_counts([outp])


def test_bad_input_raises_clear_errors():
    layer = LIFLayer(4, 3)
    ok = torch.zeros(5, 2, 4)
    with pytest.raises(ValueError, match="binary"):
        layer(torch.full((5, 2, 4), 0.5))
    bad = ok.clone(); bad[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        layer(bad)
    with pytest.raises(ValueError, match="rank 3"):
        layer(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="in_features=4"):
        layer(torch.zeros(5, 2, 7))
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        LIFLayer(4, 3, method="foo")
    for name in ("alpha_v", "alpha_i"):
        for value in (0.0, 1.5, -0.1):
            with pytest.raises(ValueError, match=name):
                LIFLayer(4, 3, **{name: value})
    with pytest.raises(ValueError, match="lambda_act"):
        LIFLayer(4, 3, lambda_act=-1.0)
    with pytest.raises(ValueError, match="lambda_tim"):
        LIFLayer(4, 3, lambda_tim=-0.5)
    with pytest.raises(ValueError, match="threshold"):
        LIFLayer(4, 3, threshold=0.0)
    with pytest.raises(ValueError, match="in_features"):
        LIFLayer(0, 3)
    with pytest.raises(ValueError, match=r"layer below gives spikes of shape \(5, 2, 3\)"):
        LIFLayer(5, 2)(layer(ok))
    with pytest.raises(ValueError, match="sizes"):
        SpikingNetwork([4])


def test_integer_and_bool_spikes_accepted():
    layer = LIFLayer(4, 3)
    x = torch.bernoulli(torch.full((5, 2, 4), 0.5))
    ref = layer(x).spikes
    torch.testing.assert_close(layer(x.bool()).spikes, ref)
    torch.testing.assert_close(layer(x.to(torch.uint8)).spikes, ref)


def test_default_constants_follow_authors():
    layer = LIFLayer(3, 2)
    p = layer.params
    assert (p.alpha_v, p.alpha_i, p.threshold, p.beta_i) == (0.99, 0.99, 1.0, 1.0)
    peak = max((k + 1) * 0.99 ** k for k in range(1000))
    assert p.beta_v == pytest.approx(1 / peak) and p.beta_bias == pytest.approx(1 / peak)
    assert peak == pytest.approx(36.97, abs=0.01)
    assert torch.all(layer.bias == 0)
    assert layer.weight.abs().max() <= 1 / math.sqrt(3)
    assert LIFLayer(3, 2, alpha_v=1.0, alpha_i=0.5).params.beta_v == pytest.approx(0.5)


def test_synaptic_operations():
    x = torch.zeros(4, 2, 3)
    x[0, 0, :] = 1                      # 3 input spikes in sample 0
    hid = torch.zeros(4, 2, 5); hid[1, 0, 0] = hid[2, 1, 4] = hid[3, 1, 1] = 1
    outp = torch.zeros(4, 2, 2); outp[3, 0, 1] = 1
    z = torch.zeros_like
    out = SpikeOutput(outp, z(outp), z(outp),
                      layers=(SpikeOutput(hid, z(hid), z(hid)), SpikeOutput(outp, z(outp), z(outp))))
    # sample 0: 3 inputs x 5 hidden + 1 hidden x 2 outputs; sample 1: 2 hidden x 2 outputs
    assert decode.synaptic_operations(x, out).tolist() == [17, 4]
    assert decode.synaptic_operations(x, hid).tolist() == [15, 0]   # one layer: inputs x 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t_max", [24, 7, 100, 255, 1000])
def test_latency_code_is_exact_for_every_gray_level(dtype, t_max):
    """x = k/255 spikes at exactly (t_max (255 - k)) // 255, all 256 levels (float32(1/3) lies
    above 1/3: a plain floor put 85/255 and 170/255 one step early)."""
    k = torch.arange(256)
    x = (k.to(torch.float64) / 255).to(dtype).unsqueeze(0)
    S = encode.latency(x, num_steps=t_max, t_max=t_max)[:, 0]
    assert S.sum(0)[0] == 0 and (S.sum(0)[1:] == 1).all()  # 0 never spikes, the rest once
    steps = S[:, 1:].argmax(0)
    expected = (t_max * (255 - k[1:])) // 255
    assert torch.equal(steps, expected.clamp_max(t_max - 1))


def test_spike_counts_follow_the_decision():
    from antlr_snn import decode
    S_h = torch.zeros(6, 2, 3)
    S_o = torch.zeros(6, 2, 2)
    S_h[0, 0, 0] = S_h[4, 0, 1] = S_h[5, 1, 2] = 1
    S_o[2, 0, 1] = S_o[5, 0, 0] = 1      # sample 0 decides at step 2; sample 1 never
    out = SpikeOutput(S_o, torch.zeros_like(S_o), torch.zeros_like(S_o),
                      (SpikeOutput(S_h, S_h * 0, S_h * 0), SpikeOutput(S_o, S_o * 0, S_o * 0)))
    early = decode.spike_counts(out, "earliest_spike")
    assert early["total"].tolist() == [4.0, 1.0] and early["to_decision"].tolist() == [2.0, 1.0]
    most = decode.spike_counts(out, "most_spikes")
    assert most["to_decision"].tolist() == most["total"].tolist() == [4.0, 1.0]
    assert most["hidden"].tolist() == [2.0, 1.0] and most["output"].tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="decision must be one of"):
        decode.spike_counts(out, "latest")
    conv = SpikeOutput(torch.ones(6, 2, 4, 2, 2), None, None)  # conv layers count too
    assert decode.spike_counts(SpikeOutput(S_o, S_o, S_o, (conv, SpikeOutput(S_o, S_o, S_o)))
                               )["hidden"].tolist() == [96.0, 96.0]


def test_accuracy_of_an_empty_batch_is_an_error():
    from antlr_snn import decode
    with pytest.raises(ValueError, match="empty batch"):
        decode.accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
