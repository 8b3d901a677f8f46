"""Benchmarks: one training step of antlr-snn against snnTorch, SpikingJelly and Norse.

``python benchmarks/step_vs_peers.py --help`` (the driver); one module per system family
(:mod:`benchmarks.ours`, :mod:`benchmarks.peer_snntorch`, :mod:`benchmarks.peer_spikingjelly`,
:mod:`benchmarks.peer_norse`), the shared parts in :mod:`benchmarks.common`, the report in
:mod:`benchmarks.report`.
"""
