"""A local, Hub-compatible HTTP server for ``GET /api/models``, and dataset repos (tests/hubdatasets.py).

The point is to let the *real* ``huggingface_hub.HfApi(endpoint=hub.url).list_models(...)`` client page
through a stored snapshot exactly as it would through https://huggingface.co/api/models, so tests and
benchmarks exercise the genuine client code (query encoding, ``Link`` pagination, retries) without network.

Standard library only. Typical use::

    with HubServer(load_records("models.jsonl.gz"), page_size=1000) as hub:
        ids = [m.id for m in HfApi(endpoint=hub.url).list_models()]

Fault injection goes through ``hook``: it sees every request first and may return a :class:`Response`
(e.g. a 429, a 503, a body truncated with ``close_after``) or sleep and return ``None`` to fall through.

``HubServer(records, datasets={"owner/name": DatasetRepo(...)})`` also serves those dataset repos: tree, commits,
revision info, paths-info and files (HEAD, Range), as ``HfApi`` and ``HfFileSystem`` read them.

Run ``python -m tests.hubserver PATH [--port N] [--page-size N]`` to serve a file by hand.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import hashlib
import json
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self, cast
from urllib.parse import parse_qs, urlencode, urlsplit

if TYPE_CHECKING:
    from tests.hubdatasets import DatasetRepo

__all__ = [
    "DEFAULT_FIELDS",
    "MAX_PAGE_SIZE",
    "HubServer",
    "RequestInfo",
    "Response",
    "iter_records",
    "json_response",
    "load_records",
    "main",
    "to_api_shape",
]

#: The real Hub never returns more than this many models per page, whatever ``limit`` says.
MAX_PAGE_SIZE = 1000

#: Keys the real Hub returns for ``/api/models`` without ``full`` or ``expand`` (when present).
DEFAULT_FIELDS: tuple[str, ...] = (
    "_id",
    "id",
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
    "modelId",
)

_TRUE_VALUES = frozenset({"true", "1", "yes"})
# Distinct field sets whose per-record serialisations are cached; each costs one pointer per record
# plus the bytes, so a handful is plenty (benchmarks reuse one or two sets).
_MAX_CACHED_FIELD_SETS = 8


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield dicts from a JSONL / JSONL.gz file, or from a JSON array file (``.json`` / ``.json.gz``).

    Streaming variant of :func:`load_records`: feeding it straight into :class:`HubServer` avoids holding
    every parsed dict in memory at once, which matters for multi-million-record benchmark files.
    """
    p = Path(path)
    name = p.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    with _open_text(p) as fh:
        if base.endswith(".json"):
            data = json.load(fh)
            if not isinstance(data, list):
                raise ValueError(f"{p}: expected a JSON array of objects, got {type(data).__name__}")
            for n, item in enumerate(data):
                if not isinstance(item, dict):
                    raise ValueError(f"{p}: item {n} is {type(item).__name__}, expected an object")
                yield item
            return
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            if not isinstance(item, dict):
                raise ValueError(f"{p}:{lineno}: expected a JSON object, got {type(item).__name__}")
            yield item


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read JSONL, JSONL.gz, or a JSON array file (``.json`` / ``.json.gz``) into a list of dicts."""
    return list(iter_records(path))


def _fake_object_id(model_id: str) -> str:
    # Mongo-style 24-hex id; derived from the id so it is stable across runs and servers.
    return hashlib.sha1(model_id.encode("utf-8")).hexdigest()[:24]


def to_api_shape(record: dict[str, Any]) -> dict[str, Any]:
    """Normalise a stored record into the modern ``/api/models`` shape.

    ``id`` (from ``modelId`` if missing), ``modelId`` = ``id``, ``_id`` (stable fake object id if missing),
    ``author`` (id prefix before "/", if missing or null and the id has one). Other keys are kept as they
    are, except ``_``-prefixed provenance keys (``_source``, ``_file``...), which are dropped.
    """
    raw_id = record.get("id")
    if raw_id is None:
        raw_id = record.get("modelId")
    if not isinstance(raw_id, str) or not raw_id:
        raise ValueError(f"record has no usable 'id' or 'modelId': {sorted(record)[:10]}")
    model_id = raw_id
    oid = record.get("_id")
    out: dict[str, Any] = {"_id": oid if isinstance(oid, str) and oid else _fake_object_id(model_id)}
    out["id"] = model_id
    if record.get("author") is None and "/" in model_id:
        out["author"] = model_id.split("/", 1)[0]
    for key, value in record.items():
        if key.startswith("_") or key == "id":
            continue
        if key == "author" and value is None and "author" in out:
            continue  # keep the derived author rather than a stored null
        out[key] = value
    out["modelId"] = model_id
    return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Request / response types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    """One request as the server saw it (``headers`` keys are lower-case)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    #: ``time.monotonic()`` on arrival; lets fault-injection tests measure client back-off.
    received_at: float = 0.0
    #: The request body (a POST's form, e.g. ``paths-info``).
    body: bytes = b""


