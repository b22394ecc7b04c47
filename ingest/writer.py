"""Writes one snapshot: rows streamed in bounded batches into a private DuckDB file, then published.

Nothing is visible until `publish()` renames the finished work dir into snapshots/; an exception
or a kill before that leaves only a work dir, which `queries.datadir.clean_tmp` removes.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import duckdb
import pyarrow as pa

from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.records import ROW_SCHEMA
from hubcensus.queries.conditions import WEIGHT_FILE
from hubcensus.queries.datadir import (
    DB_NAME,
    SnapshotMeta,
    WorkDirBusy,
    clean_tmp,
    new_snapshot_id,
    publish,
    seal,
    work_dir,
)
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, classified_sql
from hubcensus.queries.sql import sql_path

BATCH_ROWS = 5_000
# Rows are flushed at BATCH_ROWS or at this many bytes of text, whichever comes first: a Hub row is about 1 KB,
# but a dump's records may be up to 32 MiB each (ingest.jsonread), and 5,000 of those would not fit in memory.
BATCH_BYTES = 64 * 2**20
PROGRESS_EVERY_S = 0.25  # how often a long DuckDB statement's progress is read (SnapshotWriter.watch)

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


def _models_sql() -> str:
    # One row per id (the last record read wins), with each method's framework bitmask computed once
    # here: a published snapshot never changes, so queries never have to re-derive them. Rows staged
    # by DuckDB's JSON reader have no seq: their row id is their record number (see stage_select), and
    # a NULL id marks a record it left to the exact reader.
    latest = f"""SELECT {", ".join(ROW_SCHEMA.names)}
