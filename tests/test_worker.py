"""The scheduled worker, retention, status, admin actions and metrics, as they run for real."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
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
from hubcensus.ingest.hub import HubOptions
from hubcensus.ingest.worker import Retention, next_run, run_worker, to_prune, validate_schedule
from hubcensus.queries.control import pending_requests, read_status, take_requests, write_status
from hubcensus.queries.datadir import SnapshotMeta, remove_snapshot
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.data import BUNDLED, TAKEN_2022
from tests.helpers import hubcensus, hubcensus_serve
from tests.hubserver import HubServer, RequestInfo, Response, json_response


def meta(taken_at: datetime, n: int = 0) -> SnapshotMeta:
    """A snapshot record for retention arithmetic."""
    return SnapshotMeta(
        id=taken_at.strftime("%Y%m%dT%H%M%SZ") + f"-{n:06d}",
        taken_at=taken_at,
        source="s",
        kind="ingest",
        models=1,
        bad_records=0,
        duration_s=0,
        classifier_version="x",
        published_at=taken_at,
    )


def test_retention_keeps_the_newest_of_each_period() -> None:
    start = datetime(2026, 1, 1, 3, tzinfo=UTC)
    # Two snapshots a day for 70 days.
    snaps = [meta(start + timedelta(days=d, hours=h)) for d in range(70) for h in (0, 12)]
    newest = max(snaps, key=lambda m: m.taken_at)
    assert to_prune(snaps, Retention()) == []  # nothing set: keep everything
    kept = {m.id for m in snaps} - {m.id for m in to_prune(snaps, Retention(daily=7))}
    assert len(kept) == 7 and newest.id in kept
    assert all(m.taken_at.hour == 15 for m in snaps if m.id in kept)  # the newest of each day
    kept = {m.id for m in snaps} - {m.id for m in to_prune(snaps, Retention(daily=3, weekly=4, monthly=3))}
    days = {m.taken_at.date() for m in snaps if m.id in kept}
    assert len(kept) == len(days) <= 3 + 4 + 3 and newest.id in kept
    assert {m.taken_at.strftime("%Y-%m") for m in snaps if m.id in kept} == {"2026-01", "2026-02", "2026-03"}


def test_schedule_is_standard_cron() -> None:
    validate_schedule("0 3 * * *")
    assert next_run("0 3 * * *", datetime(2026, 11, 29, 8, 0, tzinfo=UTC)) == datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    for bad in ("every day", "0 3 * *", "0 3 * * * *", "61 3 * * *"):
        with pytest.raises(ValueError, match="5-field cron"):
            validate_schedule(bad)


def _worker(data_dir: Path, hub_url: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hubcensus", "worker", "--endpoint", hub_url, "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HUBCENSUS_MAX_RATE": "0", **(env or {})},
    )


def _wait(predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.fixture()
def api_on(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`hubcensus serve` in its own process, with an admin token, over tmp_path/data."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()  # `serve` only reads: it refuses a data dir that does not exist
    with hubcensus_serve(data_dir, tmp_path, {"HUBCENSUS_ADMIN_TOKEN": "s3cret-admin-token"}) as api:
        yield api.url, data_dir
    assert "s3cret-admin-token" not in api.stdout.read_text() + api.stderr.read_text()


def test_worker_runs_now_then_on_request_and_prunes(api_on: tuple[str, Path], crawl_2022: list[dict[str, Any]]) -> None:
    url, data_dir = api_on
    with HubServer(crawl_2022[:3000], page_size=1000) as hub:
        # Credentials in the endpoint: sent to the Hub, shown nowhere, and retention still finds the worker's own.
        endpoint = hub.url.replace("http://", "http://user:s3cr3t-pw@")
        proc = _worker(data_dir, endpoint, "--schedule", "0 3 * * *", "--run-now", "--keep-daily", "1")
        try:
            _wait(lambda: (read_status(data_dir).get("last_success") or {}).get("models") == 3000)
            first = read_status(data_dir)["last_success"]["snapshot"]
            status = httpx.get(f"{url}/v1/status").json()
            assert status["state"] == "idle" and status["next_run"].endswith("03:00:00+00:00")
            assert status["latest_snapshot"]["id"] == first and status["last_failure"] is None
            assert status["worker"]["endpoint"] == hub.url.replace("http://", "http://***@")
            assert status["liveness"]["alive"] is True and status["liveness"]["state"] == "idle"
            # Take a snapshot now, through the admin API; the worker picks the request up.
            auth = {"Authorization": "Bearer s3cret-admin-token"}
            accepted = httpx.post(f"{url}/v1/snapshots", headers=auth)
            assert accepted.status_code == 202
            assert accepted.json()["message"] == "The worker will start a run within 1 s."
            _wait(lambda: read_status(data_dir)["last_success"]["snapshot"] != first)
            second = read_status(data_dir)["last_success"]
            # keep-daily 1: the older snapshot of the same day is pruned, the newest stays.
            assert second["pruned"] == [first]
            listing = httpx.get(f"{url}/v1/snapshots")
            assert [s["id"] for s in listing.json()["snapshots"]] == [second["snapshot"]]
            served = listing.text + httpx.get(f"{url}/v1/status").text
        finally:
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=30)[0]
        assert {r.headers.get("authorization", "")[:6] for r in hub.requests if r.path == "/api/models"} == {"Basic "}
    assert proc.returncode == 0, output
    assert "next run at" in output and "worker stopped" in output
    assert read_status(data_dir)["state"] == "stopped"
    for where in (output, served, (data_dir / "status.json").read_text(), *_metas(data_dir)):
        assert "s3cr3t" not in where


def _metas(data_dir: Path) -> list[str]:
    return [p.read_text() for p in (data_dir / "snapshots").glob("*/meta.json")]


def test_snapshot_requests_follow_the_worker_liveness(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    auth = {"Authorization": "Bearer tok-123456"}
    app = create_app(Settings(data_dir=tmp_path, admin_token="tok-123456"))

    def post() -> tuple[int, dict[str, Any]]:
        with TestClient(app) as c:
            answer = c.post("/v1/snapshots", headers=auth)
            return answer.status_code, answer.json()

    def liveness() -> dict[str, Any]:
        with TestClient(app) as c:
            body: dict[str, Any] = c.get("/v1/status").json()["liveness"]
            return body

    # No worker ever ran here: refused, nothing queued (it would stay pending forever).
    status, body = post()
    assert status == 503 and body["error"]["code"] == "no_worker"
    assert body["error"]["message"].startswith("No worker has ever run on this data dir. Nothing was queued")
    assert "hubcensus worker --schedule" in body["error"]["message"] and pending_requests(tmp_path) == []
    assert liveness()["alive"] is False and liveness()["state"] == "none"
    # Documented: the code in the error schema, the 503 on the route.
    openapi = app.openapi()
    assert "no_worker" in openapi["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
    assert "no_worker" in openapi["paths"]["/v1/snapshots"]["post"]["responses"]["503"]["description"]

    slow = threading.Event()

    def slow_pages(info: RequestInfo) -> Response | None:
        if slow.is_set():
            time.sleep(0.5)
        return None

    with HubServer(crawl_2022[:6000], page_size=1000, hook=slow_pages) as hub:
        slow.set()
        proc = _worker(tmp_path, hub.url, "--schedule", "0 3 * * *", "--run-now")
        try:
            # A run in progress: accepted, and it says the request waits for that run.
            _wait(lambda: read_status(tmp_path).get("state") == "running")
            status, body = post()
            assert status == 202 and body["worker"] == "running"
            assert body["message"] == "A run is in progress; this request runs after it."
            assert liveness()["alive"] is True and liveness()["state"] == "running"
            slow.clear()
            # The queued request is the next run; after it the worker is idle again.
            _wait(lambda: len(SnapshotStore(tmp_path).snapshots()) == 2 and read_status(tmp_path)["state"] == "idle")
            assert pending_requests(tmp_path) == []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    # Stopped: refused, saying when it was last seen.
    status, body = post()
    assert status == 503 and body["error"]["code"] == "no_worker" and pending_requests(tmp_path) == []
    assert body["error"]["message"].startswith("The worker stopped; last seen 20")

    # Killed (kill -9, a lost host): its status still says idle, but the heartbeat stops. Started, then
    # killed, and its last heartbeat put 5 minutes back, as if that had been 5 minutes ago.
    proc = _worker(tmp_path, "http://127.0.0.1:9", "--schedule", "0 3 * * *")
    _wait(lambda: read_status(tmp_path).get("state") == "idle" and read_status(tmp_path)["worker"]["pid"] == proc.pid)
    proc.kill()
    proc.communicate(timeout=30)
    assert post()[0] == 202  # fresh heartbeat: not yet known to be gone
    assert len(take_requests(tmp_path)) == 1  # (a dead worker's request: cleared by hand here)
    beat = datetime.fromisoformat(read_status(tmp_path)["heartbeat_at"]) - timedelta(minutes=5)
    write_status(tmp_path, heartbeat_at=beat.isoformat())
    status, body = post()
    assert status == 503 and body["error"]["code"] == "no_worker" and pending_requests(tmp_path) == []
    assert re.match(
        rf"The worker was last seen {re.escape(beat.isoformat())} \(3\d\d s ago\)", body["error"]["message"]
    )
    assert "no heartbeat for 60 s it is presumed gone" in body["error"]["message"]
    assert liveness()["state"] == "gone" and liveness()["stale_after_s"] == 60


def test_the_heartbeat_beats_during_a_run(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    def slow_pages(info: RequestInfo) -> Response | None:
        time.sleep(0.3)
        return None

    beats: set[str] = set()
    with HubServer(crawl_2022[:5000], page_size=1000, hook=slow_pages) as hub:
        options = HubOptions(endpoint=hub.url, max_rate=0)
        worker = threading.Thread(
            target=run_worker, args=(tmp_path, "0 3 * * *", options), kwargs={"run_now": True, "heartbeat": 0.2}
        )
        worker.start()
        try:
            _wait(lambda: read_status(tmp_path).get("state") == "running")
            while read_status(tmp_path).get("state") == "running":
                beats.add(read_status(tmp_path)["heartbeat_at"])
                time.sleep(0.05)
        finally:
            options.stop.set()
            worker.join(30)
    assert len(SnapshotStore(tmp_path).snapshots()) == 1
    assert len(beats) >= 3  # a run of about 1.5 s, a beat every 0.2 s
    status = read_status(tmp_path)
    assert status["worker"]["heartbeat_s"] == 0.2 and status["worker"]["hostname"] == socket.gethostname()
    assert status["state"] == "stopped"


def test_sigterm_mid_run_publishes_nothing_and_keeps_whole_pages(
    tmp_path: Path, crawl_2022: list[dict[str, Any]]
) -> None:
    def slow_third_page(info: RequestInfo) -> Response | None:
        if len(hub.requests) >= 3:
            time.sleep(1)
        return None

    with HubServer(crawl_2022[:5000], page_size=1000, hook=slow_third_page) as hub:
        proc = _worker(tmp_path, hub.url, "--schedule", "0 3 * * *", "--run-now")
        _wait(lambda: len(hub.requests) >= 3)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert SnapshotStore(tmp_path).snapshots() == []
    (resume,) = (tmp_path / "resume").iterdir()  # the committed pages, for the next run
    assert (resume / "staging.duckdb").exists()
    assert read_status(tmp_path)["state"] == "stopped"


def test_failure_is_reported_in_status(tmp_path: Path) -> None:
    with HubServer([], hook=lambda info: json_response(404, {"error": "nope"})) as hub:
        proc = _worker(tmp_path, hub.url, "--schedule", "0 3 * * *", "--run-now")
        _wait(lambda: read_status(tmp_path).get("last_failure") is not None)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        status = c.get("/v1/status").json()
    assert "HTTP 404" in status["last_failure"]["reason"] and status["last_success"] is None


def test_bad_schedule_is_refused(tmp_path: Path) -> None:
    done = hubcensus("worker", "--schedule", "daily", "--data-dir", str(tmp_path))
    assert done.returncode == 1 and "5-field cron" in done.stderr


def test_admin_actions_are_off_without_a_token_and_need_it(demo_data_dir: Path, tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=demo_data_dir))) as c:
        off = c.post("/v1/snapshots")
        assert off.status_code == 403 and off.json()["error"]["code"] == "admin_disabled"
        assert c.delete("/v1/snapshots/latest").status_code == 403
    import_dir = tmp_path / "d"
    hubcensus("import", str(BUNDLED), "--data-dir", str(import_dir), "--taken-at", "2022-02-21")
    with TestClient(create_app(Settings(data_dir=import_dir, admin_token="tok-123456"))) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "tok-123456"}):
            denied = c.delete("/v1/snapshots/latest", headers=headers)
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        good = {"Authorization": "Bearer tok-123456"}
        snapshot_id = c.get("/v1/snapshots/latest").json()["id"]
        assert c.delete(f"/v1/snapshots/{snapshot_id}", headers=good).status_code == 204
        assert c.get(f"/v1/snapshots/{snapshot_id}").status_code == 404
        assert c.delete(f"/v1/snapshots/{snapshot_id}", headers=good).status_code == 404


def test_delete_needs_an_explicit_id_never_latest(tmp_path: Path) -> None:
    for day in ("2022-02-21", "2022-02-22"):
        hubcensus("import", str(BUNDLED), "--data-dir", str(tmp_path), "--taken-at", day)
    before = [m.id for m in SnapshotStore(tmp_path).snapshots()]
    with TestClient(create_app(Settings(data_dir=tmp_path, admin_token="tok-123456"))) as c:
        for _ in range(2):  # a retried call must not delete the next newest either
            refused = c.delete("/v1/snapshots/latest", headers={"Authorization": "Bearer tok-123456"})
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_parameter"
            assert "explicit snapshot id, not `latest`" in refused.json()["error"]["message"]
            assert refused.json()["error"]["details"][0]["parameter"] == "snapshot"
    assert [m.id for m in SnapshotStore(tmp_path).snapshots()] == before


def _open_snapshot_files(snapshot_id: str) -> int:
    # Linux: how many of this process's file descriptors point at that snapshot's file, wherever it was
    # moved to and whether or not it is deleted.
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if snapshot_id in os.path.realpath(fd))


def test_a_removed_snapshot_stays_readable_then_lets_its_file_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hubcensus("import", str(BUNDLED), "--data-dir", str(tmp_path), "--taken-at", "2022-02-21")
    store = SnapshotStore(tmp_path)
    first = store.get().id
    with store.cursor(first) as cursor:
        remove_snapshot(tmp_path, first)
        assert store.snapshots() == []
        # A request that already holds a cursor finishes, and so does one that starts its query later.
        assert cursor.execute("SELECT count(*) FROM models").fetchall() == [(29_432,)]
    assert _open_snapshot_files(first) == 1
    # Past the grace period, the next cursor detaches it: its disk space is freed, not held by the API.
    hubcensus("import", str(BUNDLED), "--data-dir", str(tmp_path), "--taken-at", "2022-02-22")
    monkeypatch.setattr("hubcensus.queries.store.RETIRED_GRACE_S", 0.0)
    with store.cursor(store.get().id) as cursor:
        assert cursor.execute("SELECT count(*) FROM models").fetchall() == [(29_432,)]
    assert _open_snapshot_files(first) == 0


def test_metrics(client: TestClient) -> None:
    client.get("/v1/frameworks/share")
    client.get("/v1/nothing")
    text = client.get("/metrics").text
    assert 'hubcensus_http_requests_total{route="/v1/frameworks/share",status="200"}' in text
    assert 'hubcensus_http_requests_total{route="unmatched",status="404"}' in text
    assert "hubcensus_latest_snapshot_models 29432.0" in text
    assert "hubcensus_http_request_duration_seconds_bucket" in text
    age = float(next(line.split()[1] for line in text.splitlines() if line.startswith("hubcensus_latest_snapshot_age")))
    assert age > (datetime.now(UTC) - TAKEN_2022).total_seconds() - 60


def test_json_logs(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    import json

    with HubServer(crawl_2022[:100]) as hub:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hubcensus",
                "ingest",
                "--endpoint",
                hub.url,
                "--data-dir",
                str(tmp_path),
                "--token",
                "hf_abcdefgh12345",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "HUBCENSUS_LOG_FORMAT": "json", "HUBCENSUS_MAX_RATE": "0"},
        )
    assert done.returncode == 0, done.stderr
    assert "hf_abcdefgh12345" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(json.loads(line)["levelname"] for line in lines)
