"""The `hubcensus` command: ingest, import, backfill, list, delete and prune snapshots, reclassify, write the lake,
query, serve, demo, worker.

Each command is here; what they print is display.py, how options become Settings options.py, the named
queries client.py, serving serving.py, logging logs.py.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from hubcensus import options, serving
from hubcensus.client import QueryGroup
from hubcensus.config import Settings
from hubcensus.display import (
    backfill_progress,
    fail,
    out,
    print_snapshots,
    progress,
    report,
    report_backfill,
    report_reclassified,
)
from hubcensus.ingest.backfill import Every
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import ingest_hub
from hubcensus.logs import configure_logging
from hubcensus.options import DATA_DIR, ENDPOINT, DataDirOpt, EndpointOpt, created, existing, setting
from hubcensus.queries.archive import Archive, ArchiveError
from hubcensus.queries.datadir import SnapshotNotFound, redact_url, remove_snapshot
from hubcensus.queries.frameworks import CLASSIFIER_VERSION
from hubcensus.queries.mirror import NotACache
from hubcensus.queries.store import SnapshotStore

# Plain help, not typer's rich panels: those print a type for every option, flags included
# (`--run-now <bool>`, even `--help <bool>`), and read brackets in help texts as markup. The plain
# formatter shows flags bare, and each option's `[env var: …; default: …]` as typer builds it.
app = typer.Typer(help="Reproducible numbers about the Hugging Face Hub.", no_args_is_help=True, rich_markup_mode=None)

BUNDLED = "hub-2022-02-21.jsonl.gz"
BUNDLED_TAKEN_AT = datetime(2022, 2, 21, tzinfo=UTC)


@app.command()
def ingest(
    endpoint: EndpointOpt = ENDPOINT,
    token: Annotated[
        str | None, setting("hf_token", "--token", help="Hub token; sent only to the endpoint, never shown.")
    ] = None,
    data_dir: DataDirOpt = DATA_DIR,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many models.")] = None,
    tags: Annotated[list[str] | None, typer.Option("--filter", help="Only models with this tag (repeatable).")] = None,
    timeout: Annotated[
        float, setting("http_timeout", "--timeout", help="Seconds for each request (connect and read).")
    ] = Settings.default("http_timeout"),
    max_rate: Annotated[
        float, setting("max_rate", "--max-rate", help="Most requests per second, 0 for no limit.")
    ] = Settings.default("max_rate"),
) -> None:
    """Snapshot the Hub's model list through the official client (resumes a failed run)."""
    settings = options.settings(
        data_dir=data_dir, hf_endpoint=endpoint, hf_token=token, http_timeout=timeout, max_rate=max_rate
    )
    out.print(f"ingesting from {redact_url(settings.hf_endpoint)} into {settings.data_dir}", highlight=False)
    created(settings.data_dir)
    stop = _stop_on_signals()
    with progress(limit) as on_progress:
        try:
            meta = ingest_hub(
                settings.data_dir,
                limit=limit,
                filters=tags or (),
                options=settings.hub_options(stop=stop),
                on_progress=on_progress,
            )
        except IngestError as exc:
            fail(str(exc))
    report(meta)


