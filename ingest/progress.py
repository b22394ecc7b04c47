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
    # Percent of a DuckDB load done (its own estimate), when only that is known: it reports no rows until the end.
    percent: float | None = None
