"""One error table: each platform error has one gRPC code and one HTTP status, and the gRPC transport uses it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common import errors
from services.common.grpc_server import FIELD_TRAILER, build_server
from services.common.proto import operations_pb2, operations_pb2_grpc

# Spelled out independently of ERROR_TABLE: the table must agree with google.rpc's HTTP mapping.
EXPECTED = {
    errors.InvalidArgumentError: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    errors.NotFoundError: (grpc.StatusCode.NOT_FOUND, 404),
    errors.AlreadyExistsError: (grpc.StatusCode.ALREADY_EXISTS, 409),
    errors.FailedPreconditionError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.DataLossError: (grpc.StatusCode.DATA_LOSS, 500),
    errors.UnavailableError: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.CancelledError: (grpc.StatusCode.CANCELLED, 499),
    errors.InternalError: (grpc.StatusCode.INTERNAL, 500),
}


def _all_subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_all_subclasses(direct)}}


def test_every_error_type_has_a_row() -> None:
    assert set(errors.ERROR_TABLE) == set(EXPECTED)
    for cls in _all_subclasses(errors.PlatformError):  # storage/operation subclasses inherit their base's row
        assert errors.mapping_for(cls("x")).grpc_status is not None


@pytest.mark.parametrize("error_type", list(EXPECTED), ids=lambda t: t.__name__)
def test_http_status_per_row(error_type: type[errors.PlatformError]) -> None:
    error = error_type("boom", field="width")
    assert errors.http_status(error) == EXPECTED[error_type][1]
    assert errors.grpc_status(error) == EXPECTED[error_type][0]
    assert errors.PlatformError.from_dict(error.to_dict()).to_dict() == error.to_dict()


class _Raising(operations_pb2_grpc.OperationsServiceServicer):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def GetOperation(self, request, context):  # noqa: ANN001, ANN201, N802
        raise self.error

    async def WatchOperation(self, request, context):  # noqa: ANN001, ANN201, N802
        yield operations_pb2.WatchOperationResponse()
        raise self.error


async def _call(error: BaseException) -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError]:
    servicer = _Raising(error)
    server, _health, port = await build_server(
        lambda s: operations_pb2_grpc.add_OperationsServiceServicer_to_server(servicer, s),
        ["crossadapt.v1.OperationsService"], "127.0.0.1", 0,
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = operations_pb2_grpc.OperationsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.GetOperation(operations_pb2.GetOperationRequest(operation_id="x"))
            with pytest.raises(grpc.aio.AioRpcError) as stream:
                async for _ in stub.WatchOperation(operations_pb2.WatchOperationRequest(operation_id="x")):
                    pass
            return unary.value, stream.value
    finally:
        await server.stop(None)


@pytest.mark.parametrize("error_type", list(EXPECTED), ids=lambda t: t.__name__)
def test_grpc_transport_uses_the_table(error_type: type[errors.PlatformError]) -> None:
    unary, stream = asyncio.run(_call(error_type("it broke", field="fields[2]")))
    for failure in (unary, stream):
        assert failure.code() == EXPECTED[error_type][0]
        assert failure.details() == "fields[2]: it broke"
        assert (FIELD_TRAILER, "fields[2]") in tuple(failure.trailing_metadata())


def test_unexpected_exceptions_are_internal() -> None:
    unary, _ = asyncio.run(_call(ZeroDivisionError("oops")))
    assert unary.code() == grpc.StatusCode.INTERNAL and "ZeroDivisionError" in unary.details()


@pytest.mark.parametrize("field", ["naïve_field", "line\nbreak", "tab\tand\x00nul", "日本"])
def test_a_field_name_that_is_not_printable_ascii_still_gets_its_code(field: str) -> None:
    unary, stream = asyncio.run(_call(errors.InvalidArgumentError("bad", field=field)))
    for failure in (unary, stream):
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailer = dict(failure.trailing_metadata())[FIELD_TRAILER]
        assert trailer.isascii() and trailer.isprintable()
