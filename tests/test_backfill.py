"""`hubcensus backfill`: dated snapshots from Hub archives served by the local Hub (tests/hubdatasets.py), built from
real records in hub-stats' columns, and from the RIMEL folder of dated list responses. Real processes, real HTTP,
the real huggingface_hub client."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, hf_hub_download, set_client_factory
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils._http import default_client_factory

from hubcensus.ingest.archives import Version
from hubcensus.ingest.backfill import backfill, select
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.hub import HubOptions
from hubcensus.queries.control import read_status, write_status
from hubcensus.queries.datadir import Layout
from hubcensus.queries.store import SnapshotStore
from tests.data import BUNDLED, FIXTURES, LIST_2024, LIST_2025, read_jsonl_gz
from tests.helpers import hubcensus, hubcensus_serve
from tests.hubdatasets import DatasetRepo, hubstats_bytes, resolve_url
from tests.hubserver import HubServer, RequestInfo, Response, json_response, load_records

WEEKLY = "hfmlsoc/hub_weekly_snapshots"
HUBSTATS = "cfahlgren1/hub-stats"
RIMEL = FIXTURES / "rimel_lists"
# Four weeks of real records in hub-stats' columns: the 2022 crawl (before trendingScore and downloadsAllTime),
# the 2024 and 2025 RIMEL lists, and the rich sample (with `gated`).
WEEKS = {
    date(2024, 7, 24): ("crawl", ["downloadsAllTime", "trendingScore", "gated"]),
    date(2024, 10, 2): ("list2024", ["downloadsAllTime", "gated"]),
    date(2025, 3, 5): ("list2025", ["gated"]),
    date(2025, 6, 4): ("sample", []),
}


@pytest.fixture(autouse=True)
def default_http_client() -> Iterator[None]:
    """A backfill run in this process configures huggingface_hub's one HTTP client for its endpoint (timeouts, pacing,
    the token kept to that endpoint): give the next test the client's default back."""
    yield
    set_client_factory(default_client_factory)


@pytest.fixture(scope="module")
def week_files() -> dict[date, bytes]:
    """Each week's models.parquet, hub-stats style, from real records (row groups of 500: several per file)."""
    sources = {
        "crawl": read_jsonl_gz(BUNDLED)[:2000],
        "list2024": load_records(LIST_2024),
        "list2025": load_records(LIST_2025),
        "sample": read_jsonl_gz(FIXTURES / "sample_300.jsonl.gz"),
    }
    return {week: hubstats_bytes(sources[name], week, row_group_size=500) for week, (name, _) in WEEKS.items()}


def weekly_repo(files: dict[date, bytes], weeks: list[date] | None = None) -> DatasetRepo:
    """The weekly archive: a commit per week adding its folder (and the other kinds, which are not read)."""
    repo = DatasetRepo(WEEKLY)
    repo.commit(datetime(2024, 7, 1, tzinfo=UTC), {"README.md": b"# weekly snapshots\n"}, title="init")
    for week in weeks or sorted(files):
        day = week.isoformat()
        repo.commit(
            datetime.combine(week, datetime.min.time(), UTC),
            {f"models/{day}/models.parquet": files[week], f"datasets/{day}/datasets.parquet": b"PAR1-not-read"},
            title=f"week {day}",
        )
    return repo


def run(data_dir: Path, hub: HubServer, *args: str) -> subprocess.CompletedProcess[str]:
    return hubcensus("backfill", *args, "--endpoint", hub.url, "--data-dir", str(data_dir), "--max-rate", "0")


def metas(data_dir: Path) -> list[Any]:
    return sorted(SnapshotStore(data_dir).snapshots(), key=lambda m: m.taken_at)


