"""The drift-detector service: windowed feature drift and the replay ratio, batch and live (see pipeline.py, live.py)."""
