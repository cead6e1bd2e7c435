"""The CrossAdapt Kubernetes operator: the `ModelSwitch` resource and its gated blue/green rollout.

The operator drives the platform services and the predictor only through their gRPC APIs
(`operators.modelswitch.clients`); nothing here imports the core `crossadapt` library.
"""
