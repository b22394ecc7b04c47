"""Paging every feed to the end, by `next_url` and by the `Link` header, in every format."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pandas as pd  # type: ignore[import-untyped]
import pytest

from tests.feeds.common import CONTENT_TYPES, Census, ndjson_rows, next_link, parquet_table

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


# --- regressions: bugs found while writing these tests (fixed since, in d9bbd81) ---------------------


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


# --- regression: a cached answer's next_url came from the Host of the client that filled the cache ------


def test_next_url_is_not_taken_from_another_clients_host(census: Census, http: httpx.Client) -> None:
    params = {"_size": "8", "min_downloads": "3"}  # a key no other test uses
    poisoned = http.get("/v1/authors", params=params, headers={"Host": "evil.example"})
    assert poisoned.status_code == 200
    assert poisoned.json()["next_url"].startswith("http://evil.example/")
    mine = http.get("/v1/authors", params=params)
    assert mine.json()["next_url"].startswith(census.url + "/")
    assert (next_link(mine) or "").startswith(census.url + "/")
