"""Operations: worker status, Prometheus metrics, and the admin actions (off unless a token is set)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hubcensus.queries.control import pending_requests, read_status, request_snapshot
from hubcensus.queries.store import SnapshotNotFound, remove_snapshot
from hubcensus.service.deps import StoreDep, lookup_snapshot
from hubcensus.service.errors import ERROR_RESPONSES, ApiError
from hubcensus.service.metrics import Metrics

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES)


@router.get("/v1/status")
def read_status_route(request: Request, store: StoreDep) -> dict[str, Any]:
    """The worker's last success, last failure and reason, next scheduled run, and the newest snapshot."""
    data_dir = store.data_dir
    status = read_status(data_dir)
    snapshots = store.snapshots()
    latest = snapshots[0] if snapshots else None
    return {
        "worker": status.get("worker"),
        "state": status.get("state", "unknown" if not status else None),
        "next_run": status.get("next_run"),
        "last_success": status.get("last_success"),
        "last_failure": status.get("last_failure"),
        "pending_requests": pending_requests(data_dir),
        "latest_snapshot": None
        if latest is None
        else {
            "id": latest.id,
            "taken_at": latest.taken_at,
            "age_s": round((datetime.now(UTC) - latest.taken_at).total_seconds(), 1),
            "models": latest.models,
        },
        "snapshots": len(snapshots),
    }


@router.get("/metrics", include_in_schema=True)
def read_metrics(request: Request, store: StoreDep) -> Response:
    """Prometheus metrics: requests and latencies per route, snapshot age, models in the latest snapshot."""
    metrics: Metrics = request.app.state.metrics
    metrics.observe_store(store.snapshots())
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Admin routes exist only with HUBCENSUS_ADMIN_TOKEN set, and then need it as a Bearer token."""
    expected: str | None = request.app.state.admin_token
    if not expected:
        raise ApiError(403, "admin_disabled", "Admin actions are off: set HUBCENSUS_ADMIN_TOKEN to enable them.")
    scheme, _, given = (authorization or "").partition(" ")
    # Constant-time comparison: the answer's timing must not reveal how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "A valid admin token is required: Authorization: Bearer <token>.")


AdminDep = Depends(require_admin)


@router.post("/v1/snapshots", status_code=202, dependencies=[AdminDep])
def create_snapshot(store: StoreDep) -> JSONResponse:
    """Ask the worker to take a snapshot now; follow it in `GET /v1/status`."""
    request_id = request_snapshot(store.data_dir)
    return JSONResponse(
        {"request": request_id, "status_url": "/v1/status", "message": "The worker will take a snapshot now."},
        status_code=202,
    )


@router.delete("/v1/snapshots/{snapshot}", status_code=204, dependencies=[AdminDep])
def delete_snapshot(store: StoreDep, snapshot: str) -> Response:
    """Unpublish and delete a snapshot; requests already reading it finish normally."""
    meta = lookup_snapshot(store, snapshot)
    try:
        remove_snapshot(store.data_dir, meta.id)
    except SnapshotNotFound:
        raise ApiError(404, "snapshot_not_found", f"No snapshot with id {snapshot!r}.") from None
    return Response(status_code=204)
