"""A dump file, read record by record in Python: opened once (`DumpFile`), its form told from its first bytes
(a JSON array, several concatenated arrays too, JSON Lines, hub-stats style Parquet, gzip of the JSON forms),
and its records streamed, so memory does not grow with the file. Exact about every record it cannot read,
its reason and its position; ingest/dumps.py uses it wherever DuckDB's reader leaves off.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import ijson
import pyarrow.parquet as pq

from hubcensus.ingest import duckread, jsonread
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.jsonread import Unreadable


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


def json_format(dump: DumpFile) -> duckread.JsonFormat:
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
        yield from read_parquet(dump)
        return
    fmt = json_format(dump)
    with dump.open() as stream:
        yield from (read_arrays(dump, stream) if fmt == "array" else _read_lines(dump, stream))


def read_arrays(dump: DumpFile, stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """`read_dump` of the JSON array(s) in `stream`, a stream over `dump`."""
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


def read_parquet(dump: DumpFile) -> Iterator[tuple[int, Any]]:
    """`read_dump` of a Parquet dump."""
    try:
        parquet = pq.ParquetFile(dump.read_path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise IngestError(f"{dump.name}: not a readable Parquet file: {exc}") from exc
    position = 0
    for batch in parquet.iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            position += 1
            yield position, row
