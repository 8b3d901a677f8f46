"""antlr-snn: spiking neural networks trained with ANTLR."""
