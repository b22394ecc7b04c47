"""hubcensus at whole-Hub scale, measured against DuckDB itself (docs/PERFORMANCE.md).

    python -m benchmarks.bench                 # `make bench`: N = 100,000 and 2,000,000
    python -m benchmarks.bench --quick         # `make bench-quick`: N = 20,000; exits 1 on a gross regression

For each N: a generated Hub (benchmarks/generate.py, cached in benchmarks/data/), then

1. ingest through the real client path (`ingest_hub`, max_rate=0) from a Hub-compatible server in another
   process (benchmarks/hubfile.py), the ingest itself in a subprocess: models/s and its peak RSS;
2. `import_dump` of the .jsonl.gz in a subprocess, beside DuckDB's own `read_json` of the same file into a
   table (also a subprocess): models/s each, peak RSS, and their ratio;
3. the snapshot's size on disk;
4. every analytics route in-process (server-side time, from the ASGI call to the last body byte), uncached
   (cache_bytes=0) p50/p99 and cached p50, beside the equivalent plain SQL on the same snapshot file;
5. HTTP at concurrency 32 over loopback: `hubcensus serve` (uvicorn) in one process, the load generator
   (benchmarks/loadgen.py) in another, on a cached query (and on /healthz, the floor of the stack);
6. the API process's peak RSS with the snapshot plus ten older ones, after querying each;

and once per run: 7. ingest under a server-enforced rate limit (fixed windows, 429 + RateLimit), against the
floor pages ÷ rate. Prints a table with PASS/MISS per target and writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.generate import DEFAULT_SOURCE, Options, cached_or_generate
from benchmarks.hubfile import prepare
from benchmarks.loadgen import percentile

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"
PY = sys.executable
MB = 1e6
MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class Profile:
    """How big and how long: `make bench` (full) or `make bench-quick`."""

    name: str
    sizes: tuple[int, ...]
    query_budget_s: float  # time spent per route (per variant), within the rep bounds below
    query_min_reps: int
    query_max_reps: int
    http_seconds: float
    older_snapshots: int
    rl_models: int  # the rate-limited ingest
    rl_page_size: int
    rl_quota: int
    rl_window: float
    rl_variants: tuple[str, ...]  # "headers" (RateLimit on every answer, as the Hub) and/or "429-only"
    rss_probe_fraction: float | None  # also ingest N*fraction, to compare peak RSS (memory must not grow with N)
    check: bool  # exit 1 when a gross-regression bound fails


FULL = Profile(
    name="full",
    sizes=(100_000, 2_000_000),
    query_budget_s=3.0,
    query_min_reps=10,
    query_max_reps=300,
    http_seconds=10.0,
    older_snapshots=10,
    rl_models=50_000,
    rl_page_size=100,
    rl_quota=100,
    rl_window=10.0,
    rl_variants=("headers", "429-only"),
    rss_probe_fraction=None,
    check=False,
)
QUICK = Profile(
    name="quick",
    sizes=(20_000,),
    query_budget_s=0.25,
    query_min_reps=5,
    query_max_reps=60,
    http_seconds=2.5,
    older_snapshots=10,
    rl_models=4_000,
    rl_page_size=50,
    rl_quota=20,
    rl_window=2.0,
    rl_variants=("headers",),
    rss_probe_fraction=0.2,
    check=True,
)


# ------------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"no JSON result in output: {text[-2000:]}")


def py_spy() -> str | None:
    """py-spy, on PATH or beside this Python (`.venv/bin/pip install py-spy`)."""
    beside = Path(PY).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def run_child(args: list[str], log_path: Path, profile_to: Path | None = None) -> dict[str, Any]:
    """Run `python -m benchmarks.<args>` in a subprocess; its JSON result, plus the wall time around it."""
    cmd = [PY, "-m", *args]
    spy = py_spy()
    if profile_to is not None and spy is not None:
        cmd = [spy, "record", "-r", "100", "-f", "raw", "-o", str(profile_to), "--", *cmd]
    started = time.perf_counter()
    with log_path.open("ab") as err:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}); see {log_path}")
    result = _last_json_line(proc.stdout.decode())
    result["wall_s"] = wall
    return result


@contextlib.contextmanager
def background(cmd: list[str], log_path: Path, ready: Callable[[subprocess.Popen[bytes]], str]) -> Iterator[Any]:
    """A server process for the duration of the block; `ready` waits for it and returns its URL."""
    err = log_path.open("ab")
    # Only a server that announces its URL on stdout gets a pipe: an unread pipe (uvicorn's access log)
    # would fill up and block the server.
    stdout = subprocess.PIPE if ready is _url_from_stdout else err
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=err)
    try:
        url = ready(proc)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


def _url_from_stdout(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http"):
        raise RuntimeError(f"server did not start (exit {proc.poll()})")
    return line


def hub_server(path: Path, log_path: Path, *extra: str) -> contextlib.AbstractContextManager[Any]:
    return background([PY, "-m", "benchmarks.hubfile", str(path), *extra], log_path, _url_from_stdout)


def http_get(url: str, timeout: float = 120.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def api_server(data_dir: Path, log_path: Path) -> contextlib.AbstractContextManager[Any]:
    """`hubcensus serve` (uvicorn, the product's own settings) on a free loopback port."""
    port = free_port()
    exe = Path(PY).parent / "hubcensus"
    head = [str(exe)] if exe.exists() else [PY, "-c", "from hubcensus.cli import main; main()"]
    cmd = [*head, "serve", "--data-dir", str(data_dir), "--port", str(port)]

    def ready(proc: subprocess.Popen[bytes]) -> str:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"hubcensus serve exited with {proc.returncode}; see {log_path}")
            with contextlib.suppress(OSError):
                if http_get(url + "/healthz", timeout=2)[0] == 200:
                    return url
            time.sleep(0.2)
        raise RuntimeError("hubcensus serve did not become ready")

    return background(cmd, log_path, ready)


