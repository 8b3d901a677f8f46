"""The benchmark code runs (tiny shapes, no timing asserted): every system builds, steps and
reports its firing; a worker process answers; the report renders what was measured."""
import importlib.util

import pytest

from benchmarks import common, report
from benchmarks.systems import build

TINY = dict(data="mnist", n_in=784, hidden=[8], T=30, batch=2)
TINY_CONV = dict(data="nmnist", conv=(2, 5, 4), T=30, batch=2)
PEERS = [p for p, mod in (("snntorch", "snntorch"), ("spikingjelly", "spikingjelly"),
                          ("norse", "norse")) if importlib.util.find_spec(mod)]


@pytest.mark.parametrize("name, cfg", [("antlr", TINY), ("bptt", TINY_CONV)]
                         + [(p, TINY) for p in PEERS]
                         + ([("spikingjelly", TINY_CONV)] if "spikingjelly" in PEERS else []))
def test_every_system_steps(name, cfg, one_thread):
    s = build(name, cfg)
    s.set_scales([6.0, 6.0])
    w = [x.detach().clone() for x in s.weights()]
    s.step()
    assert any((a != b).any() for a, b in zip(w, s.weights()))  # Adam moved the weights
    assert tuple(s.infer().shape) == (30, 2, 10)
    rates = s.rates()
    assert len(rates) == 2 and all(r >= 0 for r in rates)
    assert rates[0] > 0 or name in PEERS  # (the peers' own units need other scales)


def test_worker_answers_and_times(one_thread):
    w = common.Worker()
    try:
        info = w.build("a", "antlr", TINY, scales=[6.0, 6.0])
        assert info["module"].startswith(str(common.ROOT / "src"))
        assert info["scales"] == [6.0, 6.0] and info["rates"][0] > 0
        t, faults = w.time("a", "step")
        assert t > 0 and faults >= 0
        with pytest.raises(RuntimeError, match="unknown system"):
            w.build("b", "nonesuch", TINY)
    finally:
        w.close()
    assert w.proc.returncode == 0


def test_report_renders_the_numbers():
    info = {n: {"rates": [0.3, 0.5]} for n in ("antlr", "bptt", "spikingjelly")}
    conv = {"train": {"antlr": 0.02, "bptt": 0.03, "spikingjelly": 0.08},
            "infer": {"antlr": 0.01, "bptt": 0.01, "spikingjelly": 0.04},
            "memory": {n: {"step": 1.0, "infer": 0.5} for n in info}, "info": info,
            "cfg": dict(common.CONFIGS["conv"]), "input_spikes": 1234.0}
    text = report.write({"sections": ["conv"], "machine": common.machine(), "conv": conv})
    assert "| antlr-snn ANTLR (LIFConv2d) | 20.0 | 0.25 |" in text
    assert "16x15x15 LIF neurons" in text and "3600 -> 10" in text
