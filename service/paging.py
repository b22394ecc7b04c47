"""Pages of an answer: the page a request asks for, and the opaque `_next` cursor to the page after it.

A cursor is bound to the route, the snapshot(s) and the normalized query that issued it: it cannot page
through another query's rows, and a malformed one is refused (422 invalid_cursor).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from fastapi import Request

from hubcensus.service.errors import InvalidCursorError
from hubcensus.service.formats import dumps_json

DEFAULT_PAGE = 1_000
MAX_PAGE = 10_000
MAX_OFFSET = 10**9  # far beyond any snapshot's row count, well within DuckDB's OFFSET


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
    invalid = InvalidCursorError("_next: not a cursor this service issued.")
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
        raise InvalidCursorError("_next: the cursor belongs to another route, snapshot or query.")
    return int(match[1])


def paged(table: pa.Table, page: Page) -> tuple[pa.Table, bool]:
    """One page of a fully computed (small) result, and whether more follows."""
    return table.slice(page.offset, page.size), table.num_rows > page.offset + page.size
