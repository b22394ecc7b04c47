"""Dependencies shared by the routes: the snapshot store, the snapshot a request names, a cursor on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import duckdb
from fastapi import Depends, Query, Request

from hubcensus.queries.datadir import SnapshotMeta, SnapshotNotFound
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.errors import NoSnapshotsError, SnapshotNotFoundError


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
            raise NoSnapshotsError() from None
        raise SnapshotNotFoundError(snapshot) from None


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
