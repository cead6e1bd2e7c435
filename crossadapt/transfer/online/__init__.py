"""Online co-distillation (paper §3.2, Algorithm 1 lines 36-50): student every batch, teacher every τ, drift-sized replay, prequential evaluation."""
