"""Backfill: dated snapshots from public archives of the Hub's metadata, or from a folder of dated dumps.

Sources (docs/ARCHITECTURE.md, "Backfill"):

- a dataset repo of weekly folders, `models/<YYYY-MM-DD>/models.parquet` (`hfmlsoc/hub_weekly_snapshots`): one
  version per week, dated by its folder;
- a dataset repo with one `models.parquet` rewritten over time (`cfahlgren1/hub-stats`): one version per commit,
  dated by the commit;
- local dump files (what `hubcensus import` reads), dated by a pattern in their names or by `--taken-at`; files of
  one date are one snapshot.

Each version is imported through the importer (`ingest.dumps.import_dump`), so a snapshot is what `hubcensus
import` makes of the same data. A Hub file is read with only the columns a snapshot needs, by ranged reads through
`HfFileSystem`, batch by batch, into a local Parquet file (ingest/archives.py; docs/PERFORMANCE.md, "Backfill",
measures this against downloading the whole file first: faster, and within the memory bound where the download is
not). This module decides which versions to import (dates, periods, what is published) and imports them. Each
version is its own snapshot, published whole or not at all; meta.json's `params.backfill.key` names the version,
so a second run imports only what is missing, and a killed run leaves only a work dir, which the next removes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from hubcensus.ingest.archives import (
    HUBSTATS_COLUMNS,
    READ_COLUMNS,
    RESOLVE_RATE,
    ArchiveHub,
    Version,
    parse_source,
)
from hubcensus.ingest.dumpfile import DumpFile, read_dump
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import Cancelled, HubOptions
from hubcensus.ingest.progress import BackfillProgress, BackfillResult
from hubcensus.queries.datadir import Layout, SnapshotMeta, WorkDirBusy, clean_tmp, work_dir
from hubcensus.queries.store import SnapshotStore

log = logging.getLogger(__name__)

Every = Literal["week", "month", "quarter"]

DEFAULT_DATE_PATTERN = r"^(?P<date>\d{4}-\d{2}-\d{2})"
DUMP_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".json.gz", ".jsonl.gz", ".ndjson.gz")
# The local copy's row groups are small enough for DuckDB to decode two at once within the writer's memory.
PARQUET_THREADS = 2


# ------------------------------------------------------------------------------------------------------
# Which versions: dates, periods, what is already published
# ------------------------------------------------------------------------------------------------------


def period(when: datetime, every: Every) -> tuple[int, int]:
    """The ISO week, month or quarter a time falls in."""
    if every == "week":
        iso = when.isocalendar()
        return iso[0], iso[1]
    if every == "month":
        return when.year, when.month
    return when.year, (when.month - 1) // 3 + 1


def select(
    versions: Sequence[Version], *, since: date | None = None, until: date | None = None, every: Every | None = None
) -> list[Version]:
    """The versions within [since, until] (dates, inclusive), and with `every` only the newest of each period;
    oldest first."""
    kept = [
        v
        for v in versions
        if (since is None or v.taken_at.date() >= since) and (until is None or v.taken_at.date() <= until)
    ]
    kept.sort(key=lambda v: (v.taken_at, v.key))
    if every is not None:
        newest: dict[tuple[int, int], Version] = {}
        for v in kept:  # oldest first: the last one seen in a period is its newest
            newest[period(v.taken_at, every)] = v
        kept = sorted(newest.values(), key=lambda v: (v.taken_at, v.key))
    return kept


def published_keys(data_dir: Path) -> dict[str, str]:
    """The backfill keys (and content ids) of the published snapshots: key or blob -> snapshot id."""
    keys: dict[str, str] = {}
    for meta in SnapshotStore(data_dir).snapshots():
        info = meta.params.get("backfill")
        if isinstance(info, dict):
            for name in ("key", "blob"):
                if isinstance(info.get(name), str):
                    keys[info[name]] = meta.id
    return keys


# ------------------------------------------------------------------------------------------------------
# Local files
# ------------------------------------------------------------------------------------------------------


def _is_dump(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(DUMP_SUFFIXES)


def plan_local(
    paths: Sequence[Path], *, date_pattern: str | None = None, taken_at: datetime | None = None
) -> list[Version]:
    """One version per date among the dump files given (folders: the dump files in them), dated by `taken_at` or by
    the named group `date` of `date_pattern` in each file's name. Files of one date are one version."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if _is_dump(p)))
        elif path.exists():
            files.append(path)
        else:
            raise IngestError(f"{path}: no such file or folder")
    if not files:
        raise IngestError(f"no dump files ({', '.join(DUMP_SUFFIXES)}) in {', '.join(map(str, paths))}")
    if taken_at is not None:
        return [_local_version(taken_at, files)]
    try:
        pattern = re.compile(date_pattern or DEFAULT_DATE_PATTERN)
    except re.error as exc:
        raise IngestError(f"--date-pattern {date_pattern!r} is not a regular expression: {exc}") from None
    if "date" not in pattern.groupindex:
        raise IngestError(f"--date-pattern {pattern.pattern!r} has no group named `date`, as in (?P<date>...)")
    by_date: dict[datetime, list[Path]] = {}
    for file in files:
        match = pattern.search(file.name)
        if match is None:
            raise IngestError(
                f"{file.name}: no date in the name matching {pattern.pattern!r}; give --date-pattern or --taken-at"
            )
        text = match.group("date")
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise IngestError(f"{file.name}: {text!r} is not an ISO date (YYYY-MM-DD)") from None
        by_date.setdefault(when if when.tzinfo else when.replace(tzinfo=UTC), []).append(file)
    return [_local_version(when, sorted(group)) for when, group in sorted(by_date.items())]


