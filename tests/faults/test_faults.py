"""Faults of a real Hub, injected by the local Hub-compatible server; the outcome and the figures.

In every case: no partial snapshot is ever visible, and the outcome is the right one.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import HubOptions, ingest_hub
from hubcensus.queries.store import SnapshotStore
from tests.data import BUNDLED, FIXTURES, LIST_2024, LIST_2025
from tests.helpers import hubcensus, hubcensus_serve
from tests.hubserver import HubServer, RequestInfo, Response, json_response

Report = Callable[..., None]


def opts(url: str, **overrides: Any) -> HubOptions:
    """Unpaced options with a short back-off (so a burst of faults costs seconds, not minutes)."""
    return HubOptions(**{"endpoint": url, "max_rate": 0, "retry_wait": 0.2, "retry_wait_max": 1.0, **overrides})


def assert_complete_or_nothing(data_dir: Path, expected_models: int | None = None) -> list[str]:
    """Every visible snapshot is whole: its file opens and holds what its meta says."""
    store = SnapshotStore(data_dir)
    ids = []
    for meta in store.snapshots():
        with store.cursor(meta.id) as con:
            assert con.execute("SELECT count(*) FROM models").fetchall() == [(meta.models,)]
        if expected_models is not None:
            assert meta.models == expected_models
        ids.append(meta.id)
    return ids


def faulty(first: int, response: Callable[[RequestInfo], Response]) -> Callable[[RequestInfo], Response | None]:
    """A hook that answers `response` to the first `first` requests for /api/models, then behaves."""
    count = 0
    lock = threading.Lock()

    def hook(info: RequestInfo) -> Response | None:
        nonlocal count
        if info.path != "/api/models":
            return None
        with lock:
            count += 1
            n = count
        return response(info) if n <= first else None

    return hook


@pytest.mark.parametrize(
    ("headers", "floor"),
    [
        ({"RateLimit": '"api";r=0;t=2', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}, 2.0),
        ({"Retry-After": "2"}, 2.0),
    ],
    ids=["ratelimit-header", "retry-after"],
)
def test_429_waits_and_completes(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report, headers: dict[str, str], floor: float
) -> None:
    hook = faulty(1, lambda info: json_response(429, {"error": "rate limited"}, headers))
    with HubServer(crawl_2022[:2000], page_size=1000, hook=hook) as hub:
        started = time.monotonic()
        meta = ingest_hub(tmp_path, options=opts(hub.url))
        took = time.monotonic() - started
        calls = sum(1 for r in hub.requests if r.path == "/api/models")
    assert meta.models == 2000 and calls == 3
    # The client waits the announced reset plus one second of margin, and no longer.
    assert floor <= took <= floor + 2.5
    report(f"429 with {'/'.join(headers)}", calls=calls, retries=1, waited_floor_s=floor, total_s=round(took, 2))


def test_successful_answer_announcing_an_empty_window_pauses_before_the_next_call(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    def announce(info: RequestInfo) -> Response | None:
        if "cursor" in info.query:
            return None
        response = hub.handle(info)
        response.headers["RateLimit"] = '"api";r=0;t=2'
        return response

    with HubServer(crawl_2022[:2000], page_size=1000, hook=announce) as hub:
        started = time.monotonic()
        meta = ingest_hub(tmp_path, options=opts(hub.url))
        took = time.monotonic() - started
        statuses = len(hub.requests)
    assert meta.models == 2000 and statuses == 2  # no 429 at all: the pause came first
    assert 2.0 <= took <= 3.5
    report("RateLimit r=0 on a 200", calls=statuses, retries=0, total_s=round(took, 2))


def test_max_rate_paces_requests(tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report) -> None:
    with HubServer(crawl_2022[:5000], page_size=500) as hub:
        started = time.monotonic()
        ingest_hub(tmp_path, options=opts(hub.url, max_rate=5.0, page_size=500))
        took = time.monotonic() - started
        times = [r.received_at for r in hub.requests if r.path == "/api/models"]
    floor = (len(times) - 1) / 5.0
    # The pacer spaces the sends; the server sees arrivals, which a loaded machine delays by tens of ms: one late
    # arrival shortens the gap after it. So: no window of k requests shorter than k intervals, less 100 ms.
    assert all(times[j] - times[i] >= (j - i) / 5.0 - 0.1 for i, j in itertools.combinations(range(len(times)), 2))
    assert took <= floor * 1.1 + 1.0  # and not much slower than the rate allows
    report("max rate 5/s", calls=len(times), floor_s=floor, total_s=round(took, 2), ratio=round(took / floor, 3))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_short_burst_of_5xx_completes(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report, status: int
) -> None:
    hook = faulty(3, lambda info: json_response(status, {"error": "burst"}))
    with HubServer(crawl_2022[:3000], page_size=1000, hook=hook) as hub:
        started = time.monotonic()
        meta = ingest_hub(tmp_path, options=opts(hub.url))
        took = time.monotonic() - started
    assert meta.models == 3000
    report(f"{status} x3 (budget 5)", retries=3, total_s=round(took, 2), outcome="published")


def test_long_burst_fails_cleanly_and_the_previous_snapshot_is_served(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    with HubServer(crawl_2022[:1000], page_size=1000) as hub:
        previous = ingest_hub(tmp_path, options=opts(hub.url))
    hook = faulty(1000, lambda info: json_response(503, {"error": "down"}))
    with HubServer(crawl_2022[:2000], page_size=1000, hook=hook) as hub:
        started = time.monotonic()
        with pytest.raises(IngestError, match="HTTP 503 after retries; nothing was published"):
            ingest_hub(tmp_path, options=opts(hub.url))
        took = time.monotonic() - started
        calls = len(hub.requests)
    assert assert_complete_or_nothing(tmp_path) == [previous.id]
    from fastapi.testclient import TestClient

    from hubcensus.config import Settings
    from hubcensus.service.app import create_app

    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        assert c.get("/v1/frameworks/share").json()["snapshot"]["id"] == previous.id
    report("503 longer than the budget", calls=calls, total_s=round(took, 2), outcome="failed, previous served")


def test_connection_reset_mid_body_is_retried(tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report) -> None:
    def cut(info: RequestInfo) -> Response:
        full = hub.handle(info)
        return Response(full.status, full.headers, full.body, close_after=len(full.body) // 2)

    with HubServer(crawl_2022[:2000], page_size=1000, hook=faulty(2, cut)) as hub:
        started = time.monotonic()
        meta = ingest_hub(tmp_path, options=opts(hub.url))
        took = time.monotonic() - started
    assert meta.models == 2000 and meta.bad_records == 0
    report("connection reset mid-body x2", retries=2, total_s=round(took, 2), outcome="published")


def test_a_response_that_never_ends_times_out_and_is_retried(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    def stall(info: RequestInfo) -> Response:
        full = hub.handle(info)
        return Response(full.status, full.headers, full.body, body_delay=30)  # headers, then silence

    with HubServer(crawl_2022[:2000], page_size=1000, hook=faulty(1, stall)) as hub:
        started = time.monotonic()
        meta = ingest_hub(tmp_path, options=opts(hub.url, timeout=1.0))
        took = time.monotonic() - started
    assert meta.models == 2000 and took < 10
    report("body never ends (timeout 1 s)", retries=1, total_s=round(took, 2), outcome="published")


@pytest.mark.parametrize("body", [b'[{"id": "a/b", "tags": [', b"<html>502 Bad Gateway</html>", b'{"error": 1}'])
def test_invalid_page_body_is_fetched_again(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report, body: bytes
) -> None:
    bad = faulty(2, lambda info: Response(200, {"Content-Type": "application/json"}, body))
    with HubServer(crawl_2022[:2000], page_size=1000, hook=bad) as hub:
        meta = ingest_hub(tmp_path, options=opts(hub.url))
    assert meta.models == 2000
    report(f"invalid body {body[:12]!r} x2", retries=2, outcome="published")


def test_records_missing_fields_or_with_new_ones(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report
) -> None:
    records: list[dict[str, Any]] = [dict(r) for r in crawl_2022[:1000]]
    for r in records[:10]:
        r["brandNewField"] = {"nested": [1, 2]}
    for r in records[10:15]:
        del r["tags"]

    def add_broken_records(info: RequestInfo) -> Response | None:
        if "cursor" in info.query:
            return None
        page = hub.handle(info)
        body = [*json.loads(page.body), {"downloads": 5}, {"id": 42}]  # no id; an id that is not text
        return Response(page.status, {"Content-Type": "application/json"}, json.dumps(body).encode())

    with HubServer(records, page_size=250, hook=add_broken_records) as hub:
        meta = ingest_hub(tmp_path, options=opts(hub.url))
    assert (meta.models, meta.bad_records) == (1000, 2)
    report("records with missing / unknown fields", models=meta.models, bad_records=meta.bad_records)


def test_kill_9_at_random_points(tmp_path: Path, crawl_2022: list[dict[str, Any]], report: Report) -> None:
    """20 workers killed at random moments: never a partial snapshot; the next start cleans and succeeds."""
    rng = random.Random(20261129)
    data_dir = tmp_path / "data"
    published = 0
    with HubServer(crawl_2022[:8000], page_size=500) as hub:
        env = {**os.environ, "HUBCENSUS_MAX_RATE": "0"}
        cmd = [sys.executable, "-m", "hubcensus", "ingest", "--endpoint", hub.url, "--data-dir", str(data_dir)]
        for trial in range(20):
            if trial % 4 == 3:  # an import now and then, killed too: its temp dir must go as well
                cmd_t = [sys.executable, "-m", "hubcensus", "import", str(BUNDLED), "--data-dir", str(data_dir)]
            else:
                cmd_t = cmd
            proc = subprocess.Popen(cmd_t, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            time.sleep(rng.uniform(0.3, 2.5))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            for meta in SnapshotStore(data_dir).snapshots():
                assert meta.models in (8000, 29_432)
            assert_complete_or_nothing(data_dir)
            published = len(SnapshotStore(data_dir).snapshots())
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    leftovers = [p.name for p in (data_dir / "tmp").iterdir() if p.name != ".lock"]
    assert leftovers == [] and list((data_dir / "resume").iterdir()) == []
    report(
        "kill -9 x20 (16 ingests, 4 imports)",
        published_before_final=published,
        final="published",
        leftovers_after_next_start=len(leftovers),
    )


def test_disk_full_fails_cleanly(tmp_path: Path, report: Report) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        done = hubcensus("import", str(BUNDLED), "--data-dir", str(mount / "data"))
        assert done.returncode == 1
        assert "No space left on device" in done.stderr and "nothing was published" in done.stderr
        assert SnapshotStore(mount / "data").snapshots() == []
        assert [p.name for p in (mount / "data" / "tmp").iterdir()] == [".lock"]  # the partial file is gone
        small = hubcensus("import", str(FIXTURES / "sample_300.jsonl.gz"), "--data-dir", str(mount / "data"))
        assert small.returncode == 0, small.stderr  # space was given back: the next run works
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    report("disk full (4 MiB tmpfs)", outcome="failed cleanly, temp removed, next import published")


def test_api_under_load_while_snapshots_publish(tmp_path: Path, report: Report) -> None:
    """32 clients for 30 s against a separate API process while two snapshots publish."""
    data_dir = tmp_path / "data"
    assert (
        hubcensus(
            "import",
            str(LIST_2024),
            "--data-dir",
            str(data_dir),
            "--taken-at",
            "2024-12-15",
        ).returncode
        == 0
    )
    with hubcensus_serve(data_dir, tmp_path) as api:
        base = api.url
        deadline = time.monotonic() + 30
        paths = ["/v1/frameworks/share", "/v1/tasks", "/v1/models?_size=50", "/v1/frameworks/trend", "/v1/snapshots"]
        seen: dict[str, int] = {}
        failures: list[str] = []
        count = 0
        lock = threading.Lock()

        def client(i: int) -> None:
            nonlocal count
            with httpx.Client(base_url=base, timeout=10) as c:
                k = i
                while time.monotonic() < deadline:
                    r = c.get(paths[k % len(paths)])
                    k += 1
                    with lock:
                        count += 1
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text[:100]}")
                        sid = r.headers.get("x-hubcensus-snapshot")
                        if sid:
                            seen[sid] = seen.get(sid, 0) + 1

        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(client, i) for i in range(32)]
            time.sleep(8)
            assert (
                hubcensus(
                    "import",
                    str(LIST_2025),
                    "--data-dir",
                    str(data_dir),
                    "--taken-at",
                    "2025-01-14",
                ).returncode
                == 0
            )
            time.sleep(8)
            assert (
                hubcensus("import", str(BUNDLED), "--data-dir", str(data_dir), "--taken-at", "2025-02-01").returncode
                == 0
            )
            for f in futures:
                f.result()
        final = httpx.get(f"{base}/v1/frameworks/share").json()["snapshot"]["id"]
    assert failures == []
    assert len(seen) == 3 and final == max(seen)  # answers moved to each new snapshot in turn
    report(
        "API under load (32 clients, 30 s, 2 publishes)",
        requests=count,
        non_2xx=len(failures),
        requests_per_s=round(count / 30),
        answers_per_snapshot=seen,
    )
