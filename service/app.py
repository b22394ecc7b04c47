"""The FastAPI application factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Receive, Scope, Send

from hubcensus.config import Settings
from hubcensus.queries.archive import Archive
from hubcensus.queries.mirror import Mirror, claim
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


def create_app(settings: Settings) -> FastAPI:
    """Build the API over the snapshot store in `settings.data_dir` (read-only; never waits on a writer).

    Of the settings it takes `query_timeout` (each query's bound, 504 past it), `cache_mb` (the rendered-answer
    cache), `query_memory_mb` (DuckDB's memory over all snapshots), `max_attached` (snapshots kept open) and
    `admin_token` (the admin routes are off without it). Tests and benchmarks override a few:
    `create_app(Settings(data_dir=path, cache_mb=0))`.
    """
    # FastAPIOffline serves the /docs and /redoc assets itself: no CDN, so the docs work offline.
    app = FastAPIOffline(
        title="hubcensus",
        version="0.1.0",
        description=DESCRIPTION,
        dependencies=[Depends(reject_unknown_parameters)],
        lifespan=_lifespan,
    )
    mirror = archive_mirror(settings)
    app.state.mirror = mirror
    app.state.store = SnapshotStore(
        settings.data_dir,
        memory_limit_bytes=settings.query_memory_mb * 2**20,
        max_attached=settings.max_attached,
        fetch=mirror.fetch if mirror is not None else None,
    )
    if mirror is not None:
        mirror.store = app.state.store
    app.state.answer_cache = AnswerCache(settings.cache_mb * 2**20)
    app.state.admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(QueryTimeLimit, seconds=settings.query_timeout)
    app.add_middleware(HeadAsGet)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(meta.router)
    app.include_router(snapshots.router)
    app.include_router(frameworks.router)
    app.include_router(catalog.router)
    app.include_router(operations.router)
    app.include_router(dashboard.router)
    return app


def archive_mirror(settings: Settings) -> Mirror | None:
    """With HUBCENSUS_ARCHIVE, this API is a node of the archive: its data dir a cache that the Mirror keeps in step
    (NotACache for a data dir with snapshots of its own); None otherwise."""
    if not settings.archive:
        return None
    archive = Archive.from_url(settings.archive)
    claim(settings.data_dir, archive)
    return Mirror(
        archive, settings.data_dir, budget_bytes=settings.archive_cache_mb * 2**20, poll_s=settings.archive_poll
    )


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The archive's sync runs while the app serves (a node answers /healthz at once, then lists what it syncs).
    mirror: Mirror | None = app.state.mirror
    if mirror is not None:
        mirror.start()
    try:
        yield
    finally:
        if mirror is not None:
            mirror.stop()


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
