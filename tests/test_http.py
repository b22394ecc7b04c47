"""HTTP correctness of the API: hostile parameters, time limits, methods, content negotiation,
conditional requests, cursors and the OpenAPI document (issue 10)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.frameworks import FRAMEWORKS
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.app import create_app
from tests.data import FIXTURES, TAKEN_2022
from tests.helpers import serving

TABULAR = ["/v1/frameworks/share", "/v1/frameworks/trend", "/v1/tasks", "/v1/libraries", "/v1/authors", "/v1/models"]


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """The envelope of an error answer, after checking its status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]
    return error


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- item 4: hostile integers and cursors are 422, never 500 -------------------------------------


@pytest.mark.parametrize("nested", ["[" * 1000 + "]" * 1000, '{"s":' * 1000 + "1" + "}" * 1000])
def test_a_deeply_nested_forged_cursor_is_422(client: TestClient, nested: str) -> None:
    """The cursor decoder recursed into forged JSON (RecursionError, a 500)."""
    for path in TABULAR:
        error_of(client.get(path, params={"_next": b64(nested)}), 422, "invalid_cursor")


@pytest.mark.parametrize("value", [str(2**127), str(2**63), str(10**40), "-1"])
def test_min_downloads_out_of_range_is_422(client: TestClient, value: str) -> None:
    """min_downloads ≥ 2^127 reached DuckDB, which cannot bind it (a 500); BIGINT's range is the limit."""
    for path in TABULAR:
        error = error_of(client.get(path, params={"min_downloads": value}), 422, "invalid_parameter")
        assert error["details"][0]["parameter"] == "min_downloads"


def test_min_downloads_at_the_bigint_limit_answers(client: TestClient) -> None:
    r = client.get("/v1/models", params={"min_downloads": str(2**63 - 1)})
    assert r.status_code == 200 and r.json()["rows"] == []


@pytest.mark.parametrize("parameter", ["top", "_size"])
@pytest.mark.parametrize("value", [str(2**127), str(2**63), "0", "-5", "1e3", "1.5"])
def test_every_other_integer_parameter_is_bounded(client: TestClient, parameter: str, value: str) -> None:
    for path in TABULAR:
        error = error_of(client.get(path, params={parameter: value}), 422, "invalid_parameter")
        assert error["details"][0]["parameter"] == parameter


# --- item 9: every route that runs SQL is under the time limit ------------------------------------


