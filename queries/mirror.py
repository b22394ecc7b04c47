"""An API node's local copy of the archive (queries.archive): the data dir as a cache, so queries.store works
unchanged.

Every `poll_s` seconds the node lists the archive's manifests and makes its `snapshots/` match them exactly: a
committed snapshot appears with its meta.json and summary.parquet (small: listings and histories need them), a
deleted one goes. Snapshot files (snapshot.duckdb) are fetched when a request needs one, the newest ahead of any
request, into the snapshot's directory (temp file, sha256 checked, rename), within a disk budget: to make room,
the least recently used files that no request is reading are deleted (queries.store decides what is in use). Any
number of nodes list exactly the archive's committed snapshots with their files byte for byte, so they answer
identically.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubcensus.queries.archive import (
    Archive,
    ArchivedFile,
    ArchiveError,
    ChecksumMismatch,
    Manifest,
    snapshot_path,
)
from hubcensus.queries.datadir import (
    DB_NAME,
    LOCK_NAME,
    META_NAME,
    SUMMARY_NAME,
    Layout,
    SnapshotNotFound,
    fsync_path,
    publish,
    read_meta,
    remove_snapshot,
    replace,
    work_dir,
)
from hubcensus.queries.summary import revision

if TYPE_CHECKING:
    from hubcensus.queries.store import SnapshotStore

log = logging.getLogger(__name__)

MARKER = "archive-cache.json"  # in the data dir: this directory is an API node's cache of that archive


class SnapshotUnavailable(ArchiveError):
    """A listed snapshot's file cannot be brought onto this node now (the archive down, the cache disk full)."""

    def __init__(self, snapshot_id: str, reason: str) -> None:
        super().__init__(f"snapshot {snapshot_id} cannot be fetched from the archive now: {reason}")
        self.snapshot_id = snapshot_id


class NotACache(ValueError):
    """The data dir holds snapshots that are not a cache of the archive (a worker's own data dir)."""


def claim(data_dir: Path, archive: Archive) -> None:
    """Mark `data_dir` as this archive's cache; NotACache if it already holds other snapshots, which syncing
    would delete (the archive is the truth of an API node's listing)."""
    root = Path(data_dir)
    marker = root / MARKER
    snapshots = Layout(root).snapshots
    if marker.exists():
        owner = json.loads(marker.read_text()).get("archive")
        if owner == archive.url:
            return
        raise NotACache(f"{root} caches another archive ({owner}); give this node an empty data dir")
    if snapshots.exists() and any(snapshots.iterdir()):
        raise NotACache(
            f"{root} holds snapshots of its own (a worker's data dir?): an API node with HUBCENSUS_ARCHIVE mirrors "
            "the archive into an empty data dir of its own; unset HUBCENSUS_ARCHIVE to serve this one"
        )
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"archive": archive.url}))