def models_rows(db: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT * FROM models ORDER BY id").fetchall()
    finally:
        con.close()


def resolves(hub: HubServer, method: str = "GET") -> list[RequestInfo]:
    return [r for r in hub.requests if "/resolve/" in r.path and r.method == method]


def test_weekly_archive_gives_a_snapshot_per_week(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    repo = weekly_repo(week_files)
    with HubServer([], datasets={WEEKLY: repo}) as hub:
        done = run(tmp_path, hub, WEEKLY)
    assert done.returncode == 0, done.stderr
    assert "backfill: 4 published, 0 already there, 0 failed, of 4 versions" in done.stdout
    assert "[1/4] hf://datasets/hfmlsoc/hub_weekly_snapshots@" in done.stderr  # progress, per file
    published = metas(tmp_path)
    sha = repo.commits[-1].sha
    assert [m.taken_at.date() for m in published] == sorted(WEEKS)
    for meta in published:
        week = meta.taken_at.date()
        path = f"models/{week.isoformat()}/models.parquet"
        assert meta.source == f"hf://datasets/{WEEKLY}@{sha}/{path}"
        assert meta.params["missing_columns"] == WEEKS[week][1]
        assert meta.params["backfill"]["key"] == f"hf://datasets/{WEEKLY}/{path}"
        assert "cardData" not in meta.params["read_columns"] and "siblings" in meta.params["read_columns"]
        # The same snapshot as `hubcensus import` of the whole file.
        local = tmp_path / f"{week}.parquet"
        local.write_bytes(week_files[week])
        alone = import_dump(local, tmp_path / "alone", taken_at=meta.taken_at, max_bad_share=0.05)
        assert models_rows(Layout(tmp_path).db(meta.id)) == models_rows(Layout(tmp_path / "alone").db(alone.id))
        assert (meta.models, meta.reader) == (alone.models, alone.reader)
    assert published[0].models == 2000 and published[2].models == 3180


def test_a_second_run_imports_only_what_is_missing(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    weeks = sorted(week_files)
    repo = weekly_repo(week_files, weeks[:2])
    with HubServer([], datasets={WEEKLY: repo}) as hub:
        assert run(tmp_path, hub, WEEKLY).returncode == 0
        first = {m.id for m in metas(tmp_path)}
        again = run(tmp_path, hub, WEEKLY)
        assert again.returncode == 0, again.stderr
        assert "backfill: 0 published, 2 already there" in again.stdout
        assert {m.id for m in metas(tmp_path)} == first
        # Two more weeks appear upstream: only they are read.
        for week in weeks[2:]:
            repo.commit(
                datetime.combine(week, datetime.min.time(), UTC),
                {f"models/{week}/models.parquet": week_files[week]},
            )
        hub.requests.clear()
        third = run(tmp_path, hub, WEEKLY)
        assert third.returncode == 0, third.stderr
        assert "backfill: 2 published, 2 already there" in third.stdout
        read = {r.path.rsplit("/", 2)[-2] for r in resolves(hub)}
    assert read == {w.isoformat() for w in weeks[2:]}
    assert len(metas(tmp_path)) == 4 and first < {m.id for m in metas(tmp_path)}


def test_ranged_reads_fetch_only_the_columns_a_snapshot_needs(tmp_path: Path) -> None:
    # Real records with a large card (incompressible text in cardData, a column no snapshot reads).
    records = load_records(LIST_2025)[:1000]
    for i, record in enumerate(records):
        record["cardData"] = {"text": os.urandom(12_000).hex()}
        record["siblings"] = [{"rfilename": f"model-{i}.safetensors"}]
    data = hubstats_bytes(records, date(2025, 3, 5), row_group_size=250)
    repo = DatasetRepo(WEEKLY)
    repo.commit(datetime(2025, 3, 6, tzinfo=UTC), {"models/2025-03-05/models.parquet": data})
    with HubServer([], datasets={WEEKLY: repo}) as hub:
        done = run(tmp_path, hub, WEEKLY)
        served = sum(int(r.headers["range"].split("-")[1]) - int(r.headers["range"][6:].split("-")[0]) + 1
                     for r in resolves(hub))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (meta,) = metas(tmp_path)
    assert meta.models == 1000
    assert len(data) > 20_000_000 and served < len(data) / 4, (served, len(data))
    # The same snapshot as `hubcensus import` of the whole file.
    local = tmp_path / "models.parquet"
    local.write_bytes(data)
    alone = import_dump(local, tmp_path / "alone", taken_at=meta.taken_at, max_bad_share=0.05)
    assert models_rows(Layout(tmp_path / "alone").db(alone.id)) == models_rows(Layout(tmp_path).db(meta.id))


def test_a_large_row_group_is_read_a_buffer_at_a_time(tmp_path: Path) -> None:
    # A row group whose `siblings` chunk is over 9 MB (incompressible names): no request, and so no buffer,
    # holds it whole; hub-stats' row groups may hold a million rows.
    records = load_records(LIST_2025)[:1000]
    for record in records:
        record["siblings"] = [{"rfilename": os.urandom(20).hex() + ".safetensors"} for _ in range(400)]
    # Written by pyarrow (as pandas does: 1 MB pages), one row group.
    table = pq.read_table(io.BytesIO(hubstats_bytes(records, date(2025, 3, 5), row_group_size=1000)))
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1000)
    data = sink.getvalue()
    repo = DatasetRepo(WEEKLY)
    repo.commit(datetime(2025, 3, 6, tzinfo=UTC), {"models/2025-03-05/models.parquet": data})
    with HubServer([], datasets={WEEKLY: repo}) as hub:
        done = run(tmp_path, hub, WEEKLY)
        sizes = [int(r.headers["range"].split("-")[1]) - int(r.headers["range"][6:].split("-")[0]) + 1
                 for r in resolves(hub)]  # fmt: skip
    assert done.returncode == 0, done.stderr
    meta_data = pq.ParquetFile(io.BytesIO(data)).metadata
    chunks = [meta_data.row_group(g).column(c) for g in range(meta_data.num_row_groups) for c in range(22)]
    largest = max(c.total_compressed_size for c in chunks if c.path_in_schema.startswith("siblings"))
    assert largest > 9 * 2**20
    assert max(sizes) <= 8 * 2**20 and sum(sizes) >= largest, sizes
    (meta,) = metas(tmp_path)
    assert meta.models == 1000


def hubstats_repo(week_files: dict[date, bytes]) -> DatasetRepo:
    """hub-stats: one models.parquet rewritten by daily commits, and a commit that changes only the README."""
    repo = DatasetRepo(HUBSTATS)
    weeks = sorted(week_files)
    repo.commit(datetime(2024, 7, 24, 6, tzinfo=UTC), {"models.parquet": week_files[weeks[0]], "README.md": b"a"})
    repo.commit(datetime(2024, 7, 25, 6, tzinfo=UTC), {"README.md": b"b"}, title="README only")
    repo.commit(datetime(2024, 10, 2, 6, tzinfo=UTC), {"models.parquet": week_files[weeks[1]]})
    repo.commit(datetime(2024, 10, 20, 6, tzinfo=UTC), {"models.parquet": week_files[weeks[2]]})
    return repo


def test_hub_stats_commits_are_versions(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    repo = hubstats_repo(week_files)
    with HubServer([], datasets={HUBSTATS: repo}) as hub:
        done = run(tmp_path, hub, HUBSTATS)
        assert done.returncode == 0, done.stderr
        # Four commits; the README-only one has the same models.parquet as the one before: skipped, not re-read.
        assert "backfill: 3 published, 1 already there, 0 failed, of 4 versions" in done.stdout
        published = metas(tmp_path)
        assert [m.taken_at for m in published] == [repo.commits[i].date for i in (0, 2, 3)]
        assert [m.source for m in published] == [
            f"hf://datasets/{HUBSTATS}@{repo.commits[i].sha}/models.parquet" for i in (0, 2, 3)
        ]
        # --every month keeps the newest commit of each month: in a fresh store, July's last (the README commit, the
        # file as of that day) and October's last.
        monthly = tmp_path / "monthly"
        done = run(monthly, hub, HUBSTATS, "--every", "month")
        assert done.returncode == 0, done.stderr
        assert [m.taken_at for m in metas(monthly)] == [repo.commits[i].date for i in (1, 3)]
        assert "of 2 versions" in done.stdout
        # --since / --until bound the dates.
        bounded = tmp_path / "bounded"
        assert run(bounded, hub, HUBSTATS, "--since", "2024-10-01", "--until", "2024-10-10").returncode == 0
        assert [m.taken_at for m in metas(bounded)] == [repo.commits[2].date]
        bad = run(bounded, hub, HUBSTATS, "--since", "2024-13-01")
        assert bad.returncode == 2 and "Invalid value for '--since'" in bad.stderr


def test_the_test_hub_serves_datasets_as_huggingface_hub_reads_them(tmp_path: Path) -> None:
    repo = DatasetRepo(HUBSTATS)
    for day in range(60):  # more commits than one page
        repo.commit(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=day), {"models.parquet": f"v{day}".encode()})
    with HubServer([], datasets={HUBSTATS: repo}) as hub:
        api = HfApi(endpoint=hub.url, token=False)
        commits = api.list_repo_commits(HUBSTATS, repo_type="dataset")
        assert [c.commit_id for c in commits] == [c.sha for c in reversed(repo.commits)]
        assert sum(r.path.endswith("/commits/main") for r in hub.requests) == 2  # followed the Link
        # hf_hub_download: HEAD for the ETag and the commit, then the file.
        first = repo.commits[0].sha
        path = hf_hub_download(HUBSTATS, "models.parquet", repo_type="dataset", revision=first,
                               endpoint=hub.url, token=False, local_dir=tmp_path)  # fmt: skip
        assert Path(path).read_bytes() == b"v0"
        head = next(r for r in hub.requests if r.method == "HEAD")
        assert head.path == f"/datasets/{HUBSTATS}/resolve/{first}/models.parquet"
        url = resolve_url(hub.url, HUBSTATS, "main", "models.parquet")
        whole = httpx.head(url)
        assert whole.headers["x-repo-commit"] == repo.commits[-1].sha and whole.headers["etag"].startswith('"')
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-length"] == "3"
        part = httpx.get(url, headers={"Range": "bytes=1-"})
        assert (part.status_code, part.content, part.headers["content-range"]) == (206, b"59", "bytes 1-2/3")
        assert httpx.get(url, headers={"Range": "bytes=9-"}).status_code == 416
        gone = httpx.get(resolve_url(hub.url, HUBSTATS, "main", "nope.parquet"))
        assert (gone.status_code, gone.headers["x-error-code"]) == (404, "EntryNotFound")
        assert httpx.get(f"{hub.url}/api/datasets/no/such").headers["x-error-code"] == "RepoNotFound"
        info = api.get_paths_info(HUBSTATS, ["models.parquet", "missing"], repo_type="dataset")
        assert [i.path for i in info] == ["models.parquet"] and isinstance(info[0], RepoFile) and info[0].lfs


def test_select_keeps_the_newest_of_each_period() -> None:
    def version(day: str) -> Version:
        return Version(datetime.fromisoformat(day).replace(tzinfo=UTC), day, day)

    versions = [version(d) for d in ("2024-01-01", "2024-01-03", "2024-01-09", "2024-02-29", "2024-04-02")]
    assert [v.key for v in select(versions, every="week")] == ["2024-01-03", "2024-01-09", "2024-02-29", "2024-04-02"]
    assert [v.key for v in select(versions, every="month")] == ["2024-01-09", "2024-02-29", "2024-04-02"]
    assert [v.key for v in select(versions, every="quarter")] == ["2024-02-29", "2024-04-02"]
    assert [v.key for v in select(versions, since=date(2024, 1, 3), until=date(2024, 2, 29))] == [
        "2024-01-03",
        "2024-01-09",
        "2024-02-29",
    ]


def test_a_missing_source_is_a_clear_error(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}) as hub:
        done = run(tmp_path, hub, HUBSTATS)
        assert done.returncode == 1
        assert "error: hf://datasets/cfahlgren1/hub-stats: no such dataset repo at http://127.0.0.1:" in done.stderr
        assert "Traceback" not in done.stderr
        # A repo in neither layout.
        hub.datasets["someone/other"] = DatasetRepo("someone/other")
        hub.datasets["someone/other"].commit(datetime(2025, 1, 1, tzinfo=UTC), {"data.csv": b"a,b\n"})
        done = run(tmp_path, hub, "someone/other")
        assert done.returncode == 1 and "neither weekly folders" in done.stderr
        assert run(tmp_path, hub, "no/such/path").returncode == 1
    assert not Layout(tmp_path).snapshots.exists() or not list(Layout(tmp_path).snapshots.iterdir())


# ------------------------------------------------------------------------------------------------------
# Faults: a file that disappears, a 5xx mid-download, a cut transfer, a truncated Parquet file
# ------------------------------------------------------------------------------------------------------


def leftovers(data_dir: Path) -> list[Path]:
    tmp = Layout(data_dir).tmp
    return [p for p in tmp.iterdir() if p.name != ".lock"] if tmp.exists() else []


def test_a_file_that_disappears_fails_its_version_only(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    gone = "models/2024-10-02/models.parquet"

    def hook(info: RequestInfo) -> Response | None:
        # Listed in the tree, but gone when read (deleted upstream between the listing and the read).
        if "/resolve/" in info.path and info.path.endswith(gone):
            return json_response(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
        return None

    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}, hook=hook) as hub:
        done = run(tmp_path, hub, WEEKLY)
        assert done.returncode == 1
        assert "backfill: 3 published, 0 already there, 1 failed, of 4 versions" in done.stdout
        assert f"{gone}: the file is not there (any more)" in done.stderr
        assert "error: 1 of 4 versions failed" in done.stderr
        assert date(2024, 10, 2) not in {m.taken_at.date() for m in metas(tmp_path)}
        assert leftovers(tmp_path) == []
        hub.hook = None  # it is back: the next run imports only it
        again = run(tmp_path, hub, WEEKLY)
    assert again.returncode == 0 and "backfill: 1 published, 3 already there" in again.stdout
    assert [m.taken_at.date() for m in metas(tmp_path)] == sorted(WEEKS)


def test_a_5xx_mid_download_is_retried(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    failures: list[str] = []

    def hook(info: RequestInfo) -> Response | None:
        # The second ranged read of each file fails once with a 503 (the first read is the footer).
        if "/resolve/" in info.path and info.method == "GET":
            reads = [r for r in resolves(hub) if r.path == info.path]
            if len(reads) == 2:
                failures.append(info.path)
                return json_response(503, {"error": "Service Unavailable"})
        return None

    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}, hook=hook) as hub:
        done = run(tmp_path, hub, WEEKLY)
    assert done.returncode == 0, done.stderr
    assert len(failures) == 4 and len(metas(tmp_path)) == 4
    alone = tmp_path / "alone"
    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}) as hub:
        assert run(alone, hub, WEEKLY).returncode == 0
    for faulted, clean in zip(metas(tmp_path), metas(alone), strict=True):
        assert models_rows(Layout(tmp_path).db(faulted.id)) == models_rows(Layout(alone).db(clean.id))