def proc_memory(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of a live process, in bytes (Linux /proc)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024
    return out


# ------------------------------------------------------------------------------------------------------
# Timing helpers
# ------------------------------------------------------------------------------------------------------


def sample(fn: Callable[[], float], prof: Profile, min_reps: int | None = None) -> list[float]:
    """Call `fn` (which returns the seconds it measured) once to warm up, then for the budget."""
    fn()
    samples: list[float] = []
    least = prof.query_min_reps if min_reps is None else min_reps
    end = time.perf_counter() + prof.query_budget_s
    while len(samples) < least or (time.perf_counter() < end and len(samples) < prof.query_max_reps):
        samples.append(fn())
    return samples


def stats_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms)}


def snapshot_dirs(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "snapshots").iterdir())


# ------------------------------------------------------------------------------------------------------
# 1-3: ingest, import, read_json, sizes
# ------------------------------------------------------------------------------------------------------


def bench_ingest(gz: Path, run_dir: Path, n: int, profile_dir: Path | None) -> dict[str, Any]:
    plain, _ = prepare(gz)
    target = run_dir / f"ingest-{n}"
    shutil.rmtree(target, ignore_errors=True)
    with hub_server(plain, run_dir / "hubfile.log", "--max-records", str(n)) as (_, url):
        prof = profile_dir / f"ingest-{n}.txt" if profile_dir else None
        result = run_child(
            ["benchmarks.child", "ingest", "--endpoint", url, "--data-dir", str(target)], run_dir / "child.log", prof
        )
        _, stats = http_get(url + "/_stats")
    (snap,) = snapshot_dirs(target)
    result["snapshot_bytes"] = (snap / "snapshot.duckdb").stat().st_size
    result["server"] = json.loads(stats)
    result["models_per_s"] = result["models"] / result["seconds"]
    shutil.rmtree(target, ignore_errors=True)
    return result


def bench_import(gz: Path, run_dir: Path, profile_dir: Path | None) -> tuple[dict[str, Any], Path]:
    target = run_dir / "import"
    shutil.rmtree(target, ignore_errors=True)
    prof = profile_dir / f"import-{run_dir.name}.txt" if profile_dir else None
    result = run_child(
        ["benchmarks.child", "import", "--path", str(gz), "--data-dir", str(target)], run_dir / "child.log", prof
    )
    (snap,) = snapshot_dirs(target)
    result["snapshot_bytes"] = (snap / "snapshot.duckdb").stat().st_size
    result["snapshot_used_bytes"] = _used_bytes(snap / "snapshot.duckdb")
    result["models_per_s"] = result["models"] / result["seconds"]
    return result, snap


