"""Feeds: every tabular route in every format over real HTTP — columns, paging, caching, errors.

One data dir with three real snapshots (the bundled 2022 crawl and two 2024/2025 Hub listings),
served by uvicorn on loopback; pandas and polars read the answers as a notebook would.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd  # type: ignore[import-untyped]
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hubcensus.ingest.dumps import import_dump
from hubcensus.queries.frameworks import CLASSIFIER_VERSION
from tests.conftest import BUNDLED, FIXTURES, TAKEN_2022, bucket_of
from tests.helpers import free_port, serving

TAKEN_2024 = datetime(2024, 12, 15, tzinfo=UTC)
TAKEN_2025 = datetime(2025, 1, 14, tzinfo=UTC)

FORMATS = ("json", "csv", "ndjson", "parquet")
CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}

# Every tabular route: its path (diff routes get snapshot ids for {a} and {b}) and required parameters.
ROUTES: dict[str, tuple[str, dict[str, str]]] = {
    "share": ("/v1/frameworks/share", {}),
    "trend": ("/v1/frameworks/trend", {}),
    "history": ("/v1/frameworks/history", {}),
    "diff": ("/v1/snapshots/{a}/diff/{b}", {}),
    "diff_models": ("/v1/snapshots/{a}/diff/{b}/models", {"change": "added"}),
    "tasks": ("/v1/tasks", {}),
    "libraries": ("/v1/libraries", {}),
    "authors": ("/v1/authors", {}),
    "models": ("/v1/models", {}),
}
# Routes that take `snapshot=<id>` (the others name their snapshots in the path or by a time range).
SNAPSHOT_ROUTES = ("share", "trend", "tasks", "libraries", "authors", "models")
# A change of meaning (not only of paging) that each route accepts.
VARIANTS: dict[str, dict[str, str]] = {
    "share": {"method": "tags"},
    "trend": {"interval": "year"},
    "history": {"method": "files"},
    "diff": {"by": "library_name"},
    "diff_models": {"change": "removed"},
    "tasks": {"min_downloads": "1"},
    "libraries": {"author": "google"},
    "authors": {"top": "10"},
    "models": {"_sort": "id"},
}
LINK_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


@dataclass(frozen=True)
class Census:
    """The served data dir: its base URL and the ids of its three snapshots."""

    url: str
    data_dir: Path
    old: str  # 2022-02-21, the bundled crawl
    mid: str  # 2024-12-15
    latest: str  # 2025-01-14
    models: dict[str, int]  # models per snapshot id

    def path(self, route: str, *, a: str | None = None, b: str | None = None) -> str:
        """The path of a route; diff routes compare `a` (default mid) with `b` (default latest)."""
        return ROUTES[route][0].format(a=a or self.mid, b=b or self.latest)

    def params(self, route: str, **more: str) -> dict[str, str]:
        """The route's required parameters plus `more`."""
        return {**ROUTES[route][1], **more}


