"""The lake: every published snapshot also as Parquet files in a Hive layout, for engines that are not ours
(Spark, Trino, DuckDB, Polars) to read in place, without our code. docs/LAKE.md documents every column.

    DATA_DIR/lake/<table>/snapshot_date=YYYY-MM-DD/snapshot=<id>/part-0.parquet

Tables (`TABLES`): `models`, one row per model with its framework set and bucket under every method;
`share_by_task`, the share-by-task counts the API's `/v1/frameworks/share` answers, per method; `summary`, the
snapshot's summary (queries.summary) with framework sets instead of bitmasks. The partition values
(`snapshot_date`, `snapshot`) are only in the directory names, never in the files: an engine that reads the
lake with Hive partitioning would otherwise find each twice. Every file carries the snapshot's id, taken_at
and classifier version as columns (`snapshot_id`, `taken_at`, `classifier_version`) and as Parquet key-value
metadata, with the lake's version and the snapshot revision it was written from.

Written from the published snapshot's DuckDB file with DuckDB's `COPY … (FORMAT parquet)` in a work dir under
tmp/, then each table's partition directory is renamed into place (swapped for the old one when a
reclassification rewrites it): a reader lists a partition whole or not at all, and a killed writer leaves only
a work dir that `clean_tmp` removes. The snapshot writer writes the lake right after publishing,
reclassification rewrites it, `queries.datadir.remove_snapshot` removes it, and `sync_lake` (`hubcensus
lake`) writes what is missing or stale and removes what no published snapshot owns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from hubcensus.queries.datadir import (
    META_NAME,
    Layout,
    SnapshotMeta,
    SnapshotNotFound,
    exchange,
    fsync_path,
    tmp_creation_lock,
    work_dir,
)
from hubcensus.queries.frameworks import BIT, FRAMEWORKS, METHODS
from hubcensus.queries.sql import sql_literal, sql_path
from hubcensus.queries.store import SnapshotStore
from hubcensus.queries.summary import revision

log = logging.getLogger(__name__)

LAKE_DIR = "lake"
LAKE_VERSION = 1
FILE_NAME = "part-0.parquet"
TABLES = ("models", "share_by_task", "summary")
# DuckDB's own default is 80 % of RAM: at 2M models the writer then peaked at 1.25 GB RSS, inside the worker.
# Streaming a COPY needs little; with this bound it peaked at 0.65 GB, in about the same time.
MEMORY_MB = 512

_KEY = "hubcensus.{}"
_VERSION_KEY = b"hubcensus.lake_version"
_REVISION_KEY = b"hubcensus.snapshot_revision"
_MASKS = {m: f"fw_{m}" for m in METHODS}
# The model columns the lake keeps, as a snapshot stores them (docs/LAKE.md says why the rest stay out); one a
# snapshot of an older release lacks is null.
_MODEL_COLUMNS = {
    "id": "VARCHAR",
    "author": "VARCHAR",
    "created_at": "TIMESTAMP",
    "last_modified": "TIMESTAMP",
    "downloads": "BIGINT",
    "likes": "BIGINT",
    "pipeline_tag": "VARCHAR",
    "library_name": "VARCHAR",
    "tags": "VARCHAR[]",
    "private": "BOOLEAN",
    "gated": "VARCHAR",
    "model_type": "VARCHAR",
    "auto_model": "VARCHAR",
}
_TIMESTAMPS = ("created_at", "last_modified")


def lake_root(data_dir: Path) -> Path:
    """The lake of a data dir."""
    return Path(data_dir) / LAKE_DIR


def partition(data_dir: Path, table: str, meta: SnapshotMeta) -> Path:
    """The directory of one snapshot's files of one table."""
    date = meta.taken_at.date().isoformat()  # taken_at is UTC (SnapshotWriter, import_dump)
    return lake_root(data_dir) / table / f"snapshot_date={date}" / f"snapshot={meta.id}"


def lake_files(data_dir: Path, snapshot_id: str) -> list[Path]:
    """Every lake file of a snapshot, sorted (none if it has no lake)."""
    return sorted(lake_root(data_dir).glob(f"*/snapshot_date=*/snapshot={snapshot_id}/*.parquet"))


def _partitions(data_dir: Path, snapshot_id: str) -> list[Path]:
    return sorted(lake_root(data_dir).glob(f"*/snapshot_date=*/snapshot={snapshot_id}"))


# ------------------------------------------------------------------------------------------------------
# The SQL of each table, over the snapshot's model table attached as `src`.
# ------------------------------------------------------------------------------------------------------


def frameworks_sql(mask: str) -> str:
    """The frameworks of a bitmask column as a list in canonical order (`[]` for none, null for a null mask)."""
    items = ", ".join(f"CASE WHEN {mask} & {BIT[fw]} <> 0 THEN '{fw}' END" for fw in FRAMEWORKS)
    return f"list_filter([{items}], lambda f: f IS NOT NULL)"


