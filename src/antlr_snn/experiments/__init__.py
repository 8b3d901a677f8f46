"""Experiments of the paper, one module per CLI subcommand (see :mod:`antlr_snn.cli`)."""
