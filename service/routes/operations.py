"""Operations: worker status, Prometheus metrics, and the admin actions (off unless a token is set)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hubcensus.queries.control import pending_requests, read_status, request_snapshot
from hubcensus.queries.store import SnapshotNotFound, remove_snapshot
from hubcensus.service.deps import StoreDep, lookup_snapshot
from hubcensus.service.errors import ERROR_RESPONSES, INVALID_RESPONSE, ApiError, error_doc, json_errors
from hubcensus.service.metrics import Metrics

router = APIRouter(tags=["operations"])


@router.get("/v1/status", responses=INVALID_RESPONSE)
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


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "The Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **json_errors(INVALID_RESPONSE),
    },
)
def read_metrics(request: Request, store: StoreDep) -> Response:
    """Prometheus metrics: requests and latencies per route, snapshot age, models in the latest snapshot."""
    metrics: Metrics = request.app.state.metrics
    metrics.observe_store(store.snapshots())
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


# Declares the Bearer scheme in the OpenAPI document; auto_error=False so that every refusal is our envelope.
_bearer = HTTPBearer(auto_error=False, description="HUBCENSUS_ADMIN_TOKEN, as `Authorization: Bearer <token>`.")


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Admin routes exist only with HUBCENSUS_ADMIN_TOKEN set, and then need it as a Bearer token."""
    expected: str | None = request.app.state.admin_token
    if not expected:
        raise ApiError(403, "admin_disabled", "Admin actions are off: set HUBCENSUS_ADMIN_TOKEN to enable them.")
    given = credentials.credentials if credentials is not None else ""
    # Constant-time comparison: the answer's timing must not reveal how much of a guess was right.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "A valid admin token is required: Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"},  # RFC 9110 11.6.1: a 401 names the scheme it wants
        )


AdminDep = Depends(require_admin)
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    401: error_doc("The Authorization header is missing or holds the wrong token."),
    403: error_doc("Admin actions are off: HUBCENSUS_ADMIN_TOKEN is not set."),
}


@router.post("/v1/snapshots", status_code=202, dependencies=[AdminDep], responses=ADMIN_RESPONSES)
def create_snapshot(store: StoreDep) -> JSONResponse:
    """Ask the worker to take a snapshot now; follow it in `GET /v1/status`."""
    request_id = request_snapshot(store.data_dir)
    return JSONResponse(
        {"request": request_id, "status_url": "/v1/status", "message": "The worker will take a snapshot now."},
        status_code=202,
    )


@router.delete("/v1/snapshots/{snapshot}", status_code=204, dependencies=[AdminDep], responses=ADMIN_RESPONSES)
def delete_snapshot(store: StoreDep, snapshot: str) -> Response:
    """Unpublish and delete a snapshot; requests already reading it finish normally."""
    meta = lookup_snapshot(store, snapshot)
    try:
        remove_snapshot(store.data_dir, meta.id)
    except SnapshotNotFound:
        raise ApiError(404, "snapshot_not_found", f"No snapshot with id {snapshot!r}.") from None
    return Response(status_code=204)
