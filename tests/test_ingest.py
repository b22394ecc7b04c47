"""Ingest through the real huggingface_hub client from a local Hub-compatible server, end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import EXPAND, HubOptions, ingest_hub
from hubcensus.queries.frameworks import FRAMEWORKS, METHODS
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.data import expected_share
from tests.hubserver import HubServer, RequestInfo, Response, json_response

WANTED = set(EXPAND)


def fast(url: str, **overrides: Any) -> HubOptions:
    """Options for tests: unpaced, with short back-off so retried faults stay quick."""
    return HubOptions(**{"endpoint": url, "max_rate": 0, "retry_wait": 0.05, "retry_wait_max": 0.2, **overrides})


def test_ingest_end_to_end_matches_direct_computation(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    """Hub server → real client → snapshot → HTTP query: the numbers equal a direct computation."""
    with HubServer(crawl_2022, page_size=1000) as hub:
        meta = ingest_hub(tmp_path, endpoint=hub.url, timeout=10)
        requests, url = list(hub.requests), hub.url
    assert (meta.models, meta.bad_records, meta.kind, meta.source) == (29_432, 0, "ingest", url)
    assert len(requests) == 30  # 29,432 models in pages of 1,000
    assert set(requests[0].query["expand"]) == WANTED
    assert all("authorization" not in r.headers for r in requests)
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        for method in METHODS:
            body = client.get("/v1/frameworks/share", params={"method": method}).json()
            expected = expected_share(crawl_2022, method, FRAMEWORKS)
            got = {row["group"]: (row["exclusive"], row["shared"], row["none"]) for row in body["rows"]}
            assert got == {
                group: ({fw: c[fw] for fw in FRAMEWORKS}, c["shared"], c["none"]) for group, c in expected.items()
            }
            assert body["snapshot"]["id"] == meta.id


def test_limit_and_filter_are_passed_to_the_hub(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    with HubServer(crawl_2022, page_size=1000) as hub:
        meta = ingest_hub(tmp_path, endpoint=hub.url, limit=1500, filters=["jax"], timeout=10)
        assert hub.requests[0].query["filter"] == ["jax"]
    assert meta.models == 1500 and meta.params["limit"] == 1500
    with SnapshotStore(tmp_path).cursor(meta.id) as con:
        assert con.execute("SELECT count_if(list_contains(tags, 'jax')) FROM models").fetchone() == (1500,)


def test_token_goes_only_to_the_configured_endpoint(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    """A Link header pointing at another origin gets the next page, but never the token."""
    with HubServer(crawl_2022[1000:1500], page_size=200) as elsewhere:

        def send_next_page_elsewhere(info: RequestInfo) -> Response | None:
            if "cursor" in info.query:
                return None
            response = hub.handle(info)
            response.headers["Link"] = f'<{elsewhere.url}/api/models?limit=200>; rel="next"'
            return response

        with HubServer(crawl_2022[:1000], page_size=200, hook=send_next_page_elsewhere) as hub:
            ingest_hub(tmp_path, endpoint=hub.url, token="hf_secret_token", timeout=10)
        assert hub.requests[0].headers["authorization"] == "Bearer hf_secret_token"
        assert elsewhere.requests and all("authorization" not in r.headers for r in elsewhere.requests)


def test_no_token_means_no_token_even_with_one_in_the_environment(
    tmp_path: Path, crawl_2022: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    with HubServer(crawl_2022[:10]) as hub:
        ingest_hub(tmp_path, endpoint=hub.url, token=None, timeout=10)
    assert "authorization" not in hub.requests[0].headers


def test_a_slow_page_times_out_and_is_retried(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    """Without our timeout the client would wait forever on the first, silent answer."""
    calls = 0

    def silent_once(info: RequestInfo) -> Response | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            time.sleep(3)  # longer than the timeout below
            return json_response(200, [])
        return None

    with HubServer(crawl_2022[:50], hook=silent_once) as hub:
        meta = ingest_hub(tmp_path, options=fast(hub.url, timeout=0.5))
    assert meta.models == 50 and calls == 2


def test_a_hub_that_never_answers_fails_clearly(tmp_path: Path) -> None:
    def silent(info: RequestInfo) -> Response | None:
        time.sleep(2)
        return json_response(200, [])

    started = time.monotonic()
    with HubServer([], hook=silent) as hub, pytest.raises(IngestError, match=r"did not answer within 0\.2 s"):
        ingest_hub(tmp_path, options=fast(hub.url, timeout=0.2))
    # Six attempts (the first and 5 retries) of 0.2 s plus short back-off: bounded, never a hang.
    assert time.monotonic() - started < 5
    assert SnapshotStore(tmp_path).snapshots() == []


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (json_response(404, {"error": "Repository not found"}), "answered HTTP 404"),
        (json_response(401, {"error": "Invalid credentials"}), "answered HTTP 401"),
        (Response(200, {"Content-Type": "application/json"}, b'[{"id": "a/b", "tags": ['), "not valid JSON after 6"),
    ],
)
def test_hub_errors_fail_clearly_and_publish_nothing(tmp_path: Path, response: Response, message: str) -> None:
    with HubServer([], hook=lambda info: response) as hub, pytest.raises(IngestError, match=message):
        ingest_hub(tmp_path, options=fast(hub.url))
    assert SnapshotStore(tmp_path).snapshots() == []
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [".lock"]


def test_failure_on_a_later_page_publishes_nothing(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    def fail_third_page(info: RequestInfo) -> Response | None:
        return json_response(404, {"error": "gone"}) if len(hub.requests) >= 3 else None

    with (
        HubServer(crawl_2022[:5000], page_size=1000, hook=fail_third_page) as hub,
        pytest.raises(IngestError),
    ):
        ingest_hub(tmp_path, options=fast(hub.url))
    assert SnapshotStore(tmp_path).snapshots() == []
    # The two committed pages wait, unpublished, for the next run to resume them.
    (resume,) = (tmp_path / "resume").iterdir()
    assert (resume / "staging.duckdb").exists()


def test_a_failed_run_resumes_from_its_last_page(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    failing = True

    def fail_fourth_page(info: RequestInfo) -> Response | None:
        if failing and "cursor" in info.query and len(hub.requests) >= 4:
            return json_response(500, {"error": "down"})
        return None

    with HubServer(crawl_2022[:6000], page_size=1000, hook=fail_fourth_page) as hub:
        with pytest.raises(IngestError, match="HTTP 500"):
            ingest_hub(tmp_path, options=fast(hub.url, max_retries=1))
        failing = False
        before = len(hub.requests)
        meta = ingest_hub(tmp_path, options=fast(hub.url))
        resumed = hub.requests[before:]
    assert meta.models == 6000 and meta.duplicates == 0
    # Only the pages not committed before were fetched again, starting from the saved cursor.
    assert len(resumed) == 3 and all("cursor" in r.query for r in resumed)
    assert not list((tmp_path / "resume").iterdir())
    with SnapshotStore(tmp_path).cursor(meta.id) as con:
        ids = {r[0] for r in con.execute("SELECT id FROM models").fetchall()}
    assert ids == {r["modelId"] for r in crawl_2022[:6000]}


def test_a_stale_run_is_not_resumed(tmp_path: Path, crawl_2022: list[dict[str, Any]]) -> None:
    def fail_later_pages(info: RequestInfo) -> Response | None:
        return json_response(500, {"error": "down"}) if "cursor" in info.query else None

    with HubServer(crawl_2022[:3000], page_size=1000, hook=fail_later_pages) as hub:
        with pytest.raises(IngestError):
            ingest_hub(tmp_path, options=fast(hub.url, max_retries=0))
        hub.hook = None
        before = len(hub.requests)
        meta = ingest_hub(tmp_path, options=fast(hub.url, resume_max_age=0))
        assert "cursor" not in hub.requests[before].query  # started over
    assert meta.models == 3000


def test_records_with_missing_or_unknown_fields(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [
        {"id": "org/minimal"},
        {"id": "org/extra", "tags": ["pytorch"], "somethingNew": {"a": 1}, "pipeline_tag": "fill-mask"},
    ]
    with HubServer(records) as hub:
        meta = ingest_hub(tmp_path, endpoint=hub.url, timeout=5)
    assert meta.models == 2
    with SnapshotStore(tmp_path).cursor(meta.id) as con:
        assert con.execute("SELECT id, author, tags, fw_tags FROM models ORDER BY id").fetchall() == [
            ("org/extra", "org", ["pytorch"], 1),
            ("org/minimal", "org", None, 0),
        ]
