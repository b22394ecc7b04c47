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

from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.records import ROW_SCHEMA
from hubcensus.ingest.staging import STAGING_NAME, Staging, remove_db, scalar
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
from hubcensus.queries.facts import WEIGHT_FILE
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, classified_sql
from hubcensus.queries.lake import write_after_publish
from hubcensus.queries.sql import sql_path
from hubcensus.queries.summary import publish_with

PROGRESS_EVERY_S = 0.25  # how often a long DuckDB statement's progress is read (SnapshotWriter.watch)


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


class SnapshotWriter(Staging):
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
        super().__init__()
        self.data_dir = Path(data_dir)
        self.taken_at = taken_at.astimezone(UTC)
        self.source = source
        self.kind = kind
        self.params = params or {}
        self.id = new_snapshot_id(self.taken_at)
        self.resumed = False
        self._resume_max_age = resume_max_age
        self._started = time.monotonic()
        self._resume_key = resume_key
        self._tmp = Path()  # the work dir, from __enter__ on
        self._release = contextlib.ExitStack()
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
        # A resumable run continues an earlier one of the same key, if fresh enough, under its id and time.
        run = self._resume(self._tmp / STAGING_NAME, self._resume_max_age) if resumable else None
        if run is not None:
            self.id, self.taken_at = run
            self.resumed = True
        else:
            self._start(self._tmp / STAGING_NAME, self.id, self.taken_at)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Reached with the work directory still in place only when publish() did not finish. A resumable
        # run keeps it (every committed page is whole) for the next attempt; any other run discards it.
        if self._con is not None:
            self._con.close()
            self._con = None
        self._release.close()

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
        remove_db(self._tmp / DB_NAME)
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

    def _attach_out(self) -> None:
        # The published file is written fresh from the staging file: DuckDB never shrinks a file after a
        # DROP, so building in place would publish the staging rows' free blocks too (about half the size).
        out_path = self._tmp / DB_NAME
        out_path.unlink(missing_ok=True)
        self.con.execute(f"ATTACH {sql_path(out_path)} AS out")

    def publish(self) -> SnapshotMeta:
        """Finish the tables, record the metadata and make the snapshot visible atomically."""
        self.flush()
        con = self.con
        if not self._models_loaded:
            self._attach_out()
            con.execute(_models_sql())
        con.execute("CREATE TABLE out.bad_records AS SELECT * FROM bad_records ORDER BY position")
        models = scalar(con, "SELECT count(*) FROM out.models")
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
        # Prepared once here, as the snapshot never changes: histories read this instead of the model table.
        meta = publish_with(con, self._tmp, meta, "out.models")
        con.execute("CREATE TABLE out.meta AS SELECT ?::JSON AS meta", [meta.model_dump_json()])
        con.execute("DETACH out")
        con.close()
        self._con = None
        remove_db(self._tmp / STAGING_NAME)
        seal(self._tmp, meta)
        publish(self.data_dir, self._tmp, self.id)
        # Every ingest, import and backfill publishes here: its lake is written now, before the caller (the
        # worker's archive upload) goes on.
        write_after_publish(self.data_dir, meta)
        return meta