def _used_bytes(db: Path) -> int:
    """Bytes of the blocks in use (the file also keeps freed blocks: DuckDB never shrinks a file)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        name = con.execute("SELECT current_database()").fetchall()[0][0]
        row = con.execute(
            "SELECT block_size, used_blocks FROM pragma_database_size() WHERE database_name = ?", [name]
        ).fetchall()[0]
    finally:
        con.close()
    return int(row[0]) * int(row[1])


def bench_read_json(gz: Path, run_dir: Path) -> dict[str, Any]:
    db = run_dir / "read_json.duckdb"
    result = run_child(["benchmarks.child", "read_json", "--path", str(gz), "--db", str(db)], run_dir / "child.log")
    result["models_per_s"] = result["models"] / result["seconds"]
    db.unlink(missing_ok=True)
    return result


# ------------------------------------------------------------------------------------------------------
# The query store: the imported snapshot plus older ones derived from it
# ------------------------------------------------------------------------------------------------------


def build_store(snapshot_dir: Path, store: Path, older: int) -> list[str]:
    """`store` holds the imported snapshot (moved) and `older` snapshots derived from it by SQL.

    Snapshot i (1..older) is dated i x 30 days earlier and has 4 % x i fewer models (the Hub grew), and 1 %
    of its models lack the `pytorch` tag they have later (their masks recomputed by the product's own
    rules), so diffs have models added and changed. Returns the ids, newest first.
    """
    import duckdb

    from hubcensus.queries.frameworks import CLASSIFIER_VERSION, mask_sql
    from hubcensus.queries.store import DB_NAME, META_NAME, SnapshotMeta, new_snapshot_id, sql_path

    shutil.rmtree(store, ignore_errors=True)
    (store / "snapshots").mkdir(parents=True)
    latest_dir = store / "snapshots" / snapshot_dir.name
    snapshot_dir.rename(latest_dir)
    latest = SnapshotMeta.model_validate_json((latest_dir / META_NAME).read_text())
    source = sql_path(latest_dir / DB_NAME)
    ids = [latest.id]
    for i in range(1, older + 1):
        started = time.perf_counter()
        taken_at = latest.taken_at - timedelta(days=30 * i)
        sid = new_snapshot_id(taken_at)
        build = store / f"build-{sid}"
        build.mkdir()
        con = duckdb.connect(str(build / DB_NAME))
        con.execute(f"ATTACH {source} AS s (READ_ONLY)")
        edited = f"hash(id || 'v{i}') % 100 = 0"
        # Schema-agnostic (* REPLACE): the snapshot layout is the product's, whatever its columns are.
        con.execute(f"""
            CREATE TABLE models AS
            WITH src AS (
                SELECT * REPLACE (
                        CASE WHEN {edited} THEN list_filter(tags, lambda t: t <> 'pytorch') ELSE tags END AS tags
                    ),
                    {edited} AS edited
                FROM s.models WHERE hash(id) % 1000 >= {40 * i}
            )
            SELECT * EXCLUDE (edited) REPLACE (
                CASE WHEN edited THEN {mask_sql("tags")} ELSE fw_tags END AS fw_tags,
                CASE WHEN edited THEN {mask_sql("inferred")} ELSE fw_inferred END AS fw_inferred
            )
            FROM src ORDER BY id
        """)
        con.execute("CREATE TABLE bad_records (position BIGINT, reason VARCHAR, excerpt VARCHAR)")
        models = int(con.execute("SELECT count(*) FROM models").fetchall()[0][0])
        meta = SnapshotMeta(
            id=sid,
            taken_at=taken_at,
            source=f"benchmark: {latest.id} minus {4 * i}%",
            kind="import",
            models=models,
            bad_records=0,
            duration_s=round(time.perf_counter() - started, 3),
            classifier_version=CLASSIFIER_VERSION,
            published_at=datetime.now(UTC),
        )
        con.execute("CREATE TABLE meta AS SELECT ?::JSON AS meta", [meta.model_dump_json()])
        con.execute("DETACH s")
        con.execute("CHECKPOINT")
        con.close()
        (build / META_NAME).write_text(json.dumps(meta.model_dump(mode="json"), indent=2))
        build.rename(store / "snapshots" / sid)
        ids.append(sid)
    return ids


# ------------------------------------------------------------------------------------------------------
# 4: routes in-process vs plain SQL
# ------------------------------------------------------------------------------------------------------

_KNOWN_CREATED = (
    "created_at IS NOT NULL AND NOT (created_at >= TIMESTAMP '2022-03-02 23:29:04' "
    "AND created_at < TIMESTAMP '2022-03-02 23:29:06')"
)


def _share_sql(by: str, combo: str) -> str:
    return f"SELECT {by} AS grp, {combo} AS combo, count(*) AS n FROM models GROUP BY ALL"


def _dimension_sql(col: str) -> str:
    return (
        f"SELECT {col} AS value, count(*) AS models, coalesce(sum(downloads), 0)::BIGINT AS downloads "
        f"FROM models GROUP BY ALL ORDER BY models DESC, value NULLS LAST LIMIT 1001"
    )


@dataclass
class Route:
    """A route, and the plain SQL on the snapshot file that answers the same question."""

    key: str
    label: str
    url: str
    sql: str | None = None  # on the latest snapshot
    raw_sql: str | None = None  # the same, deriving frameworks from raw tags/files/library on the fly
    special: str | None = None  # "history" or "diff": SQL over several snapshots
    extra: dict[str, Any] = field(default_factory=dict)


def routes(ids: list[str]) -> list[Route]:
    from hubcensus.queries.frameworks import mask_sql

    out: list[Route] = []
    for by, by_label in (("pipeline_tag", "task"), ("library_name", "library")):
        for method in ("tags", "files", "inferred"):
            out.append(
                Route(
                    key=f"share_{by_label}_{method}",
                    label=f"share by {by_label}, {method}",
                    url=f"/v1/frameworks/share?method={method}" + ("&by=library_name" if by != "pipeline_tag" else ""),
                    sql=_share_sql(by, f"fw_{method} & 7"),
                    raw_sql=_share_sql(by, mask_sql(method)),
                )
            )
    period = f"CASE WHEN {_KNOWN_CREATED} THEN strftime(created_at, '%Y-%m') ELSE 'unknown' END"
    out += [
        Route("trend", "trend by month", "/v1/frameworks/trend", sql=_share_sql(period, "fw_inferred & 7")),
        Route("tasks", "tasks", "/v1/tasks", sql=_dimension_sql("pipeline_tag")),
        Route("libraries", "libraries", "/v1/libraries", sql=_dimension_sql("library_name")),
        Route("authors", "authors", "/v1/authors", sql=_dimension_sql("author")),
        Route(
            "models",
            "models list (1,000)",
            "/v1/models",
            sql="SELECT id, author, pipeline_tag, library_name, created_at, last_modified, downloads, likes, "
            "fw_inferred & 7 AS mask FROM models ORDER BY downloads DESC NULLS LAST, id LIMIT 1001",
        ),
        Route(
            "history",
            f"history ({len(ids)} snapshots)",
            "/v1/frameworks/history",
            special="history",
        ),
        Route("diff", "diff of two snapshots", f"/v1/snapshots/{ids[1]}/diff/{ids[0]}", special="diff"),
    ]
    return out


_DIFF_SQL = """
SELECT count_if(a.id IS NULL) AS added, count_if(b.id IS NULL) AS removed,
    count_if(a.id IS NOT NULL AND b.id IS NOT NULL) AS common,
    count_if(a.fw_tags & 7 <> b.fw_tags & 7) AS changed_tags,
    count_if(a.fw_files & 7 <> b.fw_files & 7) AS changed_files,
    count_if(a.fw_inferred & 7 <> b.fw_inferred & 7) AS changed_inferred
