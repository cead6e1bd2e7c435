"""Drift detection (paper §3.2.2, Algorithm 1 lines 28-35): histograms per feature, divergences, the replay ratio, rolling re-estimation."""
