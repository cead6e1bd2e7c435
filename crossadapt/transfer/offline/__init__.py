"""Offline transfer (paper §3.1, Algorithm 1 lines 10-26): strategic sampling, unclicked-exposure augmentation (pCVR), progressive distillation, its losses and the adaptive distillation weight."""
