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

log = logging.getLogger(__name__)

ErrorCode = Literal[
    "not_found",
    "method_not_allowed",
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

    def __init__(self, status: int, code: ErrorCode, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(
    status: int, code: ErrorCode, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    """The JSON response for an error: the single place the envelope is built."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, status=status, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


# OpenAPI: every route documents the envelope for the errors it can answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown snapshot or path"},
    422: {"model": ErrorResponse, "description": "A parameter is invalid or unknown"},
    503: {"model": ErrorResponse, "description": "No snapshot has been published yet"},
}

_STATUS_CODES: dict[int, ErrorCode] = {404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    """Route FastAPI's own 404/405/422 and every unexpected exception through the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = "No such path." if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "parameter": ".".join(str(p) for p in err["loc"][1:]) or None,
                "in": err["loc"][0],
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        first = details[0]
        return error_response(422, "invalid_parameter", f"{first['parameter']}: {first['message']}", details)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "An internal error occurred; it has been logged.")
