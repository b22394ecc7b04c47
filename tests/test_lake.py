"""The lake (queries/lake.py): each published snapshot as Parquet in a Hive layout, written with the snapshot,
whole or not at all, removed with it, rewritten when it is reclassified, repaired by `hubcensus lake`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.reclassify import reclassify
from hubcensus.queries.datadir import Layout, SnapshotMeta, clean_tmp, remove_snapshot
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, METHODS
from hubcensus.queries.lake import FILE_NAME, LAKE_DIR, TABLES, current, lake_files, remove_lake, write_lake
from hubcensus.queries.store import SnapshotStore
from hubcensus.queries.summary import revision
from tests.data import BUNDLED, LIST_2024, OLD_ID, TAKEN_2022, TAKEN_2024, old_release_store
from tests.helpers import hubcensus


def _two_snapshots(data_dir: Path) -> tuple[SnapshotMeta, SnapshotMeta]:
    first = import_dump(BUNDLED, data_dir, taken_at=TAKEN_2022, max_bad_share=0.0)
    second = import_dump(LIST_2024, data_dir, taken_at=TAKEN_2024, max_bad_share=0.0)
    return first, second


def _tags(path: Path) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}


def test_an_import_publishes_its_lake_in_the_hive_layout_with_the_snapshot_named_in_every_file(tmp_path: Path) -> None:
    meta = import_dump(BUNDLED, tmp_path, taken_at=TAKEN_2022, max_bad_share=0.0)
    files = lake_files(tmp_path, meta.id)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"{LAKE_DIR}/{table}/snapshot_date=2022-02-21/snapshot={meta.id}/{FILE_NAME}" for table in sorted(TABLES)
    ]
    for path in files:
        table = pq.read_table(path)
        # The partition values live in the directory names only: in the files too, engines would find them twice.
        assert not {"snapshot", "snapshot_date"} & set(table.column_names)
        assert set(table.column("snapshot_id").to_pylist()) == {meta.id}
        assert set(table.column("classifier_version").to_pylist()) == {CLASSIFIER_VERSION}
        assert {t.isoformat() for t in table.column("taken_at").to_pylist()} == {"2022-02-21T00:00:00+00:00"}
        tags = _tags(path)
        assert tags["hubcensus.snapshot_id"] == meta.id
        assert tags["hubcensus.classifier_version"] == CLASSIFIER_VERSION
        assert tags["hubcensus.taken_at"] == meta.taken_at.isoformat()
        assert tags["hubcensus.snapshot_revision"] == revision(meta)
    models = pq.read_table(next(f for f in files if "/models/" in f.as_posix()))
    assert models.num_rows == meta.models == 29_432
    assert len(set(models.column("id").to_pylist())) == meta.models
    # The framework set and bucket of each method, as the snapshot's own masks give them.
    con = duckdb.connect()
    con.execute(f"ATTACH '{Layout(tmp_path).db(meta.id)}' AS snap (READ_ONLY)")
    con.register("lake", models)
    for method in METHODS:
        wrong = con.execute(
            f"""SELECT count(*) FROM lake JOIN snap.models AS s USING (id)
            WHERE len(lake.frameworks_{method}) <> bit_count(s.fw_{method})
               OR (lake.bucket_{method} = 'none') <> (s.fw_{method} = 0)
               OR (lake.bucket_{method} = 'shared') <> (bit_count(s.fw_{method}) >= 2)"""
        ).fetchone()
        assert wrong == (0,)
    assert current(tmp_path, meta)


def test_a_killed_lake_writer_leaves_no_visible_partial_partition(tmp_path: Path) -> None:
    meta = import_dump(BUNDLED, tmp_path, taken_at=TAKEN_2022, max_bad_share=0.0)
    script = (
        "import sys; from pathlib import Path; from hubcensus.queries.lake import write_lake; "
        "from hubcensus.queries.store import SnapshotStore; d = Path(sys.argv[1]); "
        "write_lake(d, SnapshotStore(d).get(sys.argv[2]))"
    )
    lake = tmp_path / LAKE_DIR
    # Kill the writer the moment anything of its lake shows (at the first poll, every millisecond), and earlier
    # in the write each round: whatever is visible then must be whole.
    for round_ in range(4):
        remove_lake(tmp_path, meta.id)
        assert lake_files(tmp_path, meta.id) == []
        writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), meta.id])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and writer.poll() is None:
                if round_ > 0 and any(lake.glob("*/*/*/*")):
                    break
                if round_ == 0 and any((tmp_path / "tmp").glob(f"lake-*/models/{FILE_NAME}")):
                    break
                time.sleep(0.001)
            writer.send_signal(signal.SIGKILL)
        finally:
            writer.wait()
        for path in lake.glob(f"*/*/snapshot={meta.id}/*"):
            table = pq.read_table(path)  # a file cut short has no footer: this raises
            assert _tags(path)["hubcensus.snapshot_id"] == meta.id
            if "/models/" in path.as_posix():
                assert table.num_rows == meta.models
        assert not [p for p in lake.rglob("*") if p.is_file() and p.name != FILE_NAME]
    # What the kill left in tmp/ is a dead writer's work dir, and the next writer's clean-up removes it.
    clean_tmp(tmp_path)
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [".lock"]
    assert write_lake(tmp_path, meta).files == lake_files(tmp_path, meta.id)
    assert current(tmp_path, meta)


def test_the_lake_goes_with_its_snapshot(tmp_path: Path) -> None:
    first, second = _two_snapshots(tmp_path)
    kept = lake_files(tmp_path, second.id)
    assert len(lake_files(tmp_path, first.id)) == len(TABLES) == len(kept)
    remove_snapshot(tmp_path, first.id)
    assert lake_files(tmp_path, first.id) == []
    # No empty date directory stays behind; the other snapshot's lake is untouched.
    assert not list((tmp_path / LAKE_DIR).glob("*/snapshot_date=2022-02-21"))
    assert lake_files(tmp_path, second.id) == kept


def test_deleting_a_snapshot_through_the_api_removes_its_lake(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from hubcensus.config import Settings
    from hubcensus.service.app import create_app

    first, second = _two_snapshots(tmp_path)
    with TestClient(create_app(Settings(data_dir=tmp_path, admin_token="secret"))) as client:
        answer = client.delete(f"/v1/snapshots/{first.id}", headers={"Authorization": "Bearer secret"})
    assert answer.status_code == 204
    assert lake_files(tmp_path, first.id) == []
    assert len(lake_files(tmp_path, second.id)) == len(TABLES)


def test_reclassifying_rewrites_the_lake_under_the_new_classifier(tmp_path: Path) -> None:
    data_dir = old_release_store(tmp_path / "old")
    old = SnapshotStore(data_dir).get(OLD_ID)
    assert old.classifier_version != CLASSIFIER_VERSION
    before = write_lake(data_dir, old).files
    assert {_tags(f)["hubcensus.classifier_version"] for f in before} == {old.classifier_version}
    new = reclassify(data_dir, OLD_ID)
    assert new is not None
    after = lake_files(data_dir, OLD_ID)
    assert after == before  # the same partitions, their files replaced
    for path in after:
        assert _tags(path)["hubcensus.classifier_version"] == CLASSIFIER_VERSION
        assert _tags(path)["hubcensus.snapshot_revision"] == revision(new)
        assert set(pq.read_table(path).column("classifier_version").to_pylist()) == {CLASSIFIER_VERSION}
    assert current(data_dir, new) and not current(data_dir, old)


def test_hubcensus_lake_writes_what_is_missing_or_stale_and_removes_orphans(tmp_path: Path) -> None:
    first, second = _two_snapshots(tmp_path)
    remove_lake(tmp_path, first.id)
    orphan = tmp_path / LAKE_DIR / "models" / "snapshot_date=2020-01-01" / "snapshot=20200101T000000Z-000000"
    orphan.mkdir(parents=True)
    (orphan / FILE_NAME).write_bytes(b"left by a kill between a snapshot's removal and its lake's")
    done = hubcensus("lake", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"wrote the lake of {first.id}" in done.stdout
    assert "1 written, 1 already current, 1 removed" in done.stdout
    assert not orphan.exists() and not orphan.parent.exists()
    assert current(tmp_path, first) and current(tmp_path, second)
    # One named snapshot, rewritten on request; an unknown one is an error and writes nothing.
    done = hubcensus("lake", "--data-dir", str(tmp_path), "--snapshot", second.id, "--force")
    assert done.returncode == 0 and f"wrote the lake of {second.id}" in done.stdout, done.stderr
    wrong = hubcensus("lake", "--data-dir", str(tmp_path), "--snapshot", "nope")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: no snapshot with id 'nope'")


def test_a_lake_missing_after_a_crash_is_written_by_the_worker_at_start(tmp_path: Path) -> None:
    # The worker's start-up repairs the lake as it brings summaries up to date (the archive uploads from it).
    from hubcensus.ingest.worker import _bring_up_to_date

    meta = import_dump(BUNDLED, tmp_path, taken_at=TAKEN_2022, max_bad_share=0.0)
    remove_lake(tmp_path, meta.id)
    _bring_up_to_date(tmp_path)
    assert current(tmp_path, meta)


@pytest.mark.parametrize("table", TABLES)
def test_every_table_is_documented_column_by_column(tmp_path: Path, table: str) -> None:
    from tests.data import ROOT

    doc = (ROOT / "docs" / "LAKE.md").read_text()
    meta = import_dump(LIST_2024, tmp_path, taken_at=TAKEN_2024, max_bad_share=0.0)
    (path,) = [f for f in lake_files(tmp_path, meta.id) if f"/{table}/" in f.as_posix()]
    section = doc.split(f"### `{table}`", 1)[1].split("\n### ", 1)[0]
    columns = pq.read_schema(path).names
    assert [c for c in columns if f"| `{c}` |" not in section] == []


def test_a_lake_that_cannot_be_written_leaves_the_snapshot_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A file where the lake's directory should be: every write under it fails, as on a full or broken disk.
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / LAKE_DIR).write_text("not a directory")
    meta = import_dump(BUNDLED, tmp_path, taken_at=TAKEN_2022, max_bad_share=0.0)
    assert [m.id for m in SnapshotStore(tmp_path).snapshots()] == [meta.id]
    assert f"the lake of {meta.id} was not written" in caplog.text
    assert f"hubcensus lake --snapshot {meta.id}" in caplog.text
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [".lock"]  # its work dir is gone
    (tmp_path / LAKE_DIR).unlink()
    assert hubcensus("lake", "--data-dir", str(tmp_path)).returncode == 0
    assert current(tmp_path, meta)
