"""A small HTTP/1.1 load generator: C keep-alive connections, each with one request in flight, for D seconds.

Plain asyncio streams rather than an HTTP client library, so that on a 2-core machine the client costs
as little CPU as possible and the figure measures the server. Run it in its own process:

    python -m benchmarks.loadgen --url http://127.0.0.1:8000/v1/frameworks/share -c 32 -d 10

Prints one JSON line: requests, errors (non-2xx or broken connections), seconds, rps, and latency
percentiles in milliseconds (from sending a request to reading its whole body).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted samples; NaN when there are none."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def _client(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = _CONTENT_LENGTH.search(head)
            if match is None:
                errors.append("no content-length")
                return
            await reader.readexactly(int(match.group(1)))
            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
                errors.append(head.split(b"\r\n", 1)[0].decode())
                continue
            latencies.append(time.perf_counter() - started)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


async def run(url: str, concurrency: int, seconds: float, warmup: float = 0.5) -> dict[str, Any]:
    """Warm up, then measure `seconds` of closed-loop load at `concurrency`."""
    split = urlsplit(url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    path = split.path + (f"?{split.query}" if split.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {split.netloc}\r\nAccept: application/json\r\n\r\n".encode()
    if warmup > 0:
        await asyncio.gather(
            *(_client(host, port, request, time.perf_counter() + warmup, [], []) for _ in range(concurrency))
        )
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_client(host, port, request, deadline, latencies, errors) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = [s * 1000 for s in latencies]
    return {
        "url": url,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of load before measuring")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url, args.concurrency, args.duration, args.warmup))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
