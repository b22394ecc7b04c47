"""Hostile dumps: each costs time and memory in proportion to its size, and ends clearly (issue 10).

A record nested too deep, too long, or with a value Python cannot convert is one bad record, counted
with its reason; a file that cannot be read as a whole fails fast with a message; a dump replaced or
rewritten during an import gives one version's snapshot or none. benchmarks/hostile.py measures the
full-size inputs; these use sizes that already showed the problem (20,000 levels: 970 MB before).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.jsonread import MAX_DEPTH, MAX_RECORD_BYTES, TOO_DEEP, TOO_LONG
from hubcensus.ingest.progress import Progress
from hubcensus.ingest.records import parse_record
from hubcensus.ingest.writer import SnapshotWriter
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.store import SnapshotStore
from tests.data import BUNDLED, TAKEN_2022, read_jsonl_gz

MiB = 2**20
DEEP = 20_000


def _good(i: int) -> str:
    return json.dumps({"id": f"org/m{i}", "downloads": i, "tags": ["pytorch"]})


def _deep_tags(depth: int) -> str:
    return '{"id": "org/deep", "tags": ' + "[" * depth + "]" * depth + "}"


def _dump(path: Path, records: list[str], *, array: bool) -> Path:
    """The records as a JSON array or JSON Lines, gzipped if the name ends in .gz."""
    text = ("[" + ",\n".join(records) + "]\n") if array else "".join(r + "\n" for r in records)
    data = text.encode()
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
    return path


def _around(hostile: str, n: int = 40) -> list[str]:
    """`n` plain records with `hostile` in the middle (record n/2 + 1)."""
    return [*(_good(i) for i in range(n // 2)), hostile, *(_good(i) for i in range(n // 2, n))]


def _import(path: Path, data_dir: Path, **kw: object) -> SnapshotMeta:
    return import_dump(path, data_dir, taken_at=TAKEN_2022, max_bad_share=0.05, **kw)  # type: ignore[arg-type]


def _bad_records(data_dir: Path, meta: SnapshotMeta) -> list[tuple[int, str]]:
    con = duckdb.connect(str(SnapshotStore(data_dir).path_of(meta.id)), read_only=True)
    try:
        return [(int(p), str(r)) for p, r in con.execute("SELECT position, reason FROM bad_records").fetchall()]
    finally:
        con.close()


def _ids(data_dir: Path, meta: SnapshotMeta) -> list[str]:
    con = duckdb.connect(str(SnapshotStore(data_dir).path_of(meta.id)), read_only=True)
    try:
        return [str(r[0]) for r in con.execute("SELECT id FROM models ORDER BY id").fetchall()]
    finally:
        con.close()


def _published(data_dir: Path) -> int:
    return len(SnapshotStore(data_dir).snapshots()) if (data_dir / "snapshots").exists() else 0


def _cli_import(path: Path, data_dir: Path, rss_cap: int = 2 * 2**30) -> tuple[int, str, int]:
    """`hubcensus import` in its own process: exit code, stderr and peak RSS (killed past `rss_cap`)."""
    cmd = [sys.executable, "-m", "hubcensus", "import", str(path), "--data-dir", str(data_dir)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, deadline = 0, time.monotonic() + 120
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as fh:
                peak = max([peak, *(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))])
        except OSError:
            pass
        if peak > rss_cap or time.monotonic() > deadline:
            child.kill()
            break
        time.sleep(0.01)
    _, stderr = child.communicate()
    return child.returncode, stderr, peak


# Item 2: a record nested 100,000 deep took all the memory (arrays) or crashed the import (JSON Lines).


@pytest.mark.parametrize(
    ("name", "array"), [("deep.json", True), ("deep.json.gz", True), ("deep.jsonl", False), ("deep.jsonl.gz", False)]
)
def test_a_deeply_nested_record_is_one_bad_record(tmp_path: Path, name: str, array: bool) -> None:
    path = _dump(tmp_path / name, _around(_deep_tags(DEEP)), array=array)
    meta = _import(path, tmp_path / "data")
    assert (meta.models, meta.bad_records, meta.bad_reasons) == (40, 1, {TOO_DEEP: 1})
    assert _bad_records(tmp_path / "data", meta) == [(21, TOO_DEEP)]


@pytest.mark.parametrize("reader", ["auto", "python"])
@pytest.mark.parametrize("array", [True, False], ids=["array", "lines"])
def test_nesting_in_a_field_no_snapshot_reads_is_skipped(tmp_path: Path, reader: str, array: bool) -> None:
    # DuckDB reads only the fields a snapshot keeps, and so does the exact reader: deep nesting elsewhere,
    # however deep, neither costs memory nor makes the record bad, in either reader.
    deep = '{"id": "org/card", "cardData": ' + "[" * DEEP + "]" * DEEP + ', "siblings": [{"rfilename": "a.bin", '
    deep += '"lfs": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}]}"
    path = _dump(tmp_path / ("d.json" if array else "d.jsonl"), _around(deep), array=array)
    meta = _import(path, tmp_path / "data", reader=reader)
    assert (meta.models, meta.bad_records) == (41, 0)
    assert "org/card" in _ids(tmp_path / "data", meta)


def test_nesting_just_past_the_limit_is_bad_and_at_the_limit_is_read_alike(tmp_path: Path) -> None:
    # The tags of a record nest MAX_DEPTH - 1 levels (with the record object, MAX_DEPTH) and one more.
    at_limit = '{"id": "org/at", "tags": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    past = '{"id": "org/past", "tags": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    reasons = []
    for array in (True, False):
        path = _dump(tmp_path / ("d.json" if array else "d.jsonl"), [*_around(at_limit), past], array=array)
        meta = import_dump(path, tmp_path / f"data{array}", taken_at=TAKEN_2022, max_bad_share=0.1)
        reasons.append(_bad_records(tmp_path / f"data{array}", meta))
    # json.loads builds both, and only the validator's reason differs from the streaming reader's: none.
    assert reasons[0] == reasons[1] == [(21, "tags.0: Input should be a valid string"), (42, TOO_DEEP)]


def test_a_deep_json_array_stays_small_in_memory(tmp_path: Path) -> None:
    # Before: ijson.items built a path string per event, 970 MB at 20,000 levels (23.9 GB at 100,000).
    path = _dump(tmp_path / "deep.json", _around(_deep_tags(5 * DEEP)), array=True)
    code, stderr, peak = _cli_import(path, tmp_path / "data")
    assert code == 0, stderr
    assert peak < 600 * MiB  # the CLI alone (DuckDB, pyarrow, pydantic loaded) peaks at about 300 MB


# Item 3: small inputs that burned minutes of CPU, or gigabytes.


def test_a_file_of_white_space_fails_fast(tmp_path: Path) -> None:
    # Before: the format was sniffed byte by byte past leading white space, 0.35 s per MiB of a .gz
    # (1 GiB of spaces: 6 minutes), and the file then called empty.
    path = tmp_path / "spaces.json.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        for _ in range(MAX_RECORD_BYTES // MiB + 8):
            f.write(b" " * MiB)
    with pytest.raises(IngestError, match="starts with more than 32 MiB of white space and nothing else: not a dump"):
        _import(path, tmp_path / "data")
    assert _published(tmp_path / "data") == 0


def test_white_space_before_and_between_records_is_fine(tmp_path: Path) -> None:
    # Below the limit, leading white space spanning several reads is skipped; a blank line of any length
    # (here longer than a record may be) is a blank line, in both readers.
    data = b" \n" * (3 * MiB) + _good(0).encode() + b"\n" + b" " * (MAX_RECORD_BYTES + MiB) + b"\n" + _good(1).encode()
    path = tmp_path / "ws.jsonl"
    path.write_bytes(data)
    for reader in ("auto", "python"):
        meta = _import(path, tmp_path / reader, reader=reader)
        assert (meta.models, meta.bad_records) == (2, 0)


def test_a_record_longer_than_the_limit_is_one_bad_record_in_json_lines(tmp_path: Path) -> None:
    # Before: DuckDB refused the file and the exact reader held and decoded the whole line.
    big = '{"id": "org/big", "cardData": "' + "x" * (MAX_RECORD_BYTES + MiB) + '"}'
    path = _dump(tmp_path / "big.jsonl", _around(big), array=False)
    meta = _import(path, tmp_path / "data")
    assert (meta.models, meta.bad_records) == (40, 1)
    assert _bad_records(tmp_path / "data", meta) == [(21, TOO_LONG)]


def test_a_record_longer_than_the_limit_fails_a_json_array_fast(tmp_path: Path) -> None:
    # Before: ijson re-scanned the unfinished string from its start at every 64 KiB read (50 MB: 8.8 s,
    # 500 MB: minutes), then took it. A JSON array cannot be resynchronised past it: the file fails.
    # The stream is measured a read (1 MiB) at a time: a record up to 2 MiB over the limit may still be read.
    big = '{"id": "org/big", "cardData": "' + "x" * (MAX_RECORD_BYTES + 3 * MiB) + '"}'
    path = _dump(tmp_path / "big.json", _around(big), array=True)
    with pytest.raises(IngestError, match=r"more than 32 MiB without the end of a record after record 20 "):
        _import(path, tmp_path / "data")
    assert _published(tmp_path / "data") == 0


def test_a_large_record_within_the_limit_is_read_alike_by_both_readers(tmp_path: Path) -> None:
    # Within 32 MiB DuckDB takes a record or not depending on where it falls in its buffers; whichever
    # reader reads it, it is a good record.
    big = '{"id": "org/big", "cardData": "' + "x" * (20 * MiB) + '"}'
    path = _dump(tmp_path / "big.json", _around(big), array=True)
    for reader in ("auto", "python"):
        meta = _import(path, tmp_path / reader, reader=reader)
        assert (meta.models, meta.bad_records) == (41, 0)


@pytest.mark.parametrize("array", [True, False], ids=["array", "lines"])
def test_a_number_python_will_not_convert(tmp_path: Path, array: bool) -> None:
    # Python refuses to convert an integer of more than 4,300 digits (its conversion is quadratic): before,
    # the ValueError escaped the import as a traceback. The array parser (yajl) refuses any integer past
    # 64 bits, and a JSON array cannot be read past it.
    record = '{"id": "org/n", "downloads": ' + "7" * 5000 + "}"
    path = _dump(tmp_path / ("n.json" if array else "n.jsonl"), _around(record), array=array)
    if array:
        with pytest.raises(IngestError, match=r"invalid JSON after record 20: parse error: integer overflow$"):
            _import(path, tmp_path / "data")
        assert _published(tmp_path / "data") == 0
    else:
        meta = _import(path, tmp_path / "data")
        reason = "invalid JSON: Exceeds the limit (4300 digits) for integer string conversion"
        assert (meta.models, meta.bad_reasons) == (40, {reason: 1})


def test_a_huge_list_of_wrong_values_is_one_quick_bad_record(tmp_path: Path) -> None:
    # Before: pydantic reported every bad element: 1 million numbers among the tags, 1 million error
    # objects (9 s, 1 GB) for one bad record.
    record = '{"id": "org/ints", "tags": [' + ",".join(["1"] * 1_000_000) + "]}"
    path = _dump(tmp_path / "ints.jsonl", _around(record), array=False)
    code, stderr, peak = _cli_import(path, tmp_path / "data")
    assert code == 0, stderr
    assert peak < 600 * MiB
    meta = SnapshotStore(tmp_path / "data").get()
    assert meta.bad_reasons == {"tags.0: Input should be a valid string": 1}


def _python_import_seconds(path: Path, data_dir: Path) -> float:
    started = time.perf_counter()
    import_dump(path, data_dir, taken_at=TAKEN_2022, max_bad_share=1.0, reader="python")
    return time.perf_counter() - started


def test_bad_records_cost_about_what_good_ones_do(tmp_path: Path) -> None:
    # Before: one INSERT per bad record, about 1 ms each (200k records, half bad: 1 min 42 s before it
    # failed), thirty times a good record. Now batched: a bad record costs less than a good one.
    n = 10_000
    good = _dump(tmp_path / "good.jsonl", [_good(i) for i in range(n)], array=False)
    half_bad = _dump(tmp_path / "half-bad.jsonl", [r for i in range(n // 2) for r in (_good(i), "{oops")], array=False)
    all_good_s = _python_import_seconds(good, tmp_path / "a")
    half_bad_s = _python_import_seconds(half_bad, tmp_path / "b")
    assert half_bad_s < 3 * all_good_s, (half_bad_s, all_good_s)


def test_a_truncated_gzip_fails_with_a_message(tmp_path: Path) -> None:
    # Before: DuckDB's I/O error was reported as a failure to write the snapshot.
    data = BUNDLED.read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    for reader in ("auto", "python"):
        with pytest.raises(IngestError, match=r"the compressed data ends early \(a truncated .gz\?\), after line"):
            _import(path, tmp_path / reader, reader=reader)
        assert _published(tmp_path / reader) == 0


# Item 7: a dump replaced while it was read gave a snapshot mixing two versions.


def _versions(tmp_path: Path, copies: int = 1) -> tuple[Path, bytes]:
    """The bundled crawl `copies` times (ids made unique, marked -old) plus one record DuckDB leaves to the
    exact reader, so that an import reads the file in every step; and the same marked -new, one more."""
    records = read_jsonl_gz(BUNDLED)

    def text(mark: str, extra: int) -> bytes:
        lines = [
            json.dumps({**r, "modelId": f"{r['modelId']}-{copy}{mark}"}) for copy in range(copies) for r in records
        ]
        lines += [json.dumps({"modelId": f"lax-{i}{mark}", "likes": "9"}) for i in range(1 + extra)]
        return "".join(line + "\n" for line in lines).encode()

    path = tmp_path / "dump.jsonl"
    path.write_bytes(text("-old", 0))
    return path, text("-new", 1)


def _on_first(kind: str, action: Callable[[], None]) -> tuple[Callable[[Progress], None], list[bool]]:
    """A progress callback that runs `action` once, at the first DuckDB estimate or the first rows."""
    done: list[bool] = []

    def on_progress(p: Progress) -> None:
        if not done and ((kind == "percent" and p.percent is not None) or (kind == "rows" and p.models > 0)):
            action()
            done.append(True)

    return on_progress, done


def test_a_dump_renamed_over_mid_import_gives_the_old_version_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the passes after the first opened the file by name again, and read the new version.
    monkeypatch.setattr("hubcensus.ingest.writer.PROGRESS_EVERY_S", 0.01)
    path, new = _versions(tmp_path)
    (tmp_path / "new.jsonl").write_bytes(new)
    on_progress, done = _on_first("percent", lambda: os.rename(tmp_path / "new.jsonl", path))
    meta = _import(path, tmp_path / "data", on_progress=on_progress)
    assert done, "the file was not replaced during the import"
    ids = _ids(tmp_path / "data", meta)
    assert meta.reader == "duckdb+python" and all(i.endswith("-old") for i in ids) and len(ids) == meta.models
    assert meta.models == 29_432 + 1


@pytest.mark.parametrize("reader", ["auto", "python"])
def test_a_dump_rewritten_in_place_mid_import_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    # Before: the import went on reading the same file as it changed, and published what it read.
    monkeypatch.setattr("hubcensus.ingest.writer.PROGRESS_EVERY_S", 0.01)
    path, new = _versions(tmp_path)

    def rewrite() -> None:
        with path.open("r+b") as f:
            f.write(new)

    on_progress, done = _on_first("percent" if reader == "auto" else "rows", rewrite)
    with pytest.raises(IngestError, match="the file was written to while it was being imported; nothing was published"):
        _import(path, tmp_path / "data", on_progress=on_progress, reader=reader)
    assert done, "the file was not rewritten during the import"
    assert _published(tmp_path / "data") == 0


def test_a_directory_or_a_fifo_is_not_a_dump(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path, tmp_path / "fifo"):
        with pytest.raises(IngestError, match="not a regular file"):
            _import(path, tmp_path / "data")


def test_staged_rows_are_flushed_by_size_as_well_as_by_count(tmp_path: Path) -> None:
    # Before: rows were held until 5,000 had been staged, whatever their size: 5,000 records of up to
    # 32 MiB each. 150 records of 8 MiB of tags took the import past 4 GiB.
    tags = ["t" * 8192] * 1024  # 8 MiB of text (one string, many times: this test itself stays small)
    with SnapshotWriter(tmp_path, taken_at=TAKEN_2022, source="t", kind="import") as writer:
        for i in range(20):
            writer.add(parse_record({"id": f"org/m{i}", "tags": tags}))
        staged = writer.con.execute("SELECT count(*) FROM staging").fetchall()[0][0]
    assert staged >= 16  # flushed at 64 MiB: every 8 rows
