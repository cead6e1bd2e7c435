"""The ModelSwitch rollout without Kubernetes (`crossadapt rollout`): replayed traffic against a real local
predictor, decided by the operator's own gate functions (`operators.modelswitch.decisions`)."""
