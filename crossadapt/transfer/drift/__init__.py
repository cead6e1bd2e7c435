"""Drift detection (paper §3.4): histograms per feature, divergences, the replay ratio, rolling re-estimation."""
