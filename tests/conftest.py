"""Shared fixtures: real data files, real DuckDB snapshots, the real app over HTTP."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.records import parse_record
from hubcensus.queries.frameworks import FRAMEWORKS, Facts, Method, classify, frameworks_of
from hubcensus.queries.store import SnapshotMeta
from hubcensus.service.app import create_app

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUNDLED = ROOT / "hubcensus" / "data" / "hub-2022-02-21.jsonl.gz"
TAKEN_2022 = datetime(2022, 2, 21, tzinfo=UTC)


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON Lines .gz file."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def bucket_of(rec: dict[str, Any], method: str = "tags", universe: Sequence[str] = FRAMEWORKS) -> str:
    """The bucket of one raw API record, computed in Python: a framework name, 'shared' or 'none'."""
    masks = classify(Facts.of_row(parse_record(rec)))
    fws = [f for f in frameworks_of(masks[cast(Method, method)]) if f in universe]
    return "none" if not fws else fws[0] if len(fws) == 1 else "shared"


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
    from hubcensus.queries.store import SnapshotStore

    return SnapshotStore(demo_data_dir).get("latest")


@pytest.fixture()
def client(demo_data_dir: Path) -> Iterator[TestClient]:
    """The real app over the bundled snapshot, through the ASGI transport."""
    with TestClient(create_app(Settings(data_dir=demo_data_dir)), raise_server_exceptions=False) as c:
        yield c
