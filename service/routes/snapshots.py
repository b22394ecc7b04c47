"""Published snapshots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from queries.store import SnapshotMeta
from service.deps import StoreDep, lookup_snapshot
from service.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/snapshots", tags=["snapshots"], responses=ERROR_RESPONSES)


class SnapshotList(BaseModel):
    """All published snapshots, newest first."""

    snapshots: list[SnapshotMeta]


@router.get("", response_model=SnapshotList)
def read_snapshots(store: StoreDep) -> SnapshotList:
    """List every published snapshot, newest `taken_at` first, with what each recorded."""
    return SnapshotList(snapshots=store.snapshots())


@router.get("/{snapshot}", response_model=SnapshotMeta)
def read_snapshot(
    store: StoreDep, snapshot: Annotated[str, Path(description="A snapshot id, or `latest`.")]
) -> SnapshotMeta:
    """One snapshot by id (or `latest`)."""
    return lookup_snapshot(store, snapshot)
