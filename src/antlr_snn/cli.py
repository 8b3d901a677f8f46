"""Command line of antlr-snn (placeholder until the experiments land)."""
from __future__ import annotations


def main(argv=None) -> int:
    print("antlr-snn: no subcommands yet")
    return 0
