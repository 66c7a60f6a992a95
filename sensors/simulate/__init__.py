"""Simulators that produce realistic sensor streams with known ground truth (one module per sensor kind)."""
