"""One error envelope for every route: `{"error": {"code", "message", "status", "details"}}`.

Codes are stable and machine-readable; messages are for people and may change.
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
    "http_error",
    "internal_error",
]


class ErrorDetail(BaseModel):
    """The body of every error."""

    code: ErrorCode
    message: str
    status: int
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """The envelope of every error."""

    error: ErrorDetail


class ApiError(Exception):
    """An error a route raises on purpose; becomes the envelope with this code and status."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON response for an error: the single place the envelope is built."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, status=status, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


# OpenAPI: every route documents the envelope for the errors it can answer. Every route answers 422 to a
# parameter it does not take (service/deps.py); the routes over a snapshot answer 404 and 503 too.
INVALID_RESPONSE: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "A parameter is invalid or unknown"}
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown snapshot or path"},
    **INVALID_RESPONSE,
    503: {"model": ErrorResponse, "description": "No snapshot has been published yet"},
}


def error_doc(description: str) -> dict[str, Any]:
    """The OpenAPI entry of an error status: the envelope, with what the status means here."""
    return {"model": ErrorResponse, "description": description}


TIMEOUT_RESPONSE: dict[int | str, dict[str, Any]] = {504: error_doc("A query ran past HUBCENSUS_QUERY_TIMEOUT.")}


def json_errors(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Error entries for a route whose own answer is not JSON (FastAPI would document them in its type)."""
    schema = {"$ref": "#/components/schemas/ErrorResponse"}  # registered by the routes that use the model
    return {
        status: {"description": doc["description"], "content": {"application/json": {"schema": schema}}}
        for status, doc in responses.items()
    }


_STATUS_CODES: dict[int, ErrorCode] = {404: "not_found", 405: "method_not_allowed"}
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
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = "No such path." if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110 15.5.6: a 405 lists what the path does answer (every route on it, not the first).
            headers["Allow"] = ", ".join(allowed_methods(request))
            message = f"{request.method} is not allowed here; this path answers {headers['Allow']}."
        return error_response(exc.status_code, code, message, headers=headers)

    @app.exception_handler(QueryTimeout)
    async def _query_timeout(request: Request, exc: QueryTimeout) -> JSONResponse:
        return error_response(504, "query_timeout", f"The query took too long: {exc}. Narrow it with filters.")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "parameter": ".".join(str(p) for p in err["loc"][1:]) or None,
                "in": err["loc"][0],
                "message": err["msg"].removeprefix("Value error, "),
            }
            for err in exc.errors()
        ]
        first = details[0]
        return error_response(422, "invalid_parameter", f"{first['parameter']}: {first['message']}", details)

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
                response = error_response(500, "internal_error", "An internal error occurred; it has been logged.")
                await response(scope, receive, send)
