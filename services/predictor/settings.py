"""The predictor's own settings, read from `CROSSADAPT_PREDICTOR_*` environment variables.

The platform settings (`CROSSADAPT_*`: store, admin gRPC port, metrics port) come from
`services.common.settings`; these say what to serve and how:

    CROSSADAPT_PREDICTOR_TEACHER=ctr/mlp-teacher              # a checkpoint name (newest version) ...
    CROSSADAPT_PREDICTOR_STUDENT=ctr/fibinet-student/v000003  # ... or name/version
    CROSSADAPT_PREDICTOR_STUDENT_WEIGHT=0.05 CROSSADAPT_PREDICTOR_SALT=rollout-7
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_VERSION = re.compile(r"^v\d{6}$")


@dataclass(frozen=True)
class CheckpointSpec:
    """A checkpoint to load: its name and version (None = the newest complete one)."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> CheckpointSpec:
        """`name`, `name/latest` or `name/v000003` (names never have a part shaped like a version)."""
        head, _, last = text.strip().rpartition("/")
        if head and (_VERSION.match(last) or last == "latest"):
            return cls(head, None if last == "latest" else last)
        return cls(text.strip())

    def __str__(self) -> str:
        return f"{self.name}/{self.version or 'latest'}"


class PredictorSettings(BaseSettings):
    """What the predictor serves and how it splits, shadows, keeps and reports."""

    model_config = SettingsConfigDict(env_prefix="CROSSADAPT_PREDICTOR_", extra="forbid")

    model_name: str = Field(default="ctr", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
                            description="The logical model's name on the inference endpoints.")
    teacher: str = Field(description="Teacher checkpoint: `name` (newest version) or `name/v000001`.")
    student: str | None = Field(default=None, description="Student checkpoint; unset: the teacher's (an A/A pair).")
    cohort_key: str = Field(default="user_id", description="Request column whose hash picks the arm (sticky).")
    row_id_field: str = Field(default="row_id", description="Optional request column of caller row ids.")
    student_weight: float = Field(default=0.0, ge=0.0, le=1.0, description="Initial share of cohorts on the student.")
    salt: str = Field(default="", max_length=256, description="Initial hash salt of the split.")
    shadow_share: float = Field(default=1.0, ge=0.0, le=1.0,
                                description="Share of rows the other arm also scores, off the critical path.")
    shadow_queue_rows: int = Field(default=65_536, gt=0,
                                   description="Rows waiting for shadow scores beyond which shadow work is dropped.")
    shadow_batch_rows: int = Field(
        default=1024, gt=0, description="Shadow rows scored together: the worker waits until this many wait "
        "(or shadow_max_delay_s passed), so small requests share one forward per arm.")
    shadow_max_delay_s: float = Field(default=0.5, ge=0, description="Longest a shadow row waits to be scored.")
    shadow_chunk_jobs: int = Field(
        default=256, gt=0, description="Requests' shadow work (a request's rows for one arm) scored between two "
        "turns of the event loop: a request that arrives while a batch is scored waits for one chunk, not the "
        "batch. A chunk's time grows with its requests (their Python work and two forwards); large requests stay "
        "in one chunk up to shadow_batch_rows, so their forwards stay large.")
    max_batch_rows: int = Field(default=4096, gt=0, description="Rows per request; more is INVALID_ARGUMENT.")
    kept_rows: int = Field(default=1_000_000, gt=0,
                           description="Scored rows kept in memory for label joins and metrics (a ring).")
    host: str = Field(default="127.0.0.1", description="Bind address of KServe's REST and gRPC servers.")
    http_port: int = Field(default=8080, ge=0, le=65535, description="KServe REST (V1 and V2).")
    inference_grpc_port: int = Field(default=8081, ge=0, le=65535, description="KServe V2 gRPC.")
    exposure_dataset: str | None = Field(
        default=None, description="Dataset of the exposure log; unset: exposures/<model_name>/<host name>.")
    flush_interval_s: float = Field(default=60.0, gt=0, description="Exposure-log flush period.")
    flush_rows: int = Field(default=100_000, gt=0, description="Complete rows that trigger an early flush.")
    bootstrap_replicates: int = Field(default=200, ge=20, description="Poisson bootstrap replicates per interval.")
    bootstrap_max_rows: int = Field(default=100_000, gt=0,
                                    description="Paired rows the bootstrap resamples at most (a uniform subsample).")
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1.0)
    metrics_refresh_s: float = Field(
        default=10.0, gt=0, description="Prometheus figures are recomputed this often when labels arrived or an arm "
        "was swapped since (and at least every 6 periods, for the row counts).")
    checkpoint_poll_s: float = Field(
        default=2.0, gt=0, description="First wait before looking again for a missing checkpoint (doubles each try).")
    checkpoint_poll_max_s: float = Field(default=60.0, gt=0, description="Longest wait between checkpoint looks.")
    trace_models: bool = Field(default=True, description="Score with each model traced by TorchScript (checked "
                               "against the model at load; a model that does not trace is served as it is).")
    torch_threads: int = Field(default=1, ge=1, description="Intra-op threads of each model's forward.")
    inline_rows: int = Field(
        default=1024, ge=0, description="Requests and shadow batches up to this many rows are scored on the event "
        "loop; larger ones in a worker thread, so the loop keeps serving (a thread costs a GIL hand-off, up to "
        "the 5 ms switch interval when both want one core).")
    seed: int = Field(default=0, description="Seed of shadow sampling and bootstrap draws.")

    @field_validator("teacher", "student")
    @classmethod
    def _checkpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a checkpoint")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PredictorSettings:
        if self.max_batch_rows > self.kept_rows:
            raise ValueError("max_batch_rows must not exceed kept_rows")
        if self.cohort_key == self.row_id_field:
            raise ValueError("cohort_key and row_id_field must differ")
        return self

    @property
    def teacher_checkpoint(self) -> CheckpointSpec:
        return CheckpointSpec.parse(self.teacher)

    @property
    def student_checkpoint(self) -> CheckpointSpec:
        return CheckpointSpec.parse(self.student or self.teacher)

    @property
    def exposure_dataset_name(self) -> str:
        return self.exposure_dataset or f"exposures/{self.model_name}/{_host_part()}"


def _host_part() -> str:
    """This replica's name as a checkpoint-name part (pods have unique host names)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname()).lstrip("-.") or "replica"
    return "r-" + cleaned if _VERSION.match(cleaned) else cleaned
