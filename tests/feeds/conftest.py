"""The feeds' data dir, one for the package: three real snapshots (the bundled 2022 crawl and two 2024/2025 Hub
listings), served by uvicorn on loopback, with and without the answer cache, and by `hubcensus serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubcensus.ingest.dumps import import_dump
from tests.data import BUNDLED, LIST_2024, LIST_2025, TAKEN_2022, TAKEN_2024, TAKEN_2025
from tests.feeds.common import Census
from tests.helpers import hubcensus_serve, serving


@pytest.fixture(scope="package")
def census_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A data dir with three snapshots: 2022-02-21 (bundled), 2024-12-15 and 2025-01-14 (latest)."""
    data_dir = tmp_path_factory.mktemp("feeds-data")
    old = import_dump(BUNDLED, data_dir, taken_at=TAKEN_2022, max_bad_share=0.05)
    mid = import_dump(LIST_2024, data_dir, taken_at=TAKEN_2024, max_bad_share=0.05)
    new = import_dump(LIST_2025, data_dir, taken_at=TAKEN_2025, max_bad_share=0.05)
    return data_dir, old.id, mid.id, new.id


@pytest.fixture(scope="package")
def census(census_dir: tuple[Path, str, str, str]) -> Iterator[Census]:
    """The three-snapshot data dir served by uvicorn (with its answer cache)."""
    data_dir, old, mid, latest = census_dir
    with serving(data_dir) as url:
        listing = httpx.get(f"{url}/v1/snapshots").json()["snapshots"]
        yield Census(url, data_dir, old, mid, latest, {s["id"]: s["models"] for s in listing})


@pytest.fixture(scope="package")
def bare_url(census_dir: tuple[Path, str, str, str]) -> Iterator[str]:
    """A second server over the same data dir with no answer cache: every answer is computed afresh."""
    with serving(census_dir[0], cache_mb=0) as url:
        yield url


@pytest.fixture(scope="package")
def process_url(census_dir: tuple[Path, str, str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`hubcensus serve` in its own process, for requests that make the server log a traceback.

    Python 3.11's traceback formatting calls ast.parse, which is not thread-safe there: a uvicorn
    thread logging a 500 while pytest formats a failure can abort the whole run (INTERNALERROR
    "AST constructor recursion depth mismatch").
    """
    with hubcensus_serve(census_dir[0], tmp_path_factory.mktemp("serve")) as served:
        yield served.url


@pytest.fixture(scope="package")
def http(census: Census) -> Iterator[httpx.Client]:
    """One HTTP client for the package, against the cached server."""
    with httpx.Client(base_url=census.url, timeout=60) as client:
        yield client