class Mirror:
    """Keeps an API node's data dir in step with the archive, and fetches snapshot files into it on demand."""

    def __init__(self, archive: Archive, data_dir: Path, *, budget_bytes: int, poll_s: float) -> None:
        self.archive = archive
        self.layout = Layout(Path(data_dir))
        self.budget = budget_bytes
        self.poll_s = poll_s
        self.store: SnapshotStore | None = None  # set once the store that reads this dir exists
        self._manifests: dict[str, Manifest] = {}
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        self._room = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_sync: datetime | None = None
        self.last_error: dict[str, str] | None = None

    # --- the listing -----------------------------------------------------------------------------

    def sync(self) -> None:
        """Make the local listing match the archive's committed snapshots, then fetch the newest one's file.
        ArchiveError when the archive cannot be listed (the node keeps serving what it has)."""
        committed = self.archive.committed()
        local = self._local_ids()
        for sid in committed:
            meta_path = self.layout.snapshot(sid) / META_NAME
            manifest = self._manifests.get(sid)
            if manifest is None or sid not in local:
                manifest = self.archive.manifest(sid)
                if manifest is None:
                    continue  # unreadable, or of a newer format: skipped, and logged by Archive.manifest
                self._manifests[sid] = manifest
            if sid not in local or revision(read_meta(meta_path.parent)) != revision(manifest.snapshot):
                try:
                    self._install(manifest, replacing=sid in local)
                except ChecksumMismatch as exc:  # this snapshot's files are wrong: the others are still listed
                    log.warning("archive: snapshot %s not listed: %s", sid, exc)
                    self._failed(str(exc))
        for sid in local - set(committed):
            log.info("archive: snapshot %s is no longer in %s; removed here", sid, self.archive.url)
            self._manifests.pop(sid, None)
            with contextlib.suppress(SnapshotNotFound):
                remove_snapshot(self.layout.root, sid)
        self.last_sync = datetime.now(UTC)
        newest = self._newest()
        if newest is not None and not self.layout.db(newest).exists():
            self.fetch(newest)

    def _local_ids(self) -> set[str]:
        if not self.layout.snapshots.exists():
            return set()
        return {e.name for e in self.layout.snapshots.iterdir() if (e / META_NAME).exists()}

    def _newest(self) -> str | None:
        metas = [m.snapshot for m in self._manifests.values()]
        return max(metas, key=lambda m: (m.taken_at, m.id)).id if metas else None

    def _install(self, manifest: Manifest, *, replacing: bool) -> None:
        """Publish a snapshot's listing files (meta.json, summary.parquet), checked, with one rename."""
        sid = manifest.snapshot.id
        with work_dir(self.layout.root, f"mirror-{sid}") as work:
            for name in (META_NAME, SUMMARY_NAME):
                entry = manifest.file(snapshot_path(sid, name))
                if entry is not None:
                    self.archive.download(entry, work / name)
                elif name == META_NAME:  # a manifest without the file: its own copy of the meta says the same
                    (work / name).write_text(manifest.snapshot.model_dump_json(indent=2))
            (work / LOCK_NAME).unlink(missing_ok=True)
            if replacing:
                replace(self.layout.root, work, sid)  # a reclassified copy: its file is fetched again
            else:
                publish(self.layout.root, work, sid)
        log.info("archive: snapshot %s listed from %s", sid, self.archive.url)

    # --- snapshot files --------------------------------------------------------------------------

    def fetch(self, snapshot_id: str) -> None:
        """Bring a listed snapshot's file onto this node (queries.store calls this for an absent file).

        SnapshotNotFound if the archive has no such snapshot; SnapshotUnavailable if it cannot be fetched now.
        Concurrent requests for one snapshot wait for one download.
        """
        with self._lock:
            lock = self._fetching.setdefault(snapshot_id, threading.Lock())
        with lock:
            target = self.layout.db(snapshot_id)
            if target.exists():
                return
            if not (self.layout.snapshot(snapshot_id) / META_NAME).exists():
                raise SnapshotNotFound(snapshot_id)
            manifest = self._manifests.get(snapshot_id)
            if manifest is None:
                try:
                    manifest = self.archive.manifest(snapshot_id)
                except ArchiveError as exc:
                    raise SnapshotUnavailable(snapshot_id, str(exc)) from exc
            entry = manifest.file(snapshot_path(snapshot_id, DB_NAME)) if manifest else None
            if entry is None:
                raise SnapshotNotFound(snapshot_id)
            # One download at a time makes room and fills it: two at once could each find room for itself alone.
            with self._room:
                self._fetch_file(snapshot_id, entry, target)

    def _fetch_file(self, snapshot_id: str, entry: ArchivedFile, target: Path) -> None:
        """Make room for one file, then download it into place (SnapshotUnavailable if it cannot be)."""
        self._make_room(entry.size, snapshot_id)
        try:
            self.archive.download(entry, target)
        except ArchiveError as exc:
            self._failed(str(exc))
            raise SnapshotUnavailable(snapshot_id, str(exc)) from exc
        except FileNotFoundError:
            raise SnapshotNotFound(snapshot_id) from None  # removed from the listing meanwhile
        except OSError as exc:
            reason = "no space left on the cache disk" if exc.errno == errno.ENOSPC else str(exc)
            self._failed(reason)
            raise SnapshotUnavailable(snapshot_id, reason) from exc
        fsync_path(target.parent)
        log.info("archive: fetched %s (%d bytes)", snapshot_id, entry.size)

    def cached(self) -> dict[str, int]:
        """The snapshot files on this node's disk: id -> bytes."""
        sizes = {}
        for sid in self._local_ids():
            try:
                sizes[sid] = self.layout.db(sid).stat().st_size
            except FileNotFoundError:
                continue
        return sizes

    def _make_room(self, size: int, keep: str) -> None:
        """Delete least recently used files that no request reads until `size` more bytes fit the budget."""
        if size > self.budget:
            raise SnapshotUnavailable(keep, f"its file ({size} bytes) is larger than HUBCENSUS_ARCHIVE_CACHE_MB")
        cached = self.cached()
        used = sum(cached.values())
        if used + size <= self.budget:
            return
        attached = self.store.attached() if self.store is not None else []
        # Files no request has attached go first (oldest on disk first), then the attached ones least recently used.
        loose = sorted((sid for sid in cached if sid not in attached), key=lambda s: self.layout.db(s).stat().st_mtime)
        for sid in [*loose, *[s for s in attached if s in cached]]:
            if used + size <= self.budget:
                return
            if sid == keep:
                continue
            dropped = self.store.drop_file(sid) if self.store is not None else _unlink(self.layout.db(sid))
            if dropped:
                log.info("archive: evicted %s from the cache (%d bytes)", sid, cached[sid])
                used -= cached[sid]
        if used + size > self.budget:
            raise SnapshotUnavailable(keep, "the cache is full of snapshots that requests are reading")

    # --- running ---------------------------------------------------------------------------------

    def _failed(self, reason: str) -> None:
        self.last_error = {"at": datetime.now(UTC).isoformat(), "reason": reason}

    def start(self) -> None:
        """Sync now and every `poll_s` seconds, in a thread, until `stop`."""
        # A download cut short by a killed process leaves its temp file (never its target): gone at the next start.
        for leftover in self.layout.snapshots.glob(f"*/.{DB_NAME}.*.part"):
            leftover.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._run, name="archive-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.sync()
            except (ArchiveError, OSError) as exc:
                log.warning("archive: sync failed: %s", exc)
                self._failed(str(exc))
            if self._stop.wait(self.poll_s):
                return

    def stop(self) -> None:
        """End the sync thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def status(self) -> dict[str, Any]:
        """What `GET /v1/status` says of this node's archive."""
        cached = self.cached()
        return {
            "url": self.archive.url,
            "poll_s": self.poll_s,
            "last_sync": self.last_sync.isoformat() if self.last_sync else None,
            "last_error": self.last_error,
            "cache": {"budget_bytes": self.budget, "used_bytes": sum(cached.values()), "snapshots": sorted(cached)},
        }


def _unlink(path: Path) -> bool:
    path.unlink(missing_ok=True)
    return True
