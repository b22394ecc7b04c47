"""Pages for people: the HTML templates, and a browser's errors as an HTML page instead of the JSON envelope."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from hubcensus.service.errors import ApiError, InvalidParameterError

templates = Environment(loader=PackageLoader("hubcensus.service", "templates"), autoescape=select_autoescape(["html"]))


def prefers_html(request: Request) -> bool:
    """Whether the client ranks HTML above JSON in its Accept header (a browser does; curl and API clients
    send `*/*` or `application/json`)."""
    best: dict[str, float] = {"html": 0.0, "json": 0.0}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        kind = {"text/html": "html", "application/xhtml+xml": "html", "application/json": "json"}.get(media)
        if kind is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best[kind] = max(best[kind], q)
    return best["html"] > best["json"]


def error_page(error: ApiError) -> HTMLResponse:
    """The error as a page for people: what went wrong, and a way back."""
    html = templates.get_template("error.html").render(status=error.status, code=error.code, message=error.message)
    return HTMLResponse(html, status_code=error.status)


class HtmlErrorRoute(APIRoute):
    """A route whose errors a browser gets as an HTML page; other clients still get the JSON envelope.

    The wrapper sits around the whole request handler, so it also sees the errors of the dependencies
    (unknown parameters, validation) that the app's handlers would turn into JSON.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiError, RequestValidationError) as exc:
                if not prefers_html(request):
                    raise
                error = InvalidParameterError.of(exc) if isinstance(exc, RequestValidationError) else exc
                return error_page(error)

        return handle
