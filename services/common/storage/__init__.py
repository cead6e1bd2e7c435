"""Object storage (local folder or S3/MinIO), the checkpoint store and the dataset store.

    from services.common.storage import open_object_store, CheckpointStore
    store = CheckpointStore(open_object_store(get_settings()))
"""

from __future__ import annotations

from services.common.settings import PlatformSettings
from services.common.storage.checkpoints import CheckpointStore, PublishedCheckpoint
from services.common.storage.datasets import DatasetPosition, DatasetStore
from services.common.storage.objects import LocalObjectStore, ObjectNotFoundError, ObjectStore


def open_object_store(settings: PlatformSettings) -> ObjectStore:
    """The store named by CROSSADAPT_STORE_URL: `s3://bucket/prefix` or a local folder."""
    if settings.uses_s3:
        from services.common.storage.s3 import S3ObjectStore

        return S3ObjectStore.connect(
            str(settings.store_url),
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            part_size=settings.s3_part_size,
            attempts=settings.s3_max_attempts,
            backoff_s=settings.s3_backoff_s,
        )
    return LocalObjectStore(settings.local_store_dir)


__all__ = [
    "CheckpointStore",
    "DatasetPosition",
    "DatasetStore",
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "PublishedCheckpoint",
    "open_object_store",
]
