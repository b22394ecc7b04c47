"""Import dumps of Hub API model objects as snapshots.

Reads JSON arrays (several concatenated arrays in one file too), JSON Lines, hub-stats style
Parquet, and gzip of the JSON forms, streaming: memory does not grow with the file.

DuckDB reads the file first (`ingest.duckread`), several times faster; the records it cannot claim
are re-read here, one by one, and a file it cannot parse at all is read here whole. This reader is
exact about every bad record, its reason and its position (docs/ARCHITECTURE.md, "Importing dumps").
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, cast

import duckdb
import ijson
import pyarrow.parquet as pq

from hubcensus.ingest import duckread
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.progress import Progress
from hubcensus.ingest.records import BadRecord, parse_record
from hubcensus.ingest.writer import SnapshotWriter, bulk_gc, storage_errors
from hubcensus.queries.store import SnapshotMeta


@dataclass(frozen=True)
class Unreadable:
    """A piece of the input that did not decode as JSON."""

    reason: str
    excerpt: str


def _open(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb")) if _is_gzip(path) else path.open("rb")


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as raw:
        return raw.read(2) == b"\x1f\x8b"  # gzip magic, whatever the file is called


def _first_char(stream: IO[bytes]) -> bytes:
    # Peek past leading white space without consuming the stream (gzip streams cannot seek cheaply).
    while True:
        ch = stream.read(1)
        if not ch or not ch.isspace():
            return ch


def _json_format(path: Path) -> duckread.JsonFormat:
    """Which JSON form the file holds, from its first character; IngestError if neither."""
    with _open(path) as stream:
        try:
            first = _first_char(stream)
        except (OSError, EOFError) as exc:
            raise IngestError(f"{path}: cannot read: {exc}") from exc
    if first == b"[":
        return "array"
    if first == b"{":
        return "newline_delimited"
    if first == b"":
        raise IngestError(f"{path}: the file is empty")
    raise IngestError(f"{path}: not a JSON array, JSON Lines or Parquet file (starts with {first!r})")


def read_dump(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield `(position, value)` for each record: a decoded JSON value, or `Unreadable`.

    Positions are 1-based line numbers for JSON Lines and 1-based record numbers otherwise.
    Raises IngestError when the file as a whole cannot be read.
    """
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    if path.suffix == ".parquet":
        yield from _read_parquet(path)
        return
    fmt = _json_format(path)
    with _open(path) as stream:
        yield from (_read_arrays(path, stream) if fmt == "array" else _read_lines(stream))


