"""Answers as JSON, CSV, NDJSON or Parquet; pagination, ETags, caching — once for every tabular route.

A route builds an `Answer` (an Arrow table of rows plus the JSON envelope's other keys) inside a
function that `respond` calls only on a cache miss. Published snapshots never change, so an answer is
keyed by the resolved snapshot id(s) and the normalized query: the same key gives a strong ETag, a 304
for a matching If-None-Match, and a hit in a bounded in-process cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, get_args
from urllib.parse import urlencode

import cachetools
import mimeparse
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import Request
from fastapi.responses import Response

from hubcensus.queries.buckets import nest_rows
from hubcensus.service.charts import ChartBuilder, to_png, to_svg
from hubcensus.service.deps import query_defaults
from hubcensus.service.errors import ApiError

Format = Literal["json", "csv", "ndjson", "parquet", "vl", "svg", "png"]
TableFormat = Literal["json", "csv", "ndjson", "parquet"]  # every tabular route
ALL_FORMATS: tuple[Format, ...] = get_args(Format)
FORMATS: tuple[Format, ...] = get_args(TableFormat)
CHART_FORMATS: tuple[Format, ...] = tuple(f for f in ALL_FORMATS if f not in FORMATS)  # routes with a chart
MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "vl": "application/vnd.vegalite.v5+json",
    "svg": "image/svg+xml",
    "png": "image/png",
}
_ACCEPT: dict[str, Format] = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/json": "json",
    "application/vnd.vegalite.v5+json": "vl",
    "application/vnd.vegalite+json": "vl",
    "image/svg+xml": "svg",
    "image/png": "png",
}

DEFAULT_PAGE = 1_000
MAX_PAGE = 10_000
MAX_OFFSET = 10**9  # far beyond any snapshot's row count, well within DuckDB's OFFSET


@dataclass
class Answer:
    """What a tabular route answers: rows (flat columns) and the envelope's other keys."""

    rows: pa.Table
    envelope: dict[str, Any] = field(default_factory=dict)
    has_more: bool = False


@dataclass(frozen=True)
class Page:
    """The page a request asks for: an offset (from the opaque `_next` cursor) and a size."""

    offset: int
    size: int


@dataclass(frozen=True)
class PageRequest:
    """The raw `_next` cursor and `_size` of a request, decoded once the snapshot is known."""

    cursor: str | None
    size: int


