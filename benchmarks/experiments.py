"""What-if measurements behind the proposals in docs/PERFORMANCE.md.

Each experiment runs the product's own code in this process, changed only from the outside (a DuckDB
setting on the connections it opens, or an alternative parse of the same bytes), so that a proposed
product change has a measured gain before anyone makes it. Nothing here edits product code.

    python -m benchmarks.experiments writer-memory --path HUB.jsonl.gz [--set memory_limit=512MB ...]
    python -m benchmarks.experiments parse --path HUB.jsonl.gz [--n 50000]
    python -m benchmarks.experiments api-memory --data-dir STORE [--limit 256MB]
    python -m benchmarks.experiments shared-instance --data-dir STORE [--limit 256MB | --limit separate]
    python -m benchmarks.experiments serve --data-dir STORE --port P [--no-access-log]
    python -m benchmarks.experiments queries --data-dir STORE

Each prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.loadgen import percentile
from benchmarks.processes import proc_memory


def _configure_duckdb(settings: dict[str, str], *, read_only_only: bool = False) -> None:
    """Make every `duckdb.connect` of a file in this process open with these settings (e.g. memory_limit)."""
    import duckdb

    original = duckdb.connect

    def connect(database: Any = ":memory:", read_only: bool = False, config: Any = None, **kw: Any) -> Any:
        if database not in (":memory:", "") and (read_only or not read_only_only):
            config = {**(config or {}), **settings}
        return original(database, read_only=read_only, config=config or {}, **kw)

    duckdb.connect = connect


def _settings(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def writer_memory(path: Path, settings: dict[str, str], data_dir: Path) -> dict[str, Any]:
    """import_dump with the writer's DuckDB connections opened with `settings`: peak RSS per phase, time."""
    import shutil

    from benchmarks.child import peak_rss, run_import

    if settings:
        _configure_duckdb(settings)
    shutil.rmtree(data_dir, ignore_errors=True)
    result = run_import(path, data_dir)
    result["peak_rss_bytes"] = peak_rss()
    result["models_per_s"] = result["models"] / result["seconds"]
    result["settings"] = settings
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _time_per_record(fn: Callable[[], int], repeat: int = 3) -> float:
    best = float("inf")
    n = 1
    for _ in range(repeat):
        started = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def parse(path: Path, n: int) -> dict[str, Any]:
    """µs per record for the import/ingest hot path and for alternatives over the same lines."""
    import pyarrow as pa
    from pydantic import TypeAdapter

    from hubcensus.ingest.records import ROW_SCHEMA, HubModelRecord, parse_record

    with gzip.open(path, "rb") as fh:
        lines = [line for line in itertools.islice(fh, n) if line.strip()]
    # Pages of 1,000 records, as the Hub serves them.
    pages = [b"[" + b",".join(x.rstrip(b"\n") for x in lines[i : i + 1000]) + b"]" for i in range(0, len(lines), 1000)]
    adapter = TypeAdapter(list[HubModelRecord])

    def loads() -> int:
        for line in lines:
            json.loads(line)
        return len(lines)

    def current() -> int:
        for line in lines:
            parse_record(json.loads(line))
        return len(lines)

    def validate_json_lines() -> int:
        for line in lines:
            HubModelRecord.model_validate_json(line).to_row()
        return len(lines)

    def page_loads_then_validate() -> int:  # what ingest does per page: response.json(), then per record
        for page in pages:
            for record in json.loads(page):
                parse_record(record)
        return len(lines)

    def page_validate_json() -> int:
        for page in pages:
            for record in adapter.validate_json(page):
                record.to_row()
        return len(lines)

    def without_gc(fn: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            gc.disable()
            try:
                return fn()
            finally:
                gc.enable()

        return run

    rows = [parse_record(json.loads(line)) for line in lines]

    def arrow_batches() -> int:  # SnapshotWriter.flush: 5,000 dicts → Arrow
        for i in range(0, len(rows), 5000):
            pa.Table.from_pylist(rows[i : i + 5000], schema=ROW_SCHEMA)
        return len(rows)

    return {
        "records": len(lines),
        "us_per_record": {
            "json.loads only": _time_per_record(loads),
            "import: json.loads + parse_record (pydantic model_validate + to_row)": _time_per_record(current),
            "alternative: HubModelRecord.model_validate_json(line) + to_row": _time_per_record(validate_json_lines),
            "ingest: json.loads(page) + parse_record per record": _time_per_record(page_loads_then_validate),
            "alternative: TypeAdapter(list[HubModelRecord]).validate_json(page) + to_row": _time_per_record(
                page_validate_json
            ),
            "import path with the cyclic GC off": _time_per_record(without_gc(current)),
            "ingest path with the cyclic GC off": _time_per_record(without_gc(page_loads_then_validate)),
            "Arrow: pa.Table.from_pylist per 5,000 rows": _time_per_record(arrow_batches),
        },
    }


def api_memory(data_dir: Path, limit: str | None) -> dict[str, Any]:
    """The API app in-process over every snapshot (share, trend, models, history, diff): VmHWM."""
    from fastapi.testclient import TestClient

    if limit:
        _configure_duckdb({"memory_limit": limit}, read_only_only=True)
    from hubcensus.config import Settings
    from hubcensus.service.app import create_app

    app = create_app(Settings(data_dir=data_dir))
    started = time.perf_counter()
    with TestClient(app, base_url="http://bench") as client:
        ids = [m["id"] for m in client.get("/v1/snapshots").json()["snapshots"]]
        for sid in ids:
            for route in ("/v1/frameworks/share", "/v1/frameworks/trend", "/v1/models"):
                assert client.get(f"{route}?snapshot={sid}").status_code == 200
        assert client.get("/v1/frameworks/history").status_code == 200
        assert client.get(f"/v1/snapshots/{ids[-1]}/diff/{ids[0]}").status_code == 200
        # The same again, now that every connection is open and warm: what a limit costs in latency.
        timings = []
        for sid in ids:
            t = time.perf_counter()
            client.get(f"/v1/frameworks/trend?snapshot={sid}&method=tags")
            timings.append(time.perf_counter() - t)
    memory = proc_memory(os.getpid())
    return {
        "memory_limit": limit,
        "snapshots": len(ids),
        "seconds": time.perf_counter() - started,
        "trend_p50_ms": percentile([t * 1000 for t in timings], 50),
        **memory,
    }


def shared_instance(data_dir: Path, limit: str | None) -> dict[str, Any]:
    """Every snapshot ATTACHed read-only to ONE DuckDB instance (one buffer pool, one memory_limit), the
    same three queries per snapshot as `api-memory`, versus one instance per snapshot file (as before
    `queries/store.py` adopted the shared instance)."""
    import duckdb

    from hubcensus.queries.store import SnapshotStore

    store = SnapshotStore(data_dir)
    metas = store.snapshots()
    queries = [
        "SELECT pipeline_tag, fw_inferred & 7, count(*) FROM {s}models GROUP BY ALL",
        "SELECT strftime(created_at, '%Y-%m'), fw_inferred & 7, count(*) FROM {s}models GROUP BY ALL",
        "SELECT id, author, pipeline_tag, library_name, created_at, last_modified, downloads, likes, "
        "fw_inferred & 7 FROM {s}models ORDER BY downloads DESC NULLS LAST, id LIMIT 1001",
    ]
    if limit == "separate":
        cons = [duckdb.connect(str(store.path_of(m.id)), read_only=True) for m in metas]
        runs = [(con, "") for con in cons]
    else:
        shared = duckdb.connect(config={"memory_limit": limit} if limit else {})
        for i, m in enumerate(metas):
            shared.execute(f"ATTACH '{store.path_of(m.id)}' AS s{i} (READ_ONLY)")
        runs = [(shared, f"s{i}.") for i in range(len(metas))]
    started = time.perf_counter()
    for con, prefix in runs:
        for sql in queries:
            con.sql(sql.format(s=prefix)).to_arrow_table()
    first = time.perf_counter() - started
    warm = []
    for con, prefix in runs:
        t = time.perf_counter()
        con.sql(queries[1].format(s=prefix)).to_arrow_table()
        warm.append((time.perf_counter() - t) * 1000)
    memory = proc_memory(os.getpid())
    return {
        "mode": limit or "shared, no limit",
        "snapshots": len(metas),
        "first_pass_s": first,
        "trend_warm_p50_ms": percentile(warm, 50),
        **memory,
    }


def serve(data_dir: Path, port: int, access_log: bool, gc_mode: str) -> None:
    """The API as `hubcensus serve` runs it, with the access log optionally off and the cyclic GC tuned:
    `freeze` (gc.freeze() after start-up and a gen-0 threshold of 50,000), `freeze-only`, or `off` (diagnostic)."""
    import uvicorn

    from hubcensus.config import Settings
    from hubcensus.service.app import create_app

    app = create_app(Settings(data_dir=data_dir))
    if gc_mode in ("freeze", "freeze-only"):
        gc.freeze()
    if gc_mode == "freeze":
        gc.set_threshold(50_000, 20, 100)
    elif gc_mode == "off":
        gc.disable()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info" if access_log else "warning", access_log=access_log)


def queries(data_dir: Path) -> dict[str, Any]:
    """Alternative SQL for the slowest routes, on the latest snapshot (p50 ms of 15 runs each)."""
    import duckdb

    from hubcensus.queries.filters import KNOWN_CREATED
    from hubcensus.queries.store import SnapshotStore

    store = SnapshotStore(data_dir)
    metas = store.snapshots()
    cons = [duckdb.connect(str(store.path_of(m.id)), read_only=True) for m in metas]

    def p50(fn: Callable[[], Any]) -> float:
        fn()
        samples = []
        for _ in range(15):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
        return percentile(samples, 50)

    con = cons[0]
    strftime_each = (
        f"SELECT CASE WHEN {KNOWN_CREATED} THEN strftime(created_at, '%Y-%m') ELSE 'unknown' END AS period, "
        "fw_inferred & 7 AS combo, count(*) FROM models GROUP BY ALL"
    )
    trunc_then_format = (
        "SELECT coalesce(strftime(month, '%Y-%m'), 'unknown') AS period, combo, sum(n) FROM ("
        f"  SELECT CASE WHEN {KNOWN_CREATED} THEN date_trunc('month', created_at) END AS month, "
        "  fw_inferred & 7 AS combo, count(*) AS n FROM models GROUP BY ALL) GROUP BY ALL"
    )
    grouped = "SELECT pipeline_tag, fw_inferred & 7, count(*) FROM models GROUP BY ALL"
    total_only = "SELECT fw_inferred & 7, count(*) FROM models GROUP BY ALL"
    return {
        "trend: strftime on every row (as now)": p50(lambda: con.sql(strftime_each).to_arrow_table()),
        "trend: date_trunc per row, strftime per group": p50(lambda: con.sql(trunc_then_format).to_arrow_table()),
        f"history: share by task on each of {len(cons)} snapshots (as now)": p50(
            lambda: [c.sql(grouped).to_arrow_table() for c in cons]
        ),
        f"history: totals only on each of {len(cons)} snapshots": p50(
            lambda: [c.sql(total_only).to_arrow_table() for c in cons]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("writer-memory")
    p.add_argument("--path", type=Path, required=True)
    p.add_argument("--set", action="append", default=[], help="a DuckDB setting, e.g. memory_limit=512MB")
    p.add_argument("--data-dir", type=Path, default=Path("benchmarks/data/experiment-writer"))
    p = sub.add_parser("parse")
    p.add_argument("--path", type=Path, required=True)
    p.add_argument("--n", type=int, default=50_000)
    p = sub.add_parser("api-memory")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--limit", default=None)
    p = sub.add_parser("shared-instance")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--limit", default=None, help="memory_limit of the shared instance, or `separate`")
    p = sub.add_parser("serve")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-access-log", action="store_true")
    p.add_argument("--gc", choices=["default", "freeze", "freeze-only", "off"], default="default")
    p = sub.add_parser("queries")
    p.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "serve":
        serve(args.data_dir, args.port, not args.no_access_log, args.gc)
        return 0
    if args.what == "writer-memory":
        result = writer_memory(args.path, _settings(args.set), args.data_dir)
    elif args.what == "parse":
        result = parse(args.path, args.n)
    elif args.what == "api-memory":
        result = api_memory(args.data_dir, args.limit)
    elif args.what == "shared-instance":
        result = shared_instance(args.data_dir, args.limit)
    else:
        result = queries(args.data_dir)
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
