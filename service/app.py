"""The FastAPI application factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Receive, Scope, Send

from hubcensus.queries.sql import time_limit
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.answers import AnswerCache
from hubcensus.service.errors import install_error_handlers
from hubcensus.service.head import HeadAsGet
from hubcensus.service.metrics import Metrics, MetricsMiddleware
from hubcensus.service.params import reject_unknown_parameters
from hubcensus.service.routes import catalog, dashboard, frameworks, meta, operations, snapshots

DESCRIPTION = """
Reproducible numbers about the Hugging Face Hub, computed over immutable snapshots of its model
metadata. Every answer states the snapshot and method it was computed with. Errors always come as
`{"error": {"code", "message", "status", "details"}}` with a stable `code`.
"""


def create_app(
    data_dir: Path,
    *,
    query_timeout: float = 10.0,
    cache_bytes: int = 64 * 2**20,
    query_memory_bytes: int | None = None,
    admin_token: str | None = None,
) -> FastAPI:
    """Build the API over the snapshot store in `data_dir` (read-only; never waits on a writer).

    `query_timeout` bounds each query (504 past it); `cache_bytes` bounds the rendered-answer cache;
    `query_memory_bytes` bounds DuckDB's memory over all snapshots (its default, 80 % of RAM, if None);
    `admin_token` enables the admin routes (off without it).
    """
    # FastAPIOffline serves the /docs and /redoc assets itself: no CDN, so the docs work offline.
    app = FastAPIOffline(
        title="hubcensus",
        version="0.1.0",
        description=DESCRIPTION,
        dependencies=[Depends(reject_unknown_parameters)],
    )
    app.state.store = SnapshotStore(data_dir, memory_limit_bytes=query_memory_bytes)
    app.state.query_timeout = query_timeout
    app.state.answer_cache = AnswerCache(cache_bytes)
    app.state.admin_token = admin_token
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(QueryTimeLimit, seconds=query_timeout)
    app.add_middleware(HeadAsGet)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(meta.router)
    app.include_router(snapshots.router)
    app.include_router(frameworks.router)
    app.include_router(catalog.router)
    app.include_router(operations.router)
    app.include_router(dashboard.router)
    return app


class QueryTimeLimit:
    """ASGI middleware: every query a request runs, on any route, stops after `seconds` (504 query_timeout).

    queries/sql.run enforces the limit; this sets it for the request's context, which Starlette copies into
    the worker thread that runs a sync route, so no route can forget it.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with time_limit(self.seconds):
            await self.app(scope, receive, send)
