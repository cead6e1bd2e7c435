"""Platform settings, read from `CROSSADAPT_*` environment variables.

One machine needs none of them: the embedded defaults keep the broker (kombu's `filesystem://`
transport), task results, operation records and the checkpoint/dataset stores under `home`.
A deployment points them at Redis and S3/MinIO:

    CROSSADAPT_BROKER_URL=redis://redis:6379/0
    CROSSADAPT_RESULT_BACKEND=redis://redis:6379/1
    CROSSADAPT_STORE_URL=s3://models/crossadapt       # bucket/prefix
    CROSSADAPT_S3_ENDPOINT=minio:9000
    CROSSADAPT_S3_ACCESS_KEY=... CROSSADAPT_S3_SECRET_KEY=...
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class PlatformSettings(BaseSettings):
    """Everything a service or worker process needs to find the broker, the stores and its ports."""

    model_config = SettingsConfigDict(env_prefix="CROSSADAPT_", extra="forbid")

    home: Path = Field(
        default=Path.home() / ".crossadapt",
        description="Root of the embedded broker, results, operations and stores.",
    )
    # Celery
    broker_url: str | None = Field(
        default=None, description="Celery broker; unset means filesystem:// under home/broker."
    )
    result_backend: str | None = Field(
        default=None,
        description="Celery result backend and operation records; unset means files under home.",
    )
    visibility_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="Redis broker: an unacknowledged task is redelivered after this long "
        "(a worker killed outright); keep it above the longest task.",
    )
    task_max_retries: int = Field(default=5, ge=0, description="Retries of a task on transient errors.")
    task_max_deliveries: int = Field(
        default=4, ge=1, description="Starts of one task (redeliveries after lost workers) before its operation fails."
    )
    task_retry_backoff_max_s: float = Field(default=60.0, gt=0)
    broker_polling_interval_s: float = Field(default=0.05, gt=0, description="filesystem:// transport poll.")
    # Storage
    store_url: str | None = Field(
        default=None,
        description="Checkpoint/dataset store: s3://bucket/prefix, a folder path, or unset for home/store.",
    )
    s3_endpoint: str = "localhost:9000"
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_secure: bool = False
    s3_region: str | None = None
    s3_part_size: int = Field(default=16 * MIB, ge=5 * MIB, description="Multipart part size in bytes.")
    s3_max_attempts: int = Field(default=5, ge=1, description="Tries per S3 call on transient errors.")
    s3_backoff_s: float = Field(default=0.2, gt=0, description="First retry delay; doubles per try.")
    # Services
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="Prometheus /metrics; 0 disables.")
    shutdown_grace_s: float = Field(default=10.0, ge=0, description="SIGTERM drain time for in-flight RPCs.")
    watch_poll_s: float = Field(default=0.2, gt=0, description="How often WatchOperation re-reads state.")
    operation_ttl_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Operation records expire this long after they were created."
    )
    stall_s: float = Field(
        default=1800.0, gt=0, description="An operation with no sign of life (progress, stage change, lease heartbeat) "
        "for this long is stalled: its server re-sends its work from the recorded stage (keep it above the longest "
        "silent step and the longest queue wait).",
    )
    stall_max_resends: int = Field(
        default=3, ge=0, description="Re-sends of a stalled operation before it fails, naming the stall.")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Projection tasks
    shard_chunk_rows: int = Field(
        default=262_144, gt=0, description="Rows per chunk inside a shard task (progress granularity)."
    )
    projection_task_rows: int = Field(
        default=100_000, gt=0, description="Shards smaller than this are packed into one task of up to this many "
        "rows (one broker round trip for many small tables)."
    )

    @model_validator(mode="after")
    def _s3_needs_credentials(self) -> PlatformSettings:
        if self.uses_s3 and not (self.s3_access_key and self.s3_secret_key.get_secret_value()):
            raise ValueError("CROSSADAPT_STORE_URL is s3://... but CROSSADAPT_S3_ACCESS_KEY/SECRET_KEY are empty")
        return self

    @property
    def uses_s3(self) -> bool:
        return bool(self.store_url and self.store_url.startswith("s3://"))

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None or self.broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def results_dir(self) -> Path:
        return self.home / "results"

    @property
    def operations_dir(self) -> Path:
        return self.home / "operations"

    @property
    def local_store_dir(self) -> Path:
        if self.store_url and not self.uses_s3:
            return Path(self.store_url.removeprefix("file://"))
        return self.home / "store"

    @property
    def redis_results(self) -> bool:
        return bool(self.result_backend and self.result_backend.startswith(("redis://", "rediss://")))


@lru_cache(maxsize=1)
def get_settings() -> PlatformSettings:
    """The process-wide settings (read once from the environment)."""
    return PlatformSettings()
