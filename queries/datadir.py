"""The data dir: its layout, what a snapshot records, and every change made to what is published in it.

Writers (the snapshot writer, reclassification, retention, the benchmark) and readers (queries.store, the
API) share only this contract. Layout (docs/ARCHITECTURE.md explains the choice)::

    DATA_DIR/snapshots/<id>/snapshot.duckdb   published snapshot, never written again
    DATA_DIR/snapshots/<id>/meta.json         what the snapshot records (SnapshotMeta)
    DATA_DIR/snapshots/<id>/summary.parquet   its summary for history (queries.summary), with it or added later
    DATA_DIR/tmp/<name>/                      a work dir: a snapshot being written, with a held .lock file
    DATA_DIR/tmp/.lock                        held while a work dir is created and while tmp/ is cleaned
    DATA_DIR/resume/<key>/                    a resumable ingest's work dir, kept when the run fails
    DATA_DIR/lake/<table>/snapshot_date=…/    every snapshot as Parquet for other engines (queries.lake)
    DATA_DIR/status.json                      the worker's state and heartbeat (queries.control)
    DATA_DIR/requests/<id>.json               "take a snapshot now", for the worker (queries.control)

A writer builds everything in its work dir, `seal`s it and `publish`es it with one `os.rename` into
snapshots/: readers see the whole snapshot or nothing. A killed writer leaves only a work dir whose lock
nobody holds; `clean_tmp` removes such leftovers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import filelock
from pydantic import BaseModel, Field, field_validator

SCHEMA_VERSION = 1
DB_NAME = "snapshot.duckdb"
META_NAME = "meta.json"
SUMMARY_NAME = "summary.parquet"
LOCK_NAME = ".lock"


@dataclass(frozen=True)
class Layout:
    """Where each part of one data dir lives."""

    root: Path

    @property
    def snapshots(self) -> Path:
        """The published snapshots, a directory each."""
        return self.root / "snapshots"

    def snapshot(self, snapshot_id: str) -> Path:
        """A published snapshot's directory."""
        return self.snapshots / snapshot_id

    def db(self, snapshot_id: str) -> Path:
        """A published snapshot's DuckDB file."""
        return self.snapshot(snapshot_id) / DB_NAME

    def summary(self, snapshot_id: str) -> Path:
        """A published snapshot's summary file (queries.summary); older snapshots may lack it."""
        return self.snapshot(snapshot_id) / SUMMARY_NAME

    @property
    def tmp(self) -> Path:
        """Work dirs of snapshots being written, removed when their writer is gone."""
        return self.root / "tmp"

    @property
    def resume(self) -> Path:
        """Work dirs of resumable ingests, kept when a run fails."""
        return self.root / "resume"

    @property
    def status(self) -> Path:
        """The worker's status file."""
        return self.root / "status.json"

    @property
    def requests(self) -> Path:
        """Snapshot requests waiting for the worker."""
        return self.root / "requests"


class SnapshotNotFound(LookupError):
    """No published snapshot has the requested id (or the store is empty for `latest`)."""

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(snapshot_id)
        self.snapshot_id = snapshot_id


class WorkDirBusy(RuntimeError):
    """Another process holds the lock of this work dir (a resumable run of the same key)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


def redact_url(url: str) -> str:
    """The URL as it may be shown or stored: a `user:password@` part becomes `***@`; the rest is kept.

    Everything that records an endpoint (logs, printed lines, meta.json `source`, status.json, error
    messages) goes through this, so credentials given in the URL never leave the request itself.
    """
    parts = urlsplit(url)
    _, at, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"***@{hostport}")) if at else url


class Reclassification(BaseModel):
    """A snapshot's framework columns recomputed from its stored facts under a newer classifier."""

    at: datetime
    from_version: str = Field(description="The classifier the snapshot was published (or last reclassified) with.")
    changed: dict[str, int] = Field(description="Per method, how many models' framework sets changed.")
    missing_facts: list[str] = Field(
        default_factory=list, description="Fact columns the snapshot predates (null for every model)."
    )


