"""The exact reader's JSON parsing, bounded whatever the input: records of JSON arrays and of JSON Lines.

Every record costs time and memory in proportion to its size, and no record may be larger than
MAX_RECORD_BYTES or nest deeper than MAX_DEPTH (docs/ARCHITECTURE.md, "Hostile dumps"):

- JSON arrays are parsed from ijson's event stream (`basic_parse`), and of each record only the parts
  `records.parse_record` reads are built (`records.RECORD_SHAPE`; the rest is skipped as it is parsed, as
  DuckDB's reader reads only those columns). `ijson.items` is not used: it builds a path string for every
  event, so its time and memory grow with the square of the nesting depth (100,000 levels: over 20 GB).
- JSON Lines are split in chunks (blank runs and line ends found by C code, a line longer than the limit
  dropped as it is read, never held), and each line is decoded by `json.loads`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import ijson

from hubcensus.ingest.duckread import MAX_OBJECT_BYTES
from hubcensus.ingest.records import RECORD_SHAPE, Shape

MiB = 2**20
MAX_RECORD_BYTES = 2 * MAX_OBJECT_BYTES
"""The largest record the exact reader takes: 32 MiB. DuckDB's reader refuses a record larger than twice its
`maximum_object_size` and may take one up to that size (where the record falls in its buffers decides), so
every record DuckDB takes is one the exact reader takes too. The largest real record at hand is 1.7 MB (a
2022 crawl record with its file list); a repository of 100,000 files would give about 7 MB."""
MAX_DEPTH = 64
"""The deepest nesting of the parts of a record that are read (the record object itself is level 1). A Hub
record needs 3 (record, siblings, a sibling); a model card or config nests about 10 deep, and is skipped."""
READ_BYTES = MiB
"""How much is read at a time. Also ijson's buffer: yajl re-scans a token that spans reads from its start, so
one token of n bytes costs n / READ_BYTES passes (with ijson's 64 KiB default, a 50 MB string took 8.8 s)."""
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
TOO_LONG = f"record longer than {MAX_RECORD_BYTES // MiB} MiB"

_STARTS = ("start_map", "start_array")
_ENDS = ("end_map", "end_array")


@dataclass(frozen=True)
class Unreadable:
    """A piece of the input that did not decode as a JSON record."""

    reason: str
    excerpt: str


class TooLarge(Exception):
    """A JSON array holds a value (a record, or a stretch between records) larger than MAX_RECORD_BYTES."""


class _TooDeep(Exception):
    def __init__(self, open_containers: int) -> None:
        super().__init__(open_containers)
        self.open_containers = open_containers


class _Meter:
    """The byte stream as the parser reads it: counted, and refused past MAX_RECORD_BYTES since the last mark.

    The parser holds an unfinished token whole (and re-scans it, above), so a value that size is refused
    before it is read any further. Events reach the builder after the read that produced them, so a mark
    is at most one read late: the size seen is never more than the true size.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.total = 0
        self._since = 0

    def mark(self) -> None:
        self._since = self.total

    def read(self, n: int = -1) -> bytes:
        if self.total - self._since > MAX_RECORD_BYTES:
            raise TooLarge(f"more than {MAX_RECORD_BYTES // MiB} MiB without the end of a record")
        data = self._raw.read(n)
        self.total += len(data)
        return data


def array_records(stream: IO[bytes]) -> Iterator[Any]:
    """Each element of each top-level JSON array in `stream`: its value, or Unreadable if it nests too deep.

    Top-level values that are not arrays are skipped, as `ijson.items(..., "item")` skipped them. Raises
    TooLarge, and ijson's errors (ijson.JSONError, ValueError for a number too long to convert) as it does.
    """
    meter = _Meter(stream)
    events = ijson.basic_parse(meter, multiple_values=True, use_float=True, buf_size=READ_BYTES)
    for event, _ in events:
        meter.mark()
        if event == "start_map":
            _skip(events, 1)
        if event != "start_array":
            continue
        for event, value in events:
            if event == "end_array":
                break
            meter.mark()
            yield _record(events, event, value)
            meter.mark()


def _record(events: Iterator[tuple[str, Any]], event: str, value: Any) -> Any:
    if event not in _STARTS:
        return value
    try:
        return _build(events, event, 1, RECORD_SHAPE)
    except _TooDeep as exc:
        _skip(events, exc.open_containers)
        return Unreadable(TOO_DEEP, "")


def _build(events: Iterator[tuple[str, Any]], event: str, depth: int, shape: Shape | None) -> Any:
    """The container that `event` starts, at nesting level `depth`; of an object, only the keys in `shape`.

    Recursive, but never deeper than MAX_DEPTH: past it, _TooDeep says how many containers are still open.
    """
    if depth > MAX_DEPTH:
        raise _TooDeep(depth)
    if event == "start_map":
        obj: dict[str, Any] = {}
        for event, value in events:
            if event == "end_map":
                return obj
            key = value  # event is "map_key"
            event, value = next(events)
            if shape is not None and key not in shape:
                if event in _STARTS:
                    _skip(events, 1)
            elif event in _STARTS:
                obj[key] = _build(events, event, depth + 1, None if shape is None else shape[key])
            else:
                obj[key] = value
        raise ijson.IncompleteJSONError("the input ends inside an object")
    items: list[Any] = []
    for event, value in events:
        if event == "end_array":
            return items
        # A list's elements keep the list's shape: an object in `siblings` keeps only its own keys.
        items.append(_build(events, event, depth + 1, shape) if event in _STARTS else value)
    raise ijson.IncompleteJSONError("the input ends inside an array")


def _skip(events: Iterator[tuple[str, Any]], open_containers: int) -> None:
    """Consume events until `open_containers` containers have closed: nothing is built."""
    for event, _ in events:
        if event in _STARTS:
            open_containers += 1
        elif event in _ENDS:
            open_containers -= 1
            if open_containers == 0:
                return


def too_deep(record: Any) -> bool:
    """Whether the parts of `record` that are read (RECORD_SHAPE) nest deeper than MAX_DEPTH.

    Depth first, with one iterator per open container: memory grows with the depth, not the width (a
    record of 10 million empty lists).
    """
    stack: list[Iterator[tuple[Any, Shape | None]]] = [iter([(record, RECORD_SHAPE)])]
    while stack:
        for value, shape in stack[-1]:
            if isinstance(value, (dict, list)):
                if len(stack) > MAX_DEPTH:
                    return True
                if value:  # an empty container has nothing below it
                    stack.append(_children(value, shape))
                    break
        else:
            stack.pop()
    return False


def _children(value: dict[str, Any] | list[Any], shape: Shape | None) -> Iterator[tuple[Any, Shape | None]]:
    if isinstance(value, list):
        return ((item, shape) for item in value)
    if shape is None:
        return ((item, None) for item in value.values())
    return ((item, shape[key]) for key, item in value.items() if key in shape)


# A line's text from its first non-white character to its end: the regex engine skips blank runs in C.
_NON_BLANK = re.compile(rb"\S[^\n]*")


def json_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | Unreadable]]:
    """Each non-blank line of `stream` with its 1-based number; Unreadable for one longer than MAX_RECORD_BYTES.

    A line is held only up to the limit (past it, only its first 200 bytes are kept, for the excerpt), and
    white space before a line's text is dropped as it is read: blank lines of any length cost no memory.
    """
    lineno = 1  # the number of the line `pending` begins
    pending: list[bytes] = []  # the start of that line, read but not yet ended
    pending_bytes = 0
    head: bytes | None = None  # once the line has passed the limit: its first bytes; the rest is dropped
    while chunk := stream.read(READ_BYTES):
        end = chunk.find(b"\n")
        if end < 0:
            if head is None:
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes > MAX_RECORD_BYTES:
                    text = b"".join(pending).lstrip()
                    pending, pending_bytes = [text], len(text)
                    if len(text) > MAX_RECORD_BYTES:
                        head, pending, pending_bytes = text[:200], [], 0
            continue
        line = _finish(b"".join([*pending, chunk[:end]]), head)
        if line is not None:
            yield lineno, line
        lineno += 1
        pending, pending_bytes, head = [], 0, None
        last = chunk.rfind(b"\n")
        block = chunk[end + 1 : last + 1]  # whole lines, each shorter than a read
        start = 0
        for match in _NON_BLANK.finditer(block):
            lineno += block.count(b"\n", start, match.start())
            start = match.start()
            yield lineno, match.group()
        lineno += block.count(b"\n", start)
        if last + 1 < len(chunk):
            pending, pending_bytes = [chunk[last + 1 :]], len(chunk) - last - 1
    line = _finish(b"".join(pending), head)
    if line is not None:
        yield lineno, line


def _finish(line: bytes, head: bytes | None) -> bytes | Unreadable | None:
    """A whole line as json_lines yields it: None if blank."""
    if head is None and len(line) > MAX_RECORD_BYTES:
        line = line.lstrip()
        if len(line) > MAX_RECORD_BYTES:
            head = line[:200]
    if head is not None:
        return Unreadable(TOO_LONG, head.decode("utf-8", "replace"))
    return line if line.strip() else None


def decode_line(line: bytes) -> Any:
    """One line of JSON Lines decoded: its value, or Unreadable with the reason."""
    try:
        return json.loads(line)
    except RecursionError:
        # Nested too deep for json.loads (about 1,000 levels): the streaming reader skips what is not read
        # and bounds the rest, as it does in arrays, and the record is bad or not as it would be there.
        return _decode_deep(line)
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, or a number too long
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(":")[0]
        if isinstance(exc, UnicodeDecodeError):
            reason = "not UTF-8"
        return Unreadable(f"invalid JSON: {reason}", line[:200].decode("utf-8", "replace"))


def _decode_deep(line: bytes) -> Any:
    events = ijson.basic_parse(line, use_float=True)
    try:
        value = _record(events, *next(events))
        for _ in events:  # anything after the value is an error, as for json.loads
            pass
    except (ijson.JSONError, ValueError, StopIteration) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "no value"  # yajl adds lines pointing at the error
        return Unreadable(f"invalid JSON: {reason}", line[:200].decode("utf-8", "replace"))
    if isinstance(value, Unreadable):
        return Unreadable(value.reason, line[:200].decode("utf-8", "replace"))
    return value
