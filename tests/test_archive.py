"""The archive on a real S3-compatible store (SeaweedFS, `weed mini`): the worker's upload with its manifest as the
commit point, API nodes that serve it from a local cache, and what each does when the store is down."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.hub import HubOptions
from hubcensus.ingest.worker import Retention, run_once, run_worker, sync_archive
from hubcensus.queries.archive import Archive, ArchiveError, ArchiveLocation, Manifest, pending_uploads
from hubcensus.queries.control import read_status
from hubcensus.queries.datadir import SnapshotMeta, remove_snapshot
from hubcensus.queries.lake import TABLES, lake_files
from hubcensus.queries.mirror import MARKER, NotACache, claim
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.helpers import WeedServer, free_port, hubcensus, serving
from tests.hubserver import HubServer

SHARE = "/v1/frameworks/share"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture()
def aws(weed: WeedServer, monkeypatch: pytest.MonkeyPatch) -> WeedServer:
    """The AWS variables of the session's SeaweedFS, as boto3 reads them."""
    for name, value in weed.env.items():
        monkeypatch.setenv(name, value)
    return weed


@pytest.fixture()
def archive(aws: WeedServer, request: pytest.FixtureRequest) -> Archive:
    """An archive of its own (a prefix per test) in the session's store."""
    return Archive.from_url(aws.url(f"t-{request.node.name[:40]}-{time.monotonic_ns()}"))


def make_snapshots(data_dir: Path, records: list[dict[str, Any]], count: int, size: int = 500) -> list[SnapshotMeta]:
    """`count` snapshots of `size` models each, a day apart, oldest first."""
    dump = data_dir.parent / f"dump-{data_dir.name}.jsonl"
    metas = []
    for i in range(count):
        dump.write_text("".join(json.dumps(r) + "\n" for r in records[i * 50 : i * 50 + size]))
        metas.append(import_dump(dump, data_dir, taken_at=T0 + timedelta(days=i), max_bad_share=0.0))
    return metas


def node(data_dir: Path, archive: Archive, **settings: Any) -> TestClient:
    """An API node of the archive over its own (empty) data dir, through the ASGI transport."""
    app = create_app(Settings(data_dir=data_dir, archive=archive.url, archive_poll=0.2, cache_mb=0, **settings))
    return TestClient(app, raise_server_exceptions=False)


