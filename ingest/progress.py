"""Progress of an ingest, import or backfill, for progress bars, logs and the worker's status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubcensus.queries.datadir import SnapshotMeta


@dataclass(frozen=True)
class Progress:
    """Where a run is: pages and models so far, the total when known, seconds since the start."""

    pages: int
    models: int
    total: int | None
    elapsed: float
    # Percent of a DuckDB load done (its own estimate), when only that is known: it reports no rows until the end.
    percent: float | None = None


@dataclass(frozen=True)
class BackfillProgress:
    """Where a backfill is: versions done of the total, the current one and its bytes read."""

    done: int
    total: int
    skipped: int
    failed: int
    current: str | None = None
    bytes_read: int = 0
    bytes_total: int | None = None
    published: SnapshotMeta | None = None  # set once, when the current version was published

    def as_status(self) -> dict[str, Any]:
        """The progress as `status.json` (and `GET /v1/status`) shows it."""
        return {
            "files_done": self.done,
            "files_total": self.total,
            "skipped": self.skipped,
            "failed": self.failed,
            "current_file": self.current,
            "bytes_read": self.bytes_read,
            "bytes_total": self.bytes_total,
        }


@dataclass
class BackfillResult:
    """What a run did: snapshots published, versions skipped as already there, versions that failed and why."""

    published: list[SnapshotMeta] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    planned: int = 0