class SnapshotMeta(BaseModel):
    """What every snapshot records about itself; stored as meta.json beside the DuckDB file."""

    id: str
    taken_at: datetime = Field(description="When the Hub was observed: `--taken-at` for imports, start for ingests.")
    source: str = Field(description="The endpoint ingested from, or the file name imported.")
    kind: Literal["ingest", "import"]
    models: int = Field(description="Models in the snapshot, after de-duplication on id.")
    bad_records: int = Field(description="Records that could not be read and were left out.")
    duplicates: int = Field(0, description="Records dropped because a later record had the same id.")
    duration_s: float = Field(description="Wall time from start to publication, in seconds.")
    classifier_version: str = Field(description="The classifier whose rules computed the framework columns.")
    published_at: datetime
    schema_version: int = SCHEMA_VERSION
    bad_reasons: dict[str, int] = Field(default_factory=dict, description="Bad records by reason.")
    params: dict[str, Any] = Field(default_factory=dict, description="Filters or limits the run used.")
    weight_file_pattern: str | None = Field(
        None,
        description="The pattern of the file names the snapshot kept (`weight_files`); null: a release before it was "
        "recorded, whose filter kept fewer names.",
    )
    reclassified: Reclassification | None = Field(
        None, description="Set when `hubcensus reclassify` recomputed the framework columns (the last time)."
    )
    summary_version: int | None = Field(
        None,
        description="The version of the summary (summary.parquet) published with the snapshot; null: published "
        "without one (an older release), which readers then add.",
    )
    reader: Literal["duckdb", "duckdb+python", "python"] | None = Field(
        None,
        description="How an import read its records: DuckDB's JSON reader alone, DuckDB with Python re-reading "
        "the records it could not claim, or record by record in Python.",
    )

    @field_validator("source")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # Snapshots recorded before sources were redacted may hold `user:password@` in meta.json: never
        # serve or print it, whatever wrote the file.
        return redact_url(value)


def new_snapshot_id(taken_at: datetime) -> str:
    """A sortable, unique id: the UTC time taken, plus a random suffix against collisions."""
    return taken_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def read_meta(directory: Path) -> SnapshotMeta:
    """The meta.json of a snapshot directory (FileNotFoundError if it has none: then it is no snapshot)."""
    return SnapshotMeta.model_validate_json((directory / META_NAME).read_bytes())


# ------------------------------------------------------------------------------------------------------
# Work dirs: where a snapshot is written before it is published.
# ------------------------------------------------------------------------------------------------------


def tmp_creation_lock(data_dir: Path) -> filelock.FileLock:
    """The lock held while a work dir is created and locked for its writer.

    `clean_tmp` holds it too, so it can never take a directory that a writer has made but not yet
    locked for itself.
    """
    tmp = Layout(Path(data_dir)).tmp
    tmp.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(tmp / LOCK_NAME, preserve_lock_file=True)


@contextlib.contextmanager
def work_dir(data_dir: Path, name: str, *, resumable: bool = False) -> Iterator[Path]:
    """A work dir held locked by this process within the block: `tmp/<name>`, new, removed at the end unless it
    was published meanwhile; or, `resumable`, `resume/<name>`, taken over if it exists and kept at the end, so a
    later run can continue it. WorkDirBusy if another process holds it."""
    layout = Layout(Path(data_dir))
    path = (layout.resume if resumable else layout.tmp) / name
    with tmp_creation_lock(data_dir):
        path.mkdir(parents=True, exist_ok=resumable)
        lock = filelock.FileLock(path / LOCK_NAME, blocking=False, preserve_lock_file=True)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise WorkDirBusy(path) from None
    try:
        yield path
    finally:
        if not resumable:
            shutil.rmtree(path, ignore_errors=True)
        lock.release()


def clean_tmp(data_dir: Path) -> list[Path]:
    """Remove work dirs left by writers that died; returns what was removed.

    A live writer holds the flock on its own .lock file, so only abandoned directories are removed,
    even while another writer is at work.
    """
    removed: list[Path] = []
    with tmp_creation_lock(data_dir):
        for entry in Layout(Path(data_dir)).tmp.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if not entry.is_dir():
                entry.unlink(missing_ok=True)
                removed.append(entry)
                continue
            lock = filelock.FileLock(entry / LOCK_NAME, blocking=False, preserve_lock_file=True)
            try:
                with lock:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
            except filelock.Timeout:
                continue  # held by a live writer
    return removed