@pytest.fixture(scope="module")
def census_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A data dir with three snapshots: 2022-02-21 (bundled), 2024-12-15 and 2025-01-14 (latest)."""
    data_dir = tmp_path_factory.mktemp("feeds-data")
    old = import_dump(BUNDLED, data_dir, taken_at=TAKEN_2022, max_bad_share=0.05)
    mid = import_dump(FIXTURES / "rimel_2024-12-15_list.json.gz", data_dir, taken_at=TAKEN_2024, max_bad_share=0.05)
    new = import_dump(FIXTURES / "rimel_2025-01-14_list.json.gz", data_dir, taken_at=TAKEN_2025, max_bad_share=0.05)
    return data_dir, old.id, mid.id, new.id


@pytest.fixture(scope="module")
def census(census_dir: tuple[Path, str, str, str]) -> Iterator[Census]:
    """The three-snapshot data dir served by uvicorn (with its answer cache)."""
    data_dir, old, mid, latest = census_dir
    with serving(data_dir) as url:
        listing = httpx.get(f"{url}/v1/snapshots").json()["snapshots"]
        yield Census(url, data_dir, old, mid, latest, {s["id"]: s["models"] for s in listing})


@pytest.fixture(scope="module")
def bare_url(census_dir: tuple[Path, str, str, str]) -> Iterator[str]:
    """A second server over the same data dir with no answer cache: every answer is computed afresh."""
    with serving(census_dir[0], cache_mb=0) as url:
        yield url


@pytest.fixture(scope="module")
def process_url(census_dir: tuple[Path, str, str, str]) -> Iterator[str]:
    """`hubcensus serve` in its own process, for requests that make the server log a traceback.

    Python 3.11's traceback formatting calls ast.parse, which is not thread-safe there: a uvicorn
    thread logging a 500 while pytest formats a failure can abort the whole run (INTERNALERROR
    "AST constructor recursion depth mismatch").
    """
    port = free_port()
    cmd = [sys.executable, "-m", "hubcensus", "serve", "--port", str(port), "--data-dir", str(census_dir[0])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "hubcensus serve did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def http(census: Census) -> Iterator[httpx.Client]:
    """One HTTP client for the module, against the cached server."""
    with httpx.Client(base_url=census.url, timeout=60) as client:
        yield client


# --- helpers -------------------------------------------------------------------------------------


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """Undo the JSON renderer's nesting: one level, `{"a": {"b": 1}}` → `{"a.b": 1}`."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def csv_table(body: bytes) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows of a CSV body."""
    header, *rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
    return header, rows


def ndjson_rows(body: bytes) -> list[dict[str, Any]]:
    """The objects of an NDJSON body, one a line."""
    return [json.loads(line) for line in body.decode("utf-8").splitlines() if line]


def parquet_table(body: bytes) -> pa.Table:
    """A Parquet body as an Arrow table."""
    return pq.read_table(io.BytesIO(body))


def rows_of(response: httpx.Response, fmt: str) -> list[dict[str, Any]]:
    """The rows of an answer in any format, as flat dicts (CSV values stay text)."""
    if fmt == "json":
        return [flatten(row) for row in response.json()["rows"]]
    if fmt == "csv":
        header, lines = csv_table(response.content)
        return [dict(zip(header, line, strict=True)) for line in lines]
    if fmt == "ndjson":
        return ndjson_rows(response.content)
    table: list[dict[str, Any]] = parquet_table(response.content).to_pylist()
    return table


def next_link(response: httpx.Response) -> str | None:
    """The URL of the Link header's rel="next", if any."""
    match = LINK_NEXT.search(response.headers.get("link", ""))
    return match.group(1) if match else None


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error: dict[str, Any] = body["error"]
    assert {"code", "message", "status"} <= set(error) <= {"code", "message", "status", "details"}
    assert error["code"] == code and error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    if "details" in error:
        assert isinstance(error["details"], list) and all(isinstance(d, dict) for d in error["details"])
    # An error is never cached as if it were an answer.
    assert "etag" not in response.headers and "immutable" not in response.headers.get("cache-control", "")
    return error


def forge_cursor(issued: str, offset: Any) -> str:
    """A cursor in the service's own encoding (base64url of `offset:binding`), with the binding of an
    issued cursor (so only the offset is wrong) and any offset literal."""
    binding = base64.urlsafe_b64decode(issued + "=" * (-len(issued) % 4)).decode().split(":")[1]
    return base64.urlsafe_b64encode(f"{offset}:{binding}".encode()).decode().rstrip("=")


