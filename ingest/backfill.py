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
`HfFileSystem`, batch by batch, into a local Parquet file (docs/PERFORMANCE.md, "Backfill", measures this against
downloading the whole file first: faster, and within the memory bound where the download is not). Each
version is its own snapshot, published whole or not at all; meta.json's `params.backfill.key` names the version,
so a second run imports only what is missing, and a killed run leaves only a work dir, which the next removes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, HfFileSystem
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from hubcensus.ingest.dumpfile import DumpFile, read_dump
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import Cancelled, HubOptions, configure_http, split_userinfo
from hubcensus.ingest.progress import BackfillProgress, BackfillResult
from hubcensus.queries.control import HUB_DATASET
from hubcensus.queries.datadir import Layout, SnapshotMeta, WorkDirBusy, clean_tmp, redact_url, work_dir
from hubcensus.queries.store import SnapshotStore

log = logging.getLogger(__name__)

Every = Literal["week", "month", "quarter"]

# hub-stats' models.parquet columns, as public code reads them; a version records which of them it lacked.
HUBSTATS_COLUMNS = (
    "_id", "id", "author", "createdAt", "lastModified", "downloads", "downloadsAllTime", "likes", "trendingScore",
    "pipeline_tag", "library_name", "tags", "baseModels", "safetensors", "gguf", "cardData", "siblings", "config",
    "gated",
)  # fmt: skip
# The columns a snapshot reads (ingest.duckread.parquet_rows_sql, ingest.records): only these are fetched.
READ_COLUMNS = (
    "id", "modelId", "author", "createdAt", "created_at", "lastModified", "last_modified", "downloads", "likes",
    "tags", "pipeline_tag", "library_name", "private", "gated", "siblings", "config", "transformersInfo",
    "transformers_info",
)  # fmt: skip

WEEKLY_FILE = re.compile(r"^models/(\d{4}-\d{2}-\d{2})/models\.parquet$")
HUBSTATS_FILE = "models.parquet"
DEFAULT_DATE_PATTERN = r"^(?P<date>\d{4}-\d{2}-\d{2})"
DUMP_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".json.gz", ".jsonl.gz", ".ndjson.gz")
# Each column chunk is read through a buffer of this size (a data page at least), one ranged request each: memory
# does not grow with the row groups (hub-stats' may hold a million rows), and a 1.5 GB file costs a few dozen
# resolver calls. Not pre_buffer: it reads every needed chunk of a row group whole, at once.
READ_BUFFER = 8 * 2**20
BATCH_ROWS = 32_768  # rows decoded at a time when projecting a Hub file; each is a row group of the local copy
# The local copy's row groups are small enough for DuckDB to decode two at once within the writer's memory.
PARQUET_THREADS = 2
# The projected copy is read once, locally: LZ4 writes and reads faster than snappy (100k models: 0.72 s against
# 1.10 s to project) and is a third the size of no compression.
LOCAL_COMPRESSION = "lz4"
# The Hub allows 5,000 resolver calls (file reads) per 5 minutes on a free token; stay a tenth under it.
RESOLVE_RATE = 5000 / 300 * 0.9


@dataclass(frozen=True)
class Version:
    """One dated version of an archive: one snapshot to be."""

    taken_at: datetime
    key: str  # identifies the version across runs (meta.json params.backfill.key)
    source: str  # what meta.json records as its source
    repo: str | None = None
    revision: str | None = None
    path: str = ""
    size: int | None = None
    files: tuple[Path, ...] = ()  # a local version's dump files, imported together


@dataclass(frozen=True)
class HubSource:
    """A dataset repo on the Hub, at a revision (a branch, tag or commit; default main)."""

    repo: str
    revision: str | None = None


def parse_source(source: str) -> HubSource | None:
    """`owner/name`, `owner/name@revision` or `hf://datasets/owner/name[@revision]` as a Hub source; None otherwise."""
    match = HUB_DATASET.match(source)
    return HubSource(match.group(1), match.group(2)) if match else None


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
# The Hub: planning, pacing, reading
# ------------------------------------------------------------------------------------------------------


