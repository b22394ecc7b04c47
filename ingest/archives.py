"""Hub archives as a backfill reads them: the dated versions of a dataset repo (weekly folders, or the commits of
one `models.parquet`), and the columns a snapshot needs, copied by ranged reads into a local Parquet file.

The client is the official one (`HfApi`, `HfFileSystem`), with ingest's rules: timeouts, the token only to the
endpoint, URLs redacted when shown (ingest.hub.configure_http), and every request paced (API calls at the run's
`--max-rate`, file reads under the Hub's resolver limit). ingest/backfill.py decides which versions to import and
imports them.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import Cancelled, HubOptions, configure_http, split_userinfo
from hubcensus.queries.control import HUB_DATASET
from hubcensus.queries.datadir import redact_url

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
# Each column chunk is read through a buffer of this size (a data page at least), one ranged request each: memory
# does not grow with the row groups (hub-stats' may hold a million rows), and a 1.5 GB file costs a few dozen
# resolver calls. Not pre_buffer: it reads every needed chunk of a row group whole, at once.
READ_BUFFER = 8 * 2**20
BATCH_ROWS = 32_768  # rows decoded at a time when projecting a Hub file; each is a row group of the local copy
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


class ArchiveHub:
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