def bucket_sql(mask: str) -> str:
    """The bucket of a bitmask column, as `/v1/models?bucket=` names it: `none`, `<fw>_only` or `shared`."""
    alone = " ".join(f"WHEN {mask} = {BIT[fw]} THEN '{fw}_only'" for fw in FRAMEWORKS)
    return f"CASE WHEN {mask} IS NULL THEN NULL WHEN {mask} = 0 THEN 'none' {alone} ELSE 'shared' END"


def _snapshot_columns(meta: SnapshotMeta) -> str:
    taken_at = meta.taken_at.isoformat()
    return (
        f"{sql_literal(meta.id)} AS snapshot_id, {sql_literal(taken_at)}::TIMESTAMPTZ AS taken_at, "
        f"{sql_literal(meta.classifier_version)} AS classifier_version"
    )


def _models_sql(present: set[str], meta: SnapshotMeta) -> str:
    columns = []
    for name, kind in _MODEL_COLUMNS.items():
        value = name if name in present else f"NULL::{kind}"
        # Naive UTC in the snapshot; as TIMESTAMPTZ the files say UTC (isAdjustedToUTC), which every engine reads.
        columns.append(f"{value}::TIMESTAMPTZ AS {name}" if name in _TIMESTAMPS else f"{value} AS {name}")
    for method, mask in _MASKS.items():
        value = mask if mask in present else "NULL::UTINYINT"
        columns.append(f"{frameworks_sql(value)} AS frameworks_{method}")
        columns.append(f"{bucket_sql(value)} AS bucket_{method}")
    # In the snapshot's order, by id (its table is built sorted): an ORDER BY here cost a sort, 20 % at 2M models.
    return f"SELECT {', '.join(columns)}, {_snapshot_columns(meta)} FROM src.models"


def _counts_sql(present: set[str]) -> str:
    # The snapshot's summary kept in the lake writer's memory: a few thousand rows both aggregates are made of.
    masks = ", ".join(m if m in present else f"NULL::UTINYINT AS {m}" for m in _MASKS.values())
    return f"""CREATE TEMP TABLE counts AS
SELECT pipeline_tag, library_name, {masks},
    count(*)::BIGINT AS models, coalesce(sum(downloads), 0)::BIGINT AS downloads,
    coalesce(sum(likes), 0)::BIGINT AS likes
FROM src.models GROUP BY ALL"""


def _summary_sql(meta: SnapshotMeta) -> str:
    sets = ", ".join(f"{frameworks_sql(mask)} AS frameworks_{m}" for m, mask in _MASKS.items())
    return (
        f"SELECT pipeline_tag, library_name, {sets}, models, downloads, likes, {_snapshot_columns(meta)} "
        "FROM counts ORDER BY ALL"
    )


def _share_by_task_sql(meta: SnapshotMeta) -> str:
    # One block per method; a method the snapshot predates (null masks) has no rows rather than all `none`.
    per_method = "\nUNION ALL\n".join(
        f"SELECT pipeline_tag, '{m}' AS method, {mask} AS mask, models, downloads, likes FROM counts "
        f"WHERE {mask} IS NOT NULL"
        for m, mask in _MASKS.items()
    )
    return f"""SELECT pipeline_tag, method, {frameworks_sql("mask")} AS frameworks, {bucket_sql("mask")} AS bucket,
    sum(models)::BIGINT AS models, sum(downloads)::BIGINT AS downloads, sum(likes)::BIGINT AS likes,
    {_snapshot_columns(meta)}
FROM ({per_method})
GROUP BY pipeline_tag, method, mask
ORDER BY ALL"""


def _kv_metadata(meta: SnapshotMeta) -> str:
    pairs = {
        "snapshot_id": meta.id,
        "taken_at": meta.taken_at.isoformat(),
        "classifier_version": meta.classifier_version,
        "lake_version": str(LAKE_VERSION),
        "snapshot_revision": revision(meta),
    }
    return "{" + ", ".join(f'"{_KEY.format(k)}": {sql_literal(v)}' for k, v in pairs.items()) + "}"


# ------------------------------------------------------------------------------------------------------
# Writing, removing, checking.
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeWritten:
    """What writing one snapshot's lake did."""

    snapshot_id: str
    files: list[Path]
    bytes: int
    seconds: float


def write_lake(data_dir: Path, meta: SnapshotMeta) -> LakeWritten:
    """Write (or rewrite) a published snapshot's lake from its DuckDB file; each table's partition appears whole.

    SnapshotNotFound if the snapshot is not published (or was removed while its lake was written: then nothing
    of it stays in the lake).
    """
    started = time.monotonic()
    layout = Layout(Path(data_dir))
    db = layout.db(meta.id)
    if not db.exists():
        raise SnapshotNotFound(meta.id)
    with work_dir(data_dir, f"lake-{meta.id}-{secrets.token_hex(3)}") as work:
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")  # the naive UTC timestamps are cast to TIMESTAMPTZ as UTC
            con.execute(f"SET memory_limit = '{MEMORY_MB}MB'")
            con.execute(f"ATTACH {sql_path(db)} AS src (READ_ONLY)")
            present = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE src.models)").fetchall()}
            con.execute(_counts_sql(present))
            queries = {
                "models": _models_sql(present, meta),
                "share_by_task": _share_by_task_sql(meta),
                "summary": _summary_sql(meta),
            }
            options = f"FORMAT parquet, COMPRESSION zstd, KV_METADATA {_kv_metadata(meta)}"
            for table, query in queries.items():
                (work / table).mkdir()
                con.execute(f"COPY ({query}) TO {sql_path(work / table / FILE_NAME)} ({options})")
        finally:
            con.close()
        for table in TABLES:
            (work / table / FILE_NAME).chmod(0o444)
            fsync_path(work / table / FILE_NAME)
            _move_into_place(work / table, partition(data_dir, table, meta))
    if not (layout.snapshot(meta.id) / META_NAME).exists():
        remove_lake(data_dir, meta.id)  # removed meanwhile: its lake must not outlive it
        raise SnapshotNotFound(meta.id)
    files = lake_files(data_dir, meta.id)
    return LakeWritten(meta.id, files, sum(f.stat().st_size for f in files), round(time.monotonic() - started, 3))