def _local_version(taken_at: datetime, files: list[Path]) -> Version:
    names = "+".join(f.name for f in files)
    # The names and the date, not the folder: a moved folder is the same archive.
    return Version(
        taken_at=taken_at.astimezone(UTC),
        key=f"file:{taken_at.astimezone(UTC).isoformat()}:{names}",
        source=names,
        size=sum(f.stat().st_size for f in files),
        files=tuple(files),
    )


def _merge_files(files: Sequence[Path], out: Path) -> Path:
    """Several dumps of one date as one JSON Lines file, in the order given (a repeated id: the last wins)."""
    with out.open("w", encoding="utf-8") as stream:
        for file in files:
            with DumpFile(file) as dump:
                for _, value in read_dump(dump):
                    # A record the reader could not decode stays a bad record of the merged file.
                    line = json.dumps(value, default=str) if isinstance(value, dict) else json.dumps({"unreadable": 1})
                    stream.write(line + "\n")
    return out


# ------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------


def backfill(
    sources: Sequence[str],
    data_dir: Path,
    *,
    options: HubOptions | None = None,
    since: date | None = None,
    until: date | None = None,
    every: Every | None = None,
    date_pattern: str | None = None,
    taken_at: datetime | None = None,
    max_bad_share: float = 0.05,
    resolve_rate: float = RESOLVE_RATE,
    on_progress: Callable[[BackfillProgress], None] | None = None,
) -> BackfillResult:
    """Import every dated version of `sources` not yet published, one snapshot each, oldest first.

    `sources`: one Hub dataset repo (`owner/name[@revision]`, `hf://datasets/...`), or local dump files and folders.
    A version that fails (a file gone, a damaged file, a fault past the retries) is reported and the others go on;
    a stop (options.stop) ends the run after the current read. Raises IngestError when nothing can be planned.
    """
    opts = options or HubOptions()
    hub_source = parse_source(sources[0]) if len(sources) == 1 and not Path(sources[0]).exists() else None
    hub: ArchiveHub | None = None
    if hub_source is not None:
        if taken_at is not None or date_pattern is not None:
            raise IngestError("--taken-at and --date-pattern are for local files; a Hub archive dates its versions")
        hub = ArchiveHub(opts, resolve_rate)
        planned = hub.plan(hub_source)
    else:
        planned = plan_local([Path(s) for s in sources], date_pattern=date_pattern, taken_at=taken_at)
    versions = select(planned, since=since, until=until, every=every)
    with _one_run(data_dir):
        return _run(versions, hub, data_dir, opts, max_bad_share, on_progress)


RUN_DIR = "backfill-run"