FROM a.models AS a FULL OUTER JOIN b.models AS b USING (id)
"""


class ServerTimer:
    """ASGI wrapper: the server-side time of the last request, from the call to the last body byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last = time.perf_counter() - started

        await self.app(scope, receive, timed_send)


def bench_queries(store: Path, ids: list[str], prof: Profile) -> dict[str, Any]:
    import duckdb
    from fastapi.testclient import TestClient

    from hubcensus.config import Settings
    from hubcensus.queries.store import DB_NAME
    from hubcensus.service.app import create_app

    paths = [str(store / "snapshots" / sid / DB_NAME) for sid in ids]
    cons = [duckdb.connect(p, read_only=True) for p in paths]
    diff_con = duckdb.connect()
    diff_con.execute(f"ATTACH '{paths[1]}' AS a (READ_ONLY)")
    diff_con.execute(f"ATTACH '{paths[0]}' AS b (READ_ONLY)")

    def sql_timer(con: Any, sql: str) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            con.sql(sql).to_arrow_table()
            return time.perf_counter() - started

        return run

    def history_sql() -> float:
        started = time.perf_counter()
        for con in cons:
            con.sql("SELECT fw_inferred & 7 AS combo, count(*) AS n FROM models GROUP BY ALL").to_arrow_table()
        return time.perf_counter() - started

    def diff_sql() -> float:
        started = time.perf_counter()
        diff_con.sql(_DIFF_SQL).to_arrow_table()
        for alias in ("a", "b"):
            share = _share_sql("pipeline_tag", "fw_inferred & 7").replace("FROM models", f"FROM {alias}.models")
            diff_con.sql(share).to_arrow_table()
        return time.perf_counter() - started

    uncached = ServerTimer(create_app(Settings(data_dir=store, cache_mb=0, query_timeout=600)))
    cached = ServerTimer(create_app(Settings(data_dir=store, query_timeout=600)))
    results: dict[str, Any] = {}
    with TestClient(uncached, base_url="http://bench") as client, TestClient(cached, base_url="http://bench") as c2:

        def route_timer(c: TestClient, timer: ServerTimer, url: str) -> Callable[[], float]:
            def run() -> float:
                resp = c.get(url)
                if resp.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {resp.status_code} {resp.text[:300]}")
                return timer.last

            return run

        for route in routes(ids):
            # A long route gets at least its minimum reps, a fast one at most the budget.
            res: dict[str, Any] = {"label": route.label, "url": route.url}
            res["uncached"] = stats_ms(sample(route_timer(client, uncached, route.url), prof))
            res["cached"] = stats_ms(sample(route_timer(c2, cached, route.url), prof))
            if route.special == "history":
                res["sql"] = stats_ms(sample(history_sql, prof))
            elif route.special == "diff":
                res["sql"] = stats_ms(sample(diff_sql, prof))
            elif route.sql is not None:
                res["sql"] = stats_ms(sample(sql_timer(cons[0], route.sql), prof))
            if route.raw_sql is not None:
                # Deriving frameworks from the raw lists is slow at 2M (regexes over every file name): 3 reps.
                res["raw_sql"] = stats_ms(sample(sql_timer(cons[0], route.raw_sql), prof, min_reps=3))
            res["ratio_to_sql"] = res["uncached"]["p50_ms"] / res["sql"]["p50_ms"]
            results[route.key] = res
            log(
                f"  {route.label:<28} uncached p50 {res['uncached']['p50_ms']:8.2f} ms  "
                f"p99 {res['uncached']['p99_ms']:8.2f}  cached p50 {res['cached']['p50_ms']:6.2f}  "
                f"sql p50 {res['sql']['p50_ms']:8.2f}  x{res['ratio_to_sql']:.2f}"
            )
    for con in [*cons, diff_con]:
        con.close()
    return results


