"""The scheduled worker: a snapshot on a cron schedule, retention after each success, a status file.

The worker and the API meet only in the data dir: the worker writes `status.json` (atomically) for
`GET /v1/status`, and picks up `requests/*.json`, which `POST /v1/snapshots` drops there, as "run now".
A heartbeat in `status.json` tells the API whether a worker is there at all to take such a request. A request may
ask for a backfill instead (`queries.control.BackfillRequest`): the worker runs it, its progress in `status.json`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from croniter import croniter

from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import Cancelled, HubOptions, ingest_hub
from hubcensus.ingest.progress import BackfillProgress, BackfillResult
from hubcensus.ingest.reclassify import outdated, reclassify_outdated
from hubcensus.queries.archive import Archive, ArchiveError, pending_uploads
from hubcensus.queries.control import BackfillRequest, pending_requests, read_status, take_requests, write_status
from hubcensus.queries.datadir import SnapshotMeta, SnapshotNotFound, redact_url, remove_snapshot
from hubcensus.queries.frameworks import CLASSIFIER_VERSION
from hubcensus.queries.history import matches_source
from hubcensus.queries.lake import sync_lake
from hubcensus.queries.store import SnapshotStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """Keep the newest snapshot of each of the last N days, ISO weeks and months (0: none by that rule).

    With all three at 0 nothing is pruned. The newest snapshot is always kept.
    """

    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @property
    def enabled(self) -> bool:
        """Whether any rule is set."""
        return bool(self.daily or self.weekly or self.monthly)


def to_prune(snapshots: Sequence[SnapshotMeta], retention: Retention) -> list[SnapshotMeta]:
    """The snapshots that no retention rule keeps, newest first (the newest overall is always kept)."""
    if not retention.enabled or not snapshots:
        return []
    ordered = sorted(snapshots, key=lambda m: (m.taken_at, m.id), reverse=True)
    keep = {ordered[0].id}
    rules: list[tuple[int, Callable[[datetime], Any]]] = [
        (retention.daily, lambda t: t.date()),
        (retention.weekly, lambda t: t.isocalendar()[:2]),
        (retention.monthly, lambda t: (t.year, t.month)),
    ]
    for count, period_of in rules:
        seen: list[Any] = []
        for meta in ordered:  # newest first: the first snapshot of each period is its newest
            period = period_of(meta.taken_at)
            if period not in seen:
                if len(seen) == count:
                    break
                seen.append(period)
                keep.add(meta.id)
    return [m for m in ordered if m.id not in keep]


def prune(data_dir: Path, retention: Retention, source: str) -> list[str]:
    """Remove this worker's ingest snapshots (same source) that retention does not keep; imports stay.

    Sources are compared as recorded, without credentials: snapshots of the same endpoint match whatever
    user and password the URL carried (also those recorded before sources were redacted).
    """
    source = redact_url(source)
    mine = [m for m in SnapshotStore(data_dir).snapshots() if m.kind == "ingest" and redact_url(m.source) == source]
    removed = []
    for meta in to_prune(mine, retention):
        remove_snapshot(data_dir, meta.id)
        removed.append(meta.id)
    if removed:
        log.info("retention removed %d snapshot(s): %s", len(removed), ", ".join(removed))
    return removed


def prune_source(data_dir: Path, retention: Retention, source: str, *, dry_run: bool = False) -> list[SnapshotMeta]:
    """Thin the snapshots of one source (ingests, imports or backfilled ones alike) by retention: what it does not
    keep is removed, newest first, and returned. Snapshots of other sources are never touched; the newest of
    the source always stays. `source` is matched as `queries.history.matches_source` does (a repository
    covers the files read from it). With `dry_run`, nothing is removed."""
    selected = [m for m in SnapshotStore(data_dir).snapshots() if matches_source(m.source, source)]
    doomed = to_prune(selected, retention)
    if dry_run:
        return doomed
    removed = []
    for meta in doomed:
        try:
            remove_snapshot(data_dir, meta.id)
        except SnapshotNotFound:
            continue  # removed meanwhile (DELETE, another prune): nothing left to do
        removed.append(meta)
    if removed:
        log.info("retention removed %d snapshot(s) of %s", len(removed), redact_url(source))
    return removed


def next_run(schedule: str, after: datetime) -> datetime:
    """The next time a 5-field cron schedule fires after `after` (UTC)."""
    nxt: datetime = croniter(schedule, after).get_next(datetime)
    return nxt


def validate_schedule(schedule: str) -> None:
    """Raise ValueError unless `schedule` is a standard 5-field cron expression."""
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise ValueError(f"not a 5-field cron schedule: {schedule!r} (e.g. '0 3 * * *' for 03:00 UTC daily)")


def sync_archive(data_dir: Path, archive: Archive) -> list[str]:
    """Upload every local snapshot the archive lacks, oldest first (each one's files, then its manifest), and
    remove the local copies of snapshots deleted from the archive on purpose; returns the ids uploaded.

    Never raises for the store: when it is unreachable the snapshots stay local, `archive.pending` and
    `archive.last_error` in status.json say so, and a later call uploads them.
    """
    previous = read_status(data_dir).get("archive") or {}
    state: dict[str, Any] = {"url": archive.url, "last_upload": previous.get("last_upload"), "last_error": None}
    uploaded: list[str] = []
    pending: list[str] | None = None
    try:
        for sid in archive.deleted() & {m.id for m in SnapshotStore(data_dir).snapshots()}:
            log.info("archive: snapshot %s was deleted from the archive; removed here too", sid)
            with contextlib.suppress(SnapshotNotFound):
                remove_snapshot(data_dir, sid)
        pending = pending_uploads(data_dir, archive)
        for i, sid in enumerate(pending):
            write_status(data_dir, archive={**state, "pending": pending[i:], "uploading": sid})
            started = time.monotonic()
            try:
                manifest = archive.upload(data_dir, sid)
            except (SnapshotNotFound, FileNotFoundError):
                continue  # removed meanwhile (retention, DELETE): nothing to upload
            seconds = time.monotonic() - started
            size = sum(f.size for f in manifest.files)
            log.info(
                "archive: uploaded %s to %s (%d files, %d bytes, %.1f s)",
                sid,
                archive.url,
                len(manifest.files),
                size,
                seconds,
            )
            state["last_upload"] = {
                "at": manifest.uploaded_at.isoformat(),
                "snapshot": sid,
                "bytes": size,
                "seconds": round(seconds, 3),
            }
            uploaded.append(sid)
    except ArchiveError as exc:
        log.warning("archive: upload failed, will retry: %s", exc)
        state["last_error"] = {"at": datetime.now(UTC).isoformat(), "reason": str(exc)}
        checked = previous.get("checked_at")
        if pending is None:
            # The store could not even be listed: pending are those pending at the last complete check, and every
            # snapshot published since.
            since = datetime.fromisoformat(checked) if checked else datetime.min.replace(tzinfo=UTC)
            pending = sorted(
                set(previous.get("pending") or [])
                | {m.id for m in SnapshotStore(data_dir).snapshots() if m.published_at > since}
            )
        pending = [sid for sid in pending if sid not in uploaded]
        write_status(data_dir, archive={**state, "pending": pending, "uploading": None, "checked_at": checked})
        return uploaded
    write_status(
        data_dir, archive={**state, "pending": [], "uploading": None, "checked_at": datetime.now(UTC).isoformat()}
    )
    return uploaded


def run_once(
    data_dir: Path,
    options: HubOptions,
    *,
    retention: Retention,
    filters: Sequence[str] = (),
    limit: int | None = None,
    archive: Archive | None = None,
) -> SnapshotMeta | None:
    """One scheduled run: ingest, the upload to the archive (if any), then retention; the outcome goes to
    status.json. None on failure."""
    started = datetime.now(UTC)
    write_status(data_dir, state="running", run_started_at=started.isoformat())
    try:
        meta = ingest_hub(data_dir, limit=limit, filters=filters, options=options)
    except Cancelled:
        write_status(data_dir, state="stopped")
        raise
    except IngestError as exc:
        log.error("snapshot failed: %s", exc)
        write_status(data_dir, state="idle", last_failure={"at": datetime.now(UTC).isoformat(), "reason": str(exc)})
        return None
    if archive is not None:
        sync_archive(data_dir, archive)  # before retention: the archive keeps what the local disk prunes
    removed = prune(data_dir, retention, options.endpoint.rstrip("/"))
    log.info("published snapshot %s: %d models in %.1f s", meta.id, meta.models, meta.duration_s)
    write_status(
        data_dir,
        state="idle",
        last_success={
            "at": meta.published_at.isoformat(),
            "snapshot": meta.id,
            "models": meta.models,
            "duration_s": meta.duration_s,
            "pruned": removed,
        },
    )
    return meta


STATUS_EVERY_S = 0.5  # how often a backfill's progress is written to status.json (it changes on every read)
# How often an idle worker checks the archive for local snapshots it lacks (uploads that failed, backfills).
ARCHIVE_EVERY_S = 60.0


def run_backfill(data_dir: Path, options: HubOptions, request: dict[str, Any]) -> BackfillResult | None:
    """A requested backfill: its progress in status.json (`backfill`), its outcome in `last_backfill` (and in
    `last_failure` when versions failed). None if it could not run at all."""
    from hubcensus.ingest.backfill import backfill

    request_id = str(request.get("id"))
    try:
        spec = BackfillRequest.model_validate(request.get("backfill"))
    except ValueError as exc:  # a request file written by hand, or by another version
        log.error("backfill request %s is not valid: %s", request_id, exc)
        write_status(data_dir, last_failure={"at": datetime.now(UTC).isoformat(), "reason": f"{request_id}: {exc}"})
        return None
    job = {"request": request_id, "source": spec.source, "started_at": datetime.now(UTC).isoformat()}
    write_status(data_dir, state="backfilling", backfill={**job, **BackfillProgress(0, 0, 0, 0).as_status()})
    last_write = 0.0

    def on_progress(p: BackfillProgress) -> None:
        nonlocal last_write
        if time.monotonic() - last_write >= STATUS_EVERY_S or p.bytes_read == 0 or p.published is not None:
            last_write = time.monotonic()
            write_status(data_dir, backfill={**job, **p.as_status()})

    log.info("backfill of %s requested (%s)", spec.source, request_id)
    try:
        result = backfill(
            [spec.source], data_dir, options=options, since=spec.since, until=spec.until, every=spec.every,
            on_progress=on_progress,
        )  # fmt: skip
    except Cancelled:
        write_status(data_dir, state="stopped", backfill=None)
        raise
    except IngestError as exc:
        log.error("backfill of %s failed: %s", spec.source, exc)
        write_status(
            data_dir,
            state="idle",
            backfill=None,
            last_failure={"at": datetime.now(UTC).isoformat(), "reason": f"backfill of {spec.source}: {exc}"},
        )
        return None
    summary = {
        **job,
        "at": datetime.now(UTC).isoformat(),
        "published": [m.id for m in result.published],
        "skipped": len(result.skipped),
        "failed": [{"source": s, "reason": r} for s, r in result.failed],
        "versions": result.planned,
    }
    changes: dict[str, Any] = {"state": "idle", "backfill": None, "last_backfill": summary}
    if result.failed:
        reason = f"backfill of {spec.source}: {len(result.failed)} of {result.planned} versions failed"
        changes["last_failure"] = {"at": summary["at"], "reason": reason}
    write_status(data_dir, **changes)
    log.info(
        "backfill of %s: %d published, %d already there, %d failed",
        spec.source, len(result.published), len(result.skipped), len(result.failed),
    )  # fmt: skip
    return result


def run_worker(
    data_dir: Path,
    schedule: str,
    options: HubOptions,
    *,
    run_now: bool = False,
    retention: Retention = Retention(),
    filters: Sequence[str] = (),
    limit: int | None = None,
    poll: float = 1.0,
    heartbeat: float = 10.0,
    archive: Archive | None = None,
    archive_every: float = ARCHIVE_EVERY_S,
) -> None:
    """Run on the schedule until `options.stop` is set. A run is also started by a snapshot request.

    Every `heartbeat` seconds, during runs too, `heartbeat_at` in status.json says the worker is alive;
    the API refuses snapshot requests when it is older than `STALE_BEATS` heartbeats (queries/control.py).
    """
    validate_schedule(schedule)
    stop = options.stop
    write_status(
        data_dir,
        worker={
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(),
            "schedule": schedule,
            "endpoint": redact_url(options.endpoint.rstrip("/")),
            "poll_s": poll,
            "heartbeat_s": heartbeat,
        },
        state="idle",
        heartbeat_at=datetime.now(UTC).isoformat(),
    )
    beating = threading.Event()
    beat = threading.Thread(target=_beat, args=(data_dir, heartbeat, beating), name="heartbeat", daemon=True)
    beat.start()
    try:
        _bring_up_to_date(data_dir)
        idle: Callable[[], Any] | None = None
        if archive is not None:
            sync_archive(data_dir, archive)
            idle = lambda: sync_archive(data_dir, archive)  # noqa: E731
        due = run_now
        while not stop.is_set():
            if not due:
                when = next_run(schedule, datetime.now(UTC))
                write_status(data_dir, next_run=when.isoformat())
                log.info("next run at %s (schedule %r)", when.isoformat(), schedule)
                due = _sleep_until(when, data_dir, stop, poll, idle=idle, idle_every=archive_every)
                if not due:
                    break
            due = False
            taken = take_requests(data_dir)
            if taken:
                log.info("run requested: %s", ", ".join(r["id"] for r in taken))
            backfills = [r for r in taken if r.get("backfill") is not None]
            try:
                for request in backfills:
                    run_backfill(data_dir, options, request)
                    if archive is not None:
                        sync_archive(data_dir, archive)
                # A scheduled run, or a request for a snapshot: an ingest. Backfill requests alone run only those.
                if len(backfills) < len(taken) or not taken:
                    run_once(data_dir, options, retention=retention, filters=filters, limit=limit, archive=archive)
            except Cancelled:
                break
    finally:
        beating.set()
        beat.join()
        write_status(data_dir, state="stopped", next_run=None, heartbeat_at=datetime.now(UTC).isoformat())
    log.info("worker stopped")


def _beat(data_dir: Path, every: float, done: threading.Event) -> None:
    """Write `heartbeat_at` every `every` seconds until `done`; in a thread, so a long run beats too."""
    while not done.wait(every):
        try:
            write_status(data_dir, heartbeat_at=datetime.now(UTC).isoformat())
        except OSError as exc:  # a full disk must not kill the worker; the run reports it
            log.warning("could not write the heartbeat: %s", exc)


def _bring_up_to_date(data_dir: Path) -> None:
    """On upgrade: recompute the snapshots an older classifier computed, give a summary to those published
    without one and a lake to those without a current one, before the first run (no new crawl)."""
    if outdated(data_dir):
        _reclassify_outdated(data_dir)
    try:
        lake = sync_lake(data_dir)
    except (OSError, duckdb.Error) as exc:
        log.error("writing the snapshots' lake failed: %s", exc)
    else:
        if lake.written or lake.removed:
            log.info("lake: wrote %d snapshot(s), removed %d orphan(s)", len(lake.written), len(lake.removed))
    store = SnapshotStore(data_dir)
    try:
        done = store.summaries.prepare()
    except (SnapshotNotFound, duckdb.Error) as exc:  # a snapshot removed meanwhile; the API computes what is left
        log.warning("preparing the snapshots' summaries stopped: %s", exc)
    else:
        if done:
            log.info("summarized %d snapshot(s) published without a summary", len(done))
    finally:
        store.close()


def _reclassify_outdated(data_dir: Path) -> None:
    write_status(data_dir, state="reclassifying")
    try:
        done = reclassify_outdated(data_dir)
    except IngestError as exc:
        log.error("reclassifying the stored snapshots failed: %s", exc)
        write_status(data_dir, last_failure={"at": datetime.now(UTC).isoformat(), "reason": str(exc)})
    else:
        log.info("reclassified %d snapshot(s) under classifier %s", len(done), CLASSIFIER_VERSION)
    write_status(data_dir, state="idle")


def _sleep_until(
    when: datetime,
    data_dir: Path,
    stop: threading.Event,
    poll: float,
    *,
    idle: Callable[[], Any] | None = None,
    idle_every: float = ARCHIVE_EVERY_S,
) -> bool:
    """Wait for the scheduled time or a snapshot request (True), or a stop (False); meanwhile call `idle` every
    `idle_every` seconds (the archive's retry of what could not be uploaded)."""
    last_idle = time.monotonic()
    while not stop.is_set():
        if pending_requests(data_dir):
            return True
        left = (when - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return True
        if idle is not None and time.monotonic() - last_idle >= idle_every:
            idle()
            last_idle = time.monotonic()
        stop.wait(min(poll, left))
    return False