def wait_for_listing(client: TestClient, ids: list[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        listed = [s["id"] for s in client.get("/v1/snapshots").json()["snapshots"]]
        if sorted(listed) == sorted(ids):
            return
        assert time.monotonic() < deadline, f"listed {listed}, expected {ids}"
        time.sleep(0.1)


# --- the contract ---------------------------------------------------------------------------------------


def test_archive_urls_are_parsed_and_bad_ones_refused() -> None:
    assert ArchiveLocation.parse("s3://b/some/prefix/") == ArchiveLocation("b", "some/prefix")
    assert ArchiveLocation.parse("s3://b").key("manifests/x.json") == "manifests/x.json"
    for bad in ("b/prefix", "https://b/prefix", "s3://", "s3://key:secret@b/p"):
        with pytest.raises(ValueError):
            ArchiveLocation.parse(bad)
    with pytest.raises(ValueError, match="s3://"):
        Settings(archive="http://somewhere/x")


def test_upload_writes_every_file_then_the_manifest(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    data_dir = tmp_path / "data"
    [meta] = make_snapshots(data_dir, crawl_2022, 1)
    lake = lake_files(data_dir, meta.id)  # the import wrote the snapshot's lake: it is uploaded with it
    assert len(lake) == len(TABLES)
    assert archive.committed() == [] and pending_uploads(data_dir, archive) == [meta.id]

    manifest = archive.upload(data_dir, meta.id)
    assert archive.committed() == [meta.id] and pending_uploads(data_dir, archive) == []
    paths = {f.path for f in manifest.files}
    assert paths == {
        f"snapshots/{meta.id}/snapshot.duckdb",
        f"snapshots/{meta.id}/meta.json",
        f"snapshots/{meta.id}/summary.parquet",
        *(f"lake/{table}/snapshot_date=2024-01-01/snapshot={meta.id}/part-0.parquet" for table in TABLES),
    }
    assert archive.manifest(meta.id) == manifest and manifest.snapshot == meta
    # Every file downloads back byte for byte, checked against the manifest.
    for entry in manifest.files:
        archive.download(entry, tmp_path / "back" / entry.path)
        assert (tmp_path / "back" / entry.path).read_bytes() == (data_dir / entry.path).read_bytes()
    # A file that is not the one the manifest names is refused, and nothing is left behind.
    wrong = manifest.files[0].model_copy(update={"sha256": "0" * 64})
    with pytest.raises(ArchiveError, match="not the file"):
        archive.download(wrong, tmp_path / "bad" / "x")
    assert list((tmp_path / "bad").iterdir()) == []


def test_a_store_that_is_down_fails_in_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens there: every call fails fast (connect timeout, bounded retries), never hangs.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    started = time.monotonic()
    with pytest.raises(ArchiveError, match="listing manifests/"):
        Archive.from_url("s3://nowhere/x").committed()
    assert time.monotonic() - started < 15


# --- the worker -----------------------------------------------------------------------------------------


def test_the_worker_uploads_after_publishing(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    with HubServer(crawl_2022[:2000], page_size=500) as hub:
        meta = run_once(
            tmp_path, HubOptions(endpoint=hub.url, max_rate=0), retention=Retention(daily=1), archive=archive
        )
    assert meta is not None
    assert archive.committed() == [meta.id]
    status = read_status(tmp_path)["archive"]
    assert status["url"] == archive.url and status["pending"] == [] and status["last_error"] is None
    assert status["last_upload"]["snapshot"] == meta.id and status["last_upload"]["bytes"] > 0


def test_retention_prunes_the_local_disk_but_the_archive_keeps_history(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    with HubServer(crawl_2022[:500], page_size=500) as hub:
        options = HubOptions(endpoint=hub.url, max_rate=0)
        first = run_once(tmp_path, options, retention=Retention(daily=1), archive=archive)
        second = run_once(tmp_path, options, retention=Retention(daily=1), archive=archive)
    assert first is not None and second is not None
    assert [m.id for m in SnapshotStore(tmp_path).snapshots()] == [second.id]  # same day: the older one pruned
    assert archive.committed() == sorted([first.id, second.id])


@pytest.fixture
def down_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WeedServer, Archive]]:
    """A store of the test's own (the `weed` fixture's is shared by the session), already stopped: the test
    starts it again when it wants it back."""
    with WeedServer(tmp_path / "weed") as store:
        for name, value in store.env.items():
            monkeypatch.setenv(name, value)
        archive = Archive.from_url(store.url())
        store.stop()
        yield store, archive


def test_a_store_down_keeps_snapshots_local_and_uploads_them_later(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], down_store: tuple[WeedServer, Archive]
) -> None:
    # A store of its own, which this test stops and starts again.
    store, archive = down_store
    data_dir = tmp_path / "data"
    with HubServer(crawl_2022[:500], page_size=500) as hub:
        started = time.monotonic()
        meta = run_once(data_dir, HubOptions(endpoint=hub.url, max_rate=0), retention=Retention(), archive=archive)
        assert time.monotonic() - started < 30  # the run is not held up by the store
    assert meta is not None and SnapshotStore(data_dir).get().id == meta.id  # published locally all the same
    status = read_status(data_dir)
    assert status["last_success"]["snapshot"] == meta.id
    assert status["archive"]["pending"] == [meta.id] and "listing" in status["archive"]["last_error"]["reason"]
    assert sync_archive(data_dir, archive) == []  # still down: still pending, nothing lost

    store.start()
    assert sync_archive(data_dir, archive) == [meta.id]
    assert archive.committed() == [meta.id]
    status = read_status(data_dir)["archive"]
    assert status["pending"] == [] and status["last_error"] is None

    # Down again for two checks in a row: only what was published since the last good check is pending.
    [later] = make_snapshots(data_dir, crawl_2022, 1)
    store.stop()
    assert sync_archive(data_dir, archive) == [] and sync_archive(data_dir, archive) == []
    assert read_status(data_dir)["archive"]["pending"] == [later.id]


def test_a_snapshot_deleted_on_purpose_is_never_uploaded_again(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    data_dir = tmp_path / "data"
    old, new = make_snapshots(data_dir, crawl_2022, 2)
    assert sync_archive(data_dir, archive) == [old.id, new.id]
    assert archive.delete(old.id) is True
    assert archive.committed() == [new.id] and archive.deleted() == {old.id}
    assert pending_uploads(data_dir, archive) == []  # a tombstone is not a snapshot the archive lacks
    # The worker still had it: it does not bring it back, and drops its own copy.
    assert sync_archive(data_dir, archive) == []
    assert archive.committed() == [new.id]
    assert [m.id for m in SnapshotStore(data_dir).snapshots()] == [new.id]


# --- API nodes ------------------------------------------------------------------------------------------


def test_two_nodes_with_empty_caches_answer_identically(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    worker_dir = tmp_path / "worker"
    metas = make_snapshots(worker_dir, crawl_2022, 3)
    sync_archive(worker_dir, archive)
    ids = [m.id for m in metas]
    with node(tmp_path / "node-1", archive) as one, node(tmp_path / "node-2", archive) as two:
        for client in (one, two):
            wait_for_listing(client, ids)
        # Every answer byte for byte, with the same ETag: the latest, an older one (fetched on demand), a history.
        headers = {"Host": "api.example"}
        for path, params in [
            (SHARE, {}),
            (SHARE, {"snapshot": ids[0], "by": "library_name"}),
            ("/v1/models", {"_size": "5", "snapshot": ids[1]}),
            ("/v1/frameworks/history", {}),
            (f"/v1/snapshots/{ids[0]}/diff/{ids[2]}", {}),
            ("/v1/snapshots", {}),
        ]:
            a, b = one.get(path, params=params, headers=headers), two.get(path, params=params, headers=headers)
            assert a.status_code == b.status_code == 200, (path, a.text)
            assert a.content == b.content, path
            assert a.headers.get("etag") == b.headers.get("etag"), path
        # The local answers are the worker's own.
        with TestClient(create_app(Settings(data_dir=worker_dir, cache_mb=0))) as local:
            mine = local.get(SHARE, params={"snapshot": ids[0]}, headers=headers)
        theirs = one.get(SHARE, params={"snapshot": ids[0]}, headers=headers)
        assert theirs.content == mine.content and theirs.headers["etag"] == mine.headers["etag"]
        status = one.get("/v1/status").json()
        assert status["worker"] is None and status["archive"]["url"] == archive.url
        assert set(status["archive"]["cache"]["snapshots"]) == set(ids)


def test_a_node_picks_up_new_snapshots_and_drops_deleted_ones(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    worker_dir = tmp_path / "worker"
    first, second = make_snapshots(worker_dir, crawl_2022, 2)
    archive.upload(worker_dir, first.id)
    with node(tmp_path / "node", archive) as client:
        wait_for_listing(client, [first.id])
        archive.upload(worker_dir, second.id)
        wait_for_listing(client, [first.id, second.id])  # within the poll (0.2 s here)
        assert client.get(SHARE).json()["snapshot"]["id"] == second.id
        archive.delete(first.id)
        wait_for_listing(client, [second.id])
        assert client.get(SHARE, params={"snapshot": first.id}).status_code == 404


def test_a_node_answers_503_for_what_it_cannot_fetch_and_serves_what_it_has(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with WeedServer(tmp_path / "weed") as store:
        for name, value in store.env.items():
            monkeypatch.setenv(name, value)
        archive = Archive.from_url(store.url())
        worker_dir = tmp_path / "worker"
        old, new = make_snapshots(worker_dir, crawl_2022, 2)
        sync_archive(worker_dir, archive)
        with node(tmp_path / "node", archive) as client:
            wait_for_listing(client, [old.id, new.id])
            assert client.get(SHARE).status_code == 200  # the newest, prefetched
            store.stop()
            r = client.get(SHARE, params={"snapshot": old.id})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "snapshot_unavailable" and int(r.headers["retry-after"]) > 0
            assert old.id in r.json()["error"]["message"]
            assert client.get(SHARE).status_code == 200  # what it has, it still serves
            assert not (tmp_path / "node" / "snapshots" / old.id / "snapshot.duckdb").exists()
            assert [p.name for p in (tmp_path / "node" / "snapshots" / old.id).iterdir() if p.suffix == ".part"] == []
            store.start()
            assert client.get(SHARE, params={"snapshot": old.id}).status_code == 200


def test_the_cache_stays_within_its_budget(tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]) -> None:
    worker_dir = tmp_path / "worker"
    metas = make_snapshots(worker_dir, crawl_2022, 3, size=2000)
    sync_archive(worker_dir, archive)
    size = max((worker_dir / "snapshots" / m.id / "snapshot.duckdb").stat().st_size for m in metas)
    budget_mb = (2 * size) // 2**20 + 1  # two files fit, three do not
    assert 3 * size > budget_mb * 2**20
    with node(tmp_path / "node", archive, archive_cache_mb=budget_mb) as client:
        wait_for_listing(client, [m.id for m in metas])
        for m in metas:
            assert client.get(SHARE, params={"snapshot": m.id}).status_code == 200
            cached = client.get("/v1/status").json()["archive"]["cache"]
            assert cached["used_bytes"] <= budget_mb * 2**20
        assert metas[0].id not in cached["snapshots"]  # the least recently used went
        assert client.get(SHARE, params={"snapshot": metas[0].id}).status_code == 200  # and comes back


def test_a_manifest_from_an_older_worker_is_served_and_hides_nothing(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    worker_dir = tmp_path / "worker"
    old, new = make_snapshots(worker_dir, crawl_2022, 2)
    sync_archive(worker_dir, archive)
    # The older snapshot's manifest rewritten as an older release would have: its meta without the fields added
    # since, no uploader; and a manifest of a format newer than this release's, which it must skip, not choke on.
    manifest = json.loads(
        archive.client.get_object(Bucket=archive.location.bucket, Key=archive.location.key(f"manifests/{old.id}.json"))[
            "Body"
        ].read()
    )
    for field in ("summary_version", "reader", "weight_file_pattern", "duplicates", "bad_reasons", "params"):
        manifest["snapshot"].pop(field, None)
    del manifest["uploaded_by"]
    archive._put(f"manifests/{old.id}.json", json.dumps(manifest).encode())
    future = json.loads((archive.manifest(new.id) or pytest.fail("no manifest")).model_dump_json())
    future.update(format=99, whatever=1)
    future["snapshot"]["id"] = "29990101T000000Z-ffffff"
    archive._put("manifests/29990101T000000Z-ffffff.json", json.dumps(future).encode())
    assert isinstance(archive.manifest(old.id), Manifest) and archive.manifest("29990101T000000Z-ffffff") is None
    with node(tmp_path / "node", archive) as client:
        wait_for_listing(client, [old.id, new.id])
        assert client.get(SHARE, params={"snapshot": old.id}).status_code == 200
        assert client.get(SHARE).json()["snapshot"]["id"] == new.id


def test_a_node_refuses_a_data_dir_with_snapshots_of_its_own(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    make_snapshots(tmp_path / "worker", crawl_2022, 1)
    with pytest.raises(NotACache, match="snapshots of its own"):
        claim(tmp_path / "worker", archive)
    claim(tmp_path / "node", archive)
    assert (tmp_path / "node" / MARKER).exists()
    claim(tmp_path / "node", archive)  # its own cache: fine again


def test_node_status_and_admin_routes(tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]) -> None:
    worker_dir = tmp_path / "worker"
    old, new = make_snapshots(worker_dir, crawl_2022, 2)
    sync_archive(worker_dir, archive)
    auth = {"Authorization": "Bearer t"}
    with node(tmp_path / "node", archive, admin_token="t") as client:
        wait_for_listing(client, [old.id, new.id])
        r = client.post("/v1/snapshots", headers=auth)
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_worker" and "archive" in r.text
        assert client.delete(f"/v1/snapshots/{old.id}", headers=auth).status_code == 204
        assert archive.committed() == [new.id] and old.id in archive.deleted()
        wait_for_listing(client, [new.id])
    remove_snapshot(worker_dir, new.id)


def test_serve_with_an_archive_answers_over_http(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    worker_dir = tmp_path / "worker"
    [meta] = make_snapshots(worker_dir, crawl_2022, 1)
    sync_archive(worker_dir, archive)
    with serving(tmp_path / "node", archive=archive.url, archive_poll=0.2) as url:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/healthz").json()["latest"] != meta.id:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.get(f"{url}{SHARE}").json()["snapshot"]["id"] == meta.id


def test_an_idle_worker_uploads_what_the_store_could_not_take(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], down_store: tuple[WeedServer, Archive]
) -> None:
    # The store is down when the worker publishes; it comes back while the worker waits for its next run (hours
    # away): the worker's periodic check uploads the snapshot, without a new run.
    store, archive = down_store
    data_dir = tmp_path / "data"
    stop = threading.Event()
    with HubServer(crawl_2022[:300], page_size=300) as hub:
        options = HubOptions(endpoint=hub.url, max_rate=0, stop=stop)
        worker = threading.Thread(
            target=run_worker,
            args=(data_dir, "0 3 * * *", options),
            kwargs={"run_now": True, "archive": archive, "archive_every": 0.5, "heartbeat": 0.5},
        )
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while not (read_status(data_dir).get("archive") or {}).get("pending"):
                assert time.monotonic() < deadline, read_status(data_dir)
                time.sleep(0.1)
            [pending] = read_status(data_dir)["archive"]["pending"]
            store.start()
            while archive.committed() != [pending]:
                assert time.monotonic() < deadline + 60, read_status(data_dir)
                time.sleep(0.2)
        finally:
            stop.set()
            worker.join(60)


def test_the_cli_deletes_from_the_archive_and_serve_refuses_a_workers_dir(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "worker"
    old, new = make_snapshots(data_dir, crawl_2022, 2)
    sync_archive(data_dir, archive)
    monkeypatch.setenv("HUBCENSUS_ARCHIVE", archive.url)
    done = hubcensus("delete", old.id, "--yes", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert archive.committed() == [new.id] and old.id in archive.deleted()
    # `serve` with the archive over a worker's data dir: a clear error, nothing served, nothing deleted.
    done = hubcensus("serve", "--port", str(free_port()), "--data-dir", str(data_dir))
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "snapshots of its own" in done.stderr
    assert "Traceback" not in done.stderr and [m.id for m in SnapshotStore(data_dir).snapshots()] == [new.id]


def test_demo_refuses_an_archive_before_importing_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check needs no store: it must come before the bundled import, which would fill the dir it refuses.
    monkeypatch.setenv("HUBCENSUS_ARCHIVE", "s3://no-bucket/hubcensus")
    data_dir = tmp_path / "demo"
    done = hubcensus("demo", "--port", str(free_port()), "--data-dir", str(data_dir))
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "HUBCENSUS_ARCHIVE" in done.stderr
    assert "Traceback" not in done.stderr and not (data_dir / "snapshots").exists()


def test_a_download_cut_short_leaves_nothing_after_a_restart(
    tmp_path: Path, archive: Archive, crawl_2022: list[dict[str, Any]]
) -> None:
    worker_dir = tmp_path / "worker"
    [meta] = make_snapshots(worker_dir, crawl_2022, 1)
    sync_archive(worker_dir, archive)
    with node(tmp_path / "node", archive) as client:
        wait_for_listing(client, [meta.id])
    # What a node killed mid-download leaves: a temp file beside where the file goes (never the file itself).
    part = tmp_path / "node" / "snapshots" / meta.id / ".snapshot.duckdb.x1y2.part"
    part.write_bytes(b"half a file")
    with node(tmp_path / "node", archive) as client:
        assert not part.exists()
        assert client.get(SHARE).status_code == 200
