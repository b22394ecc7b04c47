"""Shared fixtures: the real 2022 crawl, a data dir holding it as a snapshot, the real app over it (the files
and constants they use: tests/data.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.data import BUNDLED, TAKEN_2022, read_jsonl_gz
from tests.helpers import WeedServer


@pytest.fixture(scope="session")
def crawl_2022() -> list[dict[str, Any]]:
    """The 29,432 real model objects of the 2022-02-21 crawl, as the API gave them."""
    return read_jsonl_gz(BUNDLED)


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the bundled 2022 crawl as one snapshot (imported once per session)."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    import_dump(BUNDLED, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    return data_dir


@pytest.fixture(scope="session")
def demo_snapshot(demo_data_dir: Path) -> SnapshotMeta:
    """The metadata of the bundled snapshot."""
    return SnapshotStore(demo_data_dir).get("latest")


@pytest.fixture()
def client(demo_data_dir: Path) -> Iterator[TestClient]:
    """The real app over the bundled snapshot, through the ASGI transport."""
    with TestClient(create_app(Settings(data_dir=demo_data_dir)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """One real S3-compatible store (SeaweedFS `weed mini`) for the session; each test uses its own prefix."""
    with WeedServer(tmp_path_factory.mktemp("weed")) as server:
        yield server