@app.command()
def worker(
    schedule: Annotated[str, typer.Option(help="5-field cron, in UTC, e.g. '0 3 * * *' (03:00 daily).")],
    run_now: Annotated[
        bool, typer.Option("--run-now", help="Take a snapshot at start, then follow the schedule.")
    ] = False,
    keep_daily: Annotated[int, typer.Option(min=0, help="Keep the newest snapshot of each of the last N days.")] = 0,
    keep_weekly: Annotated[int, typer.Option(min=0, help="… of each of the last N ISO weeks.")] = 0,
    keep_monthly: Annotated[
        int, typer.Option(min=0, help="… of each of the last N months. All 0: keep everything.")
    ] = 0,
    endpoint: EndpointOpt = ENDPOINT,
    data_dir: DataDirOpt = DATA_DIR,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop each run after this many models.")] = None,
    tags: Annotated[list[str] | None, typer.Option("--filter", help="Only models with this tag (repeatable).")] = None,
    seed_bundled: Annotated[
        bool,
        setting(
            "seed_bundled",
            "--seed-bundled",
            help="Into a store with no snapshot, first import the bundled 2022-02-21 crawl, so the API has "
            "something to serve before the first run ends.",
        ),
    ] = Settings.default("seed_bundled"),
) -> None:
    """Take snapshots on a schedule until SIGTERM/SIGINT; prune by retention after each success."""
    from hubcensus.ingest.worker import Retention, run_worker, validate_schedule

    settings = options.settings(data_dir=data_dir, hf_endpoint=endpoint, seed_bundled=seed_bundled)
    try:
        validate_schedule(schedule)
    except ValueError as exc:
        fail(str(exc))
    created(settings.data_dir)
    # Only into an empty store: once it holds any snapshot, a restart must not bring the crawl back (it may
    # have been deleted on purpose). It is an import, so retention never prunes it.
    if settings.seed_bundled and not SnapshotStore(settings.data_dir).snapshots():
        _import_bundled(settings.data_dir)
    stop = _stop_on_signals()
    run_worker(
        settings.data_dir,
        schedule,
        settings.hub_options(stop=stop),
        run_now=run_now,
        retention=Retention(daily=keep_daily, weekly=keep_weekly, monthly=keep_monthly),
        filters=tags or (),
        limit=limit,
        archive=Archive.from_url(settings.archive) if settings.archive else None,
    )


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: runs stop between pages, leaving only whole, resumable pages."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        logging.getLogger("hubcensus").warning("signal %d: stopping after the current request", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    return stop


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="JSON array(s), JSON Lines or Parquet; .gz is fine.")],
    taken_at: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%z"],
            help="When the dump was taken, UTC unless a zone is given.",
            show_default="now",
        ),
    ] = None,
    data_dir: DataDirOpt = DATA_DIR,
    max_bad_share: Annotated[
        float, setting("max_bad_share", "--max-bad-share", help="Fail above this share of bad records.")
    ] = Settings.default("max_bad_share"),
) -> None:
    """Import a dump of Hub API model objects as a snapshot."""
    settings = options.settings(data_dir=data_dir, max_bad_share=max_bad_share)
    when = (taken_at or datetime.now(UTC)).replace(tzinfo=(taken_at.tzinfo if taken_at else None) or UTC)
    created(settings.data_dir)
    with progress(None, pages=False) as on_progress:
        try:
            meta = import_dump(
                path, settings.data_dir, taken_at=when, max_bad_share=settings.max_bad_share, on_progress=on_progress
            )
        except IngestError as exc:
            fail(str(exc))
    report(meta)


