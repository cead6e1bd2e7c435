"""CrossAdapt core library: data, CTR models, metrics, training and the transfer engine.

This package knows nothing of gRPC, Celery, S3 or Kubernetes; the platform adapters live in
``services/`` and ``operators/``.
"""

__version__ = "0.1.0"
