"""Faults of the archive on a real SeaweedFS: the store killed mid-upload, the uploader killed mid-upload, and an
API node whose cache disk is full (a real ENOSPC, on a small tmpfs)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.worker import sync_archive
from hubcensus.queries.archive import Archive
from hubcensus.queries.control import read_status
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.service.app import create_app
from tests.data import ROOT
from tests.helpers import WeedServer

Report = Callable[..., None]
SHARE = "/v1/frameworks/share"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
BIG = 256 * 2**20  # a lake file this large takes seconds to upload: time to kill something midway


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WeedServer]:
    """A SeaweedFS of this test's own (the test kills it), its AWS variables set for boto3."""
    with WeedServer(tmp_path / "weed") as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        yield server


def snapshot_with_big_lake_file(data_dir: Path, records: list[dict[str, Any]], day: int = 0) -> SnapshotMeta:
    dump = data_dir.parent / "dump.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in records[:500]))
    meta = import_dump(dump, data_dir, taken_at=T0 + timedelta(days=day), max_bad_share=0.0)
    lake = data_dir / "lake" / "models" / f"snapshot_date={meta.taken_at.date()}" / f"snapshot={meta.id}"
    # Beside the lake's own file (the import wrote it): one big file, so that an upload lasts long enough to cut.
    lake.mkdir(parents=True, exist_ok=True)
    with (lake / "big.parquet").open("wb") as f:
        f.write(os.urandom(BIG))
    return meta