@pytest.fixture(scope="module")
def slow_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot whose `models` is a view that takes hours to scan: only the time limit ends a query."""
    data_dir = tmp_path_factory.mktemp("slow")
    meta = import_dump(FIXTURES / "sample_300.jsonl.gz", data_dir, taken_at=TAKEN_2022, max_bad_share=1.0)
    con = duckdb.connect(str(SnapshotStore(data_dir).path_of(meta.id)))
    con.execute("ALTER TABLE models RENAME TO models_base")
    con.execute("CREATE VIEW models AS SELECT b.* FROM models_base b, range(1000000000000) r(i) WHERE i = 999999999999")
    con.close()
    return data_dir


@pytest.mark.parametrize(
    "path", ["/", "/v1/models/some/model", "/v1/frameworks/share", "/v1/snapshots/latest/diff/latest"]
)
def test_every_route_that_runs_sql_stops_at_the_time_limit(slow_data_dir: Path, path: str) -> None:
    """`/` and `/v1/models/{id}` ran without the limit: the request held a thread as long as the query ran."""
    with serving(slow_data_dir, query_timeout=0.3) as url, httpx.Client(base_url=url, timeout=30) as http:
        started = time.monotonic()
        r = http.get(path)
        took = time.monotonic() - started
        error_of(r, 504, "query_timeout")
        assert took < 15
        assert http.get("/healthz").status_code == 200


# --- item 10: 405 with Allow, Accept q-values, If-None-Match: *, the OpenAPI document -------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/snapshots", "GET, POST, HEAD"),
        ("POST", "/v1/snapshots/latest", "GET, DELETE, HEAD"),
        ("PUT", "/healthz", "GET, HEAD"),
        ("TRACE", "/v1/models/some/model", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
    ],
)
def test_405_lists_the_methods_of_the_path(client: TestClient, method: str, path: str, allow: str) -> None:
    r = client.request(method, path)
    error_of(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("text/csv;q=0, application/json", "application/json"),
        ("text/csv;q=0, */*", "application/json"),
        ("text/csv;q=0.5, application/x-ndjson", "application/x-ndjson"),
        ("application/json;q=0.2, text/csv;q=0.9", "text/csv; charset=utf-8"),
        ("text/csv, */*;q=0.1", "text/csv; charset=utf-8"),
        ("*/*", "application/json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
        ("text/*", "text/csv; charset=utf-8"),
        ("not a media type", "application/json"),  # unparseable: as if absent
        ("", "application/json"),
    ],
)
def test_accept_q_values_choose_the_format(client: TestClient, accept: str, content_type: str) -> None:
    r = client.get("/v1/tasks", params={"_size": "3"}, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == content_type


@pytest.mark.parametrize("accept", ["text/html", "text/csv;q=0", "application/json;q=0, text/csv;q=0", "image/png"])
def test_nothing_acceptable_is_406(client: TestClient, accept: str) -> None:
    error = error_of(client.get("/v1/tasks", headers={"Accept": accept}), 406, "not_acceptable")
    assert "_format" in error["message"]
    # `_format` still wins over any Accept.
    assert client.get("/v1/tasks", params={"_format": "csv"}, headers={"Accept": accept}).status_code == 200


def test_chart_types_are_acceptable_only_where_a_chart_is_offered(client: TestClient) -> None:
    assert (
        client.get("/v1/frameworks/share", headers={"Accept": "image/svg+xml"})
        .headers["content-type"]
        .startswith("image/svg+xml")
    )
    error_of(client.get("/v1/tasks", headers={"Accept": "image/svg+xml"}), 406, "not_acceptable")


@pytest.mark.parametrize("if_none_match", ["*", "{etag}", "W/{etag}", '"0000", {etag}', " * "])
def test_if_none_match_star_or_the_etag_is_304(client: TestClient, if_none_match: str) -> None:
    first = client.get("/v1/tasks", params={"_size": "2"})
    etag = first.headers["etag"]
    again = client.get("/v1/tasks", params={"_size": "2"}, headers={"If-None-Match": if_none_match.format(etag=etag)})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag


def test_if_none_match_of_another_tag_is_200(client: TestClient) -> None:
    r = client.get("/v1/tasks", params={"_size": "2"}, headers={"If-None-Match": '"0000", W/"1111"'})
    assert r.status_code == 200


def test_openapi_documents_what_each_route_answers(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]

    def responses(path: str, method: str = "get") -> dict[str, Any]:
        found: dict[str, Any] = paths[path][method]["responses"]
        return found

    def types(path: str, status: str, method: str = "get") -> set[str]:
        return set(responses(path, method)[status].get("content", {}))

    # Admin routes: 401 and 403, and the Bearer scheme.
    for path, method in (("/v1/snapshots", "post"), ("/v1/snapshots/{snapshot}", "delete")):
        assert {"401", "403"} <= set(responses(path, method))
        assert paths[path][method]["security"] == [{"HTTPBearer": []}]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # The dashboard: HTML, and its errors as the JSON envelope.
    assert types("/", "200") == {"text/html"}
    for status in ("404", "422", "503", "504"):
        assert types("/", status) == {"application/json"}
    # Metrics: Prometheus text, not JSON.
    assert types("/metrics", "200") == {"text/plain"}
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    # Tabular routes: 304, 406 and 504; the chart types only where a chart is offered.
    for path in TABULAR:
        assert {"200", "304", "404", "406", "422", "503", "504"} <= set(responses(path))
    assert "image/png" in types("/v1/frameworks/share", "200")
    assert types("/v1/tasks", "200") == {
        "application/json",
        "text/csv",
        "application/x-ndjson",
        "application/vnd.apache.parquet",
    }
    # One model: JSON only, and it runs a query.
    assert types("/v1/models/{model_id}", "200") == {"application/json"}
    assert "504" in responses("/v1/models/{model_id}")


def test_401_names_the_bearer_scheme(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path, admin_token="tok-123456"))) as c:
        r = c.post("/v1/snapshots")
        error_of(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


# --- item 11: a cursor is bound to its route and query ---------------------------------------------


def first_cursor(client: TestClient, path: str, **params: str) -> str:
    cursor = client.get(path, params={"_size": "1", **params}).json()["next"]
    assert isinstance(cursor, str) and len(cursor) <= 40
    return cursor


def test_a_cursor_works_only_on_its_route(client: TestClient) -> None:
    cursor = first_cursor(client, "/v1/models")
    assert client.get("/v1/models", params={"_size": "1", "_next": cursor}).status_code == 200
    for path in ("/v1/tasks", "/v1/libraries", "/v1/authors", "/v1/frameworks/share"):
        error_of(client.get(path, params={"_size": "1", "_next": cursor}), 422, "invalid_cursor")
    # Same parameters, other route: tasks and libraries share every parameter.
    tasks = first_cursor(client, "/v1/tasks")
    error_of(client.get("/v1/libraries", params={"_size": "1", "_next": tasks}), 422, "invalid_cursor")


def test_a_cursor_works_only_for_its_query(client: TestClient) -> None:
    cursor = first_cursor(client, "/v1/models", method="tags")
    error_of(client.get("/v1/models", params={"_size": "1", "method": "files", "_next": cursor}), 422, "invalid_cursor")
    error_of(client.get("/v1/models", params={"_size": "1", "_next": cursor}), 422, "invalid_cursor")
    # The normalized query: another spelling of the same query keeps the cursor.
    same = {"_size": "1", "method": "tags", "frameworks": " , ".join(reversed(FRAMEWORKS)), "_next": cursor}
    assert client.get("/v1/models", params=same).status_code == 200
    # Page size and format may change between pages.
    assert (
        client.get("/v1/models", params={"_size": "5", "method": "tags", "_format": "csv", "_next": cursor}).status_code
        == 200
    )


def test_a_forged_offset_of_the_same_query_is_only_another_page(client: TestClient) -> None:
    cursor = first_cursor(client, "/v1/models")
    offset, binding = base64.urlsafe_b64decode(cursor + "==").decode().split(":")
    assert offset == "1"
    far = client.get("/v1/models", params={"_size": "1", "_next": b64(f"5:{binding}")})
    assert (
        far.status_code == 200
        and far.json()["rows"][0]["id"] == client.get("/v1/models", params={"_size": "6"}).json()["rows"][5]["id"]
    )
    error_of(client.get("/v1/models", params={"_next": b64(f"{10**10}:{binding}")}), 422, "invalid_cursor")
    error_of(client.get("/v1/models", params={"_next": b64(f"-1:{binding}")}), 422, "invalid_cursor")
    error_of(client.get("/v1/models", params={"_next": ""}), 422, "invalid_cursor")


# --- parameters the schema now states exactly (found by schemathesis) ------------------------------


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"created_before": "0"}, "created_before"),  # pydantic took a number as a Unix time
        ({"created_after": "1700000000"}, "created_after"),
        ({"created_after": "2024-1-1"}, "created_after"),
        ({"frameworks": "pytorch,,jax"}, "frameworks"),
        ({"frameworks": ""}, "frameworks"),
        ({"_format": "svg"}, "_format"),  # a chart format where no chart is offered
    ],
)
def test_parameters_outside_their_documented_form_are_422(
    client: TestClient, params: dict[str, str], parameter: str
) -> None:
    error = error_of(
        client.get("/v1/tasks" if "frameworks" not in params else "/v1/models", params=params), 422, "invalid_parameter"
    )
    assert error["details"][0]["parameter"] == parameter


def test_history_bounds_take_a_day_or_a_time_but_not_a_number(client: TestClient) -> None:
    for value in ("2022-01-01", "2022-01-01T00:00:00Z", "2022-01-01T00:00:00+02:00", "2022-01-01T00:00"):
        assert client.get("/v1/frameworks/history", params={"from": value}).status_code == 200, value
    for value in ("0.5", "0", "yesterday"):
        error_of(client.get("/v1/frameworks/history", params={"to": value}), 422, "invalid_parameter")


def test_a_single_framework_universe_answers(client: TestClient) -> None:
    """`frameworks=pytorch` (no combinations to count) was a 500 on share and on the dashboard."""
    share = client.get("/v1/frameworks/share", params={"frameworks": "pytorch"})
    assert share.status_code == 200 and share.json()["total"]["combinations"] == {}
    assert client.get("/", params={"fw": "pytorch"}).status_code == 200


def test_unknown_snapshot_on_the_dashboard_is_the_documented_404(client: TestClient) -> None:
    error_of(client.get("/", params={"snapshot": "nope"}), 404, "snapshot_not_found")


def test_no_snapshot_on_the_dashboard_is_503(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        error_of(c.get("/"), 503, "no_snapshots")
