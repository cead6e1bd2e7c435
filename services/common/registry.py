"""Which services exist: each registers a `ServiceSpec` under the `crossadapt.services` entry point.

`services.common` names no service. The Celery app takes its queues, routes and task modules from
the specs; `crossadapt serve <name>` and `crossadapt worker --queues …` list them; `crossadapt up`
starts them. A spec module holds only strings and numbers (no gRPC, torch or Celery imports), so
discovering the services is cheap:

    # services/<pkg>/spec.py
    SPEC = ServiceSpec(name=NAME, queue=QUEUE, task_modules=(TASKS_MODULE,), grpc_service=FULL_NAME,
                       serve=SERVE_FUNCTION, default_port=PORT)

    # pyproject.toml
    [project.entry-points."crossadapt.services"]
    <name> = "services.<pkg>.spec:SPEC"
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "crossadapt.services"


@dataclass(frozen=True)
class ServiceSpec:
    """One platform service: its gRPC server and (optionally) its Celery queue."""

    name: str  # "offline-distiller": the `crossadapt serve` name and the image name
    serve: str  # "module:function" taking PlatformSettings; runs the server until SIGTERM
    default_port: int  # gRPC port in images and charts (CROSSADAPT_GRPC_PORT overrides)
    grpc_service: str | None = None  # full name for health checks, e.g. "crossadapt.v1.SamplerService"
    stub: str | None = None  # "module:StubClass" of its gRPC API, for clients and `crossadapt up`
    queue: str | None = None  # its Celery queue (None: no background tasks)
    task_modules: tuple[str, ...] = ()
    description: str = ""
    extra_ports: dict[str, int] = field(default_factory=dict)  # e.g. {"http": 8080} for the predictor

    @property
    def task_prefix(self) -> str:
        """Task names start with this; the Celery app routes them to `queue`."""
        return f"crossadapt.{self.name.replace('-', '_')}"

    def serve_function(self) -> Callable[..., None]:
        return _resolve(self.serve)

    def stub_class(self) -> Any:
        if self.stub is None:
            raise LookupError(f"service {self.name!r} has no gRPC stub")
        return _resolve(self.stub)


def _resolve(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@lru_cache(maxsize=1)
def service_specs() -> dict[str, ServiceSpec]:
    """Every installed service's spec, by name (a spec that fails to load is logged and skipped)."""
    specs: dict[str, ServiceSpec] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = entry.load()
        except ImportError as exc:  # a service not in this image / checkout
            log.debug("service %s is not available: %s", entry.name, exc)
            continue
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"entry point {entry.name} ({entry.value}) is not a ServiceSpec")
        specs[spec.name] = spec
    return dict(sorted(specs.items()))


def get_spec(name: str) -> ServiceSpec:
    specs = service_specs()
    if name not in specs:
        raise KeyError(f"unknown service {name!r}; installed: {sorted(specs)}")
    return specs[name]


def queues() -> dict[str, str]:
    """Service name -> Celery queue, for the services that have one."""
    return {name: spec.queue for name, spec in service_specs().items() if spec.queue}


def task_modules() -> list[str]:
    return [module for spec in service_specs().values() for module in spec.task_modules]
