"""The snapshot store: atomic publication, pick-up without restart, nothing left by a killed writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubcensus.config import Settings
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.records import parse_record
from hubcensus.ingest.writer import SnapshotWriter
from hubcensus.queries.datadir import clean_tmp
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.data import LIST_2024, LIST_2025, TAKEN_2022
from tests.helpers import hubcensus, serving
from tests.hubserver import HubServer, RequestInfo, Response


@pytest.fixture()
def live_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The real app under uvicorn on loopback, in a thread, over an initially empty data dir."""
    data_dir = tmp_path / "data"
    with serving(data_dir) as url:
        yield url, data_dir


def test_new_snapshot_is_picked_up_by_a_running_api(live_api: tuple[str, Path]) -> None:
    url, data_dir = live_api
    assert httpx.get(f"{url}/v1/frameworks/share").status_code == 503
    first = hubcensus(
        "import",
        str(LIST_2024),
        "--taken-at",
        "2024-12-15",
        "--data-dir",
        str(data_dir),
    )
    assert first.returncode == 0, first.stderr
    one = httpx.get(f"{url}/v1/frameworks/share").json()
    assert one["snapshot"]["taken_at"] == "2024-12-15T00:00:00Z" and one["total"]["models"] == 1_319
    # A second, newer snapshot written by another process while this one serves: no restart needed.
    second = hubcensus(
        "import",
        str(LIST_2025),
        "--taken-at",
        "2025-01-14",
        "--data-dir",
        str(data_dir),
    )
    assert second.returncode == 0, second.stderr
    two = httpx.get(f"{url}/v1/frameworks/share").json()
    assert two["snapshot"]["taken_at"] == "2025-01-14T00:00:00Z" and two["total"]["models"] == 3_180
    # The older one stays addressable by id.
    old = httpx.get(f"{url}/v1/frameworks/share", params={"snapshot": one["snapshot"]["id"]}).json()
    assert old["total"] == one["total"]
    listing = httpx.get(f"{url}/v1/snapshots").json()["snapshots"]
    assert [s["id"] for s in listing] == [two["snapshot"]["id"], one["snapshot"]["id"]]


def test_killed_ingest_leaves_nothing_visible(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    data_dir = tmp_path / "data"
    third_page = threading.Event()

    def stall_on_third_page(info: RequestInfo) -> Response | None:
        if len(hub.requests) >= 3:
            third_page.set()
            time.sleep(30)
        return None

    with HubServer(crawl_2022[:5000], page_size=1000, hook=stall_on_third_page) as hub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubcensus", "ingest", "--endpoint", hub.url, "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert third_page.wait(60), "the worker never reached the third page"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        hub.hook = None
        assert SnapshotStore(data_dir).snapshots() == []
        assert not (data_dir / "snapshots").exists() or list((data_dir / "snapshots").iterdir()) == []
        # What the killed run committed waits, invisible, in resume/ (whole pages only).
        (leftover,) = (data_dir / "resume").iterdir()
        assert (leftover / "staging.duckdb").exists()
        # The next run continues it and publishes the whole listing, then nothing is left behind.
        done = hubcensus("ingest", "--endpoint", hub.url, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and "5,000 models" in done.stdout
    assert list((data_dir / "resume").iterdir()) == []
    assert [p.name for p in (data_dir / "tmp").iterdir()] == [".lock"]
    assert len(SnapshotStore(data_dir).snapshots()) == 1


def test_clean_tmp_spares_a_live_writer(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path, taken_at=TAKEN_2022, source="t", kind="import") as writer:
        writer.add(parse_record({"id": "a/b"}))
        abandoned = tmp_path / "tmp" / "20200101T000000Z-dead00"
        abandoned.mkdir()
        assert clean_tmp(tmp_path) == [abandoned]
        assert (tmp_path / "tmp" / writer.id).is_dir()
        meta = writer.publish()
    assert SnapshotStore(tmp_path).get().id == meta.id


def test_a_resumable_run_is_written_by_one_writer_at_a_time(tmp_path: Path) -> None:
    # Two runs of the same key (endpoint, filters, limit) share resume/<key>/: the second is refused, the first
    # goes on, and its work dir is kept (locked no more) for the next run when it fails.
    kwargs: dict[str, Any] = {"taken_at": TAKEN_2022, "source": "t", "kind": "ingest", "resume_key": "k"}
    with pytest.raises(RuntimeError, match="stop"), SnapshotWriter(tmp_path, **kwargs) as first:
        first.add_page([parse_record({"id": "a/b"})], [], "next")
        with pytest.raises(IngestError, match=r"another run is already writing .*resume/k; try again"):
            SnapshotWriter(tmp_path, **kwargs).__enter__()
        raise RuntimeError("stop")
    with SnapshotWriter(tmp_path, **kwargs, resume_max_age=3600) as second:
        assert (second.resumed, second.pages, second.next_url) == (True, 1, "next")
        second.publish()
    assert list((tmp_path / "resume").iterdir()) == []


def test_published_snapshot_is_read_only_and_complete(demo_data_dir: Path) -> None:
    store = SnapshotStore(demo_data_dir)
    meta = store.get()
    folder = store.path_of(meta.id).parent
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "snapshot.duckdb", "summary.parquet"]
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o222 == 0
    with store.cursor(meta.id) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert tables == {"models", "bad_records", "meta"}
        with pytest.raises(Exception, match="read-only"):
            con.execute("DELETE FROM models")
    assert meta.taken_at == TAKEN_2022


def test_a_directory_without_meta_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "snapshots" / "garbage").mkdir(parents=True)
    (tmp_path / "snapshots" / "stray-file").write_text("x")
    assert SnapshotStore(tmp_path).snapshots() == []


def test_one_memory_limit_bounds_every_snapshot_the_api_opens(demo_data_dir: Path) -> None:
    app = create_app(Settings(data_dir=demo_data_dir, query_memory_mb=256))
    store = app.state.store
    meta = store.get()
    with store.cursor(meta.id) as a, store.cursor(meta.id) as b:
        # Two cursors, one DuckDB instance: one buffer pool under the configured limit.
        assert a.execute("SELECT current_setting('memory_limit')").fetchall() == [("256.0 MiB",)]
        assert b.execute("SELECT count(*) FROM duckdb_databases() WHERE NOT internal").fetchall() == [(2,)]
