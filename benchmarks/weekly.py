"""History across a store of years: 100 weekly snapshots growing from N/2 to N models, with modelled weekly churn,
built by SQL from one imported snapshot; then `/v1/frameworks/history` across all of them, uncached, from a real
`hubcensus serve` process, its peak RSS, and the disk each snapshot takes.

    python -m benchmarks.weekly --n 2000000          # this section alone (imports the generated Hub if need be)

`make bench` runs it too (benchmarks/bench.py), on the snapshot it imported. The store is deleted at the end:
100 snapshots of 1-2 million models are about 10 GB.

The churn, per model of the source snapshot (a hash of its id decides, so every run builds the same store):
- born: present from week 0 if its hash falls in the first half, else from a week spread evenly over the run,
  so the store grows linearly from half the source to all of it (new models every week);
- deleted: 5 % of the models are removed at a week of their own and stay gone (deleted repositories);
- changed: 2 % of the models lack PyTorch in every method before a week of their own, and have it from then
  on (a framework added to a repository): the shares move from week to week.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.loadgen import percentile
from benchmarks.processes import ROOT, api_server, http_get, log, proc_memory
from benchmarks.store import publish_derived
from hubcensus.queries.datadir import (
    DB_NAME,
    Layout,
    SnapshotMeta,
    new_snapshot_id,
    read_meta,
    work_dir,
)

WEEKS = 100
HISTORY = "/v1/frameworks/history"
# Without the pytorch bit (1): the masks of a model before its framework change.
_NO_PYTORCH = 254

_MASKS = ("fw_tags", "fw_files", "fw_inferred", "fw_loadable")
_BEFORE_CHANGE = ",\n    ".join(
    f"CASE WHEN changes AND $week < changed_week THEN ({c} & {_NO_PYTORCH})::UTINYINT ELSE {c} END AS {c}"
    for c in _MASKS
)
_WEEK_SQL = f"""
CREATE TABLE models AS
WITH m AS (
    SELECT *,
        hash(id) % 1000000 / 1e6 AS born_u,
        hash(id || 'd') % 100 < 5 AS deletable, hash(id || 'dw') % $weeks AS deleted_week,
        hash(id || 'c') % 100 < 2 AS changes, hash(id || 'cw') % $weeks AS changed_week
    FROM s.models
)
SELECT * EXCLUDE (born_u, deletable, deleted_week, changes, changed_week) REPLACE (
    {_BEFORE_CHANGE}
)
FROM m
WHERE born_u < 0.5 + 0.5 * $week / ($weeks - 1) AND NOT (deletable AND $week >= deleted_week)
"""


def build_weekly_store(source_db: Path, store: Path, weeks: int = WEEKS) -> list[SnapshotMeta]:
    """`store` with `weeks` weekly snapshots derived from the snapshot file `source_db` (the newest dated as the
    source, the others a week apart before it), each written, summarized, sealed and published as the product's
    writer does. Returns their metas, oldest first."""
    import duckdb

    from hubcensus.queries.sql import sql_path

    shutil.rmtree(store, ignore_errors=True)
    latest = read_meta(source_db.parent)
    metas = []
    for week in range(weeks):
        started = time.perf_counter()
        taken_at = latest.taken_at - timedelta(weeks=weeks - 1 - week)
        sid = new_snapshot_id(taken_at)
        with work_dir(store, sid) as build:
            con = duckdb.connect(str(build / DB_NAME))
            con.execute(f"ATTACH {sql_path(source_db)} AS s (READ_ONLY)")
            con.execute(_WEEK_SQL, {"week": week, "weeks": weeks})
            meta = publish_derived(con, store, build, sid, taken_at, "benchmark: weekly history", started)
        metas.append(meta)
        if week % 10 == 0 or week == weeks - 1:
            log(f"  week {week + 1}/{weeks}: {meta.models:,} models in {time.perf_counter() - started:.1f} s")
    return metas


def _timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, body = http_get(url)
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status} {body[:300]!r}")
    return time.perf_counter() - started, body


def _ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms)}


def bench_weekly(source_db: Path, run_dir: Path, weeks: int = WEEKS, reps: int = 30) -> dict[str, Any]:
    """Build the weekly store, measure it, delete it."""
    store = run_dir / "weekly-store"
    started = time.perf_counter()
    metas = build_weekly_store(source_db, store, weeks)
    r: dict[str, Any] = {"weeks": weeks, "build_s": time.perf_counter() - started}
    layout = Layout(store)
    sizes = []
    for m in metas:
        files = [p for p in layout.snapshot(m.id).iterdir() if p.is_file()]
        sizes.append({"models": m.models, "bytes": sum(p.stat().st_size for p in files)})
    summary_bytes = [layout.summary(m.id).stat().st_size for m in metas]
    newest = sizes[-1]
    r["disk"] = {
        "total_bytes": sum(s["bytes"] for s in sizes),
        "mean_bytes": sum(s["bytes"] for s in sizes) / len(sizes),
        "first": sizes[0],
        "last": newest,
        "bytes_per_model": newest["bytes"] / newest["models"],
        "summary_mean_bytes": sum(summary_bytes) / len(summary_bytes),
    }
    r["models"] = {"first": metas[0].models, "last": metas[-1].models}
    # What a year costs at the source's size (the whole Hub, at 2M), at the newest snapshot's bytes per model.
    r["year"] = year_costs(r["disk"]["bytes_per_model"], read_meta(source_db.parent).models)
    log(
        f"  {weeks} snapshots, {metas[0].models:,} -> {metas[-1].models:,} models, "
        f"{r['disk']['total_bytes'] / 1e9:.1f} GB ({r['disk']['bytes_per_model']:.0f} B/model at the newest)"
    )
    # The API as deployed, with the answer cache off: every history below is computed.
    with api_server(store, run_dir / "api-weekly.log", env={"HUBCENSUS_CACHE_MB": "0"}) as (proc, url):
        first, body = _timed_get(url + HISTORY)
        answer = json.loads(body)
        if len(answer["rows"]) != weeks or answer["computed_from"] != "summaries":
            raise RuntimeError(f"history answered {len(answer['rows'])} rows from {answer['computed_from']}")
        r["history_first_ms"] = first * 1000  # loads the 100 summaries from their files
        r["history"] = _ms([_timed_get(url + HISTORY)[0] for _ in range(reps)])
        by_task = HISTORY + "?by=pipeline_tag"
        r["history_by_task"] = _ms([_timed_get(url + by_task)[0] for _ in range(max(5, reps // 3))])
        r["snapshots_list"] = _ms([_timed_get(url + "/v1/snapshots")[0] for _ in range(reps)])
        # The share on every 5th snapshot: more snapshots than the store keeps attached (16).
        r["shares"] = _ms([_timed_get(f"{url}/v1/frameworks/share?snapshot={m.id}")[0] for m in metas[::5]])
        r["memory"] = proc_memory(proc.pid)
        # A filter a summary cannot answer: every model table is scanned (one request, for the ratio).
        fallback, body = _timed_get(url + HISTORY + "?min_downloads=0")
        if json.loads(body)["computed_from"] != "models":
            raise RuntimeError("min_downloads was answered from summaries")
        r["history_models_ms"] = fallback * 1000
        r["memory_after_fallback"] = proc_memory(proc.pid)
    log(
        f"  history across {weeks}: p50 {r['history']['p50_ms']:.1f} ms (first {r['history_first_ms']:.0f} ms, "
        f"from the model tables {r['history_models_ms']:.0f} ms); API peak RSS {r['memory']['VmHWM'] / 2**20:,.0f} MiB"
    )
    shutil.rmtree(store, ignore_errors=True)
    return r


def year_costs(bytes_per_model: float, models: int) -> dict[str, float]:
    """Disk for a year of weekly and of daily snapshots of `models` models each."""
    per_snapshot = bytes_per_model * models
    return {"snapshot": per_snapshot, "weekly_year": 52 * per_snapshot, "daily_year": 365 * per_snapshot}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench import DATA_DIR, RESULTS_DIR, bench_import
    from benchmarks.generate import DEFAULT_SOURCE, Options, cached_or_generate

    parser = argparse.ArgumentParser(prog="python -m benchmarks.weekly", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2_000_000, help="models at the newest week [%(default)s]")
    parser.add_argument("--weeks", type=int, default=WEEKS)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    gz = DATA_DIR / f"hub-{args.n}-s{args.seed}.jsonl.gz"
    cached_or_generate(Options(n=args.n, seed=args.seed), DEFAULT_SOURCE, gz)
    run_dir = DATA_DIR / f"run-weekly-{args.n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log(f"N={args.n:,}: import")
    _, snap = bench_import(gz, run_dir, None)
    log(f"N={args.n:,}: {args.weeks} weekly snapshots")
    r = bench_weekly(snap / DB_NAME, run_dir, args.weeks)
    shutil.rmtree(run_dir, ignore_errors=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"weekly-{args.n}.json"
    out.write_text(json.dumps(r, indent=2) + "\n")
    from benchmarks.report import render_table, weekly_rows

    print(render_table(weekly_rows(args.n, r)))
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
