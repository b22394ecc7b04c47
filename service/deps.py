"""Dependencies shared by the routes: the snapshot store, snapshot resolution, parameter checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import duckdb
from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from hubcensus.queries.datadir import SnapshotMeta, SnapshotNotFound
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.errors import ApiError


async def get_store(request: Request) -> SnapshotStore:
    """The process-wide store, created by the app factory."""
    store: SnapshotStore = request.app.state.store
    return store


StoreDep = Annotated[SnapshotStore, Depends(get_store)]


def lookup_snapshot(store: SnapshotStore, snapshot: str) -> SnapshotMeta:
    """The snapshot a request names: 404 for an unknown id, 503 when nothing is published yet."""
    try:
        return store.get(snapshot)
    except SnapshotNotFound:
        if snapshot == "latest":
            raise ApiError(
                503, "no_snapshots", "No snapshot has been published yet: run `hubcensus import` or `ingest`."
            ) from None
        raise ApiError(404, "snapshot_not_found", f"No snapshot with id {snapshot!r}.") from None


async def resolve_snapshot(
    store: StoreDep,
    snapshot: Annotated[
        str, Query(description="A snapshot id, or `latest`.", examples=["latest"], max_length=100)
    ] = "latest",
) -> SnapshotMeta:
    """The snapshot named by the `snapshot` query parameter."""
    return lookup_snapshot(store, snapshot)


SnapshotDep = Annotated[SnapshotMeta, Depends(resolve_snapshot)]


async def snapshot_cursor(store: StoreDep, meta: SnapshotDep) -> AsyncIterator[duckdb.DuckDBPyConnection]:
    """A read-only cursor on the requested snapshot, handed back to the store after the request.

    This and the other cheap dependencies are `async`: FastAPI runs a sync dependency in the thread pool,
    and on a cached answer those hops, not the answer, were most of the cost.
    """
    with store.cursor(meta.id) as cursor:
        yield cursor


CursorDep = Annotated[duckdb.DuckDBPyConnection, Depends(snapshot_cursor)]


def query_defaults(request: Request) -> dict[str, Any]:
    """The query parameters the request's route takes, with their defaults."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return {}
    deps = [route.dependant, *_all_dependants(route)]
    return {p.alias: p.field_info.default for dep in deps for p in dep.query_params}


async def reject_unknown_parameters(request: Request) -> None:
    """Answer 422 for a query parameter the route does not take: a typo must not pass silently."""
    if not isinstance(request.scope.get("route"), APIRoute):
        return
    known = set(query_defaults(request))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise ApiError(
            422,
            "unknown_parameter",
            f"Unknown query parameter {unknown[0]!r}; this route takes: {takes}.",
            [{"parameter": name, "in": "query", "message": "unknown parameter"} for name in unknown],
        )


def _all_dependants(route: APIRoute) -> Iterator[Dependant]:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        yield dep
        stack.extend(dep.dependencies)
