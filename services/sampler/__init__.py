"""The sampler service: strategic distillation samples scored by the teacher (see pipeline.py)."""