class _Limiter:
    """At most `rate` calls per second, across threads (0: no limit); a stop ends the wait."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop = stop
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        if at > now and self.stop.wait(at - now):
            raise Cancelled("stopped while waiting to send the next request")


def _pacer(api_rate: float, resolve_rate: float, stop: threading.Event) -> Callable[[httpx2.Request], None]:
    """Pace every request: file reads (`/resolve/`, the Hub's resolver limit) and API calls, each at its own rate."""
    api, resolve = _Limiter(api_rate, stop), _Limiter(resolve_rate, stop)

    def pace(request: httpx2.Request) -> None:
        (resolve if "/resolve/" in request.url.path else api).wait()

    return pace


class _Hub:
    """The Hub as a backfill uses it: the client, the file system, and the messages for what goes wrong."""

    def __init__(self, options: HubOptions, resolve_rate: float) -> None:
        endpoint, basic_auth = split_userinfo(options.endpoint.rstrip("/"))
        self.endpoint = endpoint
        self.shown = redact_url(options.endpoint.rstrip("/"))
        configure_http(endpoint, options.timeout, basic_auth, pace=_pacer(options.max_rate, resolve_rate, options.stop))
        # token=False: with no token given, send none, rather than one found on disk (ingest.hub's rule).
        self.token: str | bool = (None if basic_auth else options.token) or False
        self.api = HfApi(endpoint=endpoint, token=self.token, library_name="hubcensus")
        self.fs = HfFileSystem(endpoint=endpoint, token=self.token, skip_instance_cache=True)

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn the client's errors into IngestError messages that say what was being read."""
        try:
            yield
        except RepositoryNotFoundError as exc:
            raise IngestError(
                f"{what}: no such dataset repo at {self.shown} (it may have been taken down, be private or gated: "
                "a token with access is needed)"
            ) from exc
        except RevisionNotFoundError as exc:
            raise IngestError(f"{what}: no such revision at {self.shown}") from exc
        except (EntryNotFoundError, RemoteEntryNotFoundError, FileNotFoundError) as exc:
            raise IngestError(f"{what}: the file is not there (any more) at {self.shown}") from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise IngestError(f"{what}: the Hub at {self.shown} answered HTTP {status} after retries") from exc
        except httpx2.TimeoutException as exc:
            raise IngestError(f"{what}: the Hub at {self.shown} did not answer in time, after retries") from exc
        except httpx2.HTTPError as exc:
            raise IngestError(f"{what}: reading from {self.shown} failed ({type(exc).__name__}: {exc})") from exc

    def plan(self, source: HubSource) -> list[Version]:
        """The dated versions of a dataset repo: weekly folders, else the commits of its models.parquet."""
        name = f"hf://datasets/{source.repo}"
        with self.errors(name):
            info = self.api.dataset_info(source.repo, revision=source.revision)
            sha = info.sha or source.revision or "main"
            entries = list(self.api.list_repo_tree(source.repo, repo_type="dataset", revision=sha))
            top = {e.path for e in entries}
            if "models" in top:
                versions = []
                tree = self.api.list_repo_tree(
                    source.repo, path_in_repo="models", recursive=True, repo_type="dataset", revision=sha
                )
                for entry in tree:
                    match = WEEKLY_FILE.match(entry.path)
                    if match and isinstance(entry, RepoFile):
                        day = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
                        versions.append(
                            Version(
                                taken_at=day,
                                # A week's file is written once: the path is the version, whatever commit shows it.
                                key=f"hf://datasets/{source.repo}/{entry.path}",
                                source=f"hf://datasets/{source.repo}@{sha}/{entry.path}",
                                repo=source.repo,
                                revision=sha,
                                path=entry.path,
                                size=entry.size,
                            )
                        )
                if versions:
                    return versions
            if HUBSTATS_FILE in top:
                commits = self.api.list_repo_commits(source.repo, repo_type="dataset", revision=sha)
                return [
                    Version(
                        taken_at=c.created_at.astimezone(UTC),
                        key=f"hf://datasets/{source.repo}@{c.commit_id}/{HUBSTATS_FILE}",
                        source=f"hf://datasets/{source.repo}@{c.commit_id}/{HUBSTATS_FILE}",
                        repo=source.repo,
                        revision=c.commit_id,
                        path=HUBSTATS_FILE,
                    )
                    for c in commits
                ]
        raise IngestError(
            f"{name}: neither weekly folders (models/<YYYY-MM-DD>/models.parquet) nor a {HUBSTATS_FILE} at its root"
        )

    def blob(self, version: Version) -> tuple[str | None, int | None]:
        """The content id (LFS sha256, else git blob id) and size of a version's file; (None, None) if absent."""
        assert version.repo is not None
        with self.errors(version.source):
            infos = self.api.get_paths_info(
                version.repo, [version.path], repo_type="dataset", revision=version.revision
            )
        files = [i for i in infos if isinstance(i, RepoFile)]
        if not files:
            return None, None
        lfs = files[0].lfs
        return (lfs.sha256 if lfs is not None else files[0].blob_id), files[0].size

    def project(self, version: Version, out: Path, on_bytes: Callable[[int], None]) -> list[str]:
        """Copy the columns a snapshot reads from the version's Parquet file into `out`, row group by row group,
        by ranged reads; returns the file's column names."""
        url = f"datasets/{version.repo}@{version.revision}/{version.path}"
        # No read-ahead cache: pyarrow asks for exactly the column chunks it needs, READ_BUFFER at a time, so a
        # request never carries a column nobody reads.
        with self.errors(version.source), self.fs.open(url, "rb", cache_type="none") as remote:
            counted = _Counting(remote, on_bytes)
            try:
                parquet = pq.ParquetFile(counted, buffer_size=READ_BUFFER, pre_buffer=False)
            except (pa.ArrowInvalid, OSError) as exc:
                counted.reraise()
                raise IngestError(f"{version.source}: not a readable Parquet file ({exc})") from exc
            names: list[str] = list(parquet.schema_arrow.names)
            columns = [c for c in READ_COLUMNS if c in names]
            schema = pa.schema([parquet.schema_arrow.field(c) for c in columns])
            try:
                with pq.ParquetWriter(out, schema, compression=LOCAL_COMPRESSION) as writer:
                    # Batches, not whole row groups: hub-stats' row groups may hold a million rows, and decoded
                    # they would not fit the memory bound; each batch is a row group of the local file.
                    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                        writer.write_batch(batch)
            except (pa.ArrowInvalid, OSError) as exc:
                counted.reraise()
                raise IngestError(f"{version.source}: the Parquet file is damaged ({exc})") from exc
        return names


class _Counting:
    """A read-only file that reports the bytes read through it (pyarrow reads any object with these methods)."""

    def __init__(self, inner: Any, on_bytes: Callable[[int], None]) -> None:
        self.inner = inner
        self.on_bytes = on_bytes
        self.total = 0
        self.closed = False
        self.error: Exception | None = None

    def reraise(self) -> None:
        """Raise the client's error that made a read fail, if one did (a file gone, a fault past the retries)."""
        if self.error is not None:
            raise self.error

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self.inner.read(size)
        except Exception as exc:
            # pyarrow turns it into an OSError carrying only its text: kept, so that `reraise` can say what happened.
            self.error = exc
            raise
        self.total += len(data)
        self.on_bytes(self.total)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self.inner.tell())

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    @property
    def size(self) -> int:
        return int(self.inner.size)


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
    hub: _Hub | None = None
    if hub_source is not None:
        if taken_at is not None or date_pattern is not None:
            raise IngestError("--taken-at and --date-pattern are for local files; a Hub archive dates its versions")
        hub = _Hub(opts, resolve_rate)
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
    hub: _Hub | None,
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
    hub: _Hub,
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
