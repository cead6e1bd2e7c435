"""Offline transfer (paper §3.2-3.3): strategic sampling, unclicked-exposure augmentation (pCVR), progressive distillation, its losses and the adaptive distillation weight."""
