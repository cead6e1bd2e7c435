"""gRPC (asyncio) server plumbing shared by the services.

* `PlatformInterceptor`: turns a `PlatformError` raised by a servicer into its status code from
  the one error table (`services.common.errors`), with the offending field in the details and in
  the `crossadapt-field` trailer; counts requests and latency; logs one JSON line per call.
* `build_server`: the service(s) plus the standard health service and server reflection.
* `serve_until_signal`: start, wait for SIGTERM/SIGINT, mark NOT_SERVING, drain in-flight calls
  for `grace_s` seconds, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common.errors import PlatformError, grpc_status
from services.common.metrics import GRPC_LATENCY, GRPC_REQUESTS

log = logging.getLogger(__name__)
FIELD_TRAILER = "crossadapt-field"


def trailer_value(text: str) -> str:
    """`text` as a valid ASCII metadata value: a caller-chosen field name (non-ASCII, control characters)
    must not turn an INVALID_ARGUMENT into a transport failure. Printable ASCII passes unchanged."""
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii").replace("\x7f", "\\x7f")[:512]


def _split_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


@functools.lru_cache(maxsize=4096)
def _call_metrics(service: str, method: str, code: grpc.StatusCode) -> tuple[Any, Any]:
    """The request counter and latency histogram children of one method and outcome (a label lookup takes a
    lock and hashes the labels: done once per method and code, not per call)."""
    return GRPC_REQUESTS.labels(service, method, code.name), GRPC_LATENCY.labels(service, method)


class _CallOutcome:
    """Tracks the status code of one call for the metrics and the access log."""

    def __init__(self, full_method: str) -> None:
        self.service, self.method = _split_method(full_method)
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    async def fail(self, context: grpc.aio.ServicerContext, error: BaseException) -> None:
        """Abort the call with the error's code (always raises)."""
        if isinstance(error, PlatformError):
            self.code = grpc_status(error)
            trailer = ((FIELD_TRAILER, trailer_value(error.field)),) if error.field else ()
            await context.abort(self.code, str(error), trailing_metadata=trailer)
        log.exception("unhandled error in %s/%s", self.service, self.method, exc_info=error)
        self.code = grpc.StatusCode.INTERNAL
        await context.abort(self.code, f"internal error: {type(error).__name__}: {error}")

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        requests, latency = _call_metrics(self.service, self.method, self.code)
        requests.inc()
        latency.observe(elapsed)
        if log.isEnabledFor(logging.INFO):  # the record's fields are built only when it is written
            log.info(
                "rpc",
                extra={"service": self.service, "method": self.method, "code": self.code.name,
                       "seconds": round(elapsed, 4)},
            )


@contextlib.asynccontextmanager
async def _observed(full_method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """One call's outcome: status code for metrics and logs, and unexpected errors mapped through the table."""
    outcome = _CallOutcome(full_method)
    try:
        yield
    except grpc.aio.AbortError:
        outcome.code = context.code() or grpc.StatusCode.UNKNOWN
        raise
    except asyncio.CancelledError:
        outcome.code = grpc.StatusCode.CANCELLED
        raise
    except Exception as error:  # noqa: BLE001 - mapped through the error table
        await outcome.fail(context, error)
    finally:
        outcome.finish()


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], full_method: str) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with _observed(full_method, context):
            return await behavior(request, context)

    return call


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], full_method: str) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with _observed(full_method, context):
            async for response in behavior(request, context):
                yield response

    return call


class PlatformInterceptor(grpc.aio.ServerInterceptor):
    """Error mapping, metrics and access logs for unary-unary and unary-stream methods."""

    def __init__(self, skip_services: Sequence[str] = ("grpc.health.v1.Health", "grpc.reflection")) -> None:
        self.skip_services = tuple(skip_services)
        # method -> (handler, its wrapped handler): grpc.aio asks the interceptor on every call, and a
        # registered handler is the same object each time, so it is wrapped once (re-wrapped if it changes).
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201 - grpc API
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)  # one entry per method a handler answered: bounded
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        if method.lstrip("/").startswith(self.skip_services):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def build_server(
    register: Callable[[grpc.aio.Server], None], service_names: Sequence[str], host: str, port: int
) -> tuple[grpc.aio.Server, HealthServicer, int]:
    """A server with `register`'s services, health (each name SERVING) and reflection, bound to host:port."""
    server = grpc.aio.server(
        interceptors=[PlatformInterceptor()],
        # SO_REUSEPORT would let a second server silently share the port; refuse instead.
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 32 * 1024 * 1024)],
    )
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in service_names:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {host}:{port}")
    return server, health, bound


async def serve_until_signal(
    server: grpc.aio.Server,
    health: HealthServicer,
    grace_s: float,
    on_shutdown: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain: health NOT_SERVING, `on_shutdown()`, stop(grace)."""
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutdown requested: draining", extra={"grace_s": grace_s})
    await health.enter_graceful_shutdown()
    if on_shutdown is not None:
        on_shutdown()
    await server.stop(grace_s)
    log.info("server stopped")
