"""What the feed tests share: the routes and formats they cover, the served census, and readers of each
format's body."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from hubcensus.queries.buckets import flatten

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