# ------------------------------------------------------------------------------------------------------
# 5-6: HTTP throughput and the API process's memory
# ------------------------------------------------------------------------------------------------------

CACHED_QUERY = "/v1/frameworks/share?method=inferred"


def loadgen(url: str, seconds: float, log_path: Path) -> dict[str, Any]:
    return run_child(["benchmarks.loadgen", "--url", url, "-c", "32", "-d", str(seconds)], log_path)


def bench_http(store: Path, ids: list[str], run_dir: Path, prof: Profile, profile_dir: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with api_server(store, run_dir / "api.log") as (proc, url):
        out["healthz"] = loadgen(url + "/healthz", prof.http_seconds, run_dir / "child.log")
        status, _ = http_get(url + CACHED_QUERY)  # fills the answer cache
        if status != 200:
            raise RuntimeError(f"{CACHED_QUERY}: HTTP {status}")
        spy = None
        if profile_dir is not None and (spy_exe := py_spy()) is not None:
            cmd = [spy_exe, "record", "-p", str(proc.pid), "-r", "200", "-f", "raw", "-d", str(int(prof.http_seconds))]
            cmd += ["-o", str(profile_dir / f"api-cached-{run_dir.name}.txt")]
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["cached_share"] = loadgen(url + CACHED_QUERY, prof.http_seconds, run_dir / "child.log")
        if spy is not None:
            spy.wait()
        out["memory_after_load"] = proc_memory(proc.pid)
        # 6: every snapshot queried (share, trend, a page of models), then history and a diff.
        started = time.perf_counter()
        for sid in ids:
            for path in ("/v1/frameworks/share", "/v1/frameworks/trend", "/v1/models"):
                status, body = http_get(f"{url}{path}?snapshot={sid}")
                if status != 200:
                    raise RuntimeError(f"{path}?snapshot={sid}: HTTP {status} {body[:200]!r}")
        for path in ("/v1/frameworks/history", f"/v1/snapshots/{ids[-1]}/diff/{ids[0]}"):
            status, body = http_get(url + path)
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status} {body[:200]!r}")
        out["all_snapshots_s"] = time.perf_counter() - started
        out["memory"] = proc_memory(proc.pid)
        out["snapshots"] = len(ids)
    return out


# ------------------------------------------------------------------------------------------------------
# 7: ingest under a rate limit
# ------------------------------------------------------------------------------------------------------


def bench_rate_limited(gz: Path, run_dir: Path, prof: Profile, variant: str) -> dict[str, Any]:
    plain, _ = prepare(gz)
    target = run_dir / f"ingest-rl-{variant}"
    shutil.rmtree(target, ignore_errors=True)
    extra = ["--max-records", str(prof.rl_models), "--rate-limit", f"{prof.rl_quota}/{prof.rl_window:g}"]
    if variant == "429-only":
        extra.append("--no-success-headers")
    with hub_server(plain, run_dir / "hubfile.log", *extra) as (_, url):
        args = ["benchmarks.child", "ingest", "--endpoint", url, "--data-dir", str(target)]
        result = run_child([*args, "--page-size", str(prof.rl_page_size)], run_dir / "child.log")
        _, stats = http_get(url + "/_stats")
    shutil.rmtree(target, ignore_errors=True)
    pages = math.ceil(prof.rl_models / prof.rl_page_size)
    rate = prof.rl_quota / prof.rl_window
    result.update(
        variant=variant,
        pages=pages,
        quota=prof.rl_quota,
        window_s=prof.rl_window,
        floor_s=pages / rate,
        ratio_to_floor=result["seconds"] / (pages / rate),
        server=json.loads(stats),
    )
    return result


# ------------------------------------------------------------------------------------------------------
# Targets, regression bounds, the table
# ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    measure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: no target


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def _fmt_bytes(x: float) -> str:
    return f"{x / MiB:,.0f} MiB" if x >= 10 * MiB else f"{x / MiB:,.1f} MiB"