# --- 1. every route in every format --------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("route", ROUTES)
def test_every_route_answers_every_format(census: Census, http: httpx.Client, route: str, fmt: str) -> None:
    r = http.get(census.path(route), params=census.params(route, _format=fmt))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPES[fmt]
    assert r.content
    if fmt == "json":
        body = r.json()
        assert {"rows", "next", "next_url"} <= set(body)
        if route.startswith("diff"):
            assert body["a"]["id"] == census.mid and body["b"]["id"] == census.latest
        elif route == "history":
            assert [s["id"] for s in body["snapshots"]] == [census.old, census.mid, census.latest]
        else:
            assert body["snapshot"] == {
                "id": census.latest,
                "taken_at": "2025-01-14T00:00:00Z",
                "classifier_version": CLASSIFIER_VERSION,
            }
    elif fmt == "csv":
        assert r.content.startswith(b'"')  # a quoted header line, no envelope
    elif fmt == "ndjson":
        assert all(line.startswith("{") for line in r.text.splitlines())
    else:
        assert r.content[:4] == b"PAR1" and r.content[-4:] == b"PAR1"


@pytest.mark.parametrize("route", ROUTES)
def test_columns_and_rows_agree_across_formats(census: Census, http: httpx.Client, route: str) -> None:
    bodies = {fmt: http.get(census.path(route), params=census.params(route, _format=fmt)).content for fmt in FORMATS}
    json_rows = [flatten(row) for row in json.loads(bodies["json"])["rows"]]
    header, csv_rows = csv_table(bodies["csv"])
    nd_rows = ndjson_rows(bodies["ndjson"])
    table = parquet_table(bodies["parquet"])
    assert json_rows, f"{route}: no rows to compare"
    assert len(json_rows) == len(csv_rows) == len(nd_rows) == table.num_rows
    assert header == list(nd_rows[0]) == table.schema.names
    assert all(list(row) == header for row in nd_rows)
    # JSON lists in `combinations` only those that occur; every other column is there, in the same order.
    for row in json_rows:
        assert [c for c in header if c in row] == list(row)
        assert all(c.startswith("combinations.") for c in header if c not in row)
    json_rows = [{c: row.get(c, 0) for c in header} for row in json_rows]
    assert all(len(row) == len(header) for row in csv_rows)
    # Same values too: JSON (flattened) and NDJSON are the same rows; Parquet agrees on every
    # integer and text column.
    assert json_rows == nd_rows
    for name, column in zip(table.schema.names, table.columns, strict=True):
        if pa.types.is_integer(column.type) or pa.types.is_string(column.type):
            assert column.to_pylist() == [row[name] for row in nd_rows], name
        elif pa.types.is_floating(column.type):
            assert column.to_pylist() == pytest.approx([row[name] for row in nd_rows]), name


# --- 2. pandas and polars read the URLs ----------------------------------------------------------


def test_pandas_reads_csv_and_parquet_urls(census: Census, http: httpx.Client) -> None:
    base = f"{census.url}/v1/frameworks/share"
    total = http.get(base).json()["total"]
    from_csv = pd.read_csv(f"{base}?_format=csv")
    from_parquet = pd.read_parquet(f"{base}?_format=parquet")
    assert int(from_csv["models"].sum()) == int(from_parquet["models"].sum()) == total["models"] == 3_180
    assert int(from_csv["exclusive.pytorch"].sum()) == total["exclusive"]["pytorch"]
    assert (
        int(from_parquet["combinations.pytorch+tensorflow+jax"].sum())
        == total["combinations"]["pytorch+tensorflow+jax"]
    )
    assert list(from_csv.columns) == list(from_parquet.columns)
    assert len(from_csv) == len(from_parquet) > 10


def test_polars_reads_csv_and_parquet(census: Census, http: httpx.Client) -> None:
    # polars cannot read these URLs itself: its HTTP object store reads by byte Range requests,
    # which the API does not serve ("Range request not supported"); so httpx fetches the bytes.
    base = "/v1/frameworks/share"
    total = http.get(base).json()["total"]
    from_csv = pl.read_csv(io.BytesIO(http.get(base, params={"_format": "csv"}).content))
    from_parquet = pl.read_parquet(io.BytesIO(http.get(base, params={"_format": "parquet"}).content))
    assert from_csv["models"].sum() == from_parquet["models"].sum() == total["models"] == 3_180
    assert from_parquet["exclusive.tensorflow"].sum() == total["exclusive"]["tensorflow"]
    assert from_csv.columns == from_parquet.columns
    assert from_csv.height == from_parquet.height