@pytest.mark.parametrize("fault", ["503", "cut"])
def test_a_fault_past_the_retries_publishes_nothing_of_that_file(
    tmp_path: Path, week_files: dict[date, bytes], fault: str
) -> None:
    week = "2025-03-05"

    def hook(info: RequestInfo) -> Response | None:
        if "/resolve/" in info.path and week in info.path and info.method == "GET":
            reads = [r for r in resolves(hub) if r.path == info.path]
            if len(reads) >= 2:  # the footer reads, then every read of the data fails
                if fault == "503":
                    return json_response(503, {"error": "Service Unavailable"})
                # A transfer cut short: headers announce the whole range, half the bytes come.
                return Response(206, {"Content-Range": info.headers["range"].replace("=", " ") + "/99999999"},
                                body=b"x" * 1000, close_after=500)  # fmt: skip
        return None

    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}, hook=hook) as hub:
        env_done = subprocess.run(
            [sys.executable, "-m", "hubcensus", "backfill", WEEKLY, "--endpoint", hub.url, "--data-dir", str(tmp_path),
             "--max-rate", "0"],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "HF_HUB_ETAG_TIMEOUT": "5"},
        )  # fmt: skip
    assert env_done.returncode == 1, env_done.stderr
    assert f"models/{week}/models.parquet" in env_done.stderr and "failed" in env_done.stderr
    assert "Traceback" not in env_done.stderr
    assert [m.taken_at.date().isoformat() for m in metas(tmp_path)] == ["2024-07-24", "2024-10-02", "2025-06-04"]
    assert leftovers(tmp_path) == []


