"""Experiments (paper §4): methods and baselines side by side, presets, results with paired statistics, reports."""
