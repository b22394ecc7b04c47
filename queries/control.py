"""The data dir's control files, where the worker and the API meet besides the snapshots themselves (their
names and places: queries.datadir.Layout).

- `status.json`: the worker's state, next run, last success and failure, and its heartbeat; written
  atomically by the worker, read by `GET /v1/status` and `POST /v1/snapshots`.
- `requests/<id>.json`: "take a snapshot now" (or "backfill this archive": `BackfillRequest`), dropped by
  `POST /v1/snapshots`, consumed by the worker.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hubcensus.queries.datadir import Layout

# A Hub dataset repo as a backfill source: `owner/name`, `owner/name@revision` or `hf://datasets/owner/name[@rev]`.
HUB_DATASET = re.compile(r"^(?:hf://datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@([^/@\s]+))?/?$")


class BackfillRequest(BaseModel):
    """A backfill the worker runs on request: a Hub dataset repo's dated versions, as `hubcensus backfill` takes them.

    Only Hub repos, at the worker's own endpoint: a request cannot make the worker read its local files or send its
    token elsewhere.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="A Hub dataset repo: `owner/name` or `owner/name@revision`, e.g. `hfmlsoc/hub_weekly_snapshots`."
    )
    since: date | None = Field(None, description="Only versions dated on or after this day.")
    until: date | None = Field(None, description="Only versions dated on or before this day.")
    every: Literal["week", "month", "quarter"] | None = Field(
        None, description="Keep only the newest version of each period."
    )

    @field_validator("source")
    @classmethod
    def _hub_dataset(cls, value: str) -> str:
        if not HUB_DATASET.match(value):
            raise ValueError("must be a Hub dataset repo, owner/name or owner/name@revision (local paths are refused)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BackfillRequest:
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")
        return self


# A worker is presumed gone after missing this many heartbeats in a row, and never sooner than STALE_MIN_S:
# a loaded machine or a slow disk can delay one write, and a false "no worker" would refuse a request.
STALE_BEATS = 3
STALE_MIN_S = 60.0

# One writer at a time in this process: the worker's heartbeat thread and its main loop both merge into
# status.json, and an unlocked read-merge-write of one could undo the other's change.
_status_lock = threading.Lock()


def read_status(data_dir: Path) -> dict[str, Any]:
    """The worker's last written status, or {} if no worker ever ran here."""
    try:
        data: dict[str, Any] = json.loads(Layout(Path(data_dir)).status.read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_status(data_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge changes into status.json, atomically (write aside, rename over)."""
    with _status_lock:
        status = {**read_status(data_dir), **changes}
        path = Layout(Path(data_dir)).status
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}")
        aside.write_text(json.dumps(status, indent=2, default=str))
        os.replace(aside, path)
        return status


@dataclass(frozen=True)
class Liveness:
    """Whether a worker serves this data dir, from its last heartbeat in status.json."""

    state: Literal["idle", "running", "stopped", "gone", "none"]
    last_seen: datetime | None
    stale_after_s: float
    pickup_s: float | None  # how soon an idle worker notices a request

    @property
    def alive(self) -> bool:
        """A worker that will act on a snapshot request."""
        return self.state in ("idle", "running")

    def describe(self, now: datetime) -> str:
        """One sentence for people: what the worker is doing, or when it was last seen."""
        seen = (
            f"{self.last_seen.isoformat()} ({(now - self.last_seen).total_seconds():.0f} s ago)"
            if self.last_seen
            else "never"
        )
        if self.state == "idle":
            return f"The worker is idle; a requested snapshot starts within {self.pickup_s or 1:g} s."
        if self.state == "running":
            return "The worker is taking a snapshot; a requested one starts when it ends."
        if self.state == "stopped":
            return f"The worker stopped; last seen {seen}."
        if self.state == "gone":
            return (
                f"The worker was last seen {seen}; with no heartbeat for {self.stale_after_s:g} s it is presumed gone."
            )
        return "No worker has ever run on this data dir."


def worker_liveness(status: dict[str, Any], now: datetime) -> Liveness:
    """The worker's liveness from its status: running or idle only with a heartbeat fresher than the limit."""
    worker = status.get("worker") or {}
    beat = status.get("heartbeat_at")
    last_seen = datetime.fromisoformat(beat) if isinstance(beat, str) else None
    stale_after = max(STALE_BEATS * float(worker.get("heartbeat_s") or 0), STALE_MIN_S)
    pickup = worker.get("poll_s")

    def liveness(state: Literal["idle", "running", "stopped", "gone", "none"]) -> Liveness:
        return Liveness(state, last_seen, stale_after, float(pickup) if pickup is not None else None)

    if not worker:
        return liveness("none")
    if status.get("state") == "stopped":
        return liveness("stopped")
    if last_seen is None or (now - last_seen).total_seconds() > stale_after:
        return liveness("gone")
    # Reclassifying stored snapshots at start is work in progress too: a request waits for it, as for a run.
    return liveness("running" if status.get("state") in ("running", "reclassifying", "backfilling") else "idle")


def request_snapshot(data_dir: Path, backfill: BackfillRequest | None = None) -> str:
    """Ask the worker for a snapshot now, or for a backfill (used by POST /v1/snapshots); returns the request id."""
    folder = Layout(Path(data_dir)).requests
    folder.mkdir(parents=True, exist_ok=True)
    request_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    aside = folder / f".{request_id}"
    body: dict[str, Any] = {"id": request_id, "requested_at": datetime.now(UTC).isoformat()}
    if backfill is not None:
        body["backfill"] = backfill.model_dump(mode="json")
    aside.write_text(json.dumps(body))
    os.replace(aside, folder / f"{request_id}.json")
    return request_id


def pending_requests(data_dir: Path) -> list[str]:
    """Snapshot requests not yet taken by a worker."""
    folder = Layout(Path(data_dir)).requests
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def take_requests(data_dir: Path) -> list[dict[str, Any]]:
    """Consume the pending requests (the worker, when it starts a run): each `{"id", "requested_at"}` and, for a
    backfill, `"backfill"` (a BackfillRequest as JSON). A file that does not parse is taken as a plain request."""
    folder = Layout(Path(data_dir)).requests
    taken = []
    for request_id in pending_requests(data_dir):
        path = folder / f"{request_id}.json"
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            body = {}
        taken.append({**(body if isinstance(body, dict) else {}), "id": request_id})
        path.unlink(missing_ok=True)
    return taken