def size_rows(n: int, r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    sec = f"N={n:,}"
    gen = r["generate"]
    rows.append(Row(sec, "generate (cached)" if gen.get("cached") else "generate", f"{gen['seconds']:.1f} s"))
    rows.append(Row(sec, "generator peak RSS", _fmt_bytes(gen["peak_rss_bytes"])))
    ing = r["ingest"]
    rows.append(
        Row(sec, "ingest models/s", _fmt_rate(ing["models_per_s"]), "≥ 20,000/s", ing["models_per_s"] >= 20_000)
    )
    rows.append(
        Row(
            sec,
            "ingest worker peak RSS",
            _fmt_bytes(ing["peak_rss_bytes"]) + _phases(ing),
            "≤ 1 GiB",
            ing["peak_rss_bytes"] <= GiB,
        )
    )
    if "ingest_probe" in r:
        probe = r["ingest_probe"]
        rows.append(Row(sec, f"ingest peak RSS at N={probe['models']:,}", _fmt_bytes(probe["peak_rss_bytes"])))
    imp, raw = r["import"], r["read_json"]
    rows.append(Row(sec, "import models/s", _fmt_rate(imp["models_per_s"])))
    rows.append(Row(sec, "import peak RSS", _fmt_bytes(imp["peak_rss_bytes"]) + _phases(imp)))
    rows.append(Row(sec, "DuckDB read_json models/s", _fmt_rate(raw["models_per_s"])))
    ratio = imp["models_per_s"] / raw["models_per_s"]
    rows.append(Row(sec, "import / read_json rate", f"{ratio:.1%}", "≥ 50%", ratio >= 0.5))
    # The size and share targets are stated for the whole Hub (2M models); smaller runs show the figure only.
    whole_hub = n >= 2_000_000
    rows.append(
        Row(
            sec,
            "snapshot on disk",
            f"{imp['snapshot_bytes'] / MB:,.1f} MB ({imp['snapshot_bytes'] / n:,.0f} B/model)",
            "≤ 150 MB" if whole_hub else "(150 MB at 2M)",
            imp["snapshot_bytes"] <= 150 * MB if whole_hub else None,
        )
    )
    rows.append(Row(sec, "  of which blocks in use", f"{imp['snapshot_used_bytes'] / MB:,.1f} MB"))
    rows.append(Row(sec, "  read_json table on disk", f"{raw['db_bytes'] / MB:,.1f} MB"))
    q = r["queries"]
    for key, res in q.items():
        u, c, s = res["uncached"], res["cached"], res["sql"]
        value = (
            f"p50 {u['p50_ms']:.1f} ms, p99 {u['p99_ms']:.1f} ms | SQL p50 {s['p50_ms']:.1f} ms "
            f"(x{res['ratio_to_sql']:.1f})"
            + (f" | raw-derivation SQL {res['raw_sql']['p50_ms']:.1f} ms" if "raw_sql" in res else "")
            + f" | cached p50 {c['p50_ms']:.2f} ms"
        )
        if key.startswith("share_task_"):
            ok = u["p50_ms"] <= 50 and res["ratio_to_sql"] <= 2
            target = "p50 ≤ 50 ms, ≤ 2x SQL" + ("" if whole_hub else " (at 2M)")
            rows.append(Row(sec, res["label"], value, target, ok if whole_hub else None))
        else:
            rows.append(Row(sec, res["label"], value))
    share = q["share_task_inferred"]["cached"]["p50_ms"]
    rows.append(Row(sec, "cached share p50 (server)", f"{share:.2f} ms", "≤ 2 ms", share <= 2))
    http = r["http"]
    hz, cs = http["healthz"], http["cached_share"]
    rows.append(
        Row(sec, "HTTP /healthz c=32", f"{hz['rps']:,.0f} req/s, p50 {hz['p50_ms']:.1f} ms, p99 {hz['p99_ms']:.1f} ms")
    )
    rows.append(
        Row(
            sec,
            "HTTP cached share c=32",
            f"{cs['rps']:,.0f} req/s, p50 {cs['p50_ms']:.1f} ms, p99 {cs['p99_ms']:.1f} ms",
            "≥ 1,000 req/s, p99 ≤ 50 ms",
            cs["rps"] >= 1000 and cs["p99_ms"] <= 50 and cs["errors"] == 0,
        )
    )
    mem = http["memory"]
    after_load = _fmt_bytes(http["memory_after_load"]["VmHWM"])
    rows.append(
        Row(
            sec,
            f"API peak RSS, {http['snapshots']} snapshots queried",
            f"{_fmt_bytes(mem['VmHWM'])} (after the HTTP load on the latest only: {after_load})",
            "(no target)",
        )
    )
    return rows


def _phases(r: dict[str, Any]) -> str:
    if "peak_rss_publish_bytes" not in r:
        return ""
    if r["publish_s"] < 0.05:
        # DuckDB's JSON reader writes the published table itself: publishing is only the rename.
        return " (publish: a rename)"
    return (
        f" (streaming {_fmt_bytes(r['peak_rss_stream_bytes'])}, "
        f"publish {_fmt_bytes(r['peak_rss_publish_bytes'])} in {r['publish_s']:.1f} s)"
    )


def rate_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for r in results:
        # With fixed windows the calls of the first window are free: the last window opens at
        # (windows - 1) x w, so a perfect client finishes a little after that, below pages ÷ rate.
        windows = math.ceil(r["pages"] / r["quota"])
        fixed = (windows - 1) * r["window_s"]
        rows.append(
            Row(
                "rate-limited",
                f"ingest {r['models']:,} models, {r['pages']} pages, {r['quota']}/{r['window_s']:g}s ({r['variant']})",
                f"{r['seconds']:.1f} s vs floor {r['floor_s']:.1f} s = x{r['ratio_to_floor']:.2f} "
                f"(last window opens at {fixed:.0f} s); {r['server']['throttled']} x 429",
                "≤ 1.1x floor",
                r["ratio_to_floor"] <= 1.1,
            )
        )
    return rows


# Gross-regression bounds for `--quick`: ratios only, never absolute times; generous on purpose (a few
# times the values measured when they were set), so that only a real regression trips them.
BOUNDS: dict[str, tuple[str, float]] = {
    "share_vs_sql": ("<=", 40.0),  # share by task (inferred) p50 / plain SQL p50; measured ~4-8 at 20k
    "cached_vs_uncached": ("<=", 0.75),  # cached p50 / uncached p50 of the same share; measured ~0.25
    # import rate / read_json rate; measured ~1.1 at 20k, 0.64 at 2M with DuckDB's reader; the record-by-record
    # reader alone gives 0.1-0.3, so this trips if clean dumps stop taking the fast path.
    "import_vs_read_json": (">=", 0.4),
    "ingest_vs_read_json": (">=", 0.04),  # ingest rate / read_json rate; measured ~0.3 at 20k, 0.085 at 2M
    "http_share_vs_healthz": (">=", 0.15),  # cached share req/s / healthz req/s at c=32; measured ~0.4
    "rate_limited_vs_floor": ("<=", 1.5),  # rate-limited ingest / pages÷rate; measured ~0.8-1.0
    # Ingest peak-RSS increase over the imported libraries, at N / at N/5: 1 if memory is flat, 5 if it
    # grows linearly with N; measured ~1.6 (DuckDB's buffer pool grows a little with the staged data).
    "ingest_rss_growth": ("<=", 3.0),
    "snapshot_vs_read_json": ("<=", 5.0),  # snapshot bytes / read_json table bytes; measured ~1.7
}


def checks(size_results: dict[int, dict[str, Any]], rate: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, r in size_results.items():
        q = r["queries"]["share_task_inferred"]
        values: dict[str, float] = {
            "share_vs_sql": r["queries"]["share_task_inferred"]["ratio_to_sql"],
            "cached_vs_uncached": q["cached"]["p50_ms"] / q["uncached"]["p50_ms"],
            "import_vs_read_json": r["import"]["models_per_s"] / r["read_json"]["models_per_s"],
            "ingest_vs_read_json": r["ingest"]["models_per_s"] / r["read_json"]["models_per_s"],
            "http_share_vs_healthz": r["http"]["cached_share"]["rps"] / r["http"]["healthz"]["rps"],
            "snapshot_vs_read_json": r["import"]["snapshot_bytes"] / r["read_json"]["db_bytes"],
        }
        if "ingest_probe" in r:
            big, small = r["ingest"], r["ingest_probe"]
            grow_big = big["peak_rss_bytes"] - big["rss_after_imports_bytes"]
            grow_small = max(small["peak_rss_bytes"] - small["rss_after_imports_bytes"], 1)
            values["ingest_rss_growth"] = grow_big / grow_small
        for name, value in values.items():
            op, bound = BOUNDS[name]
            ok = value <= bound if op == "<=" else value >= bound
            out.append({"check": name, "n": n, "value": round(value, 4), "bound": f"{op} {bound:g}", "ok": ok})
    for r in rate:
        op, bound = BOUNDS["rate_limited_vs_floor"]
        value = r["ratio_to_floor"]
        out.append(
            {"check": "rate_limited_vs_floor", "n": r["models"], "value": round(value, 4), "bound": f"{op} {bound:g}"}
            | {"ok": value <= bound}
        )
    return out


def render_table(rows: list[Row]) -> str:
    head = ("", "measure", "value", "target", "")
    cells = [head] + [
        (r.section, r.measure, r.value, r.target, "" if r.ok is None else ("PASS" if r.ok else "MISS")) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(c[j].ljust(widths[j]) for j in range(5)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| N | measure | value | target | |", "|---|---|---|---|---|"]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for r in rows:
        status = "" if r.ok is None else ("**PASS**" if r.ok else "**MISS**")
        lines.append(f"| {r.section} | {cell(r.measure)} | {cell(r.value)} | {cell(r.target)} | {status} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import duckdb

    def cmd(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(args, capture_output=True, text=True, check=False).stdout
        return ""

    lscpu = {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in cmd("lscpu").splitlines())
        if k.strip() in ("Architecture", "CPU(s)", "Model name", "Thread(s) per core", "Core(s) per socket")
    }
    product = ["ingest", "queries", "service", "hubcensus"]
    return {
        "git_commit": cmd("git", "-C", str(ROOT), "rev-parse", "HEAD").strip(),
        "git_product_changes": cmd("git", "-C", str(ROOT), "status", "--porcelain", "--", *product).strip(),
        "lscpu": lscpu,
        "free_h": cmd("free", "-h").strip(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


# ------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------


def bench_size(n: int, prof: Profile, source: Path, seed: int, profile_dir: Path | None) -> dict[str, Any]:
    r: dict[str, Any] = {"n": n}
    gz = DATA_DIR / f"hub-{n}-s{seed}.jsonl.gz"
    log(f"N={n:,}: generating {gz.name} (or reusing it)")
    r["generate"] = cached_or_generate(Options(n=n, seed=seed), source, gz)
    log(f"N={n:,}: preparing the served copy")
    prepare(gz)
    run_dir = DATA_DIR / f"run-{prof.name}-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if prof.rss_probe_fraction:
        probe_n = max(1000, int(n * prof.rss_probe_fraction))
        log(f"N={n:,}: ingest of {probe_n:,} (peak RSS probe)")
        r["ingest_probe"] = bench_ingest(gz, run_dir, probe_n, None)
    log(f"N={n:,}: ingest")
    r["ingest"] = bench_ingest(gz, run_dir, n, profile_dir)
    log(f"  {r['ingest']['models_per_s']:,.0f} models/s, peak RSS {r['ingest']['peak_rss_bytes'] / MiB:,.0f} MiB")
    log(f"N={n:,}: import")
    r["import"], snap = bench_import(gz, run_dir, profile_dir)
    log(f"  {r['import']['models_per_s']:,.0f} models/s, peak RSS {r['import']['peak_rss_bytes'] / MiB:,.0f} MiB")
    log(f"N={n:,}: DuckDB read_json")
    r["read_json"] = bench_read_json(gz, run_dir)
    log(f"  {r['read_json']['models_per_s']:,.0f} models/s")
    log(f"N={n:,}: building the store ({prof.older_snapshots} older snapshots)")
    store = run_dir / "store"
    ids = build_store(snap, store, prof.older_snapshots)
    log(f"N={n:,}: routes in-process vs plain SQL")
    r["queries"] = bench_queries(store, ids, prof)
    log(f"N={n:,}: HTTP at c=32, then the API's memory over {len(ids)} snapshots")
    r["http"] = bench_http(store, ids, run_dir, prof, profile_dir)
    log(
        f"  cached share {r['http']['cached_share']['rps']:,.0f} req/s "
        f"p99 {r['http']['cached_share']['p99_ms']:.1f} ms;"
        f" API peak RSS {r['http']['memory']['VmHWM'] / MiB:,.0f} MiB"
    )
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run that fails on a gross regression")
    parser.add_argument("--sizes", default=None, help="comma list of N (default: 100000,2000000; quick: 20000)")
    parser.add_argument("--name", default=None, help="results file name (default: full or quick)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the hub-real folder [%(default)s]")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--http-seconds", type=float, default=None)
    parser.add_argument("--skip-rate-limited", action="store_true")
    parser.add_argument("--check", action="store_true", help="also fail a full run on a gross regression")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles into benchmarks/profiles/")
    args = parser.parse_args(argv)
    prof = QUICK if args.quick else FULL
    if args.sizes:
        prof = replace(prof, sizes=tuple(int(s) for s in args.sizes.split(",")))
    if args.http_seconds:
        prof = replace(prof, http_seconds=args.http_seconds)
    name = args.name or prof.name
    profile_dir = BENCH_DIR / "profiles" / name if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    size_results: dict[int, dict[str, Any]] = {}
    for n in prof.sizes:
        size_results[n] = bench_size(n, prof, args.source, args.seed, profile_dir)
    rate: list[dict[str, Any]] = []
    if not args.skip_rate_limited:
        gz = DATA_DIR / f"hub-{prof.sizes[0]}-s{args.seed}.jsonl.gz"
        run_dir = DATA_DIR / f"run-{prof.name}-rate-limited"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        for variant in prof.rl_variants:
            log(f"rate-limited ingest ({variant}): {prof.rl_models:,} models, {prof.rl_quota}/{prof.rl_window:g}s")
            rate.append(bench_rate_limited(gz, run_dir, prof, variant))
            log(f"  {rate[-1]['seconds']:.1f} s vs floor {rate[-1]['floor_s']:.1f} s")
    rows = [row for n, r in size_results.items() for row in size_rows(n, r)] + rate_rows(rate)
    regression = checks(size_results, rate)
    result = {
        "name": name,
        "mode": prof.name,
        "started_at": started_at.isoformat(),
        "duration_s": round(time.perf_counter() - started, 1),
        # Other work on the machine skews every figure: the load averages at the end tell whether there was any.
        "load_average_at_end": os.getloadavg(),
        "machine": machine(),
        "profile": prof.__dict__,
        "sizes": {str(n): r for n, r in size_results.items()},
        "rate_limited": rate,
        "targets": [
            {"section": r.section, "measure": r.measure, "value": r.value, "target": r.target, "ok": r.ok} for r in rows
        ],
        "checks": regression,
        "markdown": markdown_table(rows),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(render_table(rows))
    print()
    print("gross-regression bounds (ratios):")
    for c in regression:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']:<24} N={c['n']:<9,} {c['value']:<10g} {c['bound']}")
    print(f"\nwrote {out.relative_to(ROOT)} in {result['duration_s']:.0f} s")
    failed = [c for c in regression if not c["ok"]]
    if failed and (prof.check or args.check):
        print(f"FAILED: {len(failed)} gross-regression bound(s): {', '.join(c['check'] for c in failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
