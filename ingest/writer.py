"""Writes one snapshot: rows streamed in bounded batches into a private DuckDB file, then published.

Nothing is visible until `publish()` renames the finished directory into snapshots/; an exception
or a kill before that leaves only a temp directory, which `queries.store.clean_tmp` removes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import duckdb
import filelock
import pyarrow as pa

from ingest.records import ROW_SCHEMA
from queries.frameworks import CLASSIFIER_VERSION, METHODS, mask_sql
from queries.store import (
    DB_NAME,
    META_NAME,
    SnapshotMeta,
    clean_tmp,
    fsync_path,
    new_snapshot_id,
    tmp_creation_lock,
)

BATCH_ROWS = 5_000

# The raw columns as staged; `seq` keeps the input order so the last duplicate of an id wins.
_STAGING_DDL = """
CREATE TABLE staging (
    seq BIGINT, id VARCHAR, author VARCHAR, created_at TIMESTAMP, last_modified TIMESTAMP,
    downloads BIGINT, likes BIGINT, tags VARCHAR[], pipeline_tag VARCHAR, library_name VARCHAR,
    private BOOLEAN, gated VARCHAR, sha VARCHAR, files VARCHAR[]
)
"""

_STAGING_SCHEMA = ROW_SCHEMA.append(pa.field("seq", pa.int64()))

_BAD_DDL = "CREATE TABLE bad_records (position BIGINT, reason VARCHAR, excerpt VARCHAR)"


def _models_sql() -> str:
    # One row per id (the last record read wins), with each method's framework bitmask computed once
    # here: a published snapshot never changes, so queries never have to re-derive them.
    masks = ",\n    ".join(f"{mask_sql(m)} AS fw_{m}" for m in METHODS)
    return f"""
CREATE TABLE models AS
SELECT id, author, created_at, last_modified, downloads, likes, tags, pipeline_tag, library_name,
    private, gated, sha, files,
    {masks}
FROM staging
QUALIFY row_number() OVER (PARTITION BY id ORDER BY seq DESC) = 1
ORDER BY id
"""


class SnapshotWriter:
    """Context manager that stages rows and publishes them as one immutable snapshot."""

    def __init__(
        self,
        data_dir: Path,
        *,
        taken_at: datetime,
        source: str,
        kind: Literal["ingest", "import"],
        params: dict[str, Any] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.taken_at = taken_at.astimezone(UTC)
        self.source = source
        self.kind = kind
        self.params = params or {}
        self.id = new_snapshot_id(self.taken_at)
        self.rows_seen = 0
        self.bad = 0
        self.bad_reasons: Counter[str] = Counter()
        self._started = time.monotonic()
        self._batch: list[dict[str, Any]] = []
        self._tmp = self.data_dir / "tmp" / self.id
        self._lock: filelock.FileLock | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> Self:
        clean_tmp(self.data_dir)
        with tmp_creation_lock(self.data_dir):
            self._tmp.mkdir(parents=True)
            self._lock = filelock.FileLock(self._tmp / ".lock", preserve_lock_file=True)
            self._lock.acquire()
        self._con = duckdb.connect(str(self._tmp / DB_NAME))
        self._con.execute(_STAGING_DDL)
        self._con.execute(_BAD_DDL)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Reached with the directory still in tmp/ only when publish() did not finish: discard it.
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The private read-write connection to the snapshot being written."""
        if self._con is None:
            raise RuntimeError("SnapshotWriter used outside its `with` block")
        return self._con

    def add(self, row: dict[str, Any]) -> None:
        """Stage one validated row; flushed to DuckDB every BATCH_ROWS rows so memory stays flat."""
        row["seq"] = self.rows_seen
        self.rows_seen += 1
        self._batch.append(row)
        if len(self._batch) >= BATCH_ROWS:
            self.flush()

    def add_bad(self, position: int, reason: str, excerpt: str = "") -> None:
        """Record a record that could not be read, with its position in the input and the reason."""
        self.bad += 1
        self.bad_reasons[reason] += 1
        self.con.execute("INSERT INTO bad_records VALUES (?, ?, ?)", [position, reason, excerpt[:200]])

    def flush(self) -> None:
        """Write the staged batch into DuckDB."""
        if not self._batch:
            return
        self.con.register("batch", pa.Table.from_pylist(self._batch, schema=_STAGING_SCHEMA))
        cols = ", ".join(_STAGING_SCHEMA.names)
        self.con.execute(f"INSERT INTO staging ({cols}) SELECT {cols} FROM batch")
        self.con.unregister("batch")
        self._batch.clear()

    def publish(self) -> SnapshotMeta:
        """Finish the tables, record the metadata and make the snapshot visible atomically."""
        self.flush()
        con = self.con
        con.execute(_models_sql())
        con.execute("DROP TABLE staging")
        models = _scalar(con, "SELECT count(*) FROM models")
        meta = SnapshotMeta(
            id=self.id,
            taken_at=self.taken_at,
            source=self.source,
            kind=self.kind,
            models=models,
            bad_records=self.bad,
            duplicates=self.rows_seen - models,
            duration_s=round(time.monotonic() - self._started, 3),
            classifier_version=CLASSIFIER_VERSION,
            published_at=datetime.now(UTC),
            bad_reasons=dict(self.bad_reasons.most_common(20)),
            params=self.params,
        )
        con.execute("CREATE TABLE meta AS SELECT ?::JSON AS meta", [meta.model_dump_json()])
        con.execute("CHECKPOINT")
        con.close()
        self._con = None
        (self._tmp / META_NAME).write_text(json.dumps(meta.model_dump(mode="json"), indent=2))
        for name in (DB_NAME, META_NAME):
            # Read-only on disk too: a published snapshot is immutable, and tools should see that.
            (self._tmp / name).chmod(0o444)
            fsync_path(self._tmp / name)
        (self._tmp / ".lock").unlink(missing_ok=True)
        snapshots_dir = self.data_dir / "snapshots"
        snapshots_dir.mkdir(parents=True, exist_ok=True)
        # The publication point: one rename of a complete directory within one file system.
        os.rename(self._tmp, snapshots_dir / self.id)
        fsync_path(snapshots_dir)
        return meta


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])