def _move_into_place(source: Path, target: Path) -> None:
    # The date directory may be removed by a concurrent remove_lake between mkdir and rename: try again once.
    for attempt in (1, 2):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if target.exists() and exchange(source, target):
                break  # the old partition is now `source`, removed with the work dir
            if target.exists():
                shutil.rmtree(target)  # no RENAME_EXCHANGE here: a moment without the partition
            os.rename(source, target)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    fsync_path(target.parent)


def remove_lake(data_dir: Path, snapshot_id: str) -> int:
    """Remove a snapshot's lake, each partition with one rename out of the lake first; how many were removed."""
    layout = Layout(Path(data_dir))
    removed = 0
    for found in _partitions(data_dir, snapshot_id):
        with tmp_creation_lock(data_dir):
            aside = layout.tmp / f"removed-lake-{snapshot_id}-{secrets.token_hex(3)}"
            try:
                os.rename(found, aside)
            except FileNotFoundError:
                continue  # removed meanwhile
        fsync_path(found.parent)
        shutil.rmtree(aside, ignore_errors=True)
        removed += 1
        with contextlib.suppress(OSError):
            found.parent.rmdir()  # the date's last snapshot: no empty directories pile up over the years
    return removed


def current(data_dir: Path, meta: SnapshotMeta) -> bool:
    """Whether the snapshot has every table of its lake, written by this lake version from this revision."""
    for table in TABLES:
        try:
            tags = pq.read_metadata(partition(data_dir, table, meta) / FILE_NAME).metadata or {}
        except (OSError, pa.ArrowInvalid):
            return False
        if tags.get(_VERSION_KEY) != str(LAKE_VERSION).encode() or tags.get(_REVISION_KEY) != revision(meta).encode():
            return False
    return True


def write_after_publish(data_dir: Path, meta: SnapshotMeta) -> LakeWritten | None:
    """Write the lake of a snapshot just published (or reclassified). A failure (disk full) is logged, not raised:
    the snapshot itself is published and served; `hubcensus lake` (and the worker at start) writes it later."""
    try:
        return write_lake(data_dir, meta)
    except SnapshotNotFound:
        return None  # removed meanwhile: no lake to write
    except (OSError, duckdb.Error) as exc:
        log.error(
            "the lake of %s was not written (%s); `hubcensus lake --snapshot %s` writes it",
            meta.id,
            exc,
            meta.id,
        )
        return None


@dataclass(frozen=True)
class LakeSync:
    """What `sync_lake` did."""

    written: list[LakeWritten]
    current: list[str]
    removed: list[str]


def sync_lake(data_dir: Path, snapshot_ids: list[str] | None = None, *, force: bool = False) -> LakeSync:
    """Bring the lake in line with the published snapshots: write the lake of each snapshot (or of those named)
    that lacks it or has a stale one (another revision or lake version; every one with `force`); without names,
    also remove the partitions of snapshots that are not published (left by a kill between the two removals)."""
    layout = Layout(Path(data_dir))
    listed = {m.id: m for m in sorted(SnapshotStore(data_dir).snapshots(), key=lambda m: m.id)}
    if snapshot_ids is not None:
        missing = [s for s in snapshot_ids if s not in listed]
        if missing:
            raise SnapshotNotFound(missing[0])
    written, up_to_date = [], []
    for snapshot_id in snapshot_ids if snapshot_ids is not None else list(listed):
        meta = listed[snapshot_id]
        if not force and current(data_dir, meta):
            up_to_date.append(snapshot_id)
            continue
        with contextlib.suppress(SnapshotNotFound):  # removed meanwhile
            written.append(write_lake(data_dir, meta))
    removed: list[str] = []
    if snapshot_ids is None:
        root = lake_root(data_dir)
        owners = {p.name.removeprefix("snapshot=") for p in root.glob("*/snapshot_date=*/snapshot=*")}
        for orphan in sorted(owners - set(listed)):
            if not (layout.snapshot(orphan) / META_NAME).exists():  # published meanwhile? then it stays
                remove_lake(data_dir, orphan)
                removed.append(orphan)
    return LakeSync(written, up_to_date, removed)
