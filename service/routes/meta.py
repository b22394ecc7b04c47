"""Service health."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from hubcensus.service.deps import StoreDep
from hubcensus.service.errors import INVALID_RESPONSE

router = APIRouter(tags=["meta"], responses=INVALID_RESPONSE)


class Health(BaseModel):
    """The service is up; how many snapshots it can serve and which is the newest."""

    status: str
    snapshots: int
    latest: str | None


@router.get("/healthz", response_model=Health)
def read_health(store: StoreDep) -> Health:
    """Liveness and readiness: answers 200 whenever the process serves requests."""
    snapshots = store.snapshots()
    return Health(status="ok", snapshots=len(snapshots), latest=snapshots[0].id if snapshots else None)
