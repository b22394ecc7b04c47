"""Import dumps of Hub API model objects as snapshots.

DuckDB reads the file first (`ingest.duckread`), several times faster; the records it cannot claim
are re-read by the exact reader (`ingest.dumpfile`), one by one, and a file it cannot parse at all is
read by it whole. That reader is exact about every bad record, its reason and its position
(docs/ARCHITECTURE.md, "Importing dumps").
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb

from hubcensus.ingest import duckread, jsonread
from hubcensus.ingest.dumpfile import DumpFile, json_format, read_arrays, read_dump, read_parquet
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.jsonread import Unreadable
from hubcensus.ingest.progress import Progress
from hubcensus.ingest.records import BadRecord, parse_record
from hubcensus.ingest.writer import SnapshotWriter, bulk_gc, storage_errors
from hubcensus.queries.datadir import SnapshotMeta


def import_dump(
    path: Path,
    data_dir: Path,
    *,
    taken_at: datetime,
    max_bad_share: float,
    on_progress: Callable[[Progress], None] | None = None,
    reader: Literal["auto", "python"] = "auto",
    source: str | None = None,
    params: dict[str, Any] | None = None,
    parquet_threads: int | None = 1,
) -> SnapshotMeta:
    """Import one dump file as a snapshot; fails, publishing nothing, if too many records are bad.

    `reader` "auto" tries DuckDB's reader first; "python" forces the exact record-by-record one. `source` (default:
    the file's name) and `params` are recorded in meta.json: a backfill names the archive version it read.
    `parquet_threads`: DuckDB's threads for a Parquet file (None: all); one, unless the caller wrote the file with
    row groups small enough for several at once (the backfill's local copy).
    """
    started = time.monotonic()
    with (
        DumpFile(path) as dump,
        bulk_gc(),
        storage_errors(str(path)),
        SnapshotWriter(data_dir, taken_at=taken_at, source=source or path.name, kind="import", params=params) as writer,
    ):

        def on_percent(percent: float) -> None:
            if on_progress is not None:
                on_progress(Progress(0, 0, None, time.monotonic() - started, percent=percent))

        try:
            watch = on_percent if on_progress is not None else None
            writer.reader = _load_with_duckdb(dump, writer, watch, parquet_threads) if reader == "auto" else None
            if writer.reader is None:
                writer.reader = "python"
                for position, value in read_dump(dump):
                    _stage(writer, position, value)
                    if on_progress is not None and writer.rows_seen % 10_000 == 0:
                        on_progress(Progress(0, writer.rows_seen, None, time.monotonic() - started))
            elif on_progress is not None:
                on_progress(Progress(0, writer.rows_seen, writer.rows_seen, time.monotonic() - started))
            _check_bad_share(path, writer, max_bad_share)
        except Exception:
            dump.check()  # a file that changed while it was read explains any failure best
            raise
        dump.check()
        return writer.publish()


def _check_bad_share(path: Path, writer: SnapshotWriter, max_bad_share: float) -> None:
    bad = writer.bad
    total = writer.rows_seen + bad
    if writer.rows_seen == 0:
        raise IngestError(f"{path}: no readable model records ({bad} bad); nothing was published.")
    if bad / total > max_bad_share:
        reasons = "; ".join(f"{n}x {r}" for r, n in writer.bad_reasons(3).items())
        raise IngestError(
            f"{path}: {bad} of {total} records are bad, more than the allowed share "
            f"{max_bad_share:.1%}; nothing was published. Most common: {reasons}"
        )


def _stage(writer: SnapshotWriter, position: int, value: Any, seq: int | None = None) -> None:
    """Stage one decoded record through the exact validator, or record why it is bad."""
    if isinstance(value, Unreadable):
        writer.add_bad(position, value.reason, value.excerpt)
        return
    try:
        writer.add(parse_record(value), seq=seq)
    except BadRecord as exc:
        # Nesting past the limit is the reason, whichever reader built the value (json.loads builds up to
        # about 1,000 levels, the streaming reader up to MAX_DEPTH), so that both name the same reason.
        reason = jsonread.TOO_DEEP if jsonread.too_deep(value) else str(exc)
        writer.add_bad(position, reason, _excerpt(value))


def _excerpt(value: Any) -> str:
    try:
        return json.dumps(value, default=str)[:200]
    except RecursionError:  # a value json.loads could build but json.dumps, deeper in the stack, cannot
        return ""


def _load_with_duckdb(
    dump: DumpFile,
    writer: SnapshotWriter,
    on_percent: Callable[[float], None] | None = None,
    parquet_threads: int | None = 1,
) -> Literal["duckdb", "duckdb+python"] | None:
    """Load the file with DuckDB's readers, in one of two ways, or return None to leave it to Python.

    "duckdb": every record was plain and every id unique, so DuckDB built the published table alone.
    "duckdb+python": DuckDB staged its rows in file order (staged row k is record k, so the last of
    repeated ids still wins) and the exact reader re-read only the records DuckDB could not claim.
    """
    fmt: duckread.JsonFormat | Literal["parquet"]
    source = [str(dump.read_path)]
    if dump.suffix == ".parquet":
        fmt = "parquet"
        select = _parquet_select(source, writer)
        if select is None:
            return None
    else:
        fmt = json_format(dump)
        select = duckread.rows_sql(fmt, "gzip" if dump.is_gzip() else "none")
    # A Parquet row group is decoded whole, per thread: at 2M models two threads at once need more than
    # the writer's memory limit (out of memory at 512 MB); one fits, at half the speed (2M: 12.5 s, against
    # 6.0 s on two threads at 768 MB), still six times the record-by-record reader.
    threads = parquet_threads if fmt == "parquet" else None
    try:
        with writer.threads(threads), writer.watch(on_percent):
            if writer.load_models(duckread.models_sql(select), source, duckread.CHECK_SQL):
                return "duckdb"
            staged = writer.stage_select(select, source)
    except (
        duckdb.InvalidInputException,
        duckdb.ConversionException,
        duckdb.BinderException,
        duckdb.OutOfMemoryException,
        duckdb.IOException,
    ):
        # Text DuckDB cannot take as one object per record (a syntax error, a list where a string
        # belongs, a repeated key, concatenated arrays, a record over its maximum_object_size): the exact
        # reader says which record and why. Out of memory (a record or row group larger than the writer's
        # limit): it streams, record by record. A read error (a truncated .gz): it says so in words.
        writer.discard_models()
        return None
    unclaimed = writer.unclaimed()
    if unclaimed and not _reread(dump, fmt, set(unclaimed), staged, writer):
        writer.clear_staged()
        return None
    return "duckdb+python"


def _parquet_select(source: list[str], writer: SnapshotWriter) -> str | None:
    """DuckDB's SQL for this Parquet file, or None if its column types need the exact reader."""
    try:
        described = writer.con.execute("DESCRIBE SELECT * FROM read_parquet(?)", source).fetchall()
    except duckdb.Error:
        return None  # not Parquet DuckDB can read: the exact reader says why
    return duckread.parquet_rows_sql({str(row[0]): str(row[1]) for row in described})


def _reread(
    dump: DumpFile,
    fmt: duckread.JsonFormat | Literal["parquet"],
    wanted: set[int],
    staged: int,
    writer: SnapshotWriter,
) -> bool:
    """Stage records `wanted` (0-based record numbers) through the exact reader.

    False if the file's records do not line up one for one with DuckDB's rows: then neither reader's
    numbering can be trusted for the other, and the caller falls back to the exact reader throughout.
    """
    records = 0
    if fmt == "newline_delimited":
        with dump.open() as stream:
            # Only the wanted lines are decoded: the others cost a line split, not a json.loads.
            for records, (lineno, line) in enumerate(jsonread.json_lines(stream), start=1):
                if records - 1 in wanted:
                    value = line if isinstance(line, Unreadable) else jsonread.decode_line(line)
                    _stage(writer, lineno, value, seq=records - 1)
    else:
        with contextlib.ExitStack() as stack:
            values = read_parquet(dump) if fmt == "parquet" else read_arrays(dump, stack.enter_context(dump.open()))
            for records, (position, value) in enumerate(values, start=1):
                if records - 1 in wanted:
                    _stage(writer, position, value, seq=records - 1)
    return records == staged
