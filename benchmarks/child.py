"""One measured job in its own process, so its peak RSS is its own: ingest, import, or DuckDB's read_json.

Prints one JSON line on stdout: `seconds` (the job itself, after imports), `models`, `peak_rss_bytes`
(the process's high-water mark, `ru_maxrss`), and what the job returned.

    python -m benchmarks.child ingest --endpoint URL --data-dir D [--page-size 1000]
    python -m benchmarks.child import --path F --data-dir D
    python -m benchmarks.child read_json --path F --db FILE
    python -m benchmarks.child backfill --endpoint URL --repo R --data-dir D [--read ranged|download]
    python -m benchmarks.child read_parquet --path F --db FILE
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def peak_rss() -> int:
    """This process's peak RSS: VmHWM, which starts afresh at exec.

    Not `ru_maxrss`: Linux carries the high-water mark of the forking parent over exec into it, so a child
    started by a big parent would report the parent's size.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PhaseMemory:
    """Samples this process's RSS every 50 ms and keeps the peak of each phase: streaming, then publish.

    The writer's `publish` (the final `CREATE TABLE models AS ...`) is wrapped, from here, to mark the phase
    and time it: the product code is not changed, only observed.
    """

    def __init__(self) -> None:
        self.phase = "stream"
        self.peaks: dict[str, int] = {"stream": 0, "publish": 0}
        self.publish_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peaks[self.phase] = max(self.peaks[self.phase], self._rss())

    def __enter__(self) -> PhaseMemory:
        from hubcensus.ingest.writer import SnapshotWriter

        original = SnapshotWriter.publish
        monitor = self

        def publish(writer: SnapshotWriter) -> Any:
            monitor.peaks["stream"] = max(monitor.peaks["stream"], monitor._rss())
            monitor.phase = "publish"
            started = time.perf_counter()
            try:
                return original(writer)
            finally:
                monitor.publish_s = time.perf_counter() - started

        setattr(SnapshotWriter, "publish", publish)  # noqa: B010 (a method replaced on the class, on purpose)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, Any]:
        return {
            "peak_rss_stream_bytes": self.peaks["stream"],
            "peak_rss_publish_bytes": self.peaks["publish"],
            "publish_s": self.publish_s,
        }


def run_ingest(endpoint: str, data_dir: Path, page_size: int) -> dict[str, Any]:
    from hubcensus.ingest.hub import HubOptions, ingest_hub

    rss_before = peak_rss()
    with PhaseMemory() as memory:
        started = time.perf_counter()
        meta = ingest_hub(data_dir, options=HubOptions(endpoint=endpoint, max_rate=0, page_size=page_size))
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "models": meta.models,
        "snapshot": meta.id,
        "rss_after_imports_bytes": rss_before,
        **memory.report(),
    }


def run_import(path: Path, data_dir: Path) -> dict[str, Any]:
    from hubcensus.ingest.dumps import import_dump

    rss_before = peak_rss()
    with PhaseMemory() as memory:
        started = time.perf_counter()
        meta = import_dump(path, data_dir, taken_at=datetime.now(UTC), max_bad_share=0.0)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "models": meta.models,
        "snapshot": meta.id,
        "bad_records": meta.bad_records,
        "rss_after_imports_bytes": rss_before,
        **memory.report(),
    }


def run_read_json(path: Path, db: Path) -> dict[str, Any]:
    import duckdb

    db.unlink(missing_ok=True)
    rss_before = peak_rss()
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE models AS SELECT * FROM read_json(?)", [str(path)])
    con.execute("CHECKPOINT")
    models = int(con.execute("SELECT count(*) FROM models").fetchall()[0][0])
    con.close()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "models": models,
        "db_bytes": db.stat().st_size,
        "rss_after_imports_bytes": rss_before,
    }


def run_backfill(endpoint: str, repo: str, data_dir: Path, read: str) -> dict[str, Any]:
    """`read` "ranged": the product's backfill. "download": the strategy it was measured against, the whole file
    downloaded with `hf_hub_download`, then imported as `hubcensus import` would."""
    from huggingface_hub import HfApi, hf_hub_download

    from hubcensus.ingest.archives import WEEKLY_FILE
    from hubcensus.ingest.backfill import backfill
    from hubcensus.ingest.dumps import import_dump
    from hubcensus.ingest.hub import HubOptions

    rss_before = peak_rss()
    with PhaseMemory() as memory:
        started = time.perf_counter()
        if read == "ranged":
            result = backfill([repo], data_dir, options=HubOptions(endpoint=endpoint, max_rate=0))
            if result.failed or len(result.published) != 1:
                raise RuntimeError(f"backfill: {result}")
            (meta,) = result.published
            fetch_s = meta.params["backfill"]["fetch_s"]
        else:
            api = HfApi(endpoint=endpoint, token=False)
            files = [f for f in api.list_repo_files(repo, repo_type="dataset") if WEEKLY_FILE.match(f)]
            path = Path(hf_hub_download(repo, files[0], repo_type="dataset", local_dir=data_dir / "download",
                                        endpoint=endpoint, token=False))  # fmt: skip
            fetch_s = time.perf_counter() - started
            day = datetime.fromisoformat(files[0].split("/")[1]).replace(tzinfo=UTC)
            meta = import_dump(path, data_dir, taken_at=day, max_bad_share=0.0)
        seconds = time.perf_counter() - started
    return {
        "fetch_s": fetch_s,
        "seconds": seconds,
        "models": meta.models,
        "snapshot": meta.id,
        "reader": meta.reader,
        "rss_after_imports_bytes": rss_before,
        **memory.report(),
    }


def run_read_parquet(path: Path, db: Path) -> dict[str, Any]:
    import duckdb

    db.unlink(missing_ok=True)
    rss_before = peak_rss()
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE models AS SELECT * FROM read_parquet(?)", [str(path)])
    con.execute("CHECKPOINT")
    models = int(con.execute("SELECT count(*) FROM models").fetchall()[0][0])
    con.close()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "models": models, "db_bytes": db.stat().st_size, "rss_after_imports_bytes": rss_before}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("ingest")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--page-size", type=int, default=1000)
    p = sub.add_parser("import")
    p.add_argument("--path", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    for job in ("read_json", "read_parquet"):
        p = sub.add_parser(job)
        p.add_argument("--path", type=Path, required=True)
        p.add_argument("--db", type=Path, required=True)
    p = sub.add_parser("backfill")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--read", choices=["ranged", "download"], default="ranged")
    args = parser.parse_args(argv)
    if args.job == "ingest":
        result = run_ingest(args.endpoint, args.data_dir, args.page_size)
    elif args.job == "import":
        result = run_import(args.path, args.data_dir)
    elif args.job == "backfill":
        result = run_backfill(args.endpoint, args.repo, args.data_dir, args.read)
    elif args.job == "read_parquet":
        result = run_read_parquet(args.path, args.db)
    else:
        result = run_read_json(args.path, args.db)
    result["peak_rss_bytes"] = peak_rss()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
