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
   (cache_mb=0) p50/p99 and cached p50, beside the equivalent plain SQL on the same snapshot file;
5. HTTP at concurrency 32 over loopback: `hubcensus serve` (uvicorn) in one process, the load generator
   (benchmarks/loadgen.py) in another, on a cached query (and on /healthz, the floor of the stack);
6. the API process's peak RSS with the snapshot plus ten older ones, after querying each;
8. a backfill (`hubcensus backfill`'s code, ranged reads) of the generated Hub as one hub-stats-style Parquet file
   served by the loopback test Hub (tests/hubdatasets.py), beside a full download then import of it and DuckDB's
   own `read_parquet` of the file into a file database: models/s, their ratio, peak RSS (benchmarks/backfill.py);
9. at the largest N: a store of 100 weekly snapshots growing from N/2 to N with weekly churn
   (benchmarks/weekly.py): history across all of them, uncached, the API's peak RSS, disk per snapshot;

and once per run: 7. ingest under a server-enforced rate limit (fixed windows, 429 + RateLimit), against the
floor pages ÷ rate. Prints a table with PASS/MISS per target and writes benchmarks/results/<name>.json.

Sections 1-3 and 5-7 are here; the modes (full, quick) are in benchmarks/modes.py, the processes it starts in
benchmarks/processes.py, the query store in benchmarks/store.py, section 4 in benchmarks/routes.py, section 8 in
benchmarks/backfill.py, section 9 in benchmarks/weekly.py, and the table, the bounds and the machine in
benchmarks/report.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.backfill import bench_backfill
from benchmarks.generate import DEFAULT_SOURCE, Options, cached_or_generate
from benchmarks.hubfile import prepare
from benchmarks.modes import FULL, QUICK, Profile
from benchmarks.processes import ROOT, api_server, http_get, hub_server, log, proc_memory, py_spy, run_child
from benchmarks.report import (
    MiB,
    checks,
    machine,
    markdown_table,
    rate_rows,
    render_table,
    size_rows,
    weekly_rows,
)
from benchmarks.routes import bench_queries
from benchmarks.store import build_store
from benchmarks.weekly import bench_weekly
from hubcensus.queries.datadir import DB_NAME, Layout

BENCH_DIR = ROOT / "benchmarks"
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"


def snapshot_dirs(data_dir: Path) -> list[Path]:
    return sorted(Layout(data_dir).snapshots.iterdir())


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
    result["snapshot_bytes"] = (snap / DB_NAME).stat().st_size
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
    result["snapshot_bytes"] = (snap / DB_NAME).stat().st_size
    result["snapshot_used_bytes"] = _used_bytes(snap / DB_NAME)
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
    log(f"N={n:,}: backfill of the hub-stats-style Parquet file from the loopback Hub, vs DuckDB read_parquet")
    r["backfill"] = bench_backfill(gz, run_dir)
    b = r["backfill"]
    log(
        f"  ranged {b['ranged']['models_per_s']:,.0f} models/s ({b['ranged']['vs_read_parquet']:.0%} of read_parquet), "
        f"peak RSS {b['ranged']['peak_rss_bytes'] / MiB:,.0f} MiB; full download then import "
        f"{b['download']['models_per_s']:,.0f} models/s, peak RSS {b['download']['peak_rss_bytes'] / MiB:,.0f} MiB"
    )
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
    if prof.weekly_snapshots and n == max(prof.sizes):
        log(f"N={n:,}: history across {prof.weekly_snapshots} weekly snapshots ({n // 2:,} -> {n:,} models)")
        r["weekly"] = bench_weekly(Layout(store).db(ids[0]), run_dir, prof.weekly_snapshots)
    shutil.rmtree(store, ignore_errors=True)
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
    rows = [row for n, r in size_results.items() for row in size_rows(n, r)]
    rows += [row for n, r in size_results.items() if "weekly" in r for row in weekly_rows(n, r["weekly"])]
    rows += rate_rows(rate)
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