# ------------------------------------------------------------------------------------------------------
# Publishing: seal a work dir, then publish it, replace a published snapshot with it, or remove one.
# ------------------------------------------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries (so that a rename survives a power loss), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(directory: Path, meta: SnapshotMeta) -> None:
    """Write meta.json beside the snapshot's DuckDB file, and make both read-only and durable: the directory
    is then a complete snapshot, ready for `publish` or `replace`."""
    (directory / META_NAME).write_text(json.dumps(meta.model_dump(mode="json"), indent=2))
    for name in (DB_NAME, META_NAME, SUMMARY_NAME):
        if name == SUMMARY_NAME and not (directory / name).exists():
            continue  # a snapshot without its summary is still complete: readers add the summary later
        # Read-only on disk too: a published snapshot is immutable, and tools should see that.
        (directory / name).chmod(0o444)
        fsync_path(directory / name)
    (directory / LOCK_NAME).unlink(missing_ok=True)


def publish(data_dir: Path, directory: Path, snapshot_id: str) -> None:
    """Make a sealed snapshot directory visible: one rename into snapshots/, within one file system."""
    snapshots = Layout(Path(data_dir)).snapshots
    snapshots.mkdir(parents=True, exist_ok=True)
    os.rename(directory, snapshots / snapshot_id)
    fsync_path(snapshots)


def replace(data_dir: Path, directory: Path, snapshot_id: str) -> None:
    """Swap a published snapshot for the sealed `directory` (a reclassified copy), atomically, and delete the old.

    Linux's renameat2(RENAME_EXCHANGE) swaps the two directories in one step, so a reader sees the old snapshot
    or the new one, never none; a request already reading the old file finishes (POSIX unlink semantics).
    Elsewhere the old one is renamed away first, leaving a moment in which the id is not listed.
    """
    layout = Layout(Path(data_dir))
    target = layout.snapshot(snapshot_id)
    if not (target / META_NAME).exists():
        raise SnapshotNotFound(snapshot_id)
    if not exchange(directory, target):
        with tmp_creation_lock(data_dir):
            aside = layout.tmp / f"replaced-{snapshot_id}-{secrets.token_hex(3)}"
            os.rename(target, aside)
        os.rename(directory, target)
        directory = aside
    fsync_path(target.parent)
    shutil.rmtree(directory, ignore_errors=True)  # now the old snapshot


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2; False where the system cannot (then nothing was done)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # an old kernel, or a file system without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), str(b))


def add_summary(data_dir: Path, snapshot_id: str, summary: Path) -> bool:
    """Move a finished summary file into a published snapshot that was published without one (or with an
    outdated one), with one rename: readers see no summary, or the whole file. False if the snapshot is gone.

    The summary says which revision of the snapshot it was computed from (queries.summary), so one computed
    from a copy that a reclassification replaced meanwhile is recognised as stale, never taken as current.
    """
    target = Layout(Path(data_dir)).summary(snapshot_id)
    summary.chmod(0o444)
    fsync_path(summary)
    try:
        os.rename(summary, target)
    except (FileNotFoundError, NotADirectoryError):
        return False  # removed meanwhile (retention, DELETE)
    fsync_path(target.parent)
    return True


def remove_snapshot(data_dir: Path, snapshot_id: str) -> None:
    """Unpublish a snapshot atomically (a rename out of snapshots/), then delete its files.

    A process that has the file open keeps reading it until it closes it (POSIX unlink semantics), so a
    request in flight is never cut off; new requests no longer see the snapshot.
    """
    layout = Layout(Path(data_dir))
    source = layout.snapshot(snapshot_id)
    if not (source / META_NAME).exists():
        raise SnapshotNotFound(snapshot_id)
    with tmp_creation_lock(data_dir):
        target = layout.tmp / f"removed-{snapshot_id}-{secrets.token_hex(3)}"
        os.rename(source, target)
    fsync_path(layout.snapshots)
    # Its lake goes with it, after it: a kill in between leaves partitions no snapshot owns, which `hubcensus
    # lake` removes. Imported here: the lake module builds on this one.
    from hubcensus.queries.lake import remove_lake

    remove_lake(data_dir, snapshot_id)
    shutil.rmtree(target, ignore_errors=True)