class AnswerCache:
    """Rendered answers, bounded by total bytes, least recently used evicted first; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self._cache: cachetools.LRUCache[str, tuple[bytes, dict[str, str]]] = cachetools.LRUCache(
            maxsize=max(max_bytes, 1), getsizeof=lambda item: len(item[0]) + 1
        )
        self._lock = threading.Lock()
        self.max_bytes = max_bytes

    def get(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        """The cached body and headers for a key, if present."""
        with self._lock:
            return self._cache.get(key)

    def put(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        """Keep a rendered answer unless it alone exceeds the cache."""
        if len(body) + 1 > self.max_bytes:
            return
        with self._lock:
            self._cache[key] = (body, headers)


_CURSOR = re.compile(r"(\d{1,10}):([0-9a-f]{16})")
_CURSOR_MAX_CHARS = 64  # a real one is at most 36; anything longer is refused before decoding


def cursor_binding(request: Request, snapshot_key: str, params: dict[str, Any]) -> str:
    """What a cursor is valid for: the route, the snapshot(s) it pages through and the normalized query."""
    route = request.scope.get("route")
    template = getattr(route, "path", None) or request.url.path
    normalized = {k: v for k, v in sorted(params.items()) if v is not None}
    return hashlib.sha256(dumps_json(["cursor", template, snapshot_key, normalized])).hexdigest()[:16]


def encode_cursor(binding: str, offset: int) -> str:
    """An opaque cursor: the position, and the binding (route, snapshot, query) it is valid for.

    Not a secret: a client may forge any offset of its own query, which only selects another page.
    """
    return base64.urlsafe_b64encode(f"{offset}:{binding}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, binding: str) -> int:
    """The offset in a cursor; 422 if it is malformed or was issued for another route, snapshot or query."""
    if cursor is None:
        return 0
    invalid = ApiError(422, "invalid_cursor", "_next: not a cursor this service issued.")
    if len(cursor) > _CURSOR_MAX_CHARS:
        raise invalid
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error):
        raise invalid from None
    match = _CURSOR.fullmatch(text)
    # Only a whole number within any real result is a position; anything else was not issued by us.
    if match is None or int(match[1]) > MAX_OFFSET:
        raise invalid
    if match[2] != binding:
        raise ApiError(422, "invalid_cursor", "_next: the cursor belongs to another route, snapshot or query.")
    return int(match[1])


def negotiate(request: Request, charts: bool = False) -> Format:
    """`_format` wins; else the Accept header with its q-values (RFC 9110 12.5.1); JSON without one.

    Of equally acceptable types JSON is preferred. Accept naming nothing this route serves (or only with
    q=0) is 406 not_acceptable; an Accept header that does not parse is ignored, as if absent.
    """
    offered = FORMATS + CHART_FORMATS if charts else FORMATS
    explicit = request.query_params.get("_format")
    if explicit is not None:
        if explicit not in offered:
            raise ApiError(
                422,
                "invalid_parameter",
                f"_format: this route answers {', '.join(offered)}; got {explicit!r}.",
                [{"parameter": "_format", "in": "query", "message": "unsupported format"}],
            )
        return explicit
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return "json"
    # best_match prefers the last of equally acceptable types: JSON goes last, so `*/*` gives JSON.
    supported = sorted((m for m, fmt in _ACCEPT.items() if fmt in offered), key=lambda m: m == "application/json")
    try:
        best: str = mimeparse.best_match(supported, accept)
    except (mimeparse.MimeTypeParseException, ValueError):
        return "json"
    if not best:
        served = ", ".join(MEDIA_TYPES[f].split(";")[0] for f in offered)
        raise ApiError(406, "not_acceptable", f"Accept: this route answers {served}; got {accept!r}. Or use _format.")
    return _ACCEPT[best]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names this ETag or is `*` (RFC 9110 13.1.2: weak comparison)."""
    if if_none_match is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        # Naive timestamps in snapshots are UTC by construction.
        return value.isoformat().replace("+00:00", "Z") + ("" if value.tzinfo else "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps_json(obj: Any) -> bytes:
    """Compact JSON; datetimes as ISO 8601 UTC with Z."""
    return json.dumps(obj, default=_json_default, separators=(",", ":"), allow_nan=False).encode()


def _utc_timestamps(rows: pa.Table, as_text: bool) -> pa.Table:
    """Timestamps as UTC in every format: zoned in Parquet, ISO 8601 with Z in CSV.

    Snapshot timestamps are naive UTC by construction; saying so keeps Parquet and CSV readers from
    guessing a local zone.
    """
    for i, col in enumerate(rows.schema):
        if pa.types.is_timestamp(col.type):
            values = rows.column(i).cast(pa.timestamp(col.type.unit, tz="UTC"))
            if as_text:
                values = pc.strftime(values, format="%Y-%m-%dT%H:%M:%SZ")
            rows = rows.set_column(i, col.name, values)
    return rows


def render(
    answer: Answer, fmt: Format, next_cursor: str | None, next_url: str | None, chart: ChartBuilder | None = None
) -> bytes:
    """The body of an answer in a format; the columns are the same in every tabular format."""
    rows = answer.rows
    if fmt in CHART_FORMATS:
        assert chart is not None  # negotiate() offers chart formats only with a chart
        spec = json.loads(dumps_json(chart(rows, answer.envelope)))
        if fmt == "vl":
            return dumps_json(spec)
        return to_svg(spec).encode() if fmt == "svg" else to_png(spec)
    if fmt == "json":
        envelope = {
            **answer.envelope,
            "rows": nest_rows(rows.to_pylist(), rows.column_names),
            "next": next_cursor,
            "next_url": next_url,
        }
        return dumps_json(envelope)
    if fmt == "ndjson":
        return b"".join(dumps_json(r) + b"\n" for r in rows.to_pylist())
    buf = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(_utc_timestamps(rows, as_text=True), buf)
    else:
        pq.write_table(_utc_timestamps(rows, as_text=False), buf, compression="zstd")
    return buf.getvalue()


def canonical_query(request: Request) -> list[tuple[str, str]]:
    """The request's query without cursor and format, and without parameters spelled at their default.

    `next_url` is built from it (plus the format, always written out), so two spellings of one query get
    the same body, hence one ETag.
    """
    defaults = query_defaults(request)
    return sorted(
        (k, v)
        for k, v in request.query_params.multi_items()
        if k not in ("_next", "_format") and not (k in defaults and str(defaults[k]) == v)
    )


def cache_key(
    request: Request, snapshot_key: str, params: dict[str, Any], fmt: Format, immutable: bool, query: list[Any]
) -> str:
    """Snapshot id(s) + route + normalized query + format, hashed: the ETag and the cache key.

    The canonical query string is part of it too, because the body and headers echo it (`next_url`,
    `Link`), and so is whether the answer is immutable, because `Cache-Control` depends on it.
    """
    normalized = {k: v for k, v in sorted(params.items()) if v is not None}
    # The host too: `next_url` is absolute, and one client's Host header must never reach another client.
    material = dumps_json([request.url.netloc, request.url.path, query, snapshot_key, normalized, fmt, immutable])
    return hashlib.sha256(material).hexdigest()[:40]


def respond(
    request: Request,
    *,
    snapshot_key: str,
    params: dict[str, Any],
    page_request: PageRequest,
    compute: Callable[[Page], Answer],
    immutable: bool,
    pin: dict[str, str] | None = None,
    chart: ChartBuilder | None = None,
) -> Response:
    """Serve a tabular answer with content negotiation, pagination, ETag/304 and the answer cache.

    `pin` replaces parameters in `next_url` (the resolved snapshot id for `latest`), so that paging
    stays on the snapshot it started on even if a newer one is published meanwhile.
    """
    fmt = negotiate(request, charts=chart is not None)
    binding = cursor_binding(request, snapshot_key, params)
    page = Page(decode_cursor(page_request.cursor, binding), page_request.size)
    query = canonical_query(request)
    if pin:
        query = sorted([*(kv for kv in query if kv[0] not in pin), *pin.items()])
    key = cache_key(
        request, snapshot_key, {**params, "_offset": page.offset, "_size": page.size}, fmt, immutable, query
    )
    etag = f'"{key}"'
    # A named snapshot never changes; `latest` may move, so clients revalidate it (cheaply, by ETag).
    cache_control = "public, max-age=86400, immutable" if immutable else "public, max-age=60"
    base_headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        # The format may come from Accept: shared caches must keep one answer per Accept value.
        "Vary": "Accept",
        "X-Hubcensus-Snapshot": snapshot_key,
    }
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=base_headers)
    cache: AnswerCache = request.app.state.answer_cache
    cached = cache.get(key)
    if cached is not None:
        body, headers = cached
        return Response(body, headers=headers, media_type=MEDIA_TYPES[fmt])
    answer = compute(page)  # under the request's query time limit (service/app.py)
    next_cursor = encode_cursor(binding, page.offset + page.size) if answer.has_more else None
    next_url = None
    if next_cursor is not None:
        # The format is written out, however it was chosen, so the next page keeps it whoever follows.
        next_query = urlencode([*query, ("_format", fmt), ("_next", next_cursor)])
        next_url = str(request.url.replace(query=next_query))
    headers = dict(base_headers)
    if next_url is not None:
        headers["Link"] = f'<{next_url}>; rel="next"'
    body = render(answer, fmt, next_cursor, next_url, chart)
    cache.put(key, body, headers)
    return Response(body, headers=headers, media_type=MEDIA_TYPES[fmt])


def paged(table: pa.Table, page: Page) -> tuple[pa.Table, bool]:
    """One page of a fully computed (small) result, and whether more follows."""
    return table.slice(page.offset, page.size), table.num_rows > page.offset + page.size