def test_a_truncated_parquet_file_is_a_clear_failure(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    files = dict(week_files)
    cut = date(2024, 10, 2)
    files[cut] = week_files[cut][: len(week_files[cut]) // 2]  # the upload was cut: no footer
    with HubServer([], datasets={WEEKLY: weekly_repo(files)}) as hub:
        done = run(tmp_path, hub, WEEKLY)
    assert done.returncode == 1
    assert f"models/{cut}/models.parquet: not a readable Parquet file" in done.stderr, done.stderr
    assert len(metas(tmp_path)) == 3 and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------------
# Resume after kill -9
# ------------------------------------------------------------------------------------------------------


def test_a_killed_backfill_leaves_nothing_half_published_and_resumes(
    tmp_path: Path, week_files: dict[date, bytes]
) -> None:
    release = threading.Event()

    def hook(info: RequestInfo) -> Response | None:
        # The third week's data hangs until released: the run is killed while it reads that file.
        if "/resolve/" in info.path and "2025-03-05" in info.path and info.method == "GET":
            release.wait(60)
        return None

    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}, hook=hook) as hub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubcensus", "backfill", WEEKLY, "--endpoint", hub.url, "--data-dir", str(tmp_path),
             "--max-rate", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not any("2025-03-05" in r.path for r in resolves(hub)):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            assert len(leftovers(tmp_path)) >= 1  # its work dir, being written
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            release.set()
        before = metas(tmp_path)
        assert [m.taken_at.date() for m in before] == sorted(WEEKS)[:2]  # whole snapshots only
        hub.hook = None
        done = run(tmp_path, hub, WEEKLY)
    assert done.returncode == 0, done.stderr
    assert "backfill: 2 published, 2 already there" in done.stdout
    after = metas(tmp_path)
    assert [m.taken_at.date() for m in after] == sorted(WEEKS)
    assert {m.id for m in before} < {m.id for m in after}
    assert leftovers(tmp_path) == []  # the killed run's work dir was cleaned


