"""History that stays fast and comparable: per-snapshot summaries, the bound on open snapshots, one source at a
time, and retention that thins a source's history."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.reclassify import reclassify
from hubcensus.ingest.records import parse_record
from hubcensus.ingest.writer import SnapshotWriter
from hubcensus.queries.datadir import DB_NAME, META_NAME, SUMMARY_NAME, Layout, SnapshotMeta, read_meta
from hubcensus.queries.filters import ModelFilter, Weight
from hubcensus.queries.frameworks import METHODS, Framework
from hubcensus.queries.history import history_from_models, history_from_summaries, matches_source
from hubcensus.queries.share import GroupBy
from hubcensus.queries.store import SnapshotStore
from hubcensus.queries.summary import SUMMARY_VERSION, read_summary, summarize, write_summary
from hubcensus.service.app import create_app
from tests.data import (
    BUNDLED,
    FIXTURES,
    LIST_2024,
    LIST_2025,
    OLD_ID,
    TAKEN_2022,
    TREES,
    old_release_store,
    read_jsonl_gz,
)
from tests.helpers import hubcensus

BACKFILL = "hf://datasets/hfmlsoc/hub_weekly_snapshots"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four dated real snapshots: the 2022 crawl, two 2024-25 list responses and the fine-tune trees."""
    d = tmp_path_factory.mktemp("history")
    for path, day in (
        (BUNDLED, "2022-02-21"),
        (LIST_2024, "2024-12-15"),
        (LIST_2025, "2025-01-14"),
        (TREES, "2025-04-26"),
    ):
        import_dump(path, d, taken_at=datetime.fromisoformat(day).replace(tzinfo=UTC), max_bad_share=0.0)
    return d


def _snapshots(store: SnapshotStore) -> list[SnapshotMeta]:
    return sorted(store.snapshots(), key=lambda m: m.taken_at)


# ------------------------------------------------------------------------------------------------------
# Summaries: published with the snapshot, equal to the model tables, refreshed, added when missing
# ------------------------------------------------------------------------------------------------------


def test_a_snapshot_is_published_with_its_summary(data_dir: Path) -> None:
    for meta in SnapshotStore(data_dir).snapshots():
        path = Layout(data_dir).summary(meta.id)
        assert meta.summary_version == SUMMARY_VERSION
        assert path.stat().st_mode & 0o777 == 0o444  # immutable, like the rest of the snapshot
        summary = read_summary(path, meta)
        assert summary is not None and sum(summary.column("models").to_pylist()) == meta.models


UNIVERSES: list[list[Framework]] = [
    ["pytorch", "tensorflow", "jax", "keras", "mlx", "gguf", "onnx"],
    ["pytorch", "tensorflow"],
    ["gguf"],
]
WEIGHTS: list[Weight] = ["models", "downloads", "likes"]
BYS: list[GroupBy | None] = [None, "pipeline_tag", "library_name"]
FILTERS = [None, ModelFilter(pipeline_tag="text-classification"), ModelFilter(library_name="transformers")]


def test_history_from_summaries_equals_history_from_the_model_tables(data_dir: Path) -> None:
    # The property the summaries exist for, on real data: every method, universe, weight, grouping and filter a
    # summary answers gives the very table the model tables give.
    store = SnapshotStore(data_dir)
    snapshots = _snapshots(store)
    # Every (method, universe, weight) with three of the nine (grouping, filter) pairs, in turn: every pair meets
    # every method, universe and weight, at a third of the time of the whole product.
    pairs = list(itertools.product(BYS, FILTERS))
    for method, (u, universe), (w, weight) in itertools.product(METHODS, enumerate(UNIVERSES), enumerate(WEIGHTS)):
        for by, flt in (pairs[(u + w + 3 * j) % 9] for j in range(3)):
            args: dict[str, Any] = {"by": by, "method": method, "frameworks": universe, "weight": weight}
            expected = history_from_models(store, snapshots, **args, filters=flt)
            got = history_from_summaries(store, snapshots, **args, filters=flt)
            assert got.equals(expected), (method, universe, weight, by, flt)
    assert (
        history_from_summaries(store, [], by="pipeline_tag").schema
        == history_from_models(store, [], by="pipeline_tag").schema
    )


