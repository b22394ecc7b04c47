"""The bench's two modes, `make bench` (full) and `make bench-quick`: how big and how long; and timing a call
within a mode's budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.loadgen import percentile


@dataclass(frozen=True)
class Profile:
    """How big and how long: `make bench` (full) or `make bench-quick`."""

    name: str
    sizes: tuple[int, ...]
    query_budget_s: float  # time spent per route (per variant), within the rep bounds below
    query_min_reps: int
    query_max_reps: int
    http_seconds: float
    older_snapshots: int
    weekly_snapshots: int  # the history store (benchmarks/weekly.py), at the largest N; 0: none
    rl_models: int  # the rate-limited ingest
    rl_page_size: int
    rl_quota: int
    rl_window: float
    rl_variants: tuple[str, ...]  # "headers" (RateLimit on every answer, as the Hub) and/or "429-only"
    rss_probe_fraction: float | None  # also ingest N*fraction, to compare peak RSS (memory must not grow with N)
    check: bool  # exit 1 when a gross-regression bound fails


FULL = Profile(
    name="full",
    sizes=(100_000, 2_000_000),
    query_budget_s=3.0,
    query_min_reps=10,
    query_max_reps=300,
    http_seconds=10.0,
    older_snapshots=10,
    weekly_snapshots=100,
    rl_models=50_000,
    rl_page_size=100,
    rl_quota=100,
    rl_window=10.0,
    rl_variants=("headers", "429-only"),
    rss_probe_fraction=None,
    check=False,
)
QUICK = Profile(
    name="quick",
    sizes=(20_000,),
    query_budget_s=0.25,
    query_min_reps=5,
    query_max_reps=60,
    http_seconds=2.5,
    older_snapshots=10,
    weekly_snapshots=100,
    rl_models=4_000,
    rl_page_size=50,
    rl_quota=20,
    rl_window=2.0,
    rl_variants=("headers",),
    rss_probe_fraction=0.2,
    check=True,
)


def sample(fn: Callable[[], float], prof: Profile, min_reps: int | None = None) -> list[float]:
    """Call `fn` (which returns the seconds it measured) once to warm up, then for the budget."""
    fn()
    samples: list[float] = []
    least = prof.query_min_reps if min_reps is None else min_reps
    end = time.perf_counter() + prof.query_budget_s
    while len(samples) < least or (time.perf_counter() < end and len(samples) < prof.query_max_reps):
        samples.append(fn())
    return samples


def stats_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms)}