def _read_arrays(path: Path, stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    position = 0
    try:
        # multiple_values: some real dumps are several arrays written one after another.
        for value in ijson.items(stream, "item", multiple_values=True, use_float=True):
            position += 1
            yield position, value
    except (ijson.JSONError, ijson.IncompleteJSONError, OSError, EOFError) as exc:
        # Past a syntax error a JSON array cannot be resynchronised: the whole file is unusable.
        raise IngestError(f"{path}: invalid JSON after record {position}: {exc}") from exc


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines with their 1-based line numbers: one record each in JSON Lines."""
    for lineno, line in enumerate(stream, start=1):
        if line.strip():
            yield lineno, line


def _decode(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        return Unreadable(f"invalid JSON: {reason}", line[:200].decode("utf-8", "replace"))


def _read_lines(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    for lineno, line in _lines(stream):
        yield lineno, _decode(line)


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise IngestError(f"{path}: not a readable Parquet file: {exc}") from exc
    position = 0
    for batch in parquet.iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            position += 1
            yield position, row


def import_dump(
    path: Path,
    data_dir: Path,
    *,
    taken_at: datetime,
    max_bad_share: float,
    on_progress: Callable[[Progress], None] | None = None,
    reader: Literal["auto", "python"] = "auto",
) -> SnapshotMeta:
    """Import one dump file as a snapshot; fails, publishing nothing, if too many records are bad.

    `reader` "auto" tries DuckDB's reader first; "python" forces the exact record-by-record one.
    """
    started = time.monotonic()
    with (
        bulk_gc(),
        storage_errors(str(path)),
        SnapshotWriter(data_dir, taken_at=taken_at, source=path.name, kind="import") as writer,
    ):

        def on_percent(percent: float) -> None:
            if on_progress is not None:
                on_progress(Progress(0, 0, None, time.monotonic() - started, percent=percent))

        watch = on_percent if on_progress is not None else None
        writer.reader = _load_with_duckdb(path, writer, watch) if reader == "auto" else None
        if writer.reader is None:
            writer.reader = "python"
            for position, value in read_dump(path):
                _stage(writer, position, value)
                if on_progress is not None and writer.rows_seen % 10_000 == 0:
                    on_progress(Progress(0, writer.rows_seen, None, time.monotonic() - started))
        elif on_progress is not None:
            on_progress(Progress(0, writer.rows_seen, writer.rows_seen, time.monotonic() - started))
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
        return writer.publish()


def _stage(writer: SnapshotWriter, position: int, value: Any, seq: int | None = None) -> None:
    """Stage one decoded record through the exact validator, or record why it is bad."""
    if isinstance(value, Unreadable):
        writer.add_bad(position, value.reason, value.excerpt)
        return
    try:
        writer.add(parse_record(value), seq=seq)
    except BadRecord as exc:
        writer.add_bad(position, str(exc), json.dumps(value, default=str)[:200])


def _load_with_duckdb(
    path: Path, writer: SnapshotWriter, on_percent: Callable[[float], None] | None = None
) -> Literal["duckdb", "duckdb+python"] | None:
    """Load the file with DuckDB's readers, in one of two ways, or return None to leave it to Python.

    "duckdb": every record was plain and every id unique, so DuckDB built the published table alone.
    "duckdb+python": DuckDB staged its rows in file order (staged row k is record k, so the last of
    repeated ids still wins) and the exact reader re-read only the records DuckDB could not claim.
    """
    if not path.is_file():
        return None
    fmt: duckread.JsonFormat | Literal["parquet"]
    if path.suffix == ".parquet":
        fmt = "parquet"
        select = _parquet_select(path, writer)
        if select is None:
            return None
    else:
        fmt = _json_format(path)
        select = duckread.rows_sql(fmt, "gzip" if _is_gzip(path) else "none")
    # A Parquet row group is decoded whole, per thread: at 2M models two threads at once need more than
    # the writer's memory limit (out of memory at 512 MB); one fits, at half the speed (2M: 12.5 s, against
    # 6.0 s on two threads at 768 MB), still six times the record-by-record reader.
    threads = 1 if fmt == "parquet" else None
    try:
        with writer.threads(threads), writer.watch(on_percent):
            if writer.load_models(duckread.models_sql(select), [str(path)], duckread.CHECK_SQL):
                return "duckdb"
            staged = writer.stage_select(select, [str(path)])
    except (
        duckdb.InvalidInputException,
        duckdb.ConversionException,
        duckdb.BinderException,
        duckdb.OutOfMemoryException,
    ):
        # Text DuckDB cannot take as one object per record (a syntax error, a list where a string
        # belongs, a repeated key, concatenated arrays): the exact reader says which record and why.
        # Out of memory (a record or row group larger than the writer's limit): it streams, record by record.
        writer.discard_models()
        return None
    unclaimed = writer.unclaimed()
    if unclaimed and not _reread(path, fmt, set(unclaimed), staged, writer):
        writer.clear_staged()
        return None
    return "duckdb+python"


def _parquet_select(path: Path, writer: SnapshotWriter) -> str | None:
    """DuckDB's SQL for this Parquet file, or None if its column types need the exact reader."""
    try:
        described = writer.con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    except duckdb.Error:
        return None  # not Parquet DuckDB can read: the exact reader says why
    return duckread.parquet_rows_sql({str(row[0]): str(row[1]) for row in described})


def _reread(
    path: Path, fmt: duckread.JsonFormat | Literal["parquet"], wanted: set[int], staged: int, writer: SnapshotWriter
) -> bool:
    """Stage records `wanted` (0-based record numbers) through the exact reader.

    False if the file's records do not line up one for one with DuckDB's rows: then neither reader's
    numbering can be trusted for the other, and the caller falls back to the exact reader throughout.
    """
    records = 0
    with _open(path) as stream:
        if fmt == "newline_delimited":
            # Only the wanted lines are decoded: the others cost a line split, not a json.loads.
            for records, (lineno, line) in enumerate(_lines(stream), start=1):
                if records - 1 in wanted:
                    _stage(writer, lineno, _decode(line), seq=records - 1)
        else:
            values = _read_parquet(path) if fmt == "parquet" else _read_arrays(path, stream)
            for records, (position, value) in enumerate(values, start=1):
                if records - 1 in wanted:
                    _stage(writer, position, value, seq=records - 1)
    return records == staged