@contextlib.contextmanager
def _one_run(data_dir: Path) -> Iterator[None]:
    """One backfill at a time per data dir: two would both import a version neither has published yet."""
    clean_tmp(data_dir)  # the marker of a killed run
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(work_dir(data_dir, RUN_DIR))
    except (FileExistsError, WorkDirBusy):
        where = Layout(data_dir).tmp / RUN_DIR
        raise IngestError(f"another backfill is running on {data_dir} ({where}); try again when it ends") from None
    with stack:
        yield


def _run(
    versions: list[Version],
    hub: ArchiveHub | None,
    data_dir: Path,
    opts: HubOptions,
    max_bad_share: float,
    on_progress: Callable[[BackfillProgress], None] | None,
) -> BackfillResult:
    result = BackfillResult(planned=len(versions))
    done = published_keys(data_dir)
    state = BackfillProgress(0, len(versions), 0, 0)

    def report(**changes: Any) -> None:
        nonlocal state
        state = replace(state, **changes)
        if on_progress is not None:
            on_progress(state)

    for number, version in enumerate(versions):
        if opts.stop.is_set():
            raise Cancelled("stopped")
        report(done=number, current=version.source, bytes_read=0, bytes_total=version.size, published=None)
        if version.key in done:
            result.skipped.append(version.source)
            report(skipped=len(result.skipped))
            continue
        try:
            if hub is not None:
                meta = _import_hub_version(hub, version, data_dir, max_bad_share, done, report)
            else:
                meta = _import_local_version(version, data_dir, max_bad_share)
        except Cancelled:
            raise
        except IngestError as exc:
            log.error("backfill of %s failed: %s", version.source, exc)
            result.failed.append((version.source, str(exc)))
            report(failed=len(result.failed))
            continue
        if meta is None:  # the same content as a version already published
            result.skipped.append(version.source)
            report(skipped=len(result.skipped))
            continue
        result.published.append(meta)
        done[version.key] = meta.id
        blob = meta.params["backfill"].get("blob")
        if isinstance(blob, str):  # a later version with the same file (a commit that changed other files) is skipped
            done[blob] = meta.id
        report(published=meta)
    report(done=len(versions), current=None, published=None)
    return result


def _import_hub_version(
    hub: ArchiveHub,
    version: Version,
    data_dir: Path,
    max_bad_share: float,
    done: dict[str, str],
    report: Callable[..., None],
) -> SnapshotMeta | None:
    blob, size = hub.blob(version)
    if blob is None:
        raise IngestError(f"{version.source}: the file is not there (any more) at {hub.shown}")
    if blob in done:
        log.info("%s: the same file as snapshot %s; skipped", version.source, done[blob])
        return None
    report(bytes_total=size)
    started = time.monotonic()
    # A work dir under tmp/: a killed run leaves it unlocked, and the next writer's clean_tmp removes it.
    with work_dir(data_dir, f"backfill-{secrets.token_hex(4)}") as folder:
        local = folder / "models.parquet"
        names = hub.project(version, local, lambda n: report(bytes_read=n))
        fetched_s = round(time.monotonic() - started, 3)
        params = {
            "backfill": {
                "key": version.key,
                "blob": blob,
                "repo": version.repo,
                "revision": version.revision,
                "path": version.path,
                "fetch_s": fetched_s,
            },
            "missing_columns": [c for c in HUBSTATS_COLUMNS if c not in names],
            "read_columns": [c for c in READ_COLUMNS if c in names],
        }
        return import_dump(
            local,
            data_dir,
            taken_at=version.taken_at,
            max_bad_share=max_bad_share,
            source=version.source,
            params=params,
            parquet_threads=PARQUET_THREADS,
        )


def _import_local_version(version: Version, data_dir: Path, max_bad_share: float) -> SnapshotMeta:
    params: dict[str, Any] = {"backfill": {"key": version.key, "files": [f.name for f in version.files]}}
    if len(version.files) == 1:
        return import_dump(
            version.files[0],
            data_dir,
            taken_at=version.taken_at,
            max_bad_share=max_bad_share,
            source=version.source,
            params=params,
        )
    with work_dir(data_dir, f"backfill-{secrets.token_hex(4)}") as folder:
        merged = _merge_files(version.files, folder / "merged.jsonl")
        return import_dump(
            merged,
            data_dir,
            taken_at=version.taken_at,
            max_bad_share=max_bad_share,
            source=version.source,
            params=params,
        )
