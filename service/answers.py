"""Answering a tabular request, once for every route: format, page, ETag/304, the answer cache, the body.

A route builds an `Answer` (an Arrow table of rows plus the JSON envelope's other keys) inside a function
that `respond` calls only on a cache miss. Published snapshots never change, so an answer is keyed by the
resolved snapshot id(s) and the normalized query: the same key gives a strong ETag, a 304 for a matching
If-None-Match, and a hit in a bounded in-process cache. A request goes down this one way:

    negotiate (formats.py) → page from the cursor (paging.py) → key → 304 | cached body | compute → render
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import cachetools
import pyarrow as pa
from fastapi import Request
from fastapi.responses import Response

from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.service.charts.common import ChartBuilder
from hubcensus.service.formats import MEDIA_TYPES, Format, dumps_json, negotiate, render
from hubcensus.service.paging import Page, PageRequest, cursor_binding, decode_cursor, encode_cursor
from hubcensus.service.params import Analysis, query_defaults


@dataclass
class Answer:
    """What a tabular route answers: rows (flat columns) and the envelope's other keys."""

    rows: pa.Table
    envelope: dict[str, Any] = field(default_factory=dict)
    has_more: bool = False


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


def snapshot_ref(meta: SnapshotMeta) -> dict[str, Any]:
    """Which snapshot answered, and under which classifier: every answer states both, so it can be reproduced."""
    return {"id": meta.id, "taken_at": meta.taken_at, "classifier_version": meta.classifier_version}


def analysis_envelope(analysis: Analysis, query: dict[str, Any]) -> dict[str, Any]:
    """The envelope keys that state how an answer was computed: method, universe, weight, full query."""
    return {
        "method": analysis.method,
        "frameworks": analysis.frameworks,
        "weight": analysis.weight,
        "query": query,
    }


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names this ETag or is `*` (RFC 9110 13.1.2: weak comparison)."""
    if if_none_match is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


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
    request: Request,
    *,
    snapshot_key: str,
    params: dict[str, Any],
    fmt: Format,
    immutable: bool,
    query: list[tuple[str, str]],
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
        request,
        snapshot_key=snapshot_key,
        params={**params, "_offset": page.offset, "_size": page.size},
        fmt=fmt,
        immutable=immutable,
        query=query,
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
    body = render(answer.rows, answer.envelope, fmt, next_cursor=next_cursor, next_url=next_url, chart=chart)
    cache.put(key, body, headers)
    return Response(body, headers=headers, media_type=MEDIA_TYPES[fmt])


def names_snapshot(request: Request) -> bool:
    """Whether the request names a snapshot by id: its answer can then never change."""
    return request.query_params.get("snapshot", "latest") != "latest"


def respond_for_snapshot(
    request: Request,
    meta: SnapshotMeta,
    *,
    params: dict[str, Any],
    page_request: PageRequest,
    compute: Callable[[Page], Answer],
    chart: ChartBuilder | None = None,
) -> Response:
    """`respond` for a route over one snapshot: immutable when named by id, paging pinned to it.

    The classifier version is part of the answer's key: reclassifying a snapshot changes its answers (and
    ETags) under the same id.
    """
    return respond(
        request,
        snapshot_key=meta.id,
        params={**params, "_classifier": meta.classifier_version},
        page_request=page_request,
        compute=compute,
        immutable=names_snapshot(request),
        pin={"snapshot": meta.id},
        chart=chart,
    )


def respond_for_pair(
    request: Request,
    meta_a: SnapshotMeta,
    meta_b: SnapshotMeta,
    *,
    params: dict[str, Any],
    page_request: PageRequest,
    compute: Callable[[Page], Answer],
) -> Response:
    """`respond` for a route over two snapshots (a diff): immutable when both path ids name a snapshot."""
    named = "latest" not in (request.path_params.get("a"), request.path_params.get("b"))
    return respond(
        request,
        snapshot_key=f"{meta_a.id}..{meta_b.id}",
        params={**params, "_classifier": [meta_a.classifier_version, meta_b.classifier_version]},
        page_request=page_request,
        compute=compute,
        immutable=named,
    )
