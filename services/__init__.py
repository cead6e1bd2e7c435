"""CrossAdapt platform services: gRPC/Celery adapters around the core `crossadapt` library.

`services.common` holds what every service shares (settings, Celery app, gRPC server helpers,
logging, metrics, object storage, operations); `services.<name>` holds one service each.
"""