@app.command()
def backfill(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="A Hub dataset repo (owner/name[@revision], e.g. hfmlsoc/hub_weekly_snapshots or "
            "cfahlgren1/hub-stats), or local dump files and folders of them.",
            show_default=False,
        ),
    ],
    since: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Only versions dated on or after this day.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Only versions dated on or before this day.")
    ] = None,
    every: Annotated[
        Every | None, typer.Option(help="Keep only the newest version of each week, month or quarter.")
    ] = None,
    date_pattern: Annotated[
        str | None,
        typer.Option(
            help="Local files: a regular expression with a group named `date` (YYYY-MM-DD) found in each file name.",
            show_default="a leading YYYY-MM-DD",
        ),
    ] = None,
    taken_at: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%z"],
            help="Local files: the date of all of them (one snapshot), instead of dates in their names.",
        ),
    ] = None,
    endpoint: EndpointOpt = ENDPOINT,
    token: Annotated[
        str | None, setting("hf_token", "--token", help="Hub token; sent only to the endpoint, never shown.")
    ] = None,
    data_dir: DataDirOpt = DATA_DIR,
    timeout: Annotated[
        float, setting("http_timeout", "--timeout", help="Seconds for each request (connect and read).")
    ] = Settings.default("http_timeout"),
    max_rate: Annotated[
        float, setting("max_rate", "--max-rate", help="Most API calls per second, 0 for no limit (file reads: 15/s).")
    ] = Settings.default("max_rate"),
    max_bad_share: Annotated[
        float, setting("max_bad_share", "--max-bad-share", help="Fail a version above this share of bad records.")
    ] = Settings.default("max_bad_share"),
) -> None:
    """Import each dated version of a public Hub archive (or of dated dump files) as a snapshot dated by it.

    Resumable and idempotent: versions already published are skipped, so a second run (or one after a kill)
    imports only what is missing. Exits 1 if any version failed, after trying the others.
    """
    from hubcensus.ingest.backfill import backfill as run_backfill

    settings = options.settings(
        data_dir=data_dir,
        hf_endpoint=endpoint,
        hf_token=token,
        http_timeout=timeout,
        max_rate=max_rate,
        max_bad_share=max_bad_share,
    )
    when = taken_at.replace(tzinfo=taken_at.tzinfo or UTC) if taken_at else None
    created(settings.data_dir)
    stop = _stop_on_signals()
    try:
        with backfill_progress() as on_progress:
            result = run_backfill(
                sources,
                settings.data_dir,
                options=settings.hub_options(stop=stop),
                since=since.date() if since else None,
                until=until.date() if until else None,
                every=every,
                date_pattern=date_pattern,
                taken_at=when,
                max_bad_share=settings.max_bad_share,
                on_progress=on_progress,
            )
    except IngestError as exc:
        fail(str(exc))
    report_backfill(result)
    if result.failed:
        fail(f"{len(result.failed)} of {result.planned} versions failed (see above); run again to retry them")


@app.command()
def snapshots(data_dir: DataDirOpt = DATA_DIR) -> None:
    """List published snapshots, newest first."""
    settings = options.settings(data_dir=data_dir)
    print_snapshots(SnapshotStore(existing(settings.data_dir)).snapshots())