def objects(archive: Archive) -> list[str]:
    pages = archive.client.get_paginator("list_objects_v2").paginate(
        Bucket=archive.location.bucket, Prefix=archive.location.prefix + "/"
    )
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def wait_until(predicate: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_store_killed_mid_upload(
    tmp_path: Path, store: WeedServer, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    archive = Archive.from_url(store.url("killed-store"))
    data_dir = tmp_path / "data"
    meta = snapshot_with_big_lake_file(data_dir, crawl_2022)
    uploaded: list[list[str]] = []
    worker = threading.Thread(target=lambda: uploaded.append(sync_archive(data_dir, archive)))
    worker.start()
    # Its first files are in, the big one is going: the store dies.
    wait_until(lambda: any(k.endswith("snapshot.duckdb") for k in objects(archive)))
    store.stop()
    started = time.monotonic()
    worker.join(120)
    assert not worker.is_alive() and uploaded == [[]]
    gave_up_s = time.monotonic() - started
    status = read_status(data_dir)["archive"]
    assert status["pending"] == [meta.id] and status["last_error"] is not None
    assert (data_dir / "snapshots" / meta.id / "snapshot.duckdb").exists()  # still local

    store.start()
    assert archive.committed() == []  # nothing half-visible: no manifest
    with TestClient(create_app(Settings(data_dir=tmp_path / "node", archive=archive.url, archive_poll=0.2))) as node:
        time.sleep(1)
        assert node.get("/v1/snapshots").json()["snapshots"] == []
        assert sync_archive(data_dir, archive) == [meta.id]  # the next tick completes it
        wait_until(lambda: [s["id"] for s in node.get("/v1/snapshots").json()["snapshots"]] == [meta.id])
        assert node.get(SHARE).json()["snapshot"]["id"] == meta.id
    report("archive: store killed mid-upload", gave_up_s=round(gave_up_s, 1), then="uploaded on the next tick")


UPLOADER = """
import sys
from pathlib import Path
from hubcensus.ingest.worker import sync_archive
from hubcensus.queries.archive import Archive
sync_archive(Path(sys.argv[1]), Archive.from_url(sys.argv[2]))
"""


def test_the_uploader_killed_mid_upload(
    tmp_path: Path, store: WeedServer, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    archive = Archive.from_url(store.url("killed-uploader"))
    data_dir = tmp_path / "data"
    meta = snapshot_with_big_lake_file(data_dir, crawl_2022)
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, str(data_dir), archive.url], cwd=ROOT, env=os.environ)
    try:
        wait_until(lambda: any(k.endswith("snapshot.duckdb") for k in objects(archive)))
    finally:
        proc.kill()
        proc.wait(30)
    assert archive.committed() == [] and not any("/manifests/" in k for k in objects(archive))
    with TestClient(create_app(Settings(data_dir=tmp_path / "node", archive=archive.url, archive_poll=0.2))) as node:
        time.sleep(1)
        assert node.get("/v1/snapshots").json()["snapshots"] == []  # no reader sees it
        assert sync_archive(data_dir, archive) == [meta.id]  # the next run completes it
        wait_until(lambda: [s["id"] for s in node.get("/v1/snapshots").json()["snapshots"]] == [meta.id])
    report("archive: uploader SIGKILLed mid-upload", manifest_before_rerun=False, then="completed by the next run")


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A real small file system at `path` (root only), so a write past `size` gets ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_node_whose_cache_disk_is_full(
    tmp_path: Path, store: WeedServer, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    archive = Archive.from_url(store.url("full-disk"))
    worker_dir = tmp_path / "worker"
    dump = tmp_path / "dump.jsonl"
    metas = []
    for day, count in ((0, 8000), (1, 2000)):
        dump.write_text("".join(json.dumps(r) + "\n" for r in crawl_2022[:count]))
        metas.append(import_dump(dump, worker_dir, taken_at=T0 + timedelta(days=day), max_bad_share=0.0))
    old, new = metas
    sync_archive(worker_dir, archive)
    sizes = {m.id: (worker_dir / "snapshots" / m.id / "snapshot.duckdb").stat().st_size for m in metas}
    small = sum(f.stat().st_size for f in (worker_dir / "snapshots").rglob("*") if f.is_file()) - sizes[old.id]
    # The disk holds the listing and the newest file, not the older (larger) one; the budget would allow it.
    with tmpfs(tmp_path / "node", small + sizes[old.id] // 2 + 256 * 1024) as node_dir:
        settings = Settings(data_dir=node_dir, archive=archive.url, archive_poll=0.2, archive_cache_mb=10_000)
        with TestClient(create_app(settings), raise_server_exceptions=False) as node:
            wait_until(lambda: node.get("/healthz").json()["snapshots"] == 2)
            wait_until(lambda: (node_dir / "snapshots" / new.id / "snapshot.duckdb").exists())
            r = node.get(SHARE, params={"snapshot": old.id})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "snapshot_unavailable" and "no space" in r.json()["error"]["message"]
            assert "retry-after" in r.headers
            assert node.get(SHARE).status_code == 200  # it keeps serving what it has
            assert node.get("/v1/frameworks/history").status_code == 200  # histories need only the summaries
            leftovers = [p for p in node_dir.rglob("*") if p.name.endswith(".part")]
            assert leftovers == [] and not (node_dir / "snapshots" / old.id / "snapshot.duckdb").exists()
    report("archive: node cache disk full (tmpfs ENOSPC)", status=503, partial_files=0)


def test_a_store_that_hangs_fails_in_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    # A listener that takes connections and never answers (a store wedged, a firewall dropping replies): every
    # call gives up after its read timeout and bounded retries; the worker's check and a node's request do not hang.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        for name, value in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_REGION", "us-east-1")):
            monkeypatch.setenv(name, value)
        archive = Archive.from_url("s3://wedged/archive")
        data_dir = tmp_path / "data"
        dump = tmp_path / "dump.jsonl"
        dump.write_text("".join(json.dumps(r) + "\n" for r in crawl_2022[:200]))
        meta = import_dump(dump, data_dir, taken_at=T0, max_bad_share=0.0)
        started = time.monotonic()
        assert sync_archive(data_dir, archive) == []
        took = time.monotonic() - started
        assert took < 40, took
        assert read_status(data_dir)["archive"]["pending"] == [meta.id]
    report("archive: store accepts but never answers", gave_up_s=round(took, 1))
