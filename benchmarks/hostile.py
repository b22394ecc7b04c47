"""Hostile dumps given to `hubcensus import`: what each costs and how it ends (docs/ARCHITECTURE.md).

    python -m benchmarks.hostile                      # every case; prints the table (Markdown)
    python -m benchmarks.hostile --only deep-tags-array --only normal
    python -m benchmarks.hostile --rss-cap-gib 4 --time-cap-s 180

Each input is built in a temporary directory (streamed to disk: this process stays small), then imported
by the real CLI in its own process. The child is watched every 20 ms: its peak RSS is the kernel's
high-water mark (VmHWM, read from /proc while it runs), and it is killed past `--rss-cap-gib` or
`--time-cap-s` (so a regression cannot take the machine). "published" says whether a snapshot appeared.
The mid-import cases replace the dump 1 s into the import (1 s after the writer's work directory appears:
the CLI's own start-up is not the import), by a rename over it or an in-place rewrite, and also report how
many published models came from each version.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "hubcensus" / "data" / "hub-2022-02-21.jsonl.gz"
MiB = 2**20
GiB = 2**30
GOOD = 1_000  # plain records beside a hostile one, so that one bad record stays within --max-bad-share


@dataclass
class Outcome:
    """How one import ended."""

    exit: str
    message: str
    peak_rss: int
    seconds: float
    published: str


def _good(i: int, prefix: str = "org/m") -> str:
    return json.dumps({"id": f"{prefix}{i}", "downloads": i, "tags": ["pytorch"]})


def _open_out(path: Path) -> IO[bytes]:
    # Level 1: these inputs are mostly one repeated byte, which any level squeezes to almost nothing.
    return gzip.open(path, "wb", compresslevel=1) if path.suffix == ".gz" else path.open("wb")


def _write_array(path: Path, pieces: Iterator[bytes]) -> Path:
    with _open_out(path) as out:
        out.write(b"[")
        for n, piece in enumerate(pieces):
            out.write(b",\n" if n else b"")
            out.write(piece)
        out.write(b"]\n")
    return path


def _write_lines(path: Path, pieces: Iterator[bytes]) -> Path:
    with _open_out(path) as out:
        for piece in pieces:
            out.write(piece)
            out.write(b"\n")
    return path


def _with_goods(hostile: bytes) -> Iterator[bytes]:
    for i in range(GOOD // 2):
        yield _good(i).encode()
    yield hostile
    for i in range(GOOD // 2, GOOD):
        yield _good(i).encode()


def _deep_tags(depth: int) -> bytes:
    return b'{"id": "org/deep", "tags": ' + b"[" * depth + b"]" * depth + b"}"


class _Repeated:
    """`head`, `n` copies of `fill`, then `tail`, written in pieces (never held whole)."""

    def __init__(self, head: bytes, fill: bytes, n: int, tail: bytes) -> None:
        self.head, self.fill, self.n, self.tail = head, fill, n, tail

    def write_to(self, out: IO[bytes]) -> None:
        out.write(self.head)
        block = self.fill * max(1, MiB // len(self.fill))
        left = self.n
        while left > 0:
            take = min(left, len(block) // len(self.fill))
            out.write(block[: take * len(self.fill)])
            left -= take
        out.write(self.tail)


def _write_with_big(path: Path, big: _Repeated, array: bool) -> Path:
    """GOOD plain records around one record written from `big`, as an array or JSON Lines."""
    sep, start, end = (b",\n", b"[", b"]\n") if array else (b"\n", b"", b"\n")
    with _open_out(path) as out:
        out.write(start)
        out.write(sep.join(_good(i).encode() for i in range(GOOD // 2)) + sep)
        big.write_to(out)
        out.write(sep + sep.join(_good(i).encode() for i in range(GOOD // 2, GOOD)))
        out.write(end)
    return path


def _big_string(mib: int) -> _Repeated:
    return _Repeated(b'{"id": "org/big", "cardData": "', b"x", mib * MiB, b'"}')


def _spaces(path: Path) -> Path:
    with _open_out(path) as out:
        _Repeated(b"", b" ", GiB, b"").write_to(out)
    return path


def _newlines(path: Path) -> Path:
    with _open_out(path) as out:
        out.write(_good(0).encode() + b"\n")
        _Repeated(b"", b"\n", GiB, b"").write_to(out)
        out.write(_good(1).encode() + b"\n")
    return path


def _half_bad(path: Path, bad: bytes) -> Path:
    def pieces() -> Iterator[bytes]:
        for i in range(100_000):
            yield _good(i).encode()
            yield bad

    return _write_lines(path, pieces())


def _crawl_copies(copies: int, suffix: str) -> Iterator[bytes]:
    """The bundled crawl `copies` times, ids made unique per copy and marked with `suffix`."""
    with gzip.open(BUNDLED, "rb") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    for copy in range(copies):
        for rec in lines:
            yield json.dumps({**rec, "modelId": f"{rec['modelId']}-{copy}{suffix}"}).encode()
    # One record DuckDB leaves to the exact reader (likes as text): the import takes all three steps.
    yield json.dumps({"modelId": f"lax{suffix}", "likes": "9"}).encode()


def _big_rows(path: Path) -> Path:
    """Records a snapshot keeps whole, each 8 MiB, and a line DuckDB refuses (the exact reader reads them all)."""
    tags = b"[" + b",".join([b'"' + b"t" * 8192 + b'"'] * 1024) + b"]"
    pieces = (b'{"id": "org/big%d", "tags": %s}' % (i, tags) for i in range(150))
    return _write_lines(path, itertools.chain(pieces, [b"{not json"]))


def _truncated(path: Path) -> Path:
    data = BUNDLED.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@dataclass
class Case:
    """One hostile input: how to build it, and (for the replacement cases) what to do mid-import."""

    name: str
    what: str
    file_name: str
    build: Callable[[Path], Path]
    during: Callable[[Path], None] | None = None


def _two_versions(path: Path) -> Path:
    """The old version at `path`, the new one beside it (built now, so the swap itself is quick)."""
    _write_lines(path.with_name("new-" + path.name), _crawl_copies(10, "-new"))
    return _write_lines(path, _crawl_copies(10, "-old"))


def _replace_by_rename(path: Path) -> None:
    os.rename(path.with_name("new-" + path.name), path)


def _rewrite_in_place(path: Path) -> None:
    with path.with_name("new-" + path.name).open("rb") as new, path.open("r+b") as out:
        shutil.copyfileobj(new, out, MiB)


CASES = [
    Case(
        "normal", "the bundled 2022 crawl (29,432 models), for reference", "hub.jsonl.gz", lambda p: _copy(BUNDLED, p)
    ),
    Case(
        "deep-tags-array",
        "JSON array, 1,000 records and one whose tags nest 100,000 deep (200 KB)",
        "deep.json",
        lambda p: _write_array(p, _with_goods(_deep_tags(100_000))),
    ),
    Case(
        "deep-tags-array-gz",
        "the same, .gz",
        "deep.json.gz",
        lambda p: _write_array(p, _with_goods(_deep_tags(100_000))),
    ),
    Case(
        "deep-tags-lines",
        "the same as JSON Lines",
        "deep.jsonl",
        lambda p: _write_lines(p, _with_goods(_deep_tags(100_000))),
    ),
    Case(
        "deep-tags-lines-gz",
        "the same as JSON Lines, .gz",
        "deep.jsonl.gz",
        lambda p: _write_lines(p, _with_goods(_deep_tags(100_000))),
    ),
    Case("spaces-gz", "1 GiB of spaces, .gz (1 MB)", "spaces.json.gz", _spaces),
    Case("newlines-gz", "two records 1 GiB of blank lines apart, JSON Lines .gz", "newlines.jsonl.gz", _newlines),
    Case(
        "string-array",
        "a 500 MB string in one record of a JSON array",
        "string.json",
        lambda p: _write_with_big(p, _big_string(500), array=True),
    ),
    Case(
        "string-lines",
        "a 500 MB string in one record of JSON Lines",
        "string.jsonl",
        lambda p: _write_with_big(p, _big_string(500), array=False),
    ),
    Case(
        "int-tags-lines",
        "one record whose tags are 5 million integers (10 MB), JSON Lines",
        "ints.jsonl",
        lambda p: _write_with_big(p, _Repeated(b'{"id": "org/ints", "tags": [', b"1,", 5_000_000, b"1]}"), False),
    ),
    Case(
        "wide-tags-lines",
        "one 30 MiB record whose tags are 10 million empty lists, JSON Lines",
        "wide.jsonl",
        lambda p: _write_with_big(p, _Repeated(b'{"id": "org/wide", "tags": [', b"[],", 10_000_000, b"[]]}"), False),
    ),
    Case(
        "wide-card-array",
        "one 30 MiB record with 10 million empty lists in a field not read, JSON array",
        "wide-card.json",
        lambda p: _write_with_big(p, _Repeated(b'{"id": "org/wide", "cardData": [', b"[],", 10_000_000, b"[]]}"), True),
    ),
    Case(
        "big-rows-lines",
        "150 valid records of 8 MiB (1,024 tags of 8 KiB each) and one line not JSON, JSON Lines .gz",
        "big-rows.jsonl.gz",
        _big_rows,
    ),
    Case(
        "long-number-lines",
        "one record with a 5,000-digit number, JSON Lines",
        "number.jsonl",
        lambda p: _write_lines(p, _with_goods(b'{"id": "org/n", "downloads": ' + b"7" * 5000 + b"}")),
    ),
    Case(
        "half-bad-syntax",
        "200k records, half of them not JSON",
        "halfbad.jsonl",
        lambda p: _half_bad(p, b"{not json"),
    ),
    Case(
        "half-bad-types",
        "200k records, half with a wrong type (downloads as a list)",
        "halfbad-types.jsonl",
        lambda p: _half_bad(p, b'{"id": "org/x", "downloads": [1]}'),
    ),
    Case("truncated-gz", "the bundled crawl's .gz cut in half", "truncated.jsonl.gz", _truncated),
    Case(
        "renamed-over",
        "294k records; a new version renamed over the file 1 s into the import",
        "big.jsonl",
        _two_versions,
        _replace_by_rename,
    ),
    Case(
        "rewritten",
        "294k records; rewritten in place 1 s into the import",
        "big.jsonl",
        _two_versions,
        _rewrite_in_place,
    ),
]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _origins(data_dir: Path) -> str:
    """How many published models came from the old and the new version (the replacement cases)."""
    import duckdb

    from hubcensus.queries.datadir import DB_NAME, Layout

    snaps = sorted(Layout(data_dir).snapshots.glob(f"*/{DB_NAME}"))
    if not snaps:
        return ""
    con = duckdb.connect(str(snaps[0]), read_only=True)
    try:
        old, new = con.execute("SELECT count_if(id LIKE '%-old'), count_if(id LIKE '%-new') FROM models").fetchall()[0]
    finally:
        con.close()
    return f" ({old:,} old, {new:,} new)"


def run_case(case: Case, work: Path, rss_cap: int, time_cap: float) -> Outcome:
    """Build the case's input in `work`, import it with the CLI in a child process, and watch it."""
    path = case.build(work / case.file_name)
    data_dir = work / "data"
    from hubcensus.queries.datadir import META_NAME, Layout

    layout = Layout(data_dir)
    cmd = [str(Path(sys.executable).with_name("hubcensus")), "import", str(path), "--data-dir", str(data_dir)]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    started = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak, killed, replaced = 0, "", case.during is None
    started_import: float | None = None
    while child.poll() is None:
        peak = max(peak, _vm_hwm(child.pid))
        elapsed = time.monotonic() - started
        if not replaced and started_import is None and any(layout.tmp.glob("*/")):
            started_import = time.monotonic()  # the writer's work directory: the dump is open by now
        if not replaced and started_import is not None and time.monotonic() - started_import > 1.0:
            assert case.during is not None
            case.during(path)
            replaced = True
        if peak > rss_cap:
            killed = f"killed above {rss_cap / GiB:.0f} GiB"
        elif elapsed > time_cap:
            killed = f"killed after {time_cap:.0f} s"
        if killed:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    stdout, stderr = child.communicate()
    seconds = time.monotonic() - started
    text = stderr.decode(errors="replace").strip().splitlines()
    if killed:
        exit_, message = "killed", killed
    elif child.returncode == 0:
        exit_, message = "0", (stdout.decode(errors="replace").strip().splitlines() or [""])[0]
    else:
        exit_ = str(child.returncode)
        errors = [line for line in text if line.startswith("error:")]
        message = errors[0] if errors else (text[-1] if text else "")  # a traceback's last line
    published = "yes" if list(layout.snapshots.glob(f"*/{META_NAME}")) else "no"
    if case.during is not None and published == "yes":
        published += _origins(data_dir)
    if not replaced:
        message += " (finished before the replacement)"
    message = re.sub(r"^published snapshot [^:]+: ", "published: ", message.replace(str(work) + "/", ""))
    return Outcome(exit_, message, peak, seconds, published)


def table(rows: list[tuple[Case, Outcome]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| input | exit | message (first line) | peak RSS | time | published |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for case, out in rows:
        message = out.message if len(out.message) <= 160 else out.message[:157] + "..."
        lines.append(
            f"| {case.what} | {out.exit} | {message.replace('|', '/')} | {out.peak_rss / MiB:,.0f} MiB "
            f"| {out.seconds:.1f} s | {out.published} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=[c.name for c in CASES], help="run only these cases")
    parser.add_argument("--rss-cap-gib", type=float, default=4.0)
    parser.add_argument("--time-cap-s", type=float, default=180.0)
    parser.add_argument("--json", action="store_true", help="also print one JSON line per case")
    args = parser.parse_args(argv)
    rows: list[tuple[Case, Outcome]] = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"hostile-{case.name}-") as tmp:
            out = run_case(case, Path(tmp), int(args.rss_cap_gib * GiB), args.time_cap_s)
        rows.append((case, out))
        if args.json:
            print(json.dumps({"case": case.name, **out.__dict__}), flush=True)
        else:
            print(f"{case.name}: {out.exit} {out.seconds:.1f} s {out.peak_rss / MiB:,.0f} MiB", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
