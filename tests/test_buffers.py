"""The buffer pool: reuse only what nobody holds, never change a live tensor."""
import pytest
import torch

from antlr_snn import SpikingNetwork, buffers, encode, kernels

BIG = (1024, 1024, 2)          # 8 MB in float32: pooled


@pytest.fixture(autouse=True)
def fresh_pool():
    buffers.clear()
    buffers.set_limit(2 << 30)
    yield
    buffers.clear()
    buffers.set_limit(2 << 30)


def test_reuses_a_free_buffer_and_never_a_held_one():
    a = buffers.empty(BIG)
    ptr = a.data_ptr()
    b = buffers.empty(BIG)
    assert b.data_ptr() != ptr                     # a is alive
    del a
    c = buffers.empty((2048, 1024), torch.float32)  # same bytes, other shape
    assert c.data_ptr() == ptr and c.shape == (2048, 1024) and c.is_contiguous()
    view = c[3:5]                                  # a view keeps the storage alive
    del c
    assert buffers.empty(BIG).data_ptr() != ptr
    del view
    assert buffers.empty(BIG).data_ptr() == ptr
    assert buffers.stats()["buffers"] == 3     # a, b and the one made while the view lived


def test_numpy_view_keeps_the_buffer():
    a = buffers.empty(BIG)
    ptr, arr = a.data_ptr(), a.numpy()
    del a
    assert buffers.empty(BIG).data_ptr() != ptr
    del arr
    assert buffers.empty(BIG).data_ptr() == ptr


def test_dtype_may_change_between_uses():
    a = buffers.empty((1024, 1024), torch.float64)
    ptr = a.data_ptr()
    del a
    b = buffers.empty((2048, 1024), torch.float32)
    assert b.data_ptr() == ptr and b.dtype == torch.float32
    b.fill_(1.5)
    assert b.sum().item() == 1.5 * 2048 * 1024


def test_small_buffers_are_not_pooled():
    a = buffers.empty((100, 100))
    del a
    assert buffers.stats() == {"buffers": 0, "bytes": 0, "free_bytes": 0}


def test_limit_and_clear():
    with pytest.raises(ValueError, match="pool limit"):
        buffers.set_limit(-1)
    buffers.set_limit(20 << 20)                       # room for two free 8 MB buffers
    for shape in [(1024, 1024, 2), (1024, 1024, 3), (1024, 1024, 4)]:
        buffers.empty(shape)                          # each freed at once
    assert buffers.stats()["free_bytes"] <= 20 << 20
    buffers.set_limit(0)                              # off: nothing kept, nothing pooled
    assert buffers.stats()["free_bytes"] == 0
    buffers.empty(BIG)
    assert buffers.stats()["buffers"] == 0
    buffers.set_limit(2 << 30)
    buffers.clear()
    assert buffers.stats()["buffers"] == 0
    with buffers.disabled():
        buffers.empty(BIG)
    assert buffers.stats()["buffers"] == 0


@pytest.mark.parametrize("method", ["antlr", "bptt"])
def test_two_graphs_alive_at_once_give_the_unpooled_gradients(method):
    """Outputs and saved tensors of a step must survive the next step's allocations."""
    torch.manual_seed(0)
    T, B = 100, 16                                     # [T, B, 800] float32 = 5 MB: pooled
    x = [encode.latency(torch.rand(B, 784), num_steps=T) for _ in range(2)]
    net = SpikingNetwork([784, 800, 10], method=method)
    with torch.no_grad():
        net.layers[0].weight.mul_(6.0)
        net.layers[1].weight.mul_(6.0)

    def grads(pool):
        ctx = buffers.disabled() if not pool else torch.enable_grad()
        with ctx:
            outs = [net(xi) for xi in x]               # two graphs alive before any backward
            hidden = [o.layers[0].spikes.clone() for o in outs]
            gs = []
            for o in outs:
                net.zero_grad()
                (o.spikes.sum() + (o.layers[0].spikes * torch.linspace(0, 1, T)[:, None, None]).sum()
                 ).backward()
                gs.append([p.grad.clone() for p in net.parameters()])
            for o, h in zip(outs, hidden):             # outputs unchanged by later allocations
                assert torch.equal(o.layers[0].spikes, h)
        return hidden, gs

    before = buffers.stats()["buffers"]
    h_pool, g_pool = grads(True)
    assert buffers.stats()["buffers"] > before         # the pool was used
    h_ref, g_ref = grads(False)
    assert all(torch.equal(a, b) for a, b in zip(h_pool, h_ref))
    assert h_pool[0].sum() > 0
    for a, b in zip(g_pool, g_ref):
        for ga, gb in zip(a, b):
            assert torch.equal(ga, gb)


def test_kernels_take_their_large_outputs_from_the_pool():
    if not kernels.available("numba"):
        pytest.skip("numba not available")
    from antlr_snn.neuron import LIFParameters
    be, p = kernels.get("numba"), LIFParameters.create()
    x = torch.rand(100, 16, 800)
    S1, V1, _ = be.lif_forward(x, torch.zeros(800), p, False, False)
    ptrs = {S1.data_ptr(), V1.data_ptr()}
    del S1, V1
    S2, V2, _ = be.lif_forward(x, torch.zeros(800), p, False, False)
    assert {S2.data_ptr(), V2.data_ptr()} == ptrs     # the same memory, step after step
    S3, _, _ = be.lif_forward(x, torch.zeros(800), p, False, False)
    assert S3.data_ptr() not in ptrs                  # never memory that is still held
    assert torch.equal(S2, S3)
