"""A lean Hub-compatible `GET /api/models`, serving a generated Hub straight from a file.

`tests/hubserver.py` keeps every record serialised in memory (≈1-1.5 KB each: 2-3 GB at two million
models) and supports filters, projections and fault hooks. A benchmark needs none of that: the generated
records already have exactly the fields that `ingest_hub` asks for with `expand=`, in the API's shape. So
this server decompresses the .jsonl.gz once into a plain JSON Lines file beside it, keeps only the byte
offset of every line (8 bytes per model: 16 MB at 2M), and answers a page with one `pread` of a contiguous
byte range whose newlines become commas. Its memory does not grow with the Hub.

Same wire behaviour as the real Hub where the client can see it: `limit` (at most 1,000 per page),
`Link: <…&cursor=…>; rel="next"` carrying every original parameter, no `Link` on the last page, HTTP/1.1
keep-alive. `expand`/`full` are accepted and ignored (the file holds the expanded fields); filters are
refused (400), since a benchmark never sends them.

Rate limiting (`--rate-limit 100/10`): fixed windows like the Hub's, aligned on the first request. Past
`q` calls in a window the server answers 429 with `RateLimit: "api";r=0;t=<seconds left>` and
`RateLimit-Policy: "fixed window";"api";q=<q>;w=<w>`; every successful answer carries `RateLimit` with
the calls remaining too, as the Hub's do (`--no-success-headers` sends them on 429s only).

    python -m benchmarks.hubfile benchmarks/data/hub-100000.jsonl.gz --port 8765 [--rate-limit 100/10]

prints its base URL on stdout when it is ready. `GET /_stats` answers `{"pages", "models", "throttled"}`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import json
import math
import os
import signal
import sys
import threading
import time
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

MAX_PAGE_SIZE = 1000


def prepare(gz_path: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """The plain JSON Lines copy of `gz_path` and its line-offset index, built once and reused."""
    out_dir = out_dir or gz_path.parent
    stem = gz_path.name.removesuffix(".gz")
    plain, index = out_dir / stem, out_dir / (stem + ".idx")
    if plain.exists() and index.exists() and index.stat().st_mtime >= gz_path.stat().st_mtime:
        return plain, index
    offsets = array("q", [0])
    tmp = plain.with_name(plain.name + ".part")
    with gzip.open(gz_path, "rb") as src, tmp.open("wb") as dst:
        position = 0
        for line in src:
            if not line.strip():
                continue
            if not line.endswith(b"\n"):
                line += b"\n"
            dst.write(line)
            position += len(line)
            offsets.append(position)
    tmp.replace(plain)
    with index.open("wb") as fh:
        offsets.tofile(fh)
    return plain, index


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> int:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    offset = json.loads(raw)["o"]
    if type(offset) is not int or offset < 0:
        raise ValueError("bad cursor")
    return offset


class RateLimiter:
    """Fixed windows of `window` seconds with `quota` calls each, aligned on the first call."""

    def __init__(self, quota: int, window: float) -> None:
        self.quota, self.window = quota, window
        self._start: float | None = None
        self._index = -1
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, int, int]:
        """(allowed, calls remaining after this one, whole seconds until the window resets)."""
        now = time.monotonic()
        with self._lock:
            if self._start is None:
                self._start = now
            index = int((now - self._start) // self.window)
            if index != self._index:
                self._index, self._used = index, 0
            left = self._start + (index + 1) * self.window - now
            reset = max(1, math.ceil(left))
            if self._used >= self.quota:
                return False, 0, reset
            self._used += 1
            return True, self.quota - self._used, reset

    def policy(self) -> str:
        return f'"fixed window";"api";q={self.quota};w={self.window:g}'


class FileHub:
    """The records of a prepared JSON Lines file, served by page."""

    def __init__(self, plain: Path, index: Path, *, max_records: int | None = None) -> None:
        self.offsets = array("q")
        with index.open("rb") as fh:
            self.offsets.frombytes(fh.read())
        self.count = len(self.offsets) - 1
        if max_records is not None:
            self.count = min(self.count, max_records)
        self.fd = os.open(plain, os.O_RDONLY)
        self.limiter: RateLimiter | None = None
        self.success_headers = True
        self.pages = self.models = self.throttled = 0
        self._stats_lock = threading.Lock()

    def page(self, start: int, limit: int) -> tuple[bytes, int]:
        """The JSON array of records [start, start+limit) and how many it holds."""
        end = min(start + limit, self.count)
        if start >= end:
            return b"[]", 0
        lo, hi = self.offsets[start], self.offsets[end]
        data = os.pread(self.fd, hi - lo, lo)
        # Every record is one line of compact JSON: its newline is the separator of the array.
        return b"[" + data[:-1].replace(b"\n", b",") + b"]", end - start

    def count_page(self, n: int) -> None:
        with self._stats_lock:
            self.pages += 1
            self.models += n

    def count_throttled(self) -> None:
        with self._stats_lock:
            self.throttled += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], hub: FileHub) -> None:
        self.hub = hub
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "hubfile/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        hub = cast(_Server, self.server).hub
        split = urlsplit(self.path)
        if split.path == "/_stats":
            stats = {"pages": hub.pages, "models": hub.models, "throttled": hub.throttled}
            self._send(200, json.dumps(stats).encode(), {})
            return
        if split.path.rstrip("/") != "/api/models":
            self._send(404, b'{"error":"not found"}', {})
            return
        query = parse_qs(split.query, keep_blank_values=True)
        headers: dict[str, str] = {}
        if hub.limiter is not None:
            allowed, remaining, reset = hub.limiter.take()
            rate_headers = {
                "RateLimit": f'"api";r={remaining};t={reset}',
                "RateLimit-Policy": hub.limiter.policy(),
            }
            if not allowed:
                hub.count_throttled()
                self._send(429, b'{"error":"rate limited"}', rate_headers)
                return
            if hub.success_headers:
                headers.update(rate_headers)
        if any(query.get(k) for k in ("filter", "author", "search", "pipeline_tag")):
            self._send(400, b'{"error":"filters are not supported by the benchmark server"}', {})
            return
        try:
            limit = min(int(query.get("limit", [str(MAX_PAGE_SIZE)])[-1]), MAX_PAGE_SIZE)
            cursor = query.get("cursor", [None])[-1]
            start = 0 if cursor is None else _decode_cursor(cursor)
            if limit < 1:
                raise ValueError("limit must be >= 1")
        except (ValueError, KeyError, binascii.Error) as exc:
            self._send(400, json.dumps({"error": str(exc)}).encode(), {})
            return
        body, n = hub.page(start, limit)
        hub.count_page(n)
        if start + n < hub.count:
            params = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            params.append(("cursor", _encode_cursor(start + n)))
            host, port = cast(_Server, self.server).server_address[:2]
            headers["Link"] = f'<http://{host!s}:{port}/api/models?{urlencode(params)}>; rel="next"'
        self._send(200, body, headers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hubfile", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a generated .jsonl.gz (or a prepared .jsonl with its .idx)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-records", type=int, default=None, help="serve only the first N records")
    parser.add_argument("--rate-limit", default=None, help="Q/W: at most Q calls per fixed window of W seconds")
    parser.add_argument("--no-success-headers", action="store_true", help="RateLimit headers on 429s only")
    args = parser.parse_args(argv)
    if args.path.suffix == ".gz":
        plain, index = prepare(args.path)
    else:
        plain, index = args.path, args.path.with_name(args.path.name + ".idx")
    hub = FileHub(plain, index, max_records=args.max_records)
    if args.rate_limit:
        quota, _, window = args.rate_limit.partition("/")
        hub.limiter = RateLimiter(int(quota), float(window))
        hub.success_headers = not args.no_success_headers
    server = _Server((args.host, args.port), hub)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: done.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    print(f"http://{host!s}:{port}", flush=True)
    print(f"serving {hub.count:,} records from {plain}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while not done.wait(0.5):
            pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
