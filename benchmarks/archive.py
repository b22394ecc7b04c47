"""The archive's two targets (docs/PERFORMANCE.md, "The archive"), on a real SeaweedFS (`weed mini`) over loopback.

    python -m benchmarks.archive --n 2000000      # `make bench` runs it at 2,000,000 (and bench-quick at 20,000)

1. Upload overhead on the worker's run: the worker's own `run_once` ingests the generated Hub from a Hub-compatible
   server in another process (benchmarks/hubfile.py) and uploads the snapshot it published (files, then the
   manifest); upload seconds / publish seconds (the ingest, start to publication, `meta.duration_s`). Target ≤ 20 %.
   Also beside the import of the same file, the fastest way to publish it (a stricter denominator).
2. A new API node: `hubcensus serve` with HUBCENSUS_ARCHIVE and an empty data dir, started as a process, until its
   first correct answer of /v1/frameworks/share for the newest snapshot; against copying the same files
   (snapshot.duckdb, meta.json, summary.parquet) with boto3 alone (its default transfer settings) into a directory.
   Ratio target ≤ 1.5, on the node's time after it answers /healthz (its Python start-up, ~2 s, is reported apart).
Writes benchmarks/results/archive-<n>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.generate import DEFAULT_SOURCE, Options, cached_or_generate
from benchmarks.hubfile import prepare
from benchmarks.processes import ROOT, free_port, http_get, hub_server, log

DATA_DIR = ROOT / "benchmarks" / "data"
RESULTS_DIR = ROOT / "benchmarks" / "results"
OVERHEAD_TARGET = 0.20
NODE_RATIO_TARGET = 1.5


def copy_with_boto3(archive: Any, snapshot_id: str, target: Path) -> float:
    """Seconds to download a snapshot's three files with boto3 alone (default TransferConfig)."""
    import boto3

    client = boto3.session.Session().client("s3")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    started = time.perf_counter()
    for name in ("snapshot.duckdb", "meta.json", "summary.parquet"):
        key = archive.location.key(f"snapshots/{snapshot_id}/{name}")
        client.download_file(archive.location.bucket, key, str(target / name))
    return time.perf_counter() - started


def new_node(archive_url: str, snapshot_id: str, data_dir: Path, log_path: Path) -> dict[str, float]:
    """Start `hubcensus serve` on an empty data dir; seconds until /healthz, and until the first correct share."""
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HUBCENSUS_ARCHIVE": archive_url, "HUBCENSUS_CACHE_MB": "0"}
    cmd = [str(Path(sys.executable).parent / "hubcensus"), "serve", "--data-dir", str(data_dir), "--port", str(port)]
    started = time.perf_counter()
    healthy = None
    with log_path.open("ab") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=err, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"serve exited; see {log_path}"
            try:
                if healthy is None and http_get(f"{url}/healthz", timeout=5)[0] == 200:
                    healthy = time.perf_counter() - started
                if healthy is not None:
                    status, body = http_get(f"{url}/v1/frameworks/share?snapshot={snapshot_id}", timeout=120)
                    if status == 200 and json.loads(body)["snapshot"]["id"] == snapshot_id:
                        return {"healthz_s": healthy, "first_answer_s": time.perf_counter() - started}
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the node never answered")
    finally:
        proc.terminate()
        proc.wait(30)


def bench(n: int) -> dict[str, Any]:
    from hubcensus.ingest.dumps import import_dump
    from hubcensus.ingest.hub import HubOptions
    from hubcensus.ingest.worker import Retention, run_once
    from hubcensus.queries.archive import Archive
    from hubcensus.queries.control import read_status
    from tests.helpers import WeedServer

    gz = DATA_DIR / f"hub-{n}-s42.jsonl.gz"
    cached_or_generate(Options(n=n), DEFAULT_SOURCE, gz)
    plain, _ = prepare(gz)
    run_dir = DATA_DIR / f"run-archive-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    result: dict[str, Any] = {"n": n, "at": datetime.now(UTC).isoformat(), "load_before": os.getloadavg()}
    with WeedServer(run_dir / "weed") as weed:
        os.environ.update(weed.env)
        archive = Archive.from_url(weed.url("bench"))
        log(f"archive bench, N={n:,}: the worker's run (ingest + upload)")
        with hub_server(plain, run_dir / "hubfile.log", "--max-records", str(n)) as (_, url):
            meta = run_once(
                run_dir / "worker", HubOptions(endpoint=url, max_rate=0), retention=Retention(), archive=archive
            )
        assert meta is not None
        upload = read_status(run_dir / "worker")["archive"]["last_upload"]
        result["worker"] = {
            "publish_s": meta.duration_s,
            "upload_s": upload["seconds"],
            "bytes": upload["bytes"],
            "overhead": upload["seconds"] / meta.duration_s,
        }
        log("import of the same file (the fastest publish)")
        imported = import_dump(gz, run_dir / "import", taken_at=meta.taken_at, max_bad_share=0.05)
        result["worker"]["import_s"] = imported.duration_s
        result["worker"]["overhead_vs_import"] = upload["seconds"] / imported.duration_s

        log("a new node against boto3 alone")
        copies = [copy_with_boto3(archive, meta.id, run_dir / "copy")]
        node = new_node(archive.url, meta.id, run_dir / "node", run_dir / "node.log")
        copies.append(copy_with_boto3(archive, meta.id, run_dir / "copy"))
        copy_s = sum(copies) / len(copies)
        result["node"] = {
            **node,
            "copy_s": copy_s,
            "copies_s": copies,
            "after_healthz_s": node["first_answer_s"] - node["healthz_s"],
            "ratio": (node["first_answer_s"] - node["healthz_s"]) / copy_s,
            "ratio_from_process_start": node["first_answer_s"] / copy_s,
        }
    result["load_after"] = os.getloadavg()
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> str:
    w, node = result["worker"], result["node"]
    mib = w["bytes"] / 2**20
    rows = [
        ("upload / publish (the worker's run)", f"{w['upload_s']:.2f} s / {w['publish_s']:.1f} s = {w['overhead']:.1%}",
         f"≤ {OVERHEAD_TARGET:.0%}", w["overhead"] <= OVERHEAD_TARGET),
        ("  upload / import of the same file",
         f"{w['upload_s']:.2f} s / {w['import_s']:.1f} s = {w['overhead_vs_import']:.1%}", "", None),
        ("  uploaded", f"{mib:,.1f} MiB, {mib / w['upload_s']:,.0f} MiB/s (sha256 included)", "", None),
        ("new node: first correct share after /healthz", f"{node['after_healthz_s']:.2f} s", "", None),
        ("  boto3 alone, same files (mean of 2)", f"{node['copy_s']:.2f} s", "", None),
        ("  ratio", f"{node['ratio']:.2f}", f"≤ {NODE_RATIO_TARGET}", node["ratio"] <= NODE_RATIO_TARGET),
        ("  from process start (healthz at)", f"{node['first_answer_s']:.2f} s ({node['healthz_s']:.2f} s)", "", None),
    ]  # fmt: skip
    lines = ["| N | measure | value | target | |", "|---|---|---|---|---|"]
    for label, value, target, ok in rows:
        verdict = "" if ok is None else ("**PASS**" if ok else "**MISS**")
        lines.append(f"| {result['n']:,} | {label} | {value} | {target} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    result = bench(args.n)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"archive-{args.n}.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    ok = result["worker"]["overhead"] <= OVERHEAD_TARGET and result["node"]["ratio"] <= NODE_RATIO_TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
