"""Operations: worker status, Prometheus metrics, and the admin actions (off unless a token is set)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict

from hubcensus.queries import control
from hubcensus.queries.datadir import SnapshotNotFound, remove_snapshot
from hubcensus.queries.mirror import Mirror
from hubcensus.service.deps import StoreDep, lookup_snapshot
from hubcensus.service.errors import (
    AdminDisabledError,
    InvalidParameterError,
    NoWorkerError,
    SnapshotNotFoundError,
    UnauthorizedError,
)
from hubcensus.service.metrics import Metrics
from hubcensus.service.openapi import ERROR_RESPONSES, INVALID_RESPONSE, error_doc, json_errors

router = APIRouter(tags=["operations"])


def _liveness_body(liveness: control.Liveness, now: datetime) -> dict[str, Any]:
    return {
        "alive": liveness.alive,
        "state": liveness.state,
        "last_seen": liveness.last_seen,
        "seen_s_ago": round((now - liveness.last_seen).total_seconds(), 1) if liveness.last_seen else None,
        "stale_after_s": liveness.stale_after_s,
        "message": liveness.describe(now),
    }


@router.get("/v1/status", responses=INVALID_RESPONSE)
def read_status(request: Request, store: StoreDep) -> dict[str, Any]:
    """The worker: whether it is alive (its heartbeat), last success, last failure and reason, next run;
    and the newest snapshot. `state` is what the worker last wrote; `liveness` says whether it is still there."""
    data_dir = store.data_dir
    status = control.read_status(data_dir)
    snapshots = store.snapshots()
    latest = snapshots[0] if snapshots else None
    now = datetime.now(UTC)
    return {
        "worker": status.get("worker"),
        "liveness": _liveness_body(control.worker_liveness(status, now), now),
        "state": status.get("state", "unknown" if not status else None),
        "next_run": status.get("next_run"),
        "last_success": status.get("last_success"),
        "last_failure": status.get("last_failure"),
        # A backfill in progress (files done / total, the current file, its bytes read), and the last one's outcome.
        "backfill": status.get("backfill"),
        "last_backfill": status.get("last_backfill"),
        "pending_requests": control.pending_requests(data_dir),
        "latest_snapshot": None
        if latest is None
        else {
            "id": latest.id,
            "taken_at": latest.taken_at,
            "age_s": round((datetime.now(UTC) - latest.taken_at).total_seconds(), 1),
            "models": latest.models,
        },
        "snapshots": len(snapshots),
        # On an API node of the archive: its sync and its cache (no worker shares its disk: `worker` is null).
        "archive": request.app.state.mirror.status() if request.app.state.mirror is not None else None,
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
        raise AdminDisabledError()
    given = credentials.credentials if credentials is not None else ""
    # Constant-time comparison: the answer's timing must not reveal how much of a guess was right.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise UnauthorizedError()


AdminDep = Depends(require_admin)
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    401: error_doc("The Authorization header is missing or holds the wrong token."),
    403: error_doc("Admin actions are off: HUBCENSUS_ADMIN_TOKEN is not set."),
}


class SnapshotRequest(BaseModel):
    """The optional body of `POST /v1/snapshots`: without `backfill`, a snapshot of the Hub now."""

    model_config = ConfigDict(extra="forbid")

    backfill: control.BackfillRequest | None = None


@router.post(
    "/v1/snapshots",
    status_code=202,
    dependencies=[AdminDep],
    responses={
        **ADMIN_RESPONSES,
        400: error_doc("`http_error`: the body is not JSON."),
        503: error_doc("`no_worker`: no live worker; nothing was queued."),
    },
)
def create_snapshot(
    request: Request, store: StoreDep, body: Annotated[SnapshotRequest | None, Body()] = None
) -> JSONResponse:
    """Ask the worker to take a snapshot now, or, with a body `{"backfill": {"source": "owner/name", "since",
    "until", "every"}}`, to backfill from that Hub dataset repo; follow it in `GET /v1/status` (`backfill`).

    Queued (202) only when a worker is alive (its heartbeat in status.json is fresh): the message says
    whether it starts at once or after the run in progress. Without one, 503 `no_worker` and nothing is
    queued: a request nobody takes would stay pending forever.
    """
    if request.app.state.mirror is not None:
        raise NoWorkerError(
            "This API node serves the archive; no worker shares its disk. Nothing was queued: ask the worker's "
            "own machine (`hubcensus ingest`, or an API over the worker's data dir)."
        )
    now = datetime.now(UTC)
    liveness = control.worker_liveness(control.read_status(store.data_dir), now)
    if not liveness.alive:
        raise NoWorkerError(
            f"{liveness.describe(now)} Nothing was queued: start a worker on this data dir "
            "(`hubcensus worker --schedule CRON`), or take a snapshot with `hubcensus ingest`.",
        )
    request_id = control.request_snapshot(store.data_dir, body.backfill if body is not None else None)
    return JSONResponse(
        {
            "request": request_id,
            "status_url": "/v1/status",
            "worker": liveness.state,
            "message": f"The worker will start a run within {liveness.pickup_s or 1:g} s."
            if liveness.state == "idle"
            else "A run is in progress; this request runs after it.",
        },
        status_code=202,
    )


@router.delete("/v1/snapshots/{snapshot}", status_code=204, dependencies=[AdminDep], responses=ADMIN_RESPONSES)
def delete_snapshot(
    request: Request,
    store: StoreDep,
    snapshot: Annotated[
        str, Path(description="A snapshot id; `latest` is refused: a retried delete must not remove the next newest.")
    ],
) -> Response:
    """Unpublish and delete a snapshot, named by its id; requests already reading it finish normally."""
    if snapshot == "latest":
        raise InvalidParameterError(
            "snapshot: deleting needs an explicit snapshot id, not `latest` (see GET /v1/snapshots); "
            "nothing was deleted.",
            [{"parameter": "snapshot", "in": "path", "message": "an explicit snapshot id is required"}],
        )
    meta = lookup_snapshot(store, snapshot)
    mirror: Mirror | None = request.app.state.mirror
    if mirror is not None:
        # The archive first (tombstone, then manifest): every node drops it at its next sync, this one at once,
        # and no worker uploads it again.
        mirror.archive.delete(meta.id)
    try:
        remove_snapshot(store.data_dir, meta.id)
    except SnapshotNotFound:
        raise SnapshotNotFoundError(snapshot) from None
    return Response(status_code=204)
