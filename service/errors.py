"""One error envelope for every route: `{"error": {"code", "message", "status", "details"}}`.

Each kind of error is a class with its status and code fixed together; a route raises one, and
`ApiError.response` is the single place the envelope is built. Codes are stable and machine-readable;
messages are for people and may change.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubcensus.queries.archive import ArchiveError
from hubcensus.queries.sql import QueryTimeout

log = logging.getLogger(__name__)

ErrorCode = Literal[
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "invalid_parameter",
    "unknown_parameter",
    "snapshot_not_found",
    "no_snapshots",
    "invalid_cursor",
    "query_timeout",
    "model_not_found",
    "admin_disabled",
    "unauthorized",
    "no_worker",
    "snapshot_unavailable",
    "http_error",
    "internal_error",
]
Details = list[dict[str, Any]]
# Seconds a client is told to wait after a snapshot could not be fetched from the archive (a store restarting,
# an eviction freeing room): short, since other snapshots are served meanwhile.
RETRY_AFTER_S = 10


class ErrorDetail(BaseModel):
    """The body of every error."""

    code: ErrorCode
    message: str
    status: int
    details: Details | None = None


class ErrorResponse(BaseModel):
    """The envelope of every error."""

    error: ErrorDetail


class ApiError(Exception):
    """An error answered with the envelope; each subclass fixes its status and code."""

    status: int = 500
    code: ErrorCode = "internal_error"

    def __init__(self, message: str, details: Details | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.details, self.headers = message, details, headers

    def response(self) -> JSONResponse:
        """The JSON response for this error: the single place the envelope is built."""
        error = ErrorDetail(code=self.code, message=self.message, status=self.status, details=self.details)
        body = ErrorResponse(error=error).model_dump(exclude_none=True)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class NotFoundError(ApiError):
    """No route has this path."""

    status, code = 404, "not_found"

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        super().__init__("No such path.", headers=headers)


class MethodNotAllowedError(ApiError):
    """The path exists, but not for this method; `Allow` lists the methods it answers (RFC 9110 15.5.6)."""

    status, code = 405, "method_not_allowed"

    def __init__(self, method: str, allowed: list[str], headers: dict[str, str]) -> None:
        allow = ", ".join(allowed)
        message = f"{method} is not allowed here; this path answers {allow}."
        super().__init__(message, headers={**headers, "Allow": allow})


class NotAcceptableError(ApiError):
    """The Accept header names no format the route answers."""

    status, code = 406, "not_acceptable"


class InvalidParameterError(ApiError):
    """A parameter's value is wrong: its type, its range, or how it combines with another."""

    status, code = 422, "invalid_parameter"

    @classmethod
    def of(cls, exc: RequestValidationError) -> InvalidParameterError:
        """FastAPI's validation error, one detail per parameter, the first in the message."""
        details = [
            {
                "parameter": ".".join(str(p) for p in err["loc"][1:]) or None,
                "in": err["loc"][0],
                "message": err["msg"].removeprefix("Value error, "),
            }
            for err in exc.errors()
        ]
        first = details[0]
        return cls(f"{first['parameter']}: {first['message']}", details)


class UnknownParameterError(ApiError):
    """The request names a query parameter its route does not take: a typo must not pass silently."""

    status, code = 422, "unknown_parameter"

    def __init__(self, unknown: list[str], known: list[str]) -> None:
        takes = ", ".join(known) or "no parameters"
        super().__init__(
            f"Unknown query parameter {unknown[0]!r}; this route takes: {takes}.",
            [{"parameter": name, "in": "query", "message": "unknown parameter"} for name in unknown],
        )


class InvalidCursorError(ApiError):
    """`_next` is not a cursor this service issued for this route, snapshot and query."""

    status, code = 422, "invalid_cursor"


class SnapshotNotFoundError(ApiError):
    """No published snapshot has this id."""

    status, code = 404, "snapshot_not_found"

    def __init__(self, snapshot: str) -> None:
        super().__init__(f"No snapshot with id {snapshot!r}.")


class NoSnapshotsError(ApiError):
    """`latest` asked of a store with no snapshot yet."""

    status, code = 503, "no_snapshots"

    def __init__(self) -> None:
        super().__init__("No snapshot has been published yet: run `hubcensus import` or `ingest`.")


class ModelNotFoundError(ApiError):
    """The snapshot holds no model with this id."""

    status, code = 404, "model_not_found"

    def __init__(self, model_id: str, snapshot: str) -> None:
        super().__init__(f"No model {model_id!r} in snapshot {snapshot}.")


class QueryTimeoutError(ApiError):
    """A query ran past HUBCENSUS_QUERY_TIMEOUT."""

    status, code = 504, "query_timeout"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The query took too long: {reason}. Narrow it with filters.")


class SnapshotUnavailableError(ApiError):
    """An API node could not bring a snapshot's file from the archive (the store down, its cache disk full)."""

    status, code = 503, "snapshot_unavailable"

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(
            f"{reason}. Other snapshots are still served; try again later.",
            headers={"Retry-After": str(retry_after_s)},
        )


class AdminDisabledError(ApiError):
    """An admin route, with no HUBCENSUS_ADMIN_TOKEN set."""

    status, code = 403, "admin_disabled"

    def __init__(self) -> None:
        super().__init__("Admin actions are off: set HUBCENSUS_ADMIN_TOKEN to enable them.")


class UnauthorizedError(ApiError):
    """An admin route without the right Bearer token."""

    status, code = 401, "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "A valid admin token is required: Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"},  # RFC 9110 11.6.1: a 401 names the scheme it wants
        )


class NoWorkerError(ApiError):
    """A snapshot asked for with no live worker to take it."""

    status, code = 503, "no_worker"


class HttpError(ApiError):
    """Any other HTTP error Starlette raises itself, with its own status."""

    code = "http_error"

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status


class InternalError(ApiError):
    """An unexpected exception: logged with its traceback, never shown."""

    status, code = 500, "internal_error"

    def __init__(self) -> None:
        super().__init__("An internal error occurred; it has been logged.")


# Methods a 405's `Allow` may list; HEAD is served for every GET route (service/head.py).
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers on this request's path, for the `Allow` header of a 405."""
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
    ]
    return [*allowed, "HEAD"] if "GET" in allowed else allowed


def install_error_handlers(app: FastAPI) -> None:
    """Route FastAPI's own 404/405/422, query timeouts and every unexpected exception through the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return NotFoundError(headers).response()
        if exc.status_code == 405:
            return MethodNotAllowedError(request.method, allowed_methods(request), headers).response()
        return HttpError(exc.status_code, str(exc.detail), headers).response()

    @app.exception_handler(QueryTimeout)
    async def _query_timeout(request: Request, exc: QueryTimeout) -> JSONResponse:
        return QueryTimeoutError(str(exc)).response()

    @app.exception_handler(ArchiveError)
    async def _archive_error(request: Request, exc: ArchiveError) -> JSONResponse:
        return SnapshotUnavailableError(str(exc), RETRY_AFTER_S).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return InvalidParameterError.of(exc).response()

    # Unexpected exceptions are answered by CatchAll (a middleware), not by an exception handler here: Starlette
    # re-raises after running a handler for Exception, so the server would log each traceback a second time.
    app.add_middleware(CatchAll)


class CatchAll:
    """ASGI middleware: log an unexpected exception once, with its traceback, and answer the 500 envelope.

    It sits inside Starlette's ServerErrorMiddleware, which never sees the exception, so neither it nor
    uvicorn logs it again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def track(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, track)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:  # else the connection is cut: a half-sent answer cannot become an error
                await InternalError().response()(scope, receive, send)