def test_the_token_stays_on_the_endpoint_and_the_pace_holds(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    throttled: list[float] = []

    def hook(info: RequestInfo) -> Response | None:
        # The first file read is refused as over the rate limit: the client waits what Retry-After says.
        if "/resolve/" in info.path and info.method == "GET" and not throttled:
            throttled.append(info.received_at)
            return json_response(429, {"error": "rate limited"}, {"Retry-After": "2"})
        return None

    with HubServer([], datasets={WEEKLY: weekly_repo(week_files, sorted(week_files)[:2])}, hook=hook) as hub:
        done = hubcensus(
            "backfill", WEEKLY, "--endpoint", hub.url, "--data-dir", str(tmp_path), "--max-rate", "4",
            "--token", "hf_s3cret_token",
        )  # fmt: skip
        requests = list(hub.requests)
    assert done.returncode == 0, done.stderr
    assert {r.headers.get("authorization") for r in requests} == {"Bearer hf_s3cret_token"}
    assert "hf_s3cret" not in done.stdout + done.stderr
    assert "hf_s3cret" not in "".join(p.read_text() for p in Layout(tmp_path).snapshots.glob("*/meta.json"))
    retried = [r.received_at for r in requests if "/resolve/" in r.path and r.method == "GET"][1]
    assert retried - throttled[0] >= 1.9
    # API calls (not file reads) at most 4 a second: the pacer spaces them 250 ms apart when sent; arrivals are
    # stamped by the server's threads, which a loaded machine may delay, so the bound leaves room (unpaced: ~2 ms).
    api = [r.received_at for r in requests if r.path.startswith("/api/")]
    assert len(api) >= 4 and min(b - a for a, b in itertools.pairwise(api)) >= 0.1
    # A user and password in the endpoint: sent as basic auth instead, and never shown.
    with HubServer([], datasets={WEEKLY: weekly_repo(week_files, sorted(week_files)[:1])}) as hub:
        endpoint = hub.url.replace("http://", "http://user:pa55word@")
        done = hubcensus("backfill", WEEKLY, "--endpoint", endpoint, "--data-dir", str(tmp_path / "b"))
        assert done.returncode == 0, done.stderr
        assert {r.headers.get("authorization", "")[:6] for r in hub.requests} == {"Basic "}
    assert "pa55word" not in done.stdout + done.stderr


def test_one_backfill_at_a_time_per_data_dir(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    release = threading.Event()

    def hook(info: RequestInfo) -> Response | None:
        if "/resolve/" in info.path and info.method == "GET":
            release.wait(60)  # the first run holds its first file
        return None

    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}, hook=hook) as hub:
        first = subprocess.Popen(
            [sys.executable, "-m", "hubcensus", "backfill", WEEKLY, "--endpoint", hub.url, "--data-dir", str(tmp_path),
             "--max-rate", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not resolves(hub):
                assert first.poll() is None and time.monotonic() < deadline, first.communicate()
                time.sleep(0.05)
            second = run(tmp_path, hub, WEEKLY)
            assert second.returncode == 1
            assert f"error: another backfill is running on {tmp_path}" in second.stderr
        finally:
            release.set()
        hub.hook = None
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "backfill: 4 published" in out and len(metas(tmp_path)) == 4
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------------
# Local folders: the eight RIMEL list responses
# ------------------------------------------------------------------------------------------------------


def test_the_rimel_folder_gives_eight_dated_snapshots(tmp_path: Path) -> None:
    done = hubcensus("backfill", str(RIMEL), "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "backfill: 8 published, 0 already there, 0 failed, of 8 versions" in done.stdout
    published = metas(tmp_path)
    assert [m.taken_at.date().isoformat() for m in published] == [
        "2024-11-25", "2024-12-02", "2024-12-09", "2024-12-10", "2024-12-11", "2024-12-15", "2025-01-06", "2025-01-14",
    ]  # fmt: skip
    names = sorted(p.name for p in RIMEL.iterdir())
    assert [m.source for m in published] == names
    # Each is what `hubcensus import` makes of that file.
    expected = [len({r["id"] for r in load_records(RIMEL / n)}) for n in names]
    assert [m.models for m in published] == expected
    again = hubcensus("backfill", str(RIMEL), "--data-dir", str(tmp_path))
    assert again.returncode == 0 and "backfill: 0 published, 8 already there" in again.stdout
    history = hubcensus("query", "history", "--method", "tags", "--format", "csv", "--data-dir", str(tmp_path))
    assert history.returncode == 0, history.stderr
    assert len(history.stdout.strip().splitlines()) == 1 + 8


def test_local_dates_from_a_pattern_or_an_option(tmp_path: Path) -> None:
    folder = tmp_path / "dumps"
    folder.mkdir()
    (folder / "hub_20241215.json.gz").write_bytes(LIST_2024.read_bytes())
    (folder / "hub_20250114.json.gz").write_bytes(LIST_2025.read_bytes())
    (folder / "notes.txt").write_text("not a dump")
    no_date = hubcensus("backfill", str(folder), "--data-dir", str(tmp_path / "a"))
    assert no_date.returncode == 1 and "hub_20241215.json.gz: no date in the name matching" in no_date.stderr
    bad = hubcensus("backfill", str(folder), "--date-pattern", "(?P<day>x", "--data-dir", str(tmp_path / "a"))
    assert bad.returncode == 1 and "is not a regular expression" in bad.stderr
    # ISO 8601's basic form (YYYYMMDD) is a date too.
    done = hubcensus(
        "backfill", str(folder), "--date-pattern", r"hub_(?P<date>\d{8})", "--data-dir", str(tmp_path / "b")
    )
    assert done.returncode == 0, done.stderr
    assert [m.taken_at.date() for m in metas(tmp_path / "b")] == [date(2024, 12, 15), date(2025, 1, 14)]
    one = hubcensus(
        "backfill", str(folder / "hub_20241215.json.gz"), "--taken-at", "2024-12-15T08:00:00Z",
        "--data-dir", str(tmp_path / "c"),
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert [m.taken_at for m in metas(tmp_path / "c")] == [datetime(2024, 12, 15, 8, tzinfo=UTC)]
    missing = hubcensus("backfill", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path / "d"))
    assert missing.returncode == 1 and "nowhere" in missing.stderr
    # Two files of one date are one snapshot: every model of both, a model in both once (the later file's record).
    same = tmp_path / "same-day"
    same.mkdir()
    (same / "2025-01-14_a.json.gz").write_bytes(LIST_2024.read_bytes())
    (same / "2025-01-14_b.json.gz").write_bytes(LIST_2025.read_bytes())
    merged = hubcensus("backfill", str(same), "--data-dir", str(tmp_path / "e"))
    assert merged.returncode == 0, merged.stderr
    (meta,) = metas(tmp_path / "e")
    both = {r["id"] for r in load_records(LIST_2024)} | {r["id"] for r in load_records(LIST_2025)}
    assert meta.models == len(both) and meta.source == "2025-01-14_a.json.gz+2025-01-14_b.json.gz"
    assert meta.params["backfill"]["files"] == ["2025-01-14_a.json.gz", "2025-01-14_b.json.gz"]


# ------------------------------------------------------------------------------------------------------
# The worker runs a backfill on request; /v1/status shows its progress
# ------------------------------------------------------------------------------------------------------


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with hubcensus_serve(data_dir, tmp_path, {"HUBCENSUS_ADMIN_TOKEN": "admin-t0ken"}) as served:
        yield served.url, data_dir


AUTH = {"Authorization": "Bearer admin-t0ken"}


def test_the_worker_backfills_on_request(api: tuple[str, Path], week_files: dict[date, bytes]) -> None:
    url, data_dir = api
    gate = threading.Event()

    def hook(info: RequestInfo) -> Response | None:
        if "/resolve/" in info.path and "2025-03-05" in info.path:
            gate.wait(60)  # hold the third file, to see the progress mid-run
        return None

    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}, hook=hook) as hub:
        worker = subprocess.Popen(
            [sys.executable, "-m", "hubcensus", "worker", "--schedule", "0 3 1 1 *", "--endpoint", hub.url,
             "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HUBCENSUS_MAX_RATE": "0"},
        )  # fmt: skip
        try:
            _wait(lambda: httpx.get(f"{url}/v1/status").json()["liveness"]["alive"])
            refused = httpx.post(f"{url}/v1/snapshots", headers=AUTH, json={"backfill": {"source": "/etc"}})
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_parameter"
            assert "local paths are refused" in refused.json()["error"]["message"]
            extra = httpx.post(f"{url}/v1/snapshots", headers=AUTH, json={"backfill": {"source": WEEKLY, "x": 1}})
            assert extra.status_code == 422
            accepted = httpx.post(
                f"{url}/v1/snapshots", headers=AUTH, json={"backfill": {"source": WEEKLY, "since": "2024-10-01"}}
            )
            assert accepted.status_code == 202, accepted.text
            _wait(lambda: (httpx.get(f"{url}/v1/status").json()["backfill"] or {}).get("files_done") == 1)
            status = httpx.get(f"{url}/v1/status").json()
            assert status["state"] == "backfilling" and status["liveness"]["state"] == "running"
            progress = status["backfill"]
            assert progress["files_total"] == 3 and progress["source"] == WEEKLY
            assert progress["current_file"].endswith("models/2025-03-05/models.parquet")
            gate.set()
            _wait(lambda: httpx.get(f"{url}/v1/status").json()["last_backfill"] is not None)
            status = httpx.get(f"{url}/v1/status").json()
            assert status["state"] == "idle" and status["backfill"] is None
            assert len(status["last_backfill"]["published"]) == 3 and status["last_backfill"]["failed"] == []
            assert status["last_success"] is None  # no ingest ran: the request asked for a backfill only
            assert [m.taken_at.date() for m in metas(data_dir)] == sorted(WEEKS)[1:]
        finally:
            gate.set()
            worker.send_signal(signal.SIGTERM)
            output = worker.communicate(timeout=60)[0]
    assert worker.returncode == 0, output
    assert not [r for r in hub.requests if r.path.startswith("/api/models")]


def test_status_shows_a_backfill_written_by_the_worker(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from hubcensus.config import Settings
    from hubcensus.service.app import create_app

    progress = {"request": "r1", "source": WEEKLY, "files_done": 2, "files_total": 9, "current_file": "x",
                "bytes_read": 10, "bytes_total": 100}  # fmt: skip
    write_status(tmp_path, state="backfilling", backfill=progress)
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        body = client.get("/v1/status").json()
    assert body["backfill"] == progress and body["state"] == "backfilling"
    assert read_status(tmp_path)["backfill"] == progress


def test_backfill_in_process_reports_progress(tmp_path: Path, week_files: dict[date, bytes]) -> None:
    seen: list[Any] = []
    with HubServer([], datasets={WEEKLY: weekly_repo(week_files)}) as hub:
        result = backfill([WEEKLY], tmp_path, options=HubOptions(endpoint=hub.url, max_rate=0), on_progress=seen.append)
    assert len(result.published) == 4
    assert {p.current for p in seen if p.current} == {m.source for m in result.published}
    assert max(p.bytes_read for p in seen) > 0 and seen[-1].done == 4
    assert all(p.bytes_total for p in seen if p.bytes_read)


def _wait(predicate: Any, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if predicate():
                return
        except (httpx.HTTPError, KeyError, json.JSONDecodeError):
            pass
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)
