"""KServe's ModelServer, bound to a chosen host, with one error table on both transports.

KServe 0.21 binds 0.0.0.0 / [::] with no host option and maps errors differently on REST and
gRPC (an unknown model is 404 on one and NOT_FOUND on the other, a malformed body can end in a
500). Here:

* `PredictorModelServer` runs KServe's REST server (uvicorn) and V2 gRPC server on `host`, next to
  the caller's own coroutines (the admin server, background work), in one event loop.
* Every failure goes through `services.common.errors`: KServe's exceptions are translated to
  platform errors (`platform_error`), then the one table gives the HTTP status and gRPC code. An
  unknown model name, undecodable JSON or protobuf, a body that is not an inference request: all
  INVALID_ARGUMENT / 400 naming the field; only a bug is INTERNAL / 500.
* gRPC methods are registered with raw-bytes requests and parsed inside the handler
  (`add_service`), because grpcio answers a request it cannot deserialize with INTERNAL; the
  field named by an error is escaped to printable ASCII, as gRPC metadata requires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from kserve import ModelServer
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.model_server import args as kserve_args
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2_pb2
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, RequestedOutput, to_http_parameters
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.errors import (
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    PlatformError,
    UnavailableError,
    http_status,
)
from services.common.grpc_server import PlatformInterceptor
from services.predictor.features import field_name

log = logging.getLogger(__name__)
V2_SERVICE = v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def platform_error(error: BaseException) -> PlatformError:
    """The platform error a KServe (or any) exception stands for; unknown exceptions are INTERNAL."""
    if isinstance(error, PlatformError):
        return error
    if isinstance(error, ModelNotFound):
        return InvalidArgumentError(str(error), field="model_name")
    if isinstance(error, (InvalidInput, UnsupportedProtocol)):
        return InvalidArgumentError(str(error.reason if hasattr(error, "reason") else error), field="body")
    if isinstance(error, (ModelNotReady, ServerNotReady, ServerNotLive)):
        return UnavailableError(str(error))
    if isinstance(error, NotImplementedError):
        return FailedPreconditionError(f"not supported: {error}")
    if isinstance(error, InferenceError):
        return InternalError(str(error))
    return InternalError(f"{type(error).__name__}: {error}")


def error_body(error: PlatformError) -> dict[str, Any]:
    """The JSON error (text that cannot be UTF-8, e.g. a lone surrogate from the caller's JSON, is escaped)."""
    def clean(text: str | None) -> str | None:
        return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")

    return {"error": clean(str(error)), "type": type(error).__name__, "field": clean(error.field)}


def _json_error(error: BaseException) -> JSONResponse:
    mapped = platform_error(error)
    if isinstance(mapped, UnavailableError):  # not ready yet (a checkpoint is missing): expected, no trace
        log.info("request refused: %s", mapped)
    elif http_status(mapped) >= 500:
        log.error("request failed: %s", mapped, exc_info=error)
    return JSONResponse(status_code=http_status(mapped), content=error_body(mapped))


# ---- REST ---------------------------------------------------------------------------------------
async def _platform_handler(_request: Request, error: Exception) -> JSONResponse:
    return _json_error(error)


def validation_error(errors: list[dict[str, Any]]) -> InvalidArgumentError:
    """INVALID_ARGUMENT naming the first field at fault of pydantic's (or FastAPI's) validation errors."""
    first = (errors or [{}])[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return InvalidArgumentError(str(first.get("msg", "invalid request body")), field=where)


async def _validation_handler(_request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's body validation (422 by default): 400 naming the first field at fault."""
    return _json_error(validation_error(error.errors()))


class PredictorDataPlane(DataPlane):
    """KServe's data plane, except that a body it cannot decode is INVALID_ARGUMENT, not a crash, and the
    server is ready only once every model is (KServe's says ready as soon as it listens)."""

    async def ready(self) -> bool:
        models = list(self._model_registry.get_models().values())
        return bool(models) and all([await model.healthy() for model in models])

    def decode(self, body, headers, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - KServe's signature
        try:
            return super().decode(body, headers, *args, **kwargs)
        except PlatformError:
            raise
        except Exception as exc:  # noqa: BLE001 - only the caller's bytes are parsed here
            raise InvalidArgumentError(f"cannot decode the request body: {platform_error(exc).message}",
                                       field="body") from exc


class HostRESTServer(RESTServer):
    """KServe's REST server on `host`, with the platform's error mapping and extra routes (`add_routes(app, server)`,
    registered ahead of KServe's)."""

    def __init__(self, host: str, add_routes: Callable[[FastAPI, RESTServer], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self._add_routes = add_routes

    def _register_endpoints(self, app: FastAPI) -> None:
        self._add_routes(app, self)
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        for error_type in (PlatformError, InvalidInput, InferenceError, ModelNotFound, ModelNotReady,
                           NotImplementedError, UnsupportedProtocol, ServerNotLive, ServerNotReady, Exception):
            app.add_exception_handler(error_type, _platform_handler)
        app.add_exception_handler(RequestValidationError, _validation_handler)

        async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
            return JSONResponse(status_code=error.status_code, content={"error": str(error.detail)})

        app.add_exception_handler(StarletteHTTPException, http_error)

    def stop(self) -> None:
        self._server.should_exit = True


# ---- gRPC ---------------------------------------------------------------------------------------
def add_service(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor, messages: ModuleType) -> None:
    """Register a servicer's unary methods with requests parsed in the handler (INVALID_ARGUMENT if malformed).

    A method named in the servicer's `raw_request_methods` also gets the request's bytes (a third argument)."""
    handlers = {}
    raw_methods = getattr(servicer, "raw_request_methods", frozenset())
    for method in service.methods:
        request_type = getattr(messages, method.input_type.name)
        response_type = getattr(messages, method.output_type.name)
        behaviour = getattr(servicer, method.name)

        async def call(raw: bytes, context: grpc.aio.ServicerContext, behaviour=behaviour,  # noqa: ANN001
                       request_type=request_type, with_raw=method.name in raw_methods) -> Any:
            try:
                request = request_type.FromString(raw)
            except (DecodeError, RuntimeWarning, ValueError) as exc:
                raise InvalidArgumentError(f"malformed {request_type.DESCRIPTOR.name}: {exc}", field="request") from exc
            try:
                return await (behaviour(request, context, raw) if with_raw else behaviour(request, context))
            except PlatformError as error:  # the field goes into a trailer: printable ASCII only
                error.field = None if error.field is None else field_name(error.field)
                raise

        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=None, response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _translated(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext, *raw: bytes) -> Any:
        try:
            return await method(request, context, *raw)
        except Exception as exc:  # noqa: BLE001 - mapped through the one error table by PlatformInterceptor
            raise platform_error(exc) from exc

    return call


class GrpcInferRequest(InferRequest):
    """KServe's `InferRequest` of a gRPC message whose inputs are built only when read: the predictor reads
    the common request (every tensor ``[B]`` typed contents) straight from its bytes (`raw`) or `message`,
    which saves KServe's per-input copies (`InferRequest.from_grpc`, a third of a batch-1 request's time)."""

    def __init__(self, message: v2_pb2.ModelInferRequest, raw: bytes | None = None) -> None:
        outputs = [RequestedOutput(name=o.name, parameters=to_http_parameters(o.parameters) if o.parameters else None)
                   for o in message.outputs]
        super().__init__(model_name=message.model_name, infer_inputs=None, request_id=message.id, from_grpc=True,
                         parameters=message.parameters, request_outputs=outputs or None,
                         model_version=message.model_version)
        self.message = message
        self.raw = raw

    @property
    def inputs(self) -> list:
        if self._inputs is None:
            try:
                self._inputs = InferRequest.from_grpc(self.message).inputs
            except Exception as exc:  # noqa: BLE001 - the caller's tensors did not decode (as in ModelInfer)
                raise InvalidArgumentError(f"cannot read the request: {platform_error(exc).message}",
                                           field="inputs") from exc
        return self._inputs

    @inputs.setter
    def inputs(self, inputs: list | None) -> None:
        self._inputs = inputs


class PredictorInferenceServicer(InferenceServicer):
    """KServe's V2 gRPC servicer; its exceptions become platform errors, undecodable tensors INVALID_ARGUMENT."""

    raw_request_methods = frozenset({"ModelInfer"})  # `add_service` hands it the request's bytes too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for method in V2_SERVICE.methods:
            setattr(self, method.name, _translated(getattr(self, method.name)))

    async def ModelInfer(self, request: v2_pb2.ModelInferRequest, context: grpc.aio.ServicerContext,  # noqa: ANN201, N802
                         raw: bytes | None = None):
        try:
            self.validate_grpc_request(request)
            infer_request = (InferRequest.from_grpc(request) if request.raw_input_contents
                             else GrpcInferRequest(request, raw))
        except Exception as exc:  # noqa: BLE001 - the caller's tensors did not decode
            raise InvalidArgumentError(f"cannot read the request: {platform_error(exc).message}",
                                       field="inputs") from exc
        response, _ = await self._data_plane.infer(request=infer_request, headers={}, model_name=request.model_name)
        return response.to_grpc()


class HostGRPCServer(GRPCServer):
    """KServe's V2 gRPC server on `host`, with the platform interceptor and safe request parsing."""

    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host = host
        self.started = asyncio.Event()

    async def start(self, max_workers: int) -> None:
        servicer = PredictorInferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = grpc.aio.server(
            interceptors=[PlatformInterceptor()],
            options=[("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                     ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
                     ("grpc.so_reuseport", 0)])
        add_service(self._server, servicer, V2_SERVICE, v2_pb2)
        if self._server.add_insecure_port(f"{self.host}:{self._port}") == 0:
            raise OSError(f"could not bind the V2 gRPC server to {self.host}:{self._port}")
        await self._server.start()
        self.started.set()
        log.info("V2 gRPC serving", extra={"host": self.host, "port": self._port})
        await self._server.wait_for_termination()


class PredictorModelServer(ModelServer):
    """KServe's ModelServer on one host, run as a coroutine next to other coroutines."""

    def __init__(self, *, host: str, http_port: int, grpc_port: int, grace_s: float,
                 add_routes: Callable[[FastAPI, RESTServer], None]) -> None:
        super().__init__(http_port=http_port, grpc_port=grpc_port, workers=1, enable_grpc=True,
                         enable_latency_logging=False, grace_period=int(grace_s))
        self.host = host
        self.grace_s = grace_s
        self.add_routes = add_routes
        self.dataplane = PredictorDataPlane(model_registry=self.registered_models)

    async def serve(self, models: list[Any], stop: asyncio.Event) -> None:
        """Serve until `stop` is set or uvicorn stops (it handles SIGTERM itself), then stop both servers."""
        for model in models:  # registered even while not ready: KServe's ready endpoints then answer "not ready"
            self.register_model(model)
            model.enable_latency_logging = self.enable_latency_logging
        self._rest_server = HostRESTServer(
            self.host, self.add_routes, "kserve.model_server:app", self.dataplane, self.model_repository_extension,
            self.http_port, grace_period=self.grace_period, timeout_keep_alive=self.timeout_keep_alive)
        self._grpc_server = HostGRPCServer(self.host, self.grpc_port, self.dataplane, self.model_repository_extension,
                                           kwargs=vars(kserve_args), grace_period=self.grace_period)
        self.setup_event_loop()
        rest = asyncio.ensure_future(self._rest_server.start())
        grpc_task = asyncio.ensure_future(self._grpc_server.start(self.max_threads))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([rest, grpc_task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        self._rest_server.stop()
        await self._grpc_server.stop()
        await asyncio.wait([rest, grpc_task], timeout=self.grace_s + 5)
        for task in done:  # a server that could not start is an error, not a shutdown
            if task is not stopped and not task.cancelled() and task.exception() is not None:
                raise task.exception()