@app.command()
def delete(
    snapshot: Annotated[
        str, typer.Argument(help="The snapshot's id, as `hubcensus snapshots` lists it; `latest` is refused.")
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; required when not on a terminal.")] = False,
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Unpublish and delete one snapshot, named by its id; requests already reading it finish."""
    if snapshot == "latest":
        fail("delete needs an explicit snapshot id, not `latest` (see `hubcensus snapshots`); nothing deleted")
    settings = options.settings(data_dir=data_dir)
    store = SnapshotStore(existing(settings.data_dir))
    try:
        meta = store.get(snapshot)
    except SnapshotNotFound:
        fail(f"no snapshot with id {snapshot!r} in {settings.data_dir}; nothing deleted")
    what = (
        f"snapshot {meta.id} (taken {meta.taken_at.isoformat()}, {meta.kind} of {redact_url(meta.source)}, "
        f"{meta.models:,} models)"
    )
    if not yes:
        # Never a silent yes: a script or a pipe says so with --yes, and a prompt nobody sees cannot be answered.
        if not sys.stdin.isatty():
            fail(f"not deleting {meta.id} without confirmation: stdin is not a terminal; pass --yes")
        if not typer.confirm(f"delete {what}?"):
            fail("nothing deleted")
    if settings.archive:
        # Deleted on purpose: from the archive too (tombstone, then manifest: no node lists it, no worker re-uploads).
        try:
            Archive.from_url(settings.archive).delete(meta.id)
        except ArchiveError as exc:
            fail(f"{exc}; nothing deleted")
    try:
        remove_snapshot(settings.data_dir, meta.id)
    except SnapshotNotFound:
        fail(f"snapshot {meta.id} was removed meanwhile; nothing deleted")
    out.print(f"deleted {what}", highlight=False)


@app.command()
def prune(
    source: Annotated[
        str,
        typer.Option(
            help="Thin the snapshots of this source: as `hubcensus snapshots` lists it, or a repository that "
            "covers it (hf://datasets/ORG/NAME covers the files read from it)."
        ),
    ],
    keep_daily: Annotated[int, typer.Option(min=0, help="Keep the newest snapshot of each of the last N days.")] = 0,
    keep_weekly: Annotated[int, typer.Option(min=0, help="… of each of the last N ISO weeks.")] = 0,
    keep_monthly: Annotated[int, typer.Option(min=0, help="… of each of the last N months.")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; required when not on a terminal.")] = False,
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Thin one source's snapshots by retention (e.g. backfilled history: weekly for two years, monthly before).

    Other sources' snapshots are never touched, and the source's newest snapshot always stays.
    """
    from hubcensus.ingest.worker import Retention, prune_source
    from hubcensus.queries.history import matches_source

    retention = Retention(daily=keep_daily, weekly=keep_weekly, monthly=keep_monthly)
    if not retention.enabled:
        fail("give at least one of --keep-daily, --keep-weekly, --keep-monthly (all 0 would keep everything)")
    settings = options.settings(data_dir=data_dir)
    listed = SnapshotStore(existing(settings.data_dir)).snapshots()
    mine = [m for m in listed if matches_source(m.source, source)]
    if not mine:
        known = sorted({redact_url(m.source) for m in listed})
        fail(f"no snapshot has the source {redact_url(source)!r}; sources: {', '.join(known) or 'none'}")
    doomed = prune_source(settings.data_dir, retention, source, dry_run=True)
    what = f"{len(doomed)} of the {len(mine)} snapshots of {redact_url(source)}"
    if dry_run or not doomed:
        print_snapshots(doomed)
        out.print(f"would remove {what}" if doomed else f"retention keeps all {len(mine)} snapshots", highlight=False)
        return
    if not yes:
        if not sys.stdin.isatty():
            fail(f"not removing {what} without confirmation: stdin is not a terminal; pass --yes (or --dry-run)")
        if not typer.confirm(f"remove {what}?"):
            fail("nothing removed")
    removed = prune_source(settings.data_dir, retention, source)
    out.print(f"removed {len(removed)} of the {len(mine)} snapshots of {redact_url(source)}", highlight=False)


@app.command("reclassify")
def reclassify_snapshots(
    snapshots: Annotated[
        list[str] | None,
        typer.Argument(help="Snapshot ids; none: every snapshot another classifier version computed."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even snapshots that are current.")] = False,
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Recompute snapshots' framework columns from their stored facts under this classifier (no new crawl)."""
    from hubcensus.ingest.reclassify import outdated, reclassify

    settings = options.settings(data_dir=data_dir)
    store = SnapshotStore(existing(settings.data_dir))
    try:
        ids = [store.get(s).id for s in snapshots] if snapshots else [m.id for m in outdated(settings.data_dir)]
    except SnapshotNotFound as exc:
        fail(f"no snapshot with id {exc.snapshot_id!r} in {settings.data_dir}; nothing reclassified")
    if not ids:
        out.print(f"every snapshot is computed with classifier {CLASSIFIER_VERSION}; nothing to do", highlight=False)
        return
    for snapshot_id in ids:
        try:
            new = reclassify(settings.data_dir, snapshot_id, force=force or bool(snapshots))
        except IngestError as exc:
            fail(str(exc))
        if new is not None:
            report_reclassified(new)


@app.command()
def lake(
    snapshots: Annotated[
        list[str] | None,
        typer.Option("--snapshot", help="Only this snapshot (repeatable); none: every snapshot, and remove orphans."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite even lakes that are current.")] = False,
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Write the Parquet lake (DATA_DIR/lake, docs/LAKE.md) of snapshots that lack it or have a stale one."""
    import duckdb

    from hubcensus.queries.lake import lake_root, sync_lake

    settings = options.settings(data_dir=data_dir)
    store = SnapshotStore(existing(settings.data_dir))
    try:
        ids = [store.get(s).id for s in snapshots] if snapshots else None
        done = sync_lake(settings.data_dir, ids, force=force)
    except SnapshotNotFound as exc:
        fail(f"no snapshot with id {exc.snapshot_id!r} in {settings.data_dir}; no lake written")
    except (OSError, duckdb.Error) as exc:
        fail(f"writing the lake failed: {exc}")
    for w in done.written:
        out.print(
            f"wrote the lake of {w.snapshot_id}: {len(w.files)} files, {w.bytes:,} bytes in {w.seconds:.1f} s",
            highlight=False,
        )
    for snapshot_id in done.removed:
        out.print(f"removed the lake of {snapshot_id} (no such snapshot)", highlight=False)
    out.print(
        f"{len(done.written)} written, {len(done.current)} already current, {len(done.removed)} removed: "
        f"{lake_root(settings.data_dir)}",
        highlight=False,
    )


@app.command()
def serve(
    host: Annotated[str, setting("host", "--host", help="Address to listen on.")] = Settings.default("host"),
    port: Annotated[int, setting("port", "--port", help="Port to listen on.")] = Settings.default("port"),
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Serve the HTTP API over the snapshot store."""
    settings = options.settings(data_dir=data_dir, host=host, port=port)
    if settings.archive:
        created(settings.data_dir)  # an API node of the archive: an empty dir of its own is its cache
    else:
        existing(settings.data_dir)
    try:
        serving.serve(settings)
    except NotACache as exc:
        fail(str(exc))


@app.command()
def demo(
    host: Annotated[
        str, setting("host", "--host", help="Address to listen on (0.0.0.0 in a container).")
    ] = Settings.default("host"),
    port: Annotated[int, setting("port", "--port", help="Port to listen on.")] = Settings.default("port"),
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Import the bundled real 2022-02-21 Hub crawl if it is not there yet, and serve it."""
    settings = options.settings(data_dir=data_dir, host=host, port=port)
    if settings.archive:
        # Checked before anything is imported: an API node of an archive serves only what the archive holds.
        fail("demo serves its own data dir, not HUBCENSUS_ARCHIVE's: unset it, or run `hubcensus serve` as a node")
    store = SnapshotStore(created(settings.data_dir))
    if not any(m.source == BUNDLED for m in store.snapshots()):
        _import_bundled(settings.data_dir)
    # One process here, no worker: bring snapshots an older version stored up to this classifier first.
    from hubcensus.ingest.reclassify import reclassify_outdated

    for meta in reclassify_outdated(settings.data_dir):
        out.print(f"reclassified {meta.id} under classifier {meta.classifier_version}", highlight=False)
    # A data dir of a release before the lake: its snapshots get theirs (a new import wrote its own already).
    from hubcensus.queries.lake import sync_lake

    for written in sync_lake(settings.data_dir).written:
        out.print(f"wrote the lake of {written.snapshot_id}", highlight=False)
    serving.serve(settings)


def _import_bundled(data_dir: Path) -> None:
    """Import the crawl shipped in the package as a snapshot dated 2022-02-21, when it was taken."""
    out.print(f"importing the bundled crawl {BUNDLED} (29,432 models, taken 2022-02-21) ...", highlight=False)
    with resources.as_file(resources.files("hubcensus") / "data" / BUNDLED) as path:
        try:
            report(import_dump(path, data_dir, taken_at=BUNDLED_TAKEN_AT, max_bad_share=0.0))
        except IngestError as exc:
            fail(str(exc))


app.add_typer(
    typer.Typer(
        cls=QueryGroup,
        no_args_is_help=True,
        rich_markup_mode=None,
        help="Run a named query, the API's routes in-process: `hubcensus query share --method tags --top 30`. "
        "`hubcensus query NAME --help` lists its options. The whole answer is fetched, page by page.",
    ),
    name="query",
)


def main() -> None:
    """Entry point for `python -m hubcensus`."""
    try:
        log_format = Settings().log_format
    except ValidationError:
        log_format = "text"  # the command reports the bad setting itself, as `error: ...`
    configure_logging(log_format)
    if log_format != "json":
        app()
        return
    try:
        app()
    except Exception:
        # Not typer's plain-text traceback: under JSON logs a crash is one JSON record like any other.
        logging.getLogger("hubcensus").exception("unhandled error")
        raise SystemExit(1) from None
