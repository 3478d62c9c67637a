"""Analyses of finished runs: the regression check, baselines, run comparison, sweeps, power planning."""
