"""The snapshot store, the reading side of the data dir (queries.datadir): lists the published snapshots and
opens them read-only.

Readers open snapshot files read-only, so any number of API processes can read while a worker writes
another file; a snapshot appears (or goes) with the rename that publishes (or removes) it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import duckdb

from hubcensus.queries.datadir import Layout, SnapshotMeta, SnapshotNotFound, read_meta
from hubcensus.queries.sql import sql_path
from hubcensus.queries.summary import SummaryIndex

T = TypeVar("T")


class SnapshotStore:
    """Lists published snapshots and opens them read-only; thread-safe, shared by a whole process.

    Every snapshot is ATTACHed read-only to one in-memory DuckDB instance: one buffer pool and one
    thread pool for the process, however many snapshots are queried (one instance per snapshot cost
    about 100 MiB each at 2M models), and a diff joins two attached snapshots without opening files.
    At most `max_attached` snapshots stay attached: past that, the least recently used one that no
    request is reading is detached (its file closed, its cached blocks freed), so a store of hundreds of
    snapshots never holds hundreds of files. Histories read the snapshots' summaries (`summaries`).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        memory_limit_bytes: int | None = None,
        max_attached: int | None = None,
        fetch: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # Where a listed snapshot's file may be absent (an API node's cache of the archive, queries.mirror):
        # `fetch(id)` brings it into place, or raises (queries.archive.ArchiveError).
        self._fetch = fetch
        self._memory_limit = memory_limit_bytes
        self._max_attached = max_attached or MAX_ATTACHED
        self.layout = Layout(self.data_dir)
        self.summaries = SummaryIndex(self)
        self._lock = threading.Lock()
        self._listing_key: tuple[int, int] | None = None
        self._listing: list[SnapshotMeta] = []
        self._db: duckdb.DuckDBPyConnection | None = None
        # snapshot id -> the quoted name it is attached under, least recently used first
        self._catalogs: dict[str, str] = {}
        self._borrowed: dict[str, int] = {}  # quoted name -> cursors in use on it (never detached meanwhile)
        self._retired: dict[str, float] = {}  # quoted name -> when its snapshot left the listing
        self._idle: dict[str, list[duckdb.DuckDBPyConnection]] = {}  # quoted name -> cursors for reuse

    def snapshots(self) -> list[SnapshotMeta]:
        """Published snapshots, newest `taken_at` first.

        Re-read only when the snapshots/ directory changes (a publish or a delete renames an entry,
        which changes its mtime), so a request costs one stat and a new snapshot shows at once.
        """
        try:
            st = self.layout.snapshots.stat()
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
        for entry in self.layout.snapshots.iterdir():
            # A directory without meta.json is not ours (or was removed meanwhile): skip, never fail.
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                metas.append(read_meta(entry))
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
        return self.layout.db(snapshot_id)

    def catalog(self, snapshot_id: str) -> str:
        """The quoted catalog name a published snapshot is attached under (attaching it if need be)."""
        return self._fetching_absent(lambda: self._attach(snapshot_id))

    def _borrow(self, ids: Sequence[str]) -> list[str]:
        """Attach each snapshot and mark it in use, under one hold of the lock (so nothing detaches or evicts one
        before it is marked); fetching an absent file first, and again if it was evicted meanwhile."""

        def attach_all() -> list[str]:
            # Each is marked in use as soon as it is attached, so attaching the next cannot detach it.
            names: list[str] = []
            try:
                for sid in ids:
                    names.append(self._attach(sid))
                    self._borrowed[names[-1]] = self._borrowed.get(names[-1], 0) + 1
            except BaseException:
                self._release(names)
                raise
            return names

        return self._fetching_absent(attach_all)

    def _fetching_absent(self, attach: Callable[[], T]) -> T:
        """`attach()` under the lock; when a file is absent from this disk, fetch it (outside the lock: a download
        takes seconds, and other requests go on meanwhile) and try again, up to FETCH_ATTEMPTS times."""
        for _ in range(FETCH_ATTEMPTS):
            try:
                with self._lock:
                    return attach()
            except FileMissing as exc:
                if self._fetch is None:
                    raise SnapshotNotFound(exc.snapshot_id) from None
                missing = exc.snapshot_id
                self._fetch(missing)
        raise SnapshotNotFound(missing)

    def drop_file(self, snapshot_id: str) -> bool:
        """Delete a snapshot's file from the disk unless a request is reading it (detaching it first); for a
        cache that evicts (queries.mirror). False, and nothing done, while it is in use."""
        with self._lock:
            name = self._catalogs.get(snapshot_id)
            if name is not None:
                if name in self._borrowed:
                    return False
                self._detach(self._catalogs.pop(snapshot_id))
            self.path_of(snapshot_id).unlink(missing_ok=True)
            return True

    @contextlib.contextmanager
    def cursor(self, snapshot_id: str, *, also: Sequence[str] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only cursor whose default catalog is the snapshot, for one thread, within the block.

        The snapshots in `also` stay attached within the block too, for a query that joins them (their
        names: `catalog`). Cursors are kept for reuse per snapshot: pointing a new one at its catalog
        (`USE`) costs about 60 us, a tenth of a cached answer.
        """
        names = self._borrow((snapshot_id, *also))
        with self._lock:
            name = names[0]
            idle = self._idle.setdefault(name, [])
            cursor = idle.pop() if idle else None
        try:
            if cursor is None:
                cursor = self._instance().cursor()
                cursor.execute(f"USE {name}")
            try:
                yield cursor
            except BaseException:
                cursor.close()  # it may hold a half-read or interrupted result: never reuse it
                cursor = None
                raise
        finally:
            with self._lock:
                self._release(names)
                if cursor is not None and self._catalogs.get(snapshot_id) == name and len(idle) < MAX_IDLE_CURSORS:
                    idle.append(cursor)
                    cursor = None
                self._evict()  # over the bound while every attached snapshot was in use: back within it now
            if cursor is not None:
                cursor.close()

    def _release(self, names: list[str]) -> None:
        # Called with the lock held: the cursors borrowed on these catalogs are handed back.
        for n in names:
            self._borrowed[n] -= 1
            if not self._borrowed[n]:
                del self._borrowed[n]

    @contextlib.contextmanager
    def own_cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the instance's own in-memory catalog (no snapshot), for tables the store keeps."""
        with self._lock:
            cursor = self._instance().cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def attached(self) -> list[str]:
        """The ids of the snapshots attached now, least recently used first (retired ones not counted)."""
        with self._lock:
            return list(self._catalogs)

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
        name = self._catalogs.pop(snapshot_id, None)
        if name is not None:
            self._catalogs[snapshot_id] = name  # now the most recently used
        else:
            path = self.path_of(snapshot_id)
            if not path.exists():
                raise FileMissing(snapshot_id)
            # Identifiers cannot be bound: the name is derived from the id and quoted.
            name = '"snap_' + re.sub(r"[^0-9A-Za-z_]", "_", snapshot_id) + "_" + secrets.token_hex(2) + '"'
            self._instance().execute(f"ATTACH {sql_path(path)} AS {name} (READ_ONLY)")
            self._catalogs[snapshot_id] = name
            self._evict()
        return name

    def _evict(self) -> None:
        # Called with the lock held: detach the least recently used snapshots no request is reading until at
        # most max_attached are attached (the one just attached is in use or the most recent: never taken).
        while len(self._catalogs) > self._max_attached:
            victim = next((sid for sid, name in self._catalogs.items() if name not in self._borrowed), None)
            if victim is None or victim == next(reversed(self._catalogs)):
                return  # every one is in use: over the bound until they are handed back
            self._detach(self._catalogs.pop(victim))

    def _detach(self, name: str) -> None:
        for cursor in self._idle.pop(name, []):
            cursor.close()
        if self._db is not None:
            with contextlib.suppress(duckdb.Error):
                self._db.execute(f"DETACH {name}")

    def _detach_retired(self) -> None:
        # A removed snapshot stays attached for a grace period, so requests that already hold a cursor
        # on it finish; then it is detached, which closes the file and lets the disk space go.
        now = time.monotonic()
        for name, since in list(self._retired.items()):
            if now - since >= RETIRED_GRACE_S and name not in self._borrowed:
                self._detach(name)
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
        self.summaries.reset()


class FileMissing(SnapshotNotFound):
    """A snapshot's file is not on this disk (not fetched yet, or evicted): fetched, where the store can."""


# How often a request fetches a file that an eviction took away again before it could attach it.
FETCH_ATTEMPTS = 3
# How long a snapshot removed from the listing stays attached: longer than any query may run.
RETIRED_GRACE_S = 300.0
# Snapshots kept attached at most (HUBCENSUS_MAX_ATTACHED): more than a dashboard and a diff use at once, and
# far fewer files than a store of years holds.
MAX_ATTACHED = 16
# Idle cursors kept per snapshot: about the most requests served at once (the thread pool's 40).
MAX_IDLE_CURSORS = 48


def open_snapshot(data_dir: Path | str, snapshot_id: str = "latest") -> duckdb.DuckDBPyConnection:
    """Open one published snapshot read-only, for notebooks: `framework_share(open_snapshot("data"))`."""
    store = SnapshotStore(Path(data_dir))
    meta = store.get(snapshot_id)
    return duckdb.connect(str(store.path_of(meta.id)), read_only=True)
