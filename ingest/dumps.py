"""Import dumps of Hub API model objects as snapshots.

Reads JSON arrays (several concatenated arrays in one file too), JSON Lines, hub-stats style
Parquet, and gzip of the JSON forms, streaming: memory does not grow with the file.

DuckDB reads the file first (`ingest.duckread`), several times faster; the records it cannot claim
are re-read here, one by one, and a file it cannot parse at all is read here whole. This reader is
exact about every bad record, its reason and its position (docs/ARCHITECTURE.md, "Importing dumps").
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, cast

import duckdb
import ijson
import pyarrow.parquet as pq

from hubcensus.ingest import duckread, jsonread
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.jsonread import Unreadable
from hubcensus.ingest.progress import Progress
from hubcensus.ingest.records import BadRecord, parse_record
from hubcensus.ingest.writer import SnapshotWriter, bulk_gc, storage_errors
from hubcensus.queries.datadir import SnapshotMeta


class DumpFile:
    """The dump, opened once: every pass over it (DuckDB's and Python's) reads this one version of the file.

    Passes open `read_path`, which on Linux is /proc/self/fd/N of the descriptor held here: the file as it
    was opened, even if a new version is renamed over its name meanwhile (an import read it in up to four
    passes, and published a mix of two versions). A file rewritten in place is the same file: `check`
    compares its size and modification time with those at the start, and fails the import if they differ.
    """

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.suffix = path.suffix
        try:
            # O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is refused just below.
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise IngestError(f"{path}: no such file") from None
        except OSError as exc:
            raise IngestError(f"{path}: cannot open: {exc.strerror}") from None
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self._fd)
            raise IngestError(f"{path}: not a regular file")
        self._version = (st.st_size, st.st_mtime_ns)
        proc = Path(f"/proc/self/fd/{self._fd}")
        self.read_path = proc if proc.exists() else path

    def __enter__(self) -> DumpFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def check(self) -> None:
        """Raise IngestError if the file was written to since it was opened."""
        st = os.fstat(self._fd)
        if (st.st_size, st.st_mtime_ns) != self._version:
            raise IngestError(
                f"{self.name}: the file was written to while it was being imported; nothing was published. "
                "Import it once it is complete (a dump written to a new file and renamed into place is safe)."
            )

    def open(self) -> IO[bytes]:
        """A new stream over the file's bytes, decompressed if it is gzip."""
        return cast(IO[bytes], gzip.open(self.read_path, "rb")) if self.is_gzip() else self.read_path.open("rb")

    def is_gzip(self) -> bool:
        with self.read_path.open("rb") as raw:
            return raw.read(2) == b"\x1f\x8b"  # gzip magic, whatever the file is called


def _first_char(stream: IO[bytes]) -> bytes | None:
    """The first character that is not white space (b"" if none), read in chunks; None if there is none in
    the first MAX_RECORD_BYTES (a gzip of 1 GiB of spaces is 1 MB, and took 6 minutes read byte by byte)."""
    seen = 0
    while chunk := stream.read(jsonread.READ_BYTES):
        text = chunk.lstrip()
        if text:
            return text[:1]
        seen += len(chunk)
        if seen > jsonread.MAX_RECORD_BYTES:
            return None
    return b""


def _json_format(dump: DumpFile) -> duckread.JsonFormat:
    """Which JSON form the file holds, from its first character; IngestError if neither."""
    try:
        with dump.open() as stream:
            first = _first_char(stream)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"{dump.name}: {_read_failure(exc)}") from exc
    if first is None:
        limit = jsonread.MAX_RECORD_BYTES // jsonread.MiB
        raise IngestError(f"{dump.name}: starts with more than {limit} MiB of white space and nothing else: not a dump")
    if first == b"[":
        return "array"
    if first == b"{":
        return "newline_delimited"
    if first == b"":
        raise IngestError(f"{dump.name}: the file is empty")
    raise IngestError(f"{dump.name}: not a JSON array, JSON Lines or Parquet file (starts with {first!r})")


def _read_failure(exc: BaseException) -> str:
    """What a failure to read the bytes of a dump means, in words."""
    if isinstance(exc, EOFError):
        return "the compressed data ends early (a truncated .gz?)"
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return f"corrupt gzip data ({exc})"
    return f"cannot read: {exc}"


def read_dump(dump: DumpFile) -> Iterator[tuple[int, Any]]:
    """Yield `(position, value)` for each record: a decoded JSON value, or `Unreadable`.

    Positions are 1-based line numbers for JSON Lines and 1-based record numbers otherwise.
    Raises IngestError when the file as a whole cannot be read.
    """
    if dump.suffix == ".parquet":
        yield from _read_parquet(dump)
        return
    fmt = _json_format(dump)
    with dump.open() as stream:
        yield from (_read_arrays(dump, stream) if fmt == "array" else _read_lines(dump, stream))


def _read_arrays(dump: DumpFile, stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    position = 0
    try:
        # Several arrays may follow one another: some real dumps are written so.
        for position, value in enumerate(jsonread.array_records(stream), start=1):
            yield position, value
    except jsonread.TooLarge as exc:
        # A JSON array cannot be resynchronised past a record it did not read to the end: the file fails.
        raise IngestError(
            f"{dump.name}: {exc} after record {position} (no Hub model record is that large); nothing was published."
        ) from None
    except (ijson.JSONError, ValueError) as exc:  # ValueError: a number too long to convert
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(f"{dump.name}: invalid JSON after record {position}: {first_line}") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"{dump.name}: {_read_failure(exc)}, after record {position}") from exc


def _read_lines(dump: DumpFile, stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    lineno = 0
    try:
        for lineno, line in jsonread.json_lines(stream):
            yield lineno, line if isinstance(line, Unreadable) else jsonread.decode_line(line)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"{dump.name}: {_read_failure(exc)}, after line {lineno}") from exc


def _read_parquet(dump: DumpFile) -> Iterator[tuple[int, Any]]:
    try:
        parquet = pq.ParquetFile(dump.read_path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise IngestError(f"{dump.name}: not a readable Parquet file: {exc}") from exc
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
        DumpFile(path) as dump,
        bulk_gc(),
        storage_errors(str(path)),
        SnapshotWriter(data_dir, taken_at=taken_at, source=path.name, kind="import") as writer,
    ):

        def on_percent(percent: float) -> None:
            if on_progress is not None:
                on_progress(Progress(0, 0, None, time.monotonic() - started, percent=percent))

        try:
            watch = on_percent if on_progress is not None else None
            writer.reader = _load_with_duckdb(dump, writer, watch) if reader == "auto" else None
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
    dump: DumpFile, writer: SnapshotWriter, on_percent: Callable[[float], None] | None = None
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
        fmt = _json_format(dump)
        select = duckread.rows_sql(fmt, "gzip" if dump.is_gzip() else "none")
    # A Parquet row group is decoded whole, per thread: at 2M models two threads at once need more than
    # the writer's memory limit (out of memory at 512 MB); one fits, at half the speed (2M: 12.5 s, against
    # 6.0 s on two threads at 768 MB), still six times the record-by-record reader.
    threads = 1 if fmt == "parquet" else None
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
            values = _read_parquet(dump) if fmt == "parquet" else _read_arrays(dump, stack.enter_context(dump.open()))
            for records, (position, value) in enumerate(values, start=1):
                if records - 1 in wanted:
                    _stage(writer, position, value, seq=records - 1)
    return records == staged
