"""Platform errors and the ONE table that maps each to a gRPC status code and an HTTP status.

Every transport uses `ERROR_TABLE` (gRPC servicers through `grpc_status`, REST adapters through
`http_status`), so the same failure never gets two different codes on two transports.

    raise InvalidArgumentError("width must be > 0, got 0", field="width")
    # gRPC: INVALID_ARGUMENT "width: width must be > 0, got 0"   HTTP: 400
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class PlatformError(Exception):
    """Base of errors a client can act on; `field` names the request field or object at fault."""

    user_facing = True  # the CLI prints one line for these, not a traceback (crossadapt.cli._is_user_error)

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"type": type(self).__name__, "message": self.message, "field": self.field}

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> PlatformError:
        """Rebuild an error stored in an operation record (unknown types become InternalError)."""
        error_type = ERROR_TYPES.get(str(data.get("type")), InternalError)
        return error_type(str(data.get("message") or ""), field=data.get("field"))


class InvalidArgumentError(PlatformError):
    """The request is malformed: bad width, unknown field, vocabulary mismatch."""


class NotFoundError(PlatformError):
    """A named checkpoint, dataset, object or operation does not exist."""


class AlreadyExistsError(PlatformError):
    """The object to create exists already (e.g. a checkpoint version was claimed by another writer)."""


class FailedPreconditionError(PlatformError):
    """The system is not in a state that allows the call (e.g. cancelling a finished operation)."""


class DataLossError(PlatformError):
    """Stored bytes do not match their recorded sha256, or a published file is missing."""


class UnavailableError(PlatformError):
    """A dependency (S3, broker) kept failing with transient errors; retrying later may succeed."""


class CancelledError(PlatformError):
    """The operation was cancelled by a client."""


class InternalError(PlatformError):
    """A bug or an unexpected failure (a worker lost after all retries)."""


@dataclass(frozen=True)
class ErrorMapping:
    grpc_status: grpc.StatusCode
    http_status: int


# google.rpc.Code -> HTTP follows google/rpc/code.proto (CANCELLED is nginx's 499).
ERROR_TABLE: dict[type[PlatformError], ErrorMapping] = {
    InvalidArgumentError: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, 400),
    NotFoundError: ErrorMapping(grpc.StatusCode.NOT_FOUND, 404),
    AlreadyExistsError: ErrorMapping(grpc.StatusCode.ALREADY_EXISTS, 409),
    FailedPreconditionError: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, 400),
    DataLossError: ErrorMapping(grpc.StatusCode.DATA_LOSS, 500),
    UnavailableError: ErrorMapping(grpc.StatusCode.UNAVAILABLE, 503),
    CancelledError: ErrorMapping(grpc.StatusCode.CANCELLED, 499),
    InternalError: ErrorMapping(grpc.StatusCode.INTERNAL, 500),
}
ERROR_TYPES: dict[str, type[PlatformError]] = {cls.__name__: cls for cls in ERROR_TABLE}


def mapping_for(error: BaseException) -> ErrorMapping:
    """The table row of `error` (its nearest listed base class); anything else is INTERNAL/500."""
    if isinstance(error, PlatformError):
        for cls in type(error).__mro__:
            if cls in ERROR_TABLE:
                return ERROR_TABLE[cls]  # type: ignore[index]
    return ERROR_TABLE[InternalError]


def grpc_status(error: BaseException) -> grpc.StatusCode:
    return mapping_for(error).grpc_status


def http_status(error: BaseException) -> int:
    return mapping_for(error).http_status


def grpc_code_number(code: grpc.StatusCode) -> int:
    """The canonical integer of a status code (grpc.StatusCode.value is `(int, name)`)."""
    return int(code.value[0])