# --- 3. content negotiation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("application/json", "json"),
        ("text/csv", "csv"),
        ("application/x-ndjson", "ndjson"),
        ("application/ndjson", "ndjson"),
        ("application/vnd.apache.parquet", "parquet"),
        ("application/x-parquet", "parquet"),
        ("*/*", "json"),
        ("text/html, text/csv;q=0.9", "csv"),
    ],
)
def test_accept_header_picks_the_format(census: Census, http: httpx.Client, accept: str, fmt: str) -> None:
    # `_size=4`: keys no other test uses, so this test's cached answers stay its own.
    r = http.get("/v1/tasks", params={"_size": "4"}, headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPES[fmt]
    named = http.get("/v1/tasks", params={"_size": "4", "_format": fmt})
    assert rows_of(r, fmt) == rows_of(named, fmt)


@pytest.mark.parametrize(("explicit", "accept"), [("json", "text/csv"), ("parquet", "application/json")])
def test_format_parameter_wins_over_accept(census: Census, http: httpx.Client, explicit: str, accept: str) -> None:
    r = http.get("/v1/frameworks/trend", params={"_format": explicit, "_size": "4"}, headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPES[explicit]


# --- 4. paging to the end ------------------------------------------------------------------------


def test_models_paged_to_the_end_by_next_url(census: Census, http: httpx.Client) -> None:
    url: str | None = f"{census.url}/v1/models?_size=1000"
    ids: list[str] = []
    pages = 0
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200
        body = r.json()
        ids += [row["id"] for row in body["rows"]]
        assert (body["next"] is None) == (body["next_url"] is None) == (next_link(r) is None)
        assert body["next_url"] == next_link(r)
        url = body["next_url"]
        pages += 1
    assert len(ids) == len(set(ids)) == census.models[census.latest] == 3_180
    assert pages == 4


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet", "json"])
def test_models_paged_to_the_end_by_link_header(census: Census, http: httpx.Client, fmt: str) -> None:
    url: str | None = f"{census.url}/v1/models?_size=1000&_format={fmt}"
    ids: list[str] = []
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == CONTENT_TYPES[fmt]
        if fmt == "csv":
            ids += pd.read_csv(io.BytesIO(r.content))["id"].tolist()
        elif fmt == "ndjson":
            ids += [row["id"] for row in ndjson_rows(r.content)]
        elif fmt == "parquet":
            ids += parquet_table(r.content).column("id").to_pylist()
        else:
            ids += [row["id"] for row in r.json()["rows"]]
        url = next_link(r)
        assert url is None or f"_format={fmt}" in url
    assert len(ids) == len(set(ids)) == 3_180


def test_tasks_paged_by_five(census: Census, http: httpx.Client) -> None:
    everything = http.get("/v1/tasks", params={"_size": "10000"}).json()
    assert everything["next"] is None
    url: str | None = f"{census.url}/v1/tasks?_size=5"
    rows: list[dict[str, Any]] = []
    while url is not None:
        body = http.get(url).json()
        assert 1 <= len(body["rows"]) <= 5
        rows += body["rows"]
        url = body["next_url"]
    assert rows == everything["rows"]
    assert len({row["value"] for row in rows}) == len(rows) > 5
    assert sum(row["models"] for row in rows) == 3_180


def test_added_models_paged_to_the_end(census: Census, http: httpx.Client) -> None:
    diff = http.get(census.path("diff")).json()
    assert diff["added"] == census.models[census.latest] - census.models[census.mid] + diff["removed"]
    url: str | None = f"{census.url}{census.path('diff_models')}?change=added&_size=500"
    ids: list[str] = []
    while url is not None:
        body = http.get(url).json()
        assert all(row["change"] == "added" and row["before"] is None for row in body["rows"])
        ids += [row["id"] for row in body["rows"]]
        url = body["next_url"]
    assert len(ids) == len(set(ids)) == diff["added"] == 1_861
    assert ids == sorted(ids)


def test_history_and_top_authors_page_exactly(census: Census, http: httpx.Client) -> None:
    url: str | None = f"{census.url}/v1/frameworks/history?_size=1"
    snapshots: list[str] = []
    while url is not None:
        body = http.get(url).json()
        snapshots += [row["snapshot"] for row in body["rows"]]
        url = body["next_url"]
    assert snapshots == [census.old, census.mid, census.latest]
    # `top=5` caps the authors: pages of 2, 2 and 1, then no next.
    url = f"{census.url}/v1/authors?top=5&_size=2"
    sizes: list[int] = []
    while url is not None:
        body = http.get(url).json()
        sizes.append(len(body["rows"]))
        url = body["next_url"]
    assert sizes == [2, 2, 1]


# --- 5. ETag, 304, Cache-Control -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_etag_and_not_modified(census: Census, http: httpx.Client, route: str) -> None:
    path, params = census.path(route), census.params(route, _size="11")
    first = http.get(path, params=params)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]+"', etag), etag  # strong: no W/ prefix
    second = http.get(path, params=params)
    assert second.content == first.content and second.headers["etag"] == etag
    not_modified = http.get(path, params=params, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert not_modified.headers["cache-control"] == first.headers["cache-control"]
    among = http.get(path, params=params, headers={"If-None-Match": f'"0000", {etag}'})
    assert among.status_code == 304
    stale = http.get(path, params=params, headers={"If-None-Match": '"0000"'})
    assert stale.status_code == 200 and stale.content == first.content
    # The JSON answer's ETag does not validate the CSV answer.
    as_csv = http.get(path, params={**params, "_format": "csv"}, headers={"If-None-Match": etag})
    assert as_csv.status_code == 200 and as_csv.headers["etag"] != etag


@pytest.mark.parametrize("route", ROUTES)
def test_etag_differs_by_query_and_format(census: Census, http: httpx.Client, route: str) -> None:
    path, params = census.path(route), census.params(route)
    etags = {
        "base": http.get(path, params=params).headers["etag"],
        "size": http.get(path, params={**params, "_size": "3"}).headers["etag"],
        "meaning": http.get(path, params={**params, **VARIANTS[route]}).headers["etag"],
        **{fmt: http.get(path, params={**params, "_format": fmt}).headers["etag"] for fmt in FORMATS[1:]},
    }
    assert len(set(etags.values())) == len(etags), etags


@pytest.mark.parametrize("route", SNAPSHOT_ROUTES)
def test_cache_control_by_snapshot_parameter(census: Census, http: httpx.Client, route: str) -> None:
    # `_size=17`/`19`: keys no other test uses.
    path = census.path(route)
    named = http.get(path, params={"snapshot": census.latest, "_size": "19"})
    assert named.headers["cache-control"] == "public, max-age=86400, immutable"
    assert named.headers["x-hubcensus-snapshot"] == census.latest
    latest = http.get(path, params={"_size": "17"})
    assert latest.status_code == 200
    assert latest.headers["cache-control"] == "public, max-age=60"
    assert latest.headers["x-hubcensus-snapshot"] == census.latest
    # Same data: `latest` and the latest id differ only in how long the answer may be kept.
    assert named.json()["rows"][:17] == latest.json()["rows"]
    old = http.get(path, params={"snapshot": census.old, "_size": "17", "_format": "csv"})
    assert old.status_code == 200
    assert old.headers["cache-control"] == "public, max-age=86400, immutable"
    assert old.headers["x-hubcensus-snapshot"] == census.old
    # A 304 carries the same rule.
    revalidated = http.get(path, params={"_size": "17"}, headers={"If-None-Match": latest.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.headers["cache-control"] == "public, max-age=60"


@pytest.mark.parametrize("route", ["share", "tasks"])
@pytest.mark.parametrize("first", ["by_id", "latest"])
def test_latest_is_never_served_as_immutable(census: Census, http: httpx.Client, route: str, first: str) -> None:
    """Regression: `snapshot=<id>` and `latest` shared one answer-cache entry, headers included, so
    `latest` was served `immutable` once the same query had been asked by id (fixed in d9bbd81)."""
    size = {"by_id": "23", "latest": "29"}[first]  # keys no other test uses
    by_id = {"snapshot": census.latest, "_size": size}
    latest = {"_size": size}
    for params in (by_id, latest) if first == "by_id" else (latest, by_id):
        http.get(census.path(route), params=params)
    assert http.get(census.path(route), params=latest).headers["cache-control"] == "public, max-age=60"
    assert http.get(census.path(route), params=by_id).headers["cache-control"] == ("public, max-age=86400, immutable")


@pytest.mark.parametrize("route", ["diff", "diff_models"])
def test_cache_control_of_diffs(census: Census, http: httpx.Client, route: str) -> None:
    params = census.params(route)
    by_ids = http.get(census.path(route), params=params)
    assert by_ids.headers["cache-control"] == "public, max-age=86400, immutable"
    assert by_ids.headers["x-hubcensus-snapshot"] == f"{census.mid}..{census.latest}"
    to_latest = http.get(census.path(route, b="latest"), params=params)
    assert to_latest.headers["cache-control"] == "public, max-age=60"
    assert to_latest.json()["rows"] == by_ids.json()["rows"]


def test_cache_control_of_history(census: Census, http: httpx.Client) -> None:
    open_ended = http.get("/v1/frameworks/history")
    assert open_ended.headers["cache-control"] == "public, max-age=60"
    assert set(open_ended.headers["x-hubcensus-snapshot"].split(":", 1)[1].split(",")) == {
        census.old,
        census.mid,
        census.latest,
    }
    # Even a range in the past can gain a snapshot (an import with an older --taken-at): never immutable.
    closed = http.get("/v1/frameworks/history", params={"to": "2025-01-14T00:00:00Z"})
    assert closed.headers["cache-control"] == "public, max-age=60"
    assert closed.json()["rows"] == open_ended.json()["rows"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("route", ROUTES)
def test_answers_are_deterministic_without_the_cache(
    census: Census, http: httpx.Client, bare_url: str, route: str, fmt: str
) -> None:
    """Byte-identical answers even when recomputed; the same ETag when recomputed on the same host."""
    path, params = census.path(route), census.params(route, _format=fmt, _size="13")
    with httpx.Client(base_url=bare_url, timeout=60) as bare:
        one, two = bare.get(path, params=params), bare.get(path, params=params)
    cached = http.get(path, params=params)
    assert one.status_code == two.status_code == cached.status_code == 200
    assert one.content == two.content
    # The ETag covers the Host (next_url is absolute), so servers on two ports differ; one host agrees.
    assert one.headers["etag"] == two.headers["etag"]
    # Only the base URL inside next_url / Link differs between the two servers.
    assert one.content.replace(bare_url.encode(), census.url.encode()) == cached.content
    assert (next_link(one) or "").replace(bare_url, census.url) == (next_link(cached) or "")


# --- 6. errors -----------------------------------------------------------------------------------

ERROR_CASES: dict[str, tuple[dict[str, str], int, str]] = {
    "bad_format": ({"_format": "xml"}, 422, "invalid_parameter"),
    "size_0": ({"_size": "0"}, 422, "invalid_parameter"),
    "size_10001": ({"_size": "10001"}, 422, "invalid_parameter"),
    "size_not_int": ({"_size": "ten"}, 422, "invalid_parameter"),
    "size_0_csv": ({"_size": "0", "_format": "csv"}, 422, "invalid_parameter"),
    "unknown": ({"bogus": "1"}, 422, "unknown_parameter"),
    "garbage_cursor": ({"_next": "garbage!"}, 422, "invalid_cursor"),
    "negative_cursor": ({"_next": "NEGATIVE"}, 422, "invalid_cursor"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
@pytest.mark.parametrize("route", ROUTES)
def test_errors_use_the_envelope(census: Census, http: httpx.Client, route: str, case: str) -> None:
    extra, status, code = ERROR_CASES[case]
    if extra.get("_next") == "NEGATIVE":
        issued = http.get(census.path(route), params=census.params(route, _size="1")).json()["next"]
        extra = {"_next": forge_cursor(issued, -1)}
    r = http.get(census.path(route), params=census.params(route, **extra))
    error = assert_error(r, status, code)
    if code == "unknown_parameter":
        assert error["details"] == [{"parameter": "bogus", "in": "query", "message": "unknown parameter"}]
    if case == "bad_format":
        assert error["details"][0]["parameter"] == "_format"
    if case.startswith("size"):
        assert error["details"][0]["parameter"] == "_size"


@pytest.mark.parametrize("route", ROUTES)
def test_cursor_is_bound_to_its_snapshot(census: Census, http: httpx.Client, route: str) -> None:
    """A cursor from another snapshot (or snapshot pair, or history range) is refused, not misapplied."""
    path = census.path(route)
    if route in SNAPSHOT_ROUTES:
        other_path, other = path, census.params(route, snapshot=census.mid, _size="1")
    elif route == "history":
        other_path, other = path, census.params(route, **{"from": "2024-01-01", "_size": "1"})
    else:
        other_path, other = census.path(route, a=census.old), census.params(route, _size="1")
    cursor = http.get(other_path, params=other).json()["next"]
    assert cursor is not None
    # The cursor works where it came from…
    assert http.get(other_path, params={**other, "_next": cursor}).status_code == 200
    # …and not on the same route over other snapshots.
    assert_error(http.get(path, params=census.params(route, _next=cursor, _size="1")), 422, "invalid_cursor")


def test_snapshot_and_change_errors(census: Census, http: httpx.Client) -> None:
    assert_error(http.get("/v1/frameworks/share", params={"snapshot": "nope"}), 404, "snapshot_not_found")
    assert_error(http.get(census.path("diff", a="nope")), 404, "snapshot_not_found")
    missing = assert_error(http.get(census.path("diff_models")), 422, "invalid_parameter")
    assert missing["details"][0]["parameter"] == "change"
    assert_error(http.get(census.path("diff_models"), params={"change": "renamed"}), 422, "invalid_parameter")
    assert_error(http.get("/v1/frameworks/history", params={"snapshot": census.latest}), 422, "unknown_parameter")


# --- 7. notebook usage ---------------------------------------------------------------------------


def test_history_csv_in_a_notebook(census: Census) -> None:
    df = pd.read_csv(f"{census.url}/v1/frameworks/history?_format=csv")
    assert len(df) == 3
    assert {"snapshot", "taken_at", "pct.pytorch_only"} <= set(df.columns)
    assert df["snapshot"].tolist() == [census.old, census.mid, census.latest]
    taken = pd.to_datetime(df["taken_at"], utc=True)
    assert [t.date().isoformat() for t in taken] == ["2022-02-21", "2024-12-15", "2025-01-14"]
    assert df["models"].tolist() == [29_432, 1_319, 3_180]
    assert df["pct.pytorch_only"].between(0, 100).all()
    # The newest point, computed here from the raw records (default method and universe).
    with gzip.open(FIXTURES / "rimel_2025-01-14_list.json.gz", "rt") as f:
        buckets = Counter(bucket_of(r, "inferred") for r in json.load(f))
    with_framework = sum(n for b, n in buckets.items() if b != "none")
    assert df.loc[2, "pct.pytorch_only"] == pytest.approx(round(100 * buckets["pytorch"] / with_framework, 2))


# --- regressions: bugs found while writing this file (fixed since, in d9bbd81) -------------------


@pytest.mark.parametrize(
    ("route", "offset"),
    [("share", "1e999"), ("models", "1e999"), ("models", "1" + "0" * 23), ("tasks", "1" + "0" * 23)],
)
def test_cursor_with_out_of_range_offset_is_invalid(census: Census, process_url: str, route: str, offset: str) -> None:
    """A forged cursor whose offset is infinite or beyond BIGINT is refused (it was a 500)."""
    issued = httpx.get(process_url + census.path(route), params=census.params(route, _size="1"), timeout=60)
    cursor = forge_cursor(issued.json()["next"], offset)
    # Another process (see process_url), and a fresh connection: uvicorn drops the connection after a 500.
    r = httpx.get(process_url + census.path(route), params=census.params(route, _next=cursor), timeout=60)
    assert_error(r, 422, "invalid_cursor")


def test_link_of_a_format_request_keeps_its_format(census: Census, http: httpx.Client) -> None:
    """The cached Link of an Accept-negotiated answer was replayed for the `_format=csv` request."""
    params = {"_size": "6", "min_downloads": "2"}  # a key no other test uses
    first = http.get("/v1/libraries", params=params, headers={"Accept": "text/csv"})
    assert first.status_code == 200 and next_link(first) is not None
    second = http.get("/v1/libraries", params={**params, "_format": "csv"})
    link = next_link(second)
    assert link is not None
    # Following the Link of a `_format=csv` answer without any Accept header must give CSV again.
    assert http.get(link, headers={"Accept": "*/*"}).headers["content-type"] == CONTENT_TYPES["csv"]


def test_accept_negotiated_answers_vary_on_accept(census: Census, http: httpx.Client) -> None:
    """`Cache-Control: public` with a format chosen by Accept needs `Vary: Accept` for shared caches."""
    r = http.get("/v1/tasks", headers={"Accept": "text/csv"})
    assert r.status_code == 200
    assert "accept" in {v.strip().lower() for v in r.headers.get("vary", "").split(",")}


def test_empty_history_keeps_its_columns(census: Census, http: httpx.Client) -> None:
    """A range without snapshots answered a table with only a `snapshot` column."""
    full = http.get("/v1/frameworks/history", params={"_format": "parquet"})
    empty = http.get("/v1/frameworks/history", params={"_format": "parquet", "from": "2030-01-01"})
    assert empty.status_code == 200
    assert parquet_table(empty.content).num_rows == 0
    assert parquet_table(empty.content).schema == parquet_table(full.content).schema
    empty_csv = http.get("/v1/frameworks/history", params={"_format": "csv", "from": "2030-01-01"})
    header, rows = csv_table(empty_csv.content)
    assert header == parquet_table(full.content).schema.names and rows == []


def test_head_is_answered_like_get(census: Census, http: httpx.Client) -> None:
    """HEAD was 405 (RFC 9110 §9.1: servers MUST support HEAD)."""
    get = http.get("/v1/frameworks/share", params={"_format": "csv"})
    head = http.head("/v1/frameworks/share", params={"_format": "csv"})
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-type", "cache-control", "content-length"):
        assert head.headers[name] == get.headers[name], name


# --- known bugs (strict xfail: they fail today; fixing the product turns them into failures) -----


def test_next_url_is_not_taken_from_another_clients_host(census: Census, http: httpx.Client) -> None:
    params = {"_size": "8", "min_downloads": "3"}  # a key no other test uses
    poisoned = http.get("/v1/authors", params=params, headers={"Host": "evil.example"})
    assert poisoned.status_code == 200
    assert poisoned.json()["next_url"].startswith("http://evil.example/")
    mine = http.get("/v1/authors", params=params)
    assert mine.json()["next_url"].startswith(census.url + "/")
    assert (next_link(mine) or "").startswith(census.url + "/")