def test_the_api_answers_history_from_summaries_unless_a_filter_needs_single_models(data_dir: Path) -> None:
    with TestClient(create_app(Settings(data_dir=data_dir, cache_mb=0))) as api:
        store: SnapshotStore = api.app.state.store  # type: ignore[attr-defined]
        plain = api.get("/v1/frameworks/history", params={"weight": "downloads"}).json()
        assert plain["computed_from"] == "summaries"
        assert store.attached() == []  # no snapshot file was opened for it
        # With author, the model tables answer: every snapshot is opened.
        by_author = api.get("/v1/frameworks/history", params={"author": "google"}).json()
        assert by_author["computed_from"] == "models"
        assert len(store.attached()) == len(plain["rows"]) == 4
        expected = history_from_models(store, _snapshots(store), weight="downloads")
        assert [r["models"] for r in plain["rows"]] == expected.column("models").to_pylist()


def _as_if_an_older_classifier(data_dir: Path, meta: SnapshotMeta) -> None:
    """Zero every framework column of a snapshot, and publish the summary of that, as an older classifier would
    have left it (no framework found for any model)."""
    folder = Layout(data_dir).snapshot(meta.id)
    for name in (DB_NAME, SUMMARY_NAME):
        (folder / name).chmod(0o644)
    con = duckdb.connect(str(folder / DB_NAME))
    con.execute("UPDATE models SET " + ", ".join(f"fw_{m} = 0" for m in METHODS))
    write_summary(summarize(con), folder / SUMMARY_NAME, meta)
    con.close()


