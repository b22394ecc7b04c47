"""Progress of an ingest or import, for progress bars and logs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Where a run is: pages and models so far, the total when known, seconds since the start."""

    pages: int
    models: int
    total: int | None
    elapsed: float