@dataclass
class Response:
    """A response to send verbatim; returned by a hook to override the normal handling.

    ``close_after``: write only that many body bytes, then close the connection, while Content-Length
    still announces the full body (a truncated transfer). ``body_delay``: seconds to wait between the
    headers and the body (a slow body, to trip client read timeouts).
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    close_after: int | None = None
    body_delay: float = 0.0
    #: A body sent in chunks instead of ``body`` (a large file); ``close_after`` counts its bytes too.
    stream: Iterator[bytes] | None = None


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """Build a JSON :class:`Response` (handy for hooks, e.g. a Hub-style ``{"error": ...}``)."""
    hdrs = {"Content-Type": "application/json; charset=utf-8"}
    hdrs.update(headers or {})
    return Response(status=status, headers=hdrs, body=_dumps(payload))


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


Hook = Callable[[RequestInfo], Response | None]


class _BadRequest(Exception):
    """Raised while parsing query parameters; becomes a 400."""


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE_VALUES


def _encode_cursor(offset: int) -> str:
    raw = json.dumps({"o": offset}, separators=(",", ":")).encode()
    # Padding stripped: '=' would be percent-encoded in the Link URL for no benefit.
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(token: str, upper: int) -> int:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        obj = json.loads(raw)
    except (binascii.Error, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _BadRequest(f"invalid cursor: {exc}") from None
    offset = obj.get("o") if isinstance(obj, dict) else None
    if type(offset) is not int or not 0 <= offset <= upper:
        raise _BadRequest("invalid cursor")
    return offset


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its HubServer and its open connections."""

    daemon_threads = True
    # Don't join handler threads on close: a hook may be sleeping to simulate a hung server, and
    # stop() must not wait for it.
    block_on_close = False
    request_queue_size = 128  # benchmarks may open many connections at once

    def __init__(self, address: tuple[str, int], hub: HubServer) -> None:
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response (timeouts, truncation tests, stop()) are expected: stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or (isinstance(exc, OSError) and exc.errno == 9):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, as the real Hub: the client reuses one connection across pages.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK can add
    # ~40 ms to every page.
    disable_nagle_algorithm = True
    server_version = "hubserver/1"

    def setup(self) -> None:
        super().setup()
        srv = cast(_HTTPServer, self.server)
        with srv.connections_lock:
            srv.connections.add(self.connection)

    def finish(self) -> None:
        srv = cast(_HTTPServer, self.server)
        with srv.connections_lock:
            srv.connections.discard(self.connection)
        # The socket may already be torn down by stop() or by the peer.
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (tests and benchmarks would drown in it)."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        hub = cast(_HTTPServer, self.server).hub
        split = urlsplit(self.path)
        body = b""
        if self.command not in ("GET", "HEAD"):
            # Read any body so a keep-alive connection stays in sync.
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                body = self.rfile.read(length)
        info = RequestInfo(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            received_at=time.monotonic(),
            body=body,
        )
        # Recorded before the hook runs, so a hook can count requests via hub.requests.
        hub._record(info)
        response: Response | None = None
        hook = hub.hook
        if hook is not None:
            try:
                response = hook(info)
            except Exception as exc:
                traceback.print_exc()
                response = _error(500, f"hubserver hook raised {exc!r}")
        if response is None:
            response = hub.handle(info)
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        names = {k.lower() for k in response.headers}
        for name, value in response.headers.items():
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(response.body)))
        if response.close_after is not None and "connection" not in names:
            self.send_header("Connection", "close")
        self.end_headers()
        if response.body_delay > 0:
            time.sleep(response.body_delay)
        if self.command == "HEAD":
            return
        if response.stream is not None:
            left = response.close_after
            for chunk in response.stream:
                if left is not None:
                    chunk, left = chunk[: max(0, left)], left - len(chunk)
                self.wfile.write(chunk)
                if left is not None and left <= 0:
                    break
            if left is not None:
                self.close_connection = True
            return
        if response.close_after is None:
            self.wfile.write(response.body)
            return
        self.wfile.write(response.body[: max(0, response.close_after)])
        # Ending the handler closes the socket, so the client sees EOF short of Content-Length.
        self.close_connection = True


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class HubServer:
    """Serve records as the Hub's ``GET /api/models`` on a local port, in a background thread.

    Records are shaped with :func:`to_api_shape` and serialised once at construction; only the compact
    JSON bytes and a few filter columns are kept, so memory stays near the size of the JSON text.
    Projections (default fields, ``expand``) are serialised lazily per record and cached per field set.
    """

    def __init__(
        self,
        records: Iterable[dict[str, Any]],
        *,
        page_size: int = 1000,
        hook: Hook | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        datasets: dict[str, DatasetRepo] | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.page_size = page_size
        #: Called first for every request; may be replaced at any time (e.g. between test phases).
        self.hook: Hook | None = hook
        #: Every request received, in arrival order.
        self.requests: list[RequestInfo] = []
        self._requests_lock = threading.Lock()
        self._host = host
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: Dataset repos served by id (tests/hubdatasets.py); may be changed between test phases.
        self.datasets: dict[str, DatasetRepo] = datasets if datasets is not None else {}

        self._full: list[bytes] = []
        self._ids: list[str] = []
        self._authors: list[str | None] = []
        self._pipeline_tags: list[str | None] = []
        self._library_names: list[str | None] = []
        self._tags: list[tuple[str, ...]] = []
        # Identical tag tuples are shared: many models carry the exact same tags, and this saves a
        # sizeable chunk of memory at the million-record scale.
        tag_pool: dict[tuple[str, ...], tuple[str, ...]] = {}
        for record in records:
            shaped = to_api_shape(record)
            self._full.append(_dumps(shaped))
            self._ids.append(shaped["id"])
            self._authors.append(_opt_str(shaped.get("author")))
            self._pipeline_tags.append(_opt_str(shaped.get("pipeline_tag")))
            self._library_names.append(_opt_str(shaped.get("library_name")))
            raw_tags = shaped.get("tags")
            tags = tuple(sys.intern(t) for t in raw_tags if isinstance(t, str)) if isinstance(raw_tags, list) else ()
            self._tags.append(tag_pool.setdefault(tags, tags))
        self._projections: dict[tuple[str, ...], list[bytes | None]] = {}
        self._projections_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._full)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``; pass it as ``HfApi(endpoint=...)``."""
        if self._httpd is None:
            raise RuntimeError("HubServer is not running; call start() or use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("HubServer already started")
        httpd = _HTTPServer((self._host, self._port), self)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # short, so stop() returns quickly
            name=f"hubserver:{httpd.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections, and release the port. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        # Handler threads idle on keep-alive connections would otherwise linger until the client
        # closes its pool; shutting the sockets makes their reads return EOF now.
        with httpd.connections_lock:
            open_conns = list(httpd.connections)
        for conn in open_conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, info: RequestInfo) -> None:
        with self._requests_lock:
            self.requests.append(info)

    # -- request handling --------------------------------------------------------------------------

    def handle(self, info: RequestInfo) -> Response:
        """Produce the normal (hook-less) response for a request."""
        if info.path.startswith(("/api/datasets/", "/datasets/")):
            from tests.hubdatasets import handle

            reply = handle(self.datasets, info.method, info.path, info.query, info.headers, info.body, self.url)
            if reply is not None:
                return Response(reply.status, reply.headers, reply.body, stream=reply.stream)
        if info.path.rstrip("/") != "/api/models":
            return _error(404, f"Not found: {info.path}")
        if info.method != "GET":
            return _error(405, f"Method {info.method} not allowed on {info.path}")
        try:
            return self._list_models(info.query)
        except _BadRequest as exc:
            return _error(400, str(exc))

    def _list_models(self, query: dict[str, list[str]]) -> Response:
        limit = self._parse_limit(_last(query, "limit"))
        fields = self._parse_fields(query)
        cursor = _last(query, "cursor")
        start = 0 if cursor is None else _decode_cursor(cursor, len(self._full))
        match = self._matcher(query)
        indices, next_offset = self._select(start, limit, match)

        body = self._page_body(indices, fields)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if next_offset is not None:
            params = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            params.append(("cursor", _encode_cursor(next_offset)))
            # Absolute URL carrying every original param: the client follows it verbatim.
            headers["Link"] = f'<{self.url}/api/models?{urlencode(params)}>; rel="next"'
        return Response(status=200, headers=headers, body=body)

    def _parse_limit(self, raw: str | None) -> int:
        if raw is None:
            return self.page_size
        try:
            limit = int(raw)
        except ValueError:
            raise _BadRequest(f"invalid limit: {raw!r}") from None
        if limit < 1:
            raise _BadRequest(f"invalid limit: {raw!r} (must be >= 1)")
        return min(limit, MAX_PAGE_SIZE)

    @staticmethod
    def _parse_fields(query: dict[str, list[str]]) -> tuple[str, ...] | None:
        """Field set to return, or None for every key (``full``)."""
        expand = [v for key in ("expand", "expand[]") for v in query.get(key, ())]
        full = _is_true(_last(query, "full"))
        if expand and full:
            raise _BadRequest("'expand' cannot be combined with 'full'")
        if full:
            return None
        if expand:
            return tuple(dict.fromkeys(("_id", "id", *expand)))
        extra = [k for k in ("config", "cardData") if _is_true(_last(query, k))]
        return DEFAULT_FIELDS + tuple(extra)

    def _matcher(self, query: dict[str, list[str]]) -> Callable[[int], bool] | None:
        """Predicate over record indices for the search params, or None when nothing filters."""
        filters = [f for f in query.get("filter", ()) if f]
        author = _last(query, "author") or None
        search = (_last(query, "search") or "").lower() or None
        pipeline_tag = _last(query, "pipeline_tag") or None
        if not (filters or author or search or pipeline_tag):
            return None
        ids, authors, tags = self._ids, self._authors, self._tags
        pipelines, libraries = self._pipeline_tags, self._library_names

        def match(i: int) -> bool:
            if author is not None and authors[i] != author:
                return False
            if pipeline_tag is not None and pipelines[i] != pipeline_tag:
                return False
            if search is not None and search not in ids[i].lower():
                return False
            for value in filters:
                if value not in tags[i] and value != libraries[i] and value != pipelines[i]:
                    return False
            return True

        return match

    def _select(self, start: int, limit: int, match: Callable[[int], bool] | None) -> tuple[Sequence[int], int | None]:
        """Indices for one page from ``start`` and the offset of the next match (None if none left).

        Cursors are offsets into the whole record list, so a filtered listing is a single forward scan
        across all its pages rather than a rescan per page.
        """
        n = len(self._full)
        if match is None:
            end = min(start + limit, n)
            return range(start, end), (end if end < n else None)
        picked: list[int] = []
        i = start
        while i < n and len(picked) < limit:
            if match(i):
                picked.append(i)
            i += 1
        # Look ahead so the last page carries no Link, like the real Hub.
        while i < n and not match(i):
            i += 1
        return picked, (i if i < n else None)

    def _projection(self, fields: tuple[str, ...]) -> list[bytes | None]:
        with self._projections_lock:
            cache = self._projections.get(fields)
            if cache is None:
                if len(self._projections) >= _MAX_CACHED_FIELD_SETS:
                    del self._projections[next(iter(self._projections))]  # oldest first
                cache = self._projections[fields] = [None] * len(self._full)
            return cache

    def _page_body(self, indices: Sequence[int], fields: tuple[str, ...] | None) -> bytes:
        full = self._full
        if fields is None:
            parts = [full[i] for i in indices]
        else:
            cache = self._projection(fields)
            parts = []
            for i in indices:
                part = cache[i]
                if part is None:
                    # Racing threads may both fill this slot; they compute identical bytes.
                    record = json.loads(full[i])
                    part = cache[i] = _dumps({k: record[k] for k in fields if k in record})
                parts.append(part)
        return b"[" + b",".join(parts) + b"]"


def _opt_str(value: Any) -> str | None:
    return sys.intern(value) if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a records file until interrupted (Ctrl-C or SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.hubserver", description="Serve model records as a local Hub /api/models."
    )
    parser.add_argument("path", type=Path, help="JSONL, JSONL.gz, JSON or JSON.gz file of model records")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    hub = HubServer(iter_records(args.path), page_size=args.page_size, host=args.host, port=args.port)
    done = threading.Event()
    # SIGTERM too, so a benchmark that runs this as a subprocess gets a clean shutdown.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: done.set())
    with hub:
        print(f"loaded {len(hub)} records in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        print(hub.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not done.wait(1.0):
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