def test_reclassifying_a_snapshot_replaces_its_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    meta = import_dump(TREES, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    _as_if_an_older_classifier(data_dir, meta)
    stale = history_from_summaries(SnapshotStore(data_dir), [meta], method="files")
    assert stale.column("with_framework").to_pylist() == [0]
    new = reclassify(data_dir, meta.id, force=True)
    assert new is not None and new.summary_version == SUMMARY_VERSION
    assert read_summary(Layout(data_dir).summary(meta.id), new) is not None  # published with the new columns
    store = SnapshotStore(data_dir)
    for method in METHODS:
        assert history_from_summaries(store, [new], method=method).equals(
            history_from_models(store, [new], method=method)
        )
    assert history_from_summaries(store, [new], method="files").column("with_framework").to_pylist()[0] > 0


def test_a_store_serving_a_snapshot_notices_it_was_reclassified(tmp_path: Path) -> None:
    # The API had loaded the summary of the old columns; after the replacement it answers from the new one.
    data_dir = tmp_path / "data"
    meta = import_dump(TREES, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    _as_if_an_older_classifier(data_dir, meta)
    with TestClient(create_app(Settings(data_dir=data_dir, cache_mb=0))) as api:
        first = api.get("/v1/frameworks/history", params={"method": "files"}).json()["rows"][0]
        assert first["with_framework"] == 0
        reclassify(data_dir, meta.id, force=True)
        second = api.get("/v1/frameworks/history", params={"method": "files"}).json()["rows"][0]
        assert second["with_framework"] > 0 and second["models"] == first["models"]


def test_a_snapshot_without_a_summary_gets_one(tmp_path: Path) -> None:
    # A snapshot hubcensus 2026.11.1 wrote, before summaries existed: the first history computes its summary
    # from the model table, answers from it and keeps it beside the snapshot, for every later process.
    data_dir = old_release_store(tmp_path / "data")
    path = Layout(data_dir).summary(OLD_ID)
    assert not path.exists() and read_meta(Layout(data_dir).snapshot(OLD_ID)).summary_version is None
    with TestClient(create_app(Settings(data_dir=data_dir, cache_mb=0))) as api:
        body = api.get("/v1/frameworks/history", params={"method": "tags"}).json()
    store = SnapshotStore(data_dir)
    meta = store.get(OLD_ID)
    summary = read_summary(path, meta)
    assert summary is not None and path.stat().st_mode & 0o777 == 0o444
    expected = history_from_models(store, [meta], method="tags")
    assert [r["exclusive"]["pytorch"] for r in body["rows"]] == expected.column("exclusive.pytorch").to_pylist()
    assert not list(Layout(data_dir).tmp.glob("summary-*"))  # its work dir is gone
    # A summary of another revision of the snapshot (here: a doctored meta) is never taken as current.
    assert read_summary(path, meta.model_copy(update={"published_at": datetime.now(UTC)})) is None


def test_a_summary_that_cannot_be_stored_still_answers(tmp_path: Path) -> None:
    # A data dir where no work dir can be made (here tmp/ is a file; in production a read-only mount): the
    # summary serves the process from memory, the answer is the same, and the snapshot stays as it was.
    data_dir = old_release_store(tmp_path / "data")
    Layout(data_dir).tmp.write_text("not a directory")
    with TestClient(create_app(Settings(data_dir=data_dir, cache_mb=0))) as api:
        body = api.get("/v1/frameworks/history", params={"method": "tags"})
        assert body.status_code == 200
    assert not Layout(data_dir).summary(OLD_ID).exists()
    store = SnapshotStore(data_dir)
    expected = history_from_models(store, [store.get(OLD_ID)], method="tags")
    assert [r["models"] for r in body.json()["rows"]] == expected.column("models").to_pylist()


def test_concurrent_histories_on_a_fresh_store_agree(data_dir: Path) -> None:
    # Threads ask for histories while the summaries are still being loaded (by one of them, or by another for
    # a different range): every answer equals the one from the model tables.
    store = SnapshotStore(data_dir)
    snapshots = _snapshots(store)
    expected = {n: history_from_models(store, snapshots[:n], method="files") for n in (1, 2, len(snapshots))}
    store.close()
    fresh = SnapshotStore(data_dir)
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            for _ in range(5):
                assert history_from_summaries(fresh, snapshots[:n], method="files").equals(expected[n])
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in (*expected, *expected)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_history_opens_no_snapshot_file(data_dir: Path) -> None:
    # Summaries already loaded: a history across every snapshot attaches none of them.
    store = SnapshotStore(data_dir)
    history_from_summaries(store, _snapshots(store))
    store.close()
    history_from_summaries(store, _snapshots(store))
    assert store.attached() == []


# ------------------------------------------------------------------------------------------------------
# The bound on attached snapshots
# ------------------------------------------------------------------------------------------------------


def _databases(store: SnapshotStore) -> set[str]:
    with store.own_cursor() as con:
        return {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall()}


def test_the_store_keeps_at_most_max_attached_snapshots_open(data_dir: Path) -> None:
    store = SnapshotStore(data_dir, max_attached=2)
    ids = [m.id for m in _snapshots(store)]
    for sid in ids:
        with store.cursor(sid) as con:
            assert con.execute("SELECT count(*) FROM models").fetchone() is not None
    assert store.attached() == ids[-2:]  # the two most recently used
    assert len(_databases(store)) == 1 + 2  # the instance's own catalog, and two snapshots: the rest detached
    # Snapshots in use are never detached: four cursors held at once go over the bound, and back under it after.
    with store.cursor(ids[0]), store.cursor(ids[1]), store.cursor(ids[2], also=(ids[3],)) as con:
        assert len(store.attached()) == 4
        catalog = store.catalog(ids[3])
        assert con.execute(f"SELECT count(*) FROM {catalog}.models").fetchone() is not None
    assert len(store.attached()) == 2 and len(_databases(store)) == 3
    store.close()


def test_a_reader_is_never_cut_off_by_the_bound(data_dir: Path) -> None:
    # Threads read the snapshots in turn while the bound detaches the idle ones; every read completes.
    store = SnapshotStore(data_dir, max_attached=2)
    ids = [m.id for m in _snapshots(store)]
    counts = {sid: store.get(sid).models for sid in ids}
    errors: list[BaseException] = []

    def read(offset: int) -> None:
        try:
            for i in range(40):
                sid = ids[(i + offset) % len(ids)]
                with store.cursor(sid) as con:
                    row = con.execute("SELECT count(*) FROM models").fetchone()
                    assert row is not None and row[0] == counts[sid]
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.attached()) <= 2
    store.close()


# ------------------------------------------------------------------------------------------------------
# One source at a time
# ------------------------------------------------------------------------------------------------------


RECORDS = read_jsonl_gz(FIXTURES / "sample_300.jsonl.gz")


def tiny_snapshot(data_dir: Path, taken_at: datetime, source: str, models: int = 3) -> SnapshotMeta:
    """A real snapshot of `models` real records, published by the product's writer, with this source."""
    with SnapshotWriter(data_dir, taken_at=taken_at, source=source, kind="import") as writer:
        for rec in RECORDS[:models]:
            writer.add(parse_record(rec))
        return writer.publish()


def test_matching_a_source() -> None:
    assert matches_source(BACKFILL, BACKFILL)
    assert matches_source(f"{BACKFILL}/data/2024-05-06.parquet", BACKFILL)
    assert matches_source(f"{BACKFILL}@main/2024.parquet", BACKFILL + "/")
    assert not matches_source(BACKFILL + "_v2", BACKFILL)
    assert matches_source("https://user:pw@hub.example", "https://hub.example")


@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    """A backfill (weekly, 30 weeks of 3 models), a full crawl (the 2022 import, 29,432) and a list."""
    data_dir = tmp_path / "data"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for week in range(30):
        tiny_snapshot(data_dir, start + timedelta(weeks=week), f"{BACKFILL}/weekly/{week}.parquet", 3 + week % 2)
    import_dump(BUNDLED, data_dir, taken_at=start + timedelta(weeks=10, days=2), max_bad_share=0.0)
    tiny_snapshot(data_dir, start + timedelta(weeks=40), "trending.json", 5)
    return data_dir


def test_history_keeps_to_one_source(mixed: Path) -> None:
    with TestClient(create_app(Settings(data_dir=mixed, cache_mb=0))) as api:
        everything = api.get("/v1/frameworks/history").json()
        assert len(everything["rows"]) == 32 and everything["not_comparable"]
        body = api.get("/v1/frameworks/history", params={"source": BACKFILL}).json()
        assert body["source"] == BACKFILL and body["query"]["source"] == BACKFILL
        points = body["snapshots"]
        assert len(points) == len(body["rows"]) == 30
        assert all(p["source"].startswith(BACKFILL + "/") for p in points)
        assert [p["models"] for p in points] == [r["models"] for r in body["rows"]] == [3 + w % 2 for w in range(30)]
        assert body["not_comparable"] == []  # one source: one series
        one = api.get("/v1/frameworks/history", params={"source": "hub-2022-02-21.jsonl.gz"}).json()
        assert [r["models"] for r in one["rows"]] == [29_432]
        ranged = api.get(
            "/v1/frameworks/history", params={"source": BACKFILL, "from": "2024-03-01", "to": "2024-03-31"}
        ).json()
        assert len(ranged["rows"]) == 4
        csv = api.get("/v1/frameworks/history", params={"source": BACKFILL, "_format": "csv"}).text
        assert csv.count("\n") == 31
        bad = api.get("/v1/frameworks/history", params={"source": "hf://datasets/nobody/nothing"})
        assert bad.status_code == 422
        error = bad.json()["error"]
        assert error["code"] == "invalid_parameter" and "trending.json" in error["message"]
        assert error["details"][0]["parameter"] == "source"


def test_the_cli_history_keeps_to_one_source(mixed: Path) -> None:
    # `hubcensus query history` runs the route in-process: its --source is the route's parameter.
    csv = hubcensus("query", "history", "--source", BACKFILL, "--format", "csv", "--data-dir", str(mixed))
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.count("\n") == 31 and "29432" not in csv.stdout
    bad = hubcensus("query", "history", "--source", "nope", "--data-dir", str(mixed))
    assert bad.returncode == 1 and "error: --source: no snapshot has the source 'nope'" in bad.stderr


def test_the_dashboard_history_keeps_to_one_source(mixed: Path) -> None:
    with TestClient(create_app(Settings(data_dir=mixed, cache_mb=0))) as api:
        page = api.get("/", params={"source": BACKFILL}).text
        assert "29,432 models" not in page.split('<section class="history')[1].split("</section>")[0]
        assert f"source={BACKFILL.replace(':', '%3A').replace('/', '%2F')}" in page  # its feeds keep the source
        everything = api.get("/").text
        assert "29,432 models" in everything.split('<section class="history')[1].split("</section>")[0]
        bad = api.get("/", params={"source": "nope"}, headers={"Accept": "application/json"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_parameter"


# ------------------------------------------------------------------------------------------------------
# Retention that thins a source's history
# ------------------------------------------------------------------------------------------------------


@pytest.fixture()
def backfilled(tmp_path: Path) -> Iterator[Path]:
    """60 weekly snapshots of the backfill (Mondays from 2024-01-01), an import and an ingest-like list."""
    data_dir = tmp_path / "data"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for week in range(60):
        tiny_snapshot(data_dir, start + timedelta(weeks=week), f"{BACKFILL}/{week}.parquet")
    tiny_snapshot(data_dir, start + timedelta(weeks=3, days=1), "other.jsonl")
    tiny_snapshot(data_dir, start - timedelta(weeks=30), "older.jsonl")
    yield data_dir


def test_prune_thins_one_source_weekly_then_monthly(backfilled: Path) -> None:
    before = SnapshotStore(backfilled).snapshots()
    mine = sorted((m for m in before if matches_source(m.source, BACKFILL)), key=lambda m: m.taken_at)
    dry = hubcensus("prune", "--source", BACKFILL, "--keep-weekly", "8", "--keep-monthly", "6", "--dry-run",
                    "--data-dir", str(backfilled))  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout and len(SnapshotStore(backfilled).snapshots()) == len(before)
    done = hubcensus("prune", "--source", BACKFILL, "--keep-weekly", "8", "--keep-monthly", "6", "--yes",
                     "--data-dir", str(backfilled))  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = SnapshotStore(backfilled).snapshots()
    kept = sorted((m for m in after if matches_source(m.source, BACKFILL)), key=lambda m: m.taken_at)
    # The last 8 weeks (2024-12-30 to 2025-02-17), and the newest of each of the last 6 months (Sep to Feb).
    newest_of_month = {(m.taken_at.year, m.taken_at.month): m for m in mine}  # oldest first: the last one wins
    monthly = [newest_of_month[k] for k in sorted(newest_of_month)[-6:]]
    assert {m.id for m in kept} == {m.id for m in mine[-8:] + monthly}
    assert len(kept) == 8 + 3  # December to February's newest are among the last 8 weeks
    assert mine[-1] in kept  # the newest always stays
    assert {m.source for m in after} - {m.source for m in kept} == {"other.jsonl", "older.jsonl"}  # untouched
    assert f"removed {len(mine) - len(kept)} of the 60 snapshots" in done.stdout


def test_prune_refuses_what_it_cannot_do(backfilled: Path) -> None:
    none = hubcensus("prune", "--source", BACKFILL, "--data-dir", str(backfilled))
    assert none.returncode == 1 and "error: give at least one of --keep-daily" in none.stderr
    unknown = hubcensus("prune", "--source", "hf://datasets/x/y", "--keep-weekly", "1", "--data-dir", str(backfilled))
    assert unknown.returncode == 1 and "no snapshot has the source" in unknown.stderr
    assert "other.jsonl" in unknown.stderr
    unconfirmed = hubcensus("prune", "--source", BACKFILL, "--keep-weekly", "1", "--data-dir", str(backfilled))
    assert unconfirmed.returncode == 1 and "pass --yes" in unconfirmed.stderr
    assert len(SnapshotStore(backfilled).snapshots()) == 62  # nothing removed by any of them


def test_summary_files_are_small(data_dir: Path) -> None:
    # About 1,200 rows at 2 million models (docs/PERFORMANCE.md); here a few hundred bytes per snapshot's group.
    for meta in SnapshotStore(data_dir).snapshots():
        path = Layout(data_dir).summary(meta.id)
        assert pq.read_metadata(path).num_rows < meta.models
        assert path.stat().st_size < (Layout(data_dir).db(meta.id)).stat().st_size / 10
        assert (Layout(data_dir).snapshot(meta.id) / META_NAME).exists()


def test_the_worker_summarizes_at_start_what_was_published_without_a_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    meta = import_dump(TREES, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    path = Layout(data_dir).summary(meta.id)
    path.unlink()  # as a release before summaries published it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBCENSUS_", "HF_"))}
    worker = subprocess.Popen(
        [sys.executable, "-m", "hubcensus", "worker", "--schedule", "0 3 * * *", "--data-dir", str(data_dir)],
        env={**env, "HF_ENDPOINT": "http://127.0.0.1:9"},  # never asked: no run is due
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while read_summary(path, meta) is None:
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not summarize"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert "summarized 1 snapshot(s) published without a summary" in stderr
