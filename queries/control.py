"""The data dir's control files, where the worker and the API meet besides the snapshots themselves.

- `status.json`: the worker's state, next run, last success and failure; written atomically by the worker,
  read by `GET /v1/status`.
- `requests/<id>.json`: "take a snapshot now", dropped by `POST /v1/snapshots`, consumed by the worker.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUS_NAME = "status.json"
REQUESTS_DIR = "requests"


def read_status(data_dir: Path) -> dict[str, Any]:
    """The worker's last written status, or {} if no worker ever ran here."""
    try:
        data: dict[str, Any] = json.loads((Path(data_dir) / STATUS_NAME).read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_status(data_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge changes into status.json, atomically (write aside, rename over)."""
    status = {**read_status(data_dir), **changes}
    path = Path(data_dir) / STATUS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{STATUS_NAME}.{os.getpid()}")
    aside.write_text(json.dumps(status, indent=2, default=str))
    os.replace(aside, path)
    return status


def request_snapshot(data_dir: Path) -> str:
    """Ask the worker for a snapshot now (used by POST /v1/snapshots); returns the request id."""
    folder = Path(data_dir) / REQUESTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    request_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    aside = folder / f".{request_id}"
    aside.write_text(json.dumps({"id": request_id, "requested_at": datetime.now(UTC).isoformat()}))
    os.replace(aside, folder / f"{request_id}.json")
    return request_id


def pending_requests(data_dir: Path) -> list[str]:
    """Snapshot requests not yet taken by a worker."""
    folder = Path(data_dir) / REQUESTS_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def take_requests(data_dir: Path) -> list[str]:
    """Consume the pending snapshot requests (the worker, when it starts a run)."""
    taken = pending_requests(data_dir)
    for request_id in taken:
        (Path(data_dir) / REQUESTS_DIR / f"{request_id}.json").unlink(missing_ok=True)
    return taken
