"""Every tabular route in every format over real HTTP: the same columns and rows in each, the format chosen by
`_format` or `Accept`, and pandas and polars reading the answers as a notebook would."""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter

import httpx
import pandas as pd  # type: ignore[import-untyped]
import polars as pl
import pyarrow as pa
import pytest

from hubcensus.queries.buckets import flatten
from hubcensus.queries.frameworks import CLASSIFIER_VERSION
from tests.data import LIST_2025, bucket_of
from tests.feeds.common import CONTENT_TYPES, FORMATS, ROUTES, Census, csv_table, ndjson_rows, parquet_table, rows_of

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
    with gzip.open(LIST_2025, "rt") as f:
        buckets = Counter(bucket_of(r, "inferred") for r in json.load(f))
    with_framework = sum(n for b, n in buckets.items() if b != "none")
    assert df.loc[2, "pct.pytorch_only"] == pytest.approx(round(100 * buckets["pytorch"] / with_framework, 2))


# --- regressions: bugs found while writing these tests (fixed since, in d9bbd81) ---------------------


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
