"""The snapshot store: immutable DuckDB files under a data dir, published by an atomic rename.

Layout (docs/ARCHITECTURE.md explains the choice)::

    DATA_DIR/snapshots/<id>/snapshot.duckdb   published snapshot, never written again
    DATA_DIR/snapshots/<id>/meta.json         what the snapshot records (SnapshotMeta)
    DATA_DIR/tmp/<id>/                        a snapshot being written, with a held .lock file

A writer builds everything under tmp/ and publishes with one `os.rename` of the directory into
snapshots/: readers see the whole snapshot or nothing. Readers open snapshot files read-only, so
any number of API processes can read while a worker writes another file. A killed writer leaves
only a tmp/ directory whose lock nobody holds; `clean_tmp` removes such leftovers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import duckdb
import filelock
from pydantic import BaseModel, Field, field_validator

from hubcensus.queries.sql import sql_path

SCHEMA_VERSION = 1
DB_NAME = "snapshot.duckdb"
META_NAME = "meta.json"


class SnapshotNotFound(LookupError):
    """No published snapshot has the requested id (or the store is empty for `latest`)."""

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(snapshot_id)
        self.snapshot_id = snapshot_id


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


class SnapshotStore:
    """Lists published snapshots and opens them read-only; thread-safe, shared by a whole process.

    Every snapshot is ATTACHed read-only to one in-memory DuckDB instance: one buffer pool and one
    thread pool for the process, however many snapshots are queried (one instance per snapshot cost
    about 100 MiB each at 2M models), and a diff joins two attached snapshots without opening files.
    """

    def __init__(self, data_dir: Path, *, memory_limit_bytes: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._memory_limit = memory_limit_bytes
        self.snapshots_dir = self.data_dir / "snapshots"
        self.tmp_dir = self.data_dir / "tmp"
        self._lock = threading.Lock()
        self._listing_key: tuple[int, int] | None = None
        self._listing: list[SnapshotMeta] = []
        self._db: duckdb.DuckDBPyConnection | None = None
        self._catalogs: dict[str, str] = {}  # snapshot id -> the quoted name it is attached under
        self._retired: dict[str, float] = {}  # quoted name -> when its snapshot left the listing
        self._idle: dict[str, list[duckdb.DuckDBPyConnection]] = {}  # quoted name -> cursors for reuse

    def snapshots(self) -> list[SnapshotMeta]:
        """Published snapshots, newest `taken_at` first.

        Re-read only when the snapshots/ directory changes (a publish or a delete renames an entry,
        which changes its mtime), so a request costs one stat and a new snapshot shows at once.
        """
        try:
            st = self.snapshots_dir.stat()
        except FileNotFoundError:
            return []
        key = (st.st_mtime_ns, st.st_ino)
        with self._lock:
            if key != self._listing_key:
                before = {m.id: m for m in self._listing}
                self._listing = self._read_listing()
                self._listing_key = key
                now = {m.id: m for m in self._listing}
                # Removed, or replaced by a reclassified copy (same id, new meta): the attached file is the old one.
                for sid in [sid for sid in self._catalogs if sid not in now or before.get(sid, now[sid]) != now[sid]]:
                    self._retired[self._catalogs.pop(sid)] = time.monotonic()
            return list(self._listing)

    def _read_listing(self) -> list[SnapshotMeta]:
        metas = []
        for entry in self.snapshots_dir.iterdir():
            meta_path = entry / META_NAME
            # A directory without meta.json is not ours (or was removed meanwhile): skip, never fail.
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                metas.append(SnapshotMeta.model_validate_json(meta_path.read_bytes()))
        return sorted(metas, key=lambda m: (m.taken_at, m.id), reverse=True)

    def get(self, snapshot_id: str = "latest") -> SnapshotMeta:
        """The snapshot with this id, or the newest for `latest`."""
        snapshots = self.snapshots()
        if snapshot_id == "latest":
            if not snapshots:
                raise SnapshotNotFound(snapshot_id)
            return snapshots[0]
        for meta in snapshots:
            if meta.id == snapshot_id:
                return meta
        raise SnapshotNotFound(snapshot_id)

    def path_of(self, snapshot_id: str) -> Path:
        """The DuckDB file of a published snapshot."""
        return self.snapshots_dir / snapshot_id / DB_NAME

    def catalog(self, snapshot_id: str) -> str:
        """The quoted catalog name a published snapshot is attached under (attaching it if need be)."""
        with self._lock:
            return self._attach(snapshot_id)

    @contextlib.contextmanager
    def cursor(self, snapshot_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only cursor whose default catalog is the snapshot, for one thread, within the block.

        Cursors are kept for reuse per snapshot: pointing a new one at its catalog (`USE`) costs about
        60 us, a tenth of a cached answer.
        """
        with self._lock:
            name = self._attach(snapshot_id)
            idle = self._idle.setdefault(name, [])
            cursor = idle.pop() if idle else None
        if cursor is None:
            cursor = self._instance().cursor()
            cursor.execute(f"USE {name}")
        try:
            yield cursor
        except BaseException:
            cursor.close()  # it may hold a half-read or interrupted result: never reuse it
            raise
        with self._lock:
            if self._catalogs.get(snapshot_id) == name and len(idle) < MAX_IDLE_CURSORS:
                idle.append(cursor)
                return
        cursor.close()

    def _instance(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            # One buffer pool for every attached snapshot, so this one limit bounds the whole process's
            # query memory (cached blocks are evicted first; large joins spill to a temp file).
            config: dict[str, str | bool | int | float | list[str]] = {}
            if self._memory_limit is not None:
                config["memory_limit"] = f"{self._memory_limit // 2**20}MiB"
            self._db = duckdb.connect(":memory:", config=config)
        return self._db

    def _attach(self, snapshot_id: str) -> str:
        # Called with the lock held.
        self._detach_retired()
        name = self._catalogs.get(snapshot_id)
        if name is None:
            path = self.path_of(snapshot_id)
            if not path.exists():
                raise SnapshotNotFound(snapshot_id)
            # Identifiers cannot be bound: the name is derived from the id and quoted.
            name = '"snap_' + re.sub(r"[^0-9A-Za-z_]", "_", snapshot_id) + "_" + secrets.token_hex(2) + '"'
            self._instance().execute(f"ATTACH {sql_path(path)} AS {name} (READ_ONLY)")
            self._catalogs[snapshot_id] = name
        return name

    def _detach_retired(self) -> None:
        # A removed snapshot stays attached for a grace period, so requests that already hold a cursor
        # on it finish; then it is detached, which closes the file and lets the disk space go.
        now = time.monotonic()
        for name, since in list(self._retired.items()):
            if now - since >= RETIRED_GRACE_S and self._db is not None:
                for cursor in self._idle.pop(name, []):
                    cursor.close()
                with contextlib.suppress(duckdb.Error):
                    self._db.execute(f"DETACH {name}")
                del self._retired[name]

    def close(self) -> None:
        """Close the instance and every attached snapshot."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._catalogs.clear()
            self._retired.clear()
            self._idle.clear()


# How long a snapshot removed from the listing stays attached: longer than any query may run.
RETIRED_GRACE_S = 300.0
# Idle cursors kept per snapshot: about the most requests served at once (the thread pool's 40).
MAX_IDLE_CURSORS = 48


def open_snapshot(data_dir: Path | str, snapshot_id: str = "latest") -> duckdb.DuckDBPyConnection:
    """Open one published snapshot read-only, for notebooks: `framework_share(open_snapshot("data"))`."""
    store = SnapshotStore(Path(data_dir))
    meta = store.get(snapshot_id)
    return duckdb.connect(str(store.path_of(meta.id)), read_only=True)


def tmp_creation_lock(data_dir: Path) -> filelock.FileLock:
    """The lock a writer holds while it creates and locks its temp directory.

    `clean_tmp` holds it too, so it can never take a directory that a writer has made but not yet
    locked for itself.
    """
    tmp_dir = Path(data_dir) / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(tmp_dir / ".lock", preserve_lock_file=True)


def clean_tmp(data_dir: Path) -> list[Path]:
    """Remove temp directories left by writers that died; returns what was removed.

    A live writer holds the flock on its own .lock file, so only abandoned directories are removed,
    even while another writer is at work.
    """
    removed: list[Path] = []
    with tmp_creation_lock(data_dir):
        for entry in (Path(data_dir) / "tmp").iterdir():
            if entry.name == ".lock":
                continue
            if not entry.is_dir():
                entry.unlink(missing_ok=True)
                removed.append(entry)
                continue
            lock = filelock.FileLock(entry / ".lock", blocking=False, preserve_lock_file=True)
            try:
                with lock:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
            except filelock.Timeout:
                continue  # held by a live writer
    return removed


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
    for name in (DB_NAME, META_NAME):
        # Read-only on disk too: a published snapshot is immutable, and tools should see that.
        (directory / name).chmod(0o444)
        fsync_path(directory / name)
    (directory / ".lock").unlink(missing_ok=True)


def publish(data_dir: Path, directory: Path, snapshot_id: str) -> None:
    """Make a sealed snapshot directory visible: one rename into snapshots/, within one file system."""
    snapshots_dir = Path(data_dir) / "snapshots"
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    os.rename(directory, snapshots_dir / snapshot_id)
    fsync_path(snapshots_dir)


def replace(data_dir: Path, directory: Path, snapshot_id: str) -> None:
    """Swap a published snapshot for the sealed `directory` (a reclassified copy), atomically, and delete the old.

    Linux's renameat2(RENAME_EXCHANGE) swaps the two directories in one step, so a reader sees the old snapshot
    or the new one, never none; a request already reading the old file finishes (POSIX unlink semantics).
    Elsewhere the old one is renamed away first, leaving a moment in which the id is not listed.
    """
    target = Path(data_dir) / "snapshots" / snapshot_id
    if not (target / META_NAME).exists():
        raise SnapshotNotFound(snapshot_id)
    if not _exchange(directory, target):
        with tmp_creation_lock(data_dir):
            aside = Path(data_dir) / "tmp" / f"replaced-{snapshot_id}-{secrets.token_hex(3)}"
            os.rename(target, aside)
        os.rename(directory, target)
        directory = aside
    fsync_path(target.parent)
    shutil.rmtree(directory, ignore_errors=True)  # now the old snapshot


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
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


def remove_snapshot(data_dir: Path, snapshot_id: str) -> None:
    """Unpublish a snapshot atomically (a rename out of snapshots/), then delete its files.

    A process that has the file open keeps reading it until it closes it (POSIX unlink semantics), so a
    request in flight is never cut off; new requests no longer see the snapshot.
    """
    source = Path(data_dir) / "snapshots" / snapshot_id
    if not (source / META_NAME).exists():
        raise SnapshotNotFound(snapshot_id)
    with tmp_creation_lock(data_dir):
        target = Path(data_dir) / "tmp" / f"removed-{snapshot_id}-{secrets.token_hex(3)}"
        os.rename(source, target)
    fsync_path(Path(data_dir) / "snapshots")
    shutil.rmtree(target, ignore_errors=True)
