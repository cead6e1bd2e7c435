"""The predictor: a KServe model server with teacher and student arms, a sticky A/B split, kept shadow
scores, live per-arm metrics with bootstrap intervals and hot swap (see server.py)."""
