"""The staging file of a snapshot being written (`staging.duckdb` in the writer's work dir): rows and bad records
batched into DuckDB tables so memory stays flat, and the progress that a resumable run commits page by page.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from hubcensus.ingest.records import ROW_SCHEMA

BATCH_ROWS = 5_000
# Rows are flushed at BATCH_ROWS or at this many bytes of text, whichever comes first: a Hub row is about 1 KB,
# but a dump's records may be up to 32 MiB each (ingest.jsonread), and 5,000 of those would not fit in memory.
BATCH_BYTES = 64 * 2**20
# The raw columns as staged; `seq` keeps the input order so the last duplicate of an id wins.
STAGING_NAME = "staging.duckdb"
# DuckDB's default buffer pool is 80 % of RAM: a writer would keep 1.5 GiB at 2 million models. Bounded,
# it spills the final de-duplication and sort to a temp file in the work dir, and the worker stays small.
WRITER_CONFIG: dict[str, str | bool | int | float | list[str]] = {"memory_limit": "384MB"}

_STAGING_DDL = """
CREATE TABLE staging (
    seq BIGINT, id VARCHAR, author VARCHAR, created_at TIMESTAMP, last_modified TIMESTAMP,
    downloads BIGINT, likes BIGINT, tags VARCHAR[], pipeline_tag VARCHAR, library_name VARCHAR,
    private BOOLEAN, gated VARCHAR, weight_files VARCHAR[], model_type VARCHAR, architectures VARCHAR[],
    auto_model VARCHAR
)
"""

_STAGING_SCHEMA = ROW_SCHEMA.append(pa.field("seq", pa.int64()))

_BAD_DDL = "CREATE TABLE bad_records (position BIGINT, reason VARCHAR, excerpt VARCHAR)"
_BAD_SCHEMA = pa.schema([("position", pa.int64()), ("reason", pa.string()), ("excerpt", pa.string())])

_PROGRESS_DDL = """
CREATE TABLE progress (
    id VARCHAR, taken_at TIMESTAMPTZ, next_url VARCHAR, pages BIGINT, rows_seen BIGINT, updated_at TIMESTAMPTZ
)
"""


class Staging:
    """Rows and bad records staged in batches into the writer's DuckDB file, with the progress of the run.

    The base of SnapshotWriter (ingest/writer.py), which opens the file (`_start` or `_resume`) in its work dir
    and builds the published snapshot from what is staged.
    """

    def __init__(self) -> None:
        self.rows_seen = 0
        self.pages = 0
        self.next_url: str | None = None
        self._batch: list[dict[str, Any]] = []
        self._batch_bytes = 0
        self._bad_batch: list[tuple[int, str, str]] = []
        self._con: duckdb.DuckDBPyConnection | None = None

    def _start(self, path: Path, snapshot_id: str, taken_at: datetime) -> None:
        """Create a new staging file at `path`, in place of any left there."""
        remove_db(path)
        self._con = connect(path)
        self._con.execute(_STAGING_DDL)
        self._con.execute(_BAD_DDL)
        self._con.execute(_PROGRESS_DDL)
        self._con.execute("INSERT INTO progress VALUES (?, ?, NULL, 0, 0, now())", [snapshot_id, taken_at])

    def _resume(self, path: Path, max_age: float) -> tuple[str, datetime] | None:
        """Reopen an earlier, unfinished run's staging file, if it is fresh enough: the run's snapshot id and
        taken_at, or None to start over."""
        if not path.exists():
            return None
        con = None
        try:
            con = connect(path)
            rows = con.execute(
                "SELECT id, taken_at, next_url, pages, rows_seen, epoch(now() - updated_at) FROM progress"
            ).fetchall()
        except duckdb.Error:
            if con is not None:
                con.close()
            return None  # a file left half-created by a kill: start over
        row = rows[0] if rows else None
        # Resume only a run that committed at least one page, recently enough for its cursor to hold.
        if row is None or row[3] == 0 or row[5] > max_age:
            con.close()
            return None
        self.next_url, self.pages, self.rows_seen = row[2], row[3], row[4]
        self._con = con
        return row[0], row[1]

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The private read-write connection to the snapshot being written."""
        if self._con is None:
            raise RuntimeError("SnapshotWriter used outside its `with` block")
        return self._con

    @property
    def bad(self) -> int:
        """Records left out so far."""
        self._flush_bad()
        return scalar(self.con, "SELECT count(*) FROM bad_records")

    def bad_reasons(self, most: int = 20) -> dict[str, int]:
        """Bad records by reason, most frequent first."""
        self._flush_bad()
        rows = self.con.execute(
            "SELECT reason, count(*) FROM bad_records GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?", [most]
        ).fetchall()
        return {reason: int(n) for reason, n in rows}

    def add(self, row: dict[str, Any], seq: int | None = None) -> None:
        """Stage one validated row; flushed to DuckDB every BATCH_ROWS rows so memory stays flat.

        `seq` orders repeated ids (the highest wins); by default, the order of the calls.
        """
        row["seq"] = self.rows_seen if seq is None else seq
        self.rows_seen += 1
        self._batch.append(row)
        self._batch_bytes += _text_bytes(row)
        if len(self._batch) >= BATCH_ROWS or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def add_bad(self, position: int, reason: str, excerpt: str = "") -> None:
        """Record a record that could not be read, with its position in the input and the reason.

        Batched like rows: one INSERT per bad record cost about 1 ms (a dump of 200k records, half of
        them bad, took 1 min 42 s to fail).
        """
        self._bad_batch.append((position, reason, excerpt[:200]))
        if len(self._bad_batch) >= BATCH_ROWS:
            self._flush_bad()

    def add_page(self, rows: list[dict[str, Any]], bad: list[tuple[int, str, str]], next_url: str | None) -> None:
        """Commit one page: its rows, its bad records and where the next page is, all or nothing."""
        con = self.con
        before = (self.rows_seen, self.pages, self.next_url)
        con.execute("BEGIN TRANSACTION")
        try:
            # A page is flushed whole below, so its rows need no byte accounting: the page's HTTP body, already
            # in memory, bounds them (16 us a row saved, a fifth of the ingest's Python time).
            for row in rows:
                row["seq"] = self.rows_seen
                self.rows_seen += 1
            self._batch.extend(rows)
            for position, reason, excerpt in bad:
                self.add_bad(position, reason, excerpt)
            self.flush()
            self.pages += 1
            self.next_url = next_url
            con.execute(
                "UPDATE progress SET next_url = ?, pages = ?, rows_seen = ?, updated_at = now()",
                [next_url, self.pages, self.rows_seen],
            )
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            self.rows_seen, self.pages, self.next_url = before
            self._batch.clear()
            self._batch_bytes = 0
            self._bad_batch.clear()
            raise

    def stage_select(self, sql: str, params: list[Any]) -> int:
        """Stage the rows of `sql` (ROW_SCHEMA's columns, in input order, id NULL for a record it could
        not read) and return how many. Staged row k (its row id) is input record k: DuckDB keeps the
        insertion order, and the staging table must still be empty."""
        if self.rows_seen or scalar(self.con, "SELECT count(*) FROM staging"):
            raise RuntimeError("stage_select needs an empty staging table")
        cols = ", ".join(ROW_SCHEMA.names)
        self.con.execute(f"INSERT INTO staging ({cols}) SELECT * FROM ({sql})", params)
        staged, claimed = self.con.execute("SELECT count(*), count(id) FROM staging").fetchall()[0]
        self.rows_seen = int(claimed)
        return int(staged)

    def unclaimed(self) -> list[int]:
        """Record numbers (0-based) of the rows stage_select could not read."""
        rows = self.con.execute("SELECT rowid FROM staging WHERE id IS NULL ORDER BY 1").fetchall()
        return [int(r[0]) for r in rows]

    def clear_staged(self) -> None:
        """Drop every staged row and bad record, to start the input over."""
        self._batch.clear()
        self._batch_bytes = 0
        self._bad_batch.clear()
        self.con.execute("DELETE FROM staging")
        self.con.execute("DELETE FROM bad_records")
        self.rows_seen = 0

    def flush(self) -> None:
        """Write the staged batches (rows and bad records) into DuckDB."""
        self._flush_bad()
        if not self._batch:
            return
        self.con.register("batch", pa.Table.from_pylist(self._batch, schema=_STAGING_SCHEMA))
        cols = ", ".join(_STAGING_SCHEMA.names)
        self.con.execute(f"INSERT INTO staging ({cols}) SELECT {cols} FROM batch")
        self.con.unregister("batch")
        self._batch.clear()
        self._batch_bytes = 0

    def _flush_bad(self) -> None:
        if not self._bad_batch:
            return
        columns = zip(*self._bad_batch, strict=True)
        arrays = [pa.array(values, type=field.type) for values, field in zip(columns, _BAD_SCHEMA, strict=True)]
        self.con.register("bad_batch", pa.Table.from_arrays(arrays, schema=_BAD_SCHEMA))
        self.con.execute("INSERT INTO bad_records SELECT position, reason, excerpt FROM bad_batch")
        self.con.unregister("bad_batch")
        self._bad_batch.clear()


def remove_db(path: Path) -> None:
    """Delete a DuckDB file and its write-ahead log, if they are there."""
    for name in (path, path.with_name(path.name + ".wal")):
        name.unlink(missing_ok=True)


def _text_bytes(row: dict[str, Any]) -> int:
    """About how much text a staged row holds: its strings, and the strings in its lists."""
    size = 0
    for value in row.values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            size += sum(map(len, value)) + 8 * len(value)
    return size


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A writer's connection to a snapshot file: bounded memory, UTC, progress tracked but not printed."""
    con = duckdb.connect(str(path), config=WRITER_CONFIG)
    # Times are stored as naive UTC; the JSON reader's casts through TIMESTAMPTZ must not shift them.
    con.execute("SET TimeZone = 'UTC'")
    # Progress is tracked (SnapshotWriter.watch reads it) but never printed: DuckDB's own bar would draw
    # over the CLI's during a long statement (an import).
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    return con


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """The one integer `sql` returns."""
    # fetchall, not fetchone: DuckDB 2 keeps a partly fetched result open, which blocks register().
    return int(con.execute(sql).fetchall()[0][0])
