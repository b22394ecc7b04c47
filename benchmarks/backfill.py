"""Backfill of one hub-stats-style Parquet file from the loopback test Hub, against DuckDB's own `read_parquet` of the
same file into a file database, in the same run (docs/PERFORMANCE.md, "Backfill").

The file is the generated Hub (benchmarks/generate.py, real records resampled) in hub-stats' columns
(tests/hubdatasets.py:write_hubstats), row groups of 1,048,576 rows (pyarrow's default, as files written by
`pandas.to_parquet` have them), cached in benchmarks/data/. It is served as one week of a weekly archive by
`python -m tests.hubdatasets` in its own process; `hubcensus backfill` runs in another (benchmarks/child.py),
once per reading strategy: ranged reads of the needed columns (`--read ranged`, the default) and the whole file
downloaded first (`--read download`). DuckDB's `CREATE TABLE AS SELECT * FROM read_parquet(file)` runs in a third.

    python -m benchmarks.backfill --n 100000        # this section alone, for one N (the cached generated Hub)
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.hubfile import prepare
from benchmarks.processes import PY, background, log, run_child
from benchmarks.processes import _url_from_stdout as url_from_stdout
from benchmarks.report import MiB

REPO = "hfmlsoc/hub_weekly_snapshots"
WEEK = date(2025, 6, 4)  # every hub-stats column there (downloadsAllTime, trendingScore, gated)
ROW_GROUP_ROWS = 1_048_576
READS = ("ranged", "download")


def hubstats_parquet(gz: Path) -> Path:
    """The generated Hub `gz` as hub-stats' models.parquet, built once beside it."""
    from tests.hubdatasets import write_hubstats

    out = gz.with_name(gz.name.removesuffix(".jsonl.gz") + "-hubstats.parquet")
    if out.exists() and out.stat().st_mtime >= gz.stat().st_mtime:
        return out
    plain, _ = prepare(gz)
    part = out.with_name(out.name + ".part")
    write_hubstats(plain, part, WEEK, row_group_size=ROW_GROUP_ROWS)
    part.rename(out)
    return out


def bench_backfill(gz: Path, run_dir: Path, reads: tuple[str, ...] = READS) -> dict[str, Any]:
    """Each reading strategy's backfill of the file, and DuckDB's read_parquet of it; their rates and peak RSS."""
    parquet = hubstats_parquet(gz)
    out: dict[str, Any] = {"file_bytes": parquet.stat().st_size}
    child_log = run_dir / "child.log"
    cmd = [PY, "-m", "tests.hubdatasets", str(parquet), "--repo", REPO, "--week", WEEK.isoformat()]
    with background(cmd, run_dir / "hubdatasets.log", url_from_stdout) as (_, url):
        for read in reads:
            target = run_dir / f"backfill-{read}"
            shutil.rmtree(target, ignore_errors=True)
            args = ["benchmarks.child", "backfill", "--endpoint", url, "--repo", REPO, "--data-dir", str(target)]
            result = run_child([*args, "--read", read], child_log)
            result["models_per_s"] = result["models"] / result["seconds"]
            out[read] = result
            shutil.rmtree(target, ignore_errors=True)
    db = run_dir / "read_parquet.duckdb"
    raw = run_child(["benchmarks.child", "read_parquet", "--path", str(parquet), "--db", str(db)], child_log)
    raw["models_per_s"] = raw["models"] / raw["seconds"]
    db.unlink(missing_ok=True)
    out["read_parquet"] = raw
    for read in reads:
        out[read]["vs_read_parquet"] = out[read]["models_per_s"] / raw["models_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench import DATA_DIR

    parser = argparse.ArgumentParser(prog="python -m benchmarks.backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="the generated Hub's size [%(default)s]")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--read", choices=READS, action="append", help="only this strategy (repeatable)")
    args = parser.parse_args(argv)
    gz = DATA_DIR / f"hub-{args.n}-s{args.seed}.jsonl.gz"
    if not gz.exists():
        parser.error(f"{gz} is missing: run `python -m benchmarks.generate` (or `make bench`) first")
    run_dir = DATA_DIR / f"run-backfill-{args.n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log(f"N={args.n:,}: backfill of the hub-stats-style file vs DuckDB read_parquet")
    result = bench_backfill(gz, run_dir, tuple(args.read or READS))
    for read in args.read or READS:
        r = result[read]
        log(
            f"  {read}: {r['models_per_s']:,.0f} models/s ({r['seconds']:.1f} s, fetch {r['fetch_s']:.1f} s), "
            f"{r['vs_read_parquet']:.0%} of read_parquet, peak RSS {r['peak_rss_bytes'] / MiB:,.0f} MiB"
        )
    raw = result["read_parquet"]
    log(f"  read_parquet: {raw['models_per_s']:,.0f} models/s ({raw['seconds']:.1f} s)")
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
