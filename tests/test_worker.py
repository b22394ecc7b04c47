"""The scheduled worker, retention, status, admin actions and metrics, as they run for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from hubcensus.ingest.worker import Retention, next_run, to_prune, validate_schedule
from hubcensus.queries.control import read_status
from hubcensus.queries.store import SnapshotMeta, SnapshotStore, remove_snapshot
from hubcensus.service.app import create_app
from tests.conftest import BUNDLED, TAKEN_2022
from tests.helpers import free_port, hubcensus
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
    data_dir, port = tmp_path / "data", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubcensus", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HUBCENSUS_ADMIN_TOKEN": "s3cret-admin-token"},
    )
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: _up(url))
    yield url, data_dir
    proc.terminate()
    _, stderr = proc.communicate(timeout=10)
    assert "s3cret-admin-token" not in stderr


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_worker_runs_now_then_on_request_and_prunes(api_on: tuple[str, Path], crawl_2022: list[dict[str, Any]]) -> None:
    url, data_dir = api_on
    with HubServer(crawl_2022[:3000], page_size=1000) as hub:
        proc = _worker(data_dir, hub.url, "--schedule", "0 3 * * *", "--run-now", "--keep-daily", "1")
        try:
            _wait(lambda: (read_status(data_dir).get("last_success") or {}).get("models") == 3000)
            first = read_status(data_dir)["last_success"]["snapshot"]
            status = httpx.get(f"{url}/v1/status").json()
            assert status["state"] == "idle" and status["next_run"].endswith("03:00:00+00:00")
            assert status["latest_snapshot"]["id"] == first and status["last_failure"] is None
            # Take a snapshot now, through the admin API; the worker picks the request up.
            auth = {"Authorization": "Bearer s3cret-admin-token"}
            accepted = httpx.post(f"{url}/v1/snapshots", headers=auth)
            assert accepted.status_code == 202
            _wait(lambda: read_status(data_dir)["last_success"]["snapshot"] != first)
            second = read_status(data_dir)["last_success"]
            # keep-daily 1: the older snapshot of the same day is pruned, the newest stays.
            assert second["pruned"] == [first]
            assert [s["id"] for s in httpx.get(f"{url}/v1/snapshots").json()["snapshots"]] == [second["snapshot"]]
        finally:
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "next run at" in output and "worker stopped" in output
    assert read_status(data_dir)["state"] == "stopped"


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
    with TestClient(create_app(tmp_path)) as c:
        status = c.get("/v1/status").json()
    assert "HTTP 404" in status["last_failure"]["reason"] and status["last_success"] is None


def test_bad_schedule_is_refused(tmp_path: Path) -> None:
    done = hubcensus("worker", "--schedule", "daily", "--data-dir", str(tmp_path))
    assert done.returncode == 1 and "5-field cron" in done.stderr


def test_admin_actions_are_off_without_a_token_and_need_it(demo_data_dir: Path, tmp_path: Path) -> None:
    with TestClient(create_app(demo_data_dir)) as c:
        off = c.post("/v1/snapshots")
        assert off.status_code == 403 and off.json()["error"]["code"] == "admin_disabled"
        assert c.delete("/v1/snapshots/latest").status_code == 403
    import_dir = tmp_path / "d"
    hubcensus("import", str(BUNDLED), "--data-dir", str(import_dir), "--taken-at", "2022-02-21")
    with TestClient(create_app(import_dir, admin_token="tok-123456")) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "tok-123456"}):
            denied = c.delete("/v1/snapshots/latest", headers=headers)
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        good = {"Authorization": "Bearer tok-123456"}
        snapshot_id = c.get("/v1/snapshots/latest").json()["id"]
        assert c.delete(f"/v1/snapshots/{snapshot_id}", headers=good).status_code == 204
        assert c.get(f"/v1/snapshots/{snapshot_id}").status_code == 404
        assert c.delete(f"/v1/snapshots/{snapshot_id}", headers=good).status_code == 404
        assert c.post("/v1/snapshots", headers=good).json()["status_url"] == "/v1/status"
        assert len(c.get("/v1/status").json()["pending_requests"]) == 1


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