FROM staging
WHERE id IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY id ORDER BY coalesce(seq, rowid) DESC) = 1"""
    return f"CREATE TABLE out.models AS\n{classified_sql(latest)}\nORDER BY id\n"


_PROGRESS_DDL = """
CREATE TABLE progress (
    id VARCHAR, taken_at TIMESTAMPTZ, next_url VARCHAR, pages BIGINT, rows_seen BIGINT, updated_at TIMESTAMPTZ
)
"""


@contextlib.contextmanager
def bulk_gc() -> Iterator[None]:
    """Run a bulk load with the cyclic garbage collector rarely on.

    A load allocates millions of short-lived dicts and lists that reference counting frees; with the
    default thresholds the collector still walks the young generation every 700 allocations, about a
    third of the per-record parse time (profiled at 2 million models: 23.5 -> 16.1 us per record).
    """
    before = gc.get_threshold()
    gc.freeze()  # everything loaded so far (modules, settings) is never a cycle worth scanning
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn a failure to write the snapshot (disk full, I/O error) into a clear IngestError."""
    try:
        yield
    except (duckdb.Error, OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(f"{what}: writing the snapshot failed ({first_line}); nothing was published.") from exc


class SnapshotWriter:
    """Context manager that stages rows and publishes them as one immutable snapshot.

    With `resume_key`, the work directory is `resume/<key>/` instead of a fresh `tmp/<id>/`, it survives
    a failure, and a later writer with the same key continues it (pages, rows and the next page's URL
    are committed together, page by page) if it is younger than `resume_max_age` seconds.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        taken_at: datetime,
        source: str,
        kind: Literal["ingest", "import"],
        params: dict[str, Any] | None = None,
        resume_key: str | None = None,
        resume_max_age: float = 0.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.taken_at = taken_at.astimezone(UTC)
        self.source = source
        self.kind = kind
        self.params = params or {}
        self.id = new_snapshot_id(self.taken_at)
        self.rows_seen = 0
        self.pages = 0
        self.next_url: str | None = None
        self.resumed = False
        self._resume_max_age = resume_max_age
        self._started = time.monotonic()
        self._batch: list[dict[str, Any]] = []
        self._batch_bytes = 0
        self._bad_batch: list[tuple[int, str, str]] = []
        self._resume_key = resume_key
        self._tmp = Path()  # the work dir, from __enter__ on
        self._release = contextlib.ExitStack()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._models_loaded = False
        self.reader: Literal["duckdb", "duckdb+python", "python"] | None = None

    def __enter__(self) -> Self:
        clean_tmp(self.data_dir)
        resumable = self._resume_key is not None
        try:
            self._tmp = self._release.enter_context(
                work_dir(self.data_dir, self._resume_key or self.id, resumable=resumable)
            )
        except WorkDirBusy as exc:
            raise IngestError(f"another run is already writing {exc.path}; try again when it ends") from None
        if resumable and self._adopt():
            return self
        for leftover in (self._tmp / STAGING_NAME, self._tmp / (STAGING_NAME + ".wal")):
            leftover.unlink(missing_ok=True)
        self._con = connect(self._tmp / STAGING_NAME)
        self._con.execute(_STAGING_DDL)
        self._con.execute(_BAD_DDL)
        self._con.execute(_PROGRESS_DDL)
        self._con.execute("INSERT INTO progress VALUES (?, ?, NULL, 0, 0, now())", [self.id, self.taken_at])
        return self

    def _adopt(self) -> bool:
        """Continue an earlier, unfinished run in the resume directory, if it is fresh enough."""
        db = self._tmp / STAGING_NAME
        if not db.exists():
            return False
        con = None
        try:
            con = connect(db)
            rows = con.execute(
                "SELECT id, taken_at, next_url, pages, rows_seen, epoch(now() - updated_at) FROM progress"
            ).fetchall()
        except duckdb.Error:
            if con is not None:
                con.close()
            return False  # a file left half-created by a kill: start over
        row = rows[0] if rows else None
        # Resume only a run that committed at least one page, recently enough for its cursor to hold.
        if row is None or row[3] == 0 or row[5] > self._resume_max_age:
            con.close()
            return False
        self.id, self.taken_at, self.next_url, self.pages, self.rows_seen = row[0], row[1], row[2], row[3], row[4]
        self.resumed = True
        self._con = con
        return True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Reached with the work directory still in place only when publish() did not finish. A resumable
        # run keeps it (every committed page is whole) for the next attempt; any other run discards it.
        if self._con is not None:
            self._con.close()
            self._con = None
        self._release.close()

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
        return _scalar(self.con, "SELECT count(*) FROM bad_records")

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

    def load_models(self, sql: str, params: list[Any], check_sql: str) -> bool:
        """Build the published models table with `sql` (a `CREATE TABLE out.models` statement), bypassing staging.

        `check_sql` returns (rows, unreadable rows, repeated ids) of what was built. The table is kept, and
        publish() uses it, only if it has rows, all readable and unique; otherwise it is dropped and False
        returned, and the caller stages rows one by one as usual.
        """
        con = self.con
        self._attach_out()
        con.execute(sql, params)
        rows, unreadable, repeated = con.execute(check_sql).fetchall()[0]
        if rows > 0 and unreadable == 0 and repeated == 0:
            self.rows_seen = int(rows)
            self._models_loaded = True
            return True
        self.discard_models()
        return False

    def discard_models(self) -> None:
        """Forget a models table load_models() started, so rows can be staged instead."""
        with contextlib.suppress(duckdb.Error):
            self.con.execute("DETACH out")
        for name in (DB_NAME, DB_NAME + ".wal"):
            (self._tmp / name).unlink(missing_ok=True)
        self._models_loaded = False

    @contextlib.contextmanager
    def watch(self, on_percent: Callable[[float], None] | None) -> Iterator[None]:
        """Within the block, call `on_percent` with DuckDB's progress of the running statement, from a thread."""
        if on_percent is None:
            yield
            return
        con, stop = self.con, threading.Event()

        def poll() -> None:
            while not stop.wait(PROGRESS_EVERY_S):
                percent = con.query_progress()  # -1 until DuckDB has an estimate
                if percent >= 0:
                    on_percent(percent)

        thread = threading.Thread(target=poll, name="load-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @contextlib.contextmanager
    def threads(self, n: int | None) -> Iterator[None]:
        """Within the block, DuckDB uses at most `n` threads on this writer's connection (None: all)."""
        if n is None:
            yield
            return
        self.con.execute(f"SET threads = {int(n)}")
        try:
            yield
        finally:
            if self._con is not None:
                self._con.execute("RESET threads")

    def stage_select(self, sql: str, params: list[Any]) -> int:
        """Stage the rows of `sql` (ROW_SCHEMA's columns, in input order, id NULL for a record it could
        not read) and return how many. Staged row k (its row id) is input record k: DuckDB keeps the
        insertion order, and the staging table must still be empty."""
        if self.rows_seen or _scalar(self.con, "SELECT count(*) FROM staging"):
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

    def _attach_out(self) -> None:
        # The published file is written fresh from the staging file: DuckDB never shrinks a file after a
        # DROP, so building in place would publish the staging rows' free blocks too (about half the size).
        out_path = self._tmp / DB_NAME
        out_path.unlink(missing_ok=True)
        self.con.execute(f"ATTACH {sql_path(out_path)} AS out")

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

    def publish(self) -> SnapshotMeta:
        """Finish the tables, record the metadata and make the snapshot visible atomically."""
        self.flush()
        con = self.con
        if not self._models_loaded:
            self._attach_out()
            con.execute(_models_sql())
        con.execute("CREATE TABLE out.bad_records AS SELECT * FROM bad_records ORDER BY position")
        models = _scalar(con, "SELECT count(*) FROM out.models")
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
            weight_file_pattern=WEIGHT_FILE.pattern,
            published_at=datetime.now(UTC),
            bad_reasons=self.bad_reasons(),
            params=self.params,
            reader=self.reader,
        )
        con.execute("CREATE TABLE out.meta AS SELECT ?::JSON AS meta", [meta.model_dump_json()])
        con.execute("DETACH out")
        con.close()
        self._con = None
        for staging in (self._tmp / STAGING_NAME, self._tmp / (STAGING_NAME + ".wal")):
            staging.unlink(missing_ok=True)
        seal(self._tmp, meta)
        publish(self.data_dir, self._tmp, self.id)
        return meta


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


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    # fetchall, not fetchone: DuckDB 2 keeps a partly fetched result open, which blocks register().
    return int(con.execute(sql).fetchall()[0][0])
