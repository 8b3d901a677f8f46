"""The benchmarked systems by name: ``build(name, cfg, device)``.

Names: ``antlr``, ``activation``, ``timing``, ``bptt`` (this project, the automatic kernel
backend), ``antlr_ref`` / ``antlr_triton`` (ANTLR forced onto the reference / triton backend),
``snntorch``, ``spikingjelly``, ``norse``, ``norse_compiled``. A config with ``conv`` builds
the conv variants (this project and SpikingJelly).
"""
from __future__ import annotations

LABELS = {
    "antlr": "antlr-snn ANTLR", "activation": "antlr-snn activation",
    "timing": "antlr-snn timing", "bptt": "antlr-snn BPTT",
    "antlr_ref": "antlr-snn ANTLR, reference backend",
    "antlr_triton": "antlr-snn ANTLR, triton backend",
    "snntorch": "snnTorch Synaptic (BPTT)",
    "spikingjelly": "SpikingJelly LIFNode multi-step",
    "norse": "Norse LIFCell (BPTT)",
    "norse_compiled": "Norse LIFCell (BPTT), torch.compile",
}
OURS = ("antlr", "activation", "timing", "bptt")


def build(name: str, cfg: dict, device: str = "cpu"):
    if name in OURS or name in ("antlr_ref", "antlr_triton"):
        from benchmarks.ours import Ours
        backend = {"antlr_ref": "reference", "antlr_triton": "triton"}.get(name, "auto")
        return Ours(cfg, device, name if name in OURS else "antlr", backend)
    if cfg.get("conv") and name != "spikingjelly":
        raise ValueError(f"no conv variant of {name!r}")
    if name == "snntorch":
        from benchmarks.peer_snntorch import SnnTorch
        return SnnTorch(cfg, device)
    if name == "spikingjelly":
        from benchmarks.peer_spikingjelly import SpikingJelly
        return SpikingJelly(cfg, device)
    if name in ("norse", "norse_compiled"):
        from benchmarks.peer_norse import Norse
        return Norse(cfg, device, compiled=name == "norse_compiled")
    raise ValueError(f"unknown system {name!r}")
