"""The `hubcensus` command: ingest, import, list and delete snapshots, query, serve, demo, worker."""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from typer.core import TyperGroup

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import ingest_hub
from hubcensus.ingest.progress import Progress as Progress_
from hubcensus.queries.frameworks import CLASSIFIER_VERSION
from hubcensus.queries.store import SnapshotMeta, SnapshotNotFound, SnapshotStore, redact_url, remove_snapshot

# Plain help, not typer's rich panels: those print a type for every option, flags included
# (`--run-now <bool>`, even `--help <bool>`), and read brackets in help texts as markup. The plain
# formatter shows flags bare, and each option's `[env var: …; default: …]` as typer builds it.
app = typer.Typer(help="Reproducible numbers about the Hugging Face Hub.", no_args_is_help=True, rich_markup_mode=None)
err = Console(stderr=True, soft_wrap=True)
# Piped output is not cut to 80 columns: tables of ids must stay whole for scripts and logs.
out = Console(width=None if sys.stdout.isatty() else 200)

BUNDLED = "hub-2022-02-21.jsonl.gz"
BUNDLED_TAKEN_AT = datetime(2022, 2, 21, tzinfo=UTC)


def _setting(field: str, *decls: str, help: str, **kwargs: Any) -> Any:
    """An option for a setting, read from the same environment variables as Settings, shown in --help."""
    return typer.Option(*decls, envvar=Settings.env_names(field), show_envvar=True, help=help, **kwargs)


DataDirOpt = Annotated[Path, _setting("data_dir", "--data-dir", help="The snapshot store.")]
DATA_DIR: Path = Settings.default("data_dir")
EndpointOpt = Annotated[
    str,
    _setting(
        "hf_endpoint",
        "--endpoint",
        help="The Hub's URL. A user:password@ in it is sent as basic auth, and shown or stored as ***@.",
    ),
]
ENDPOINT: str = Settings.default("hf_endpoint")

# How each setting is spelled on the command line and in the environment, for error messages.
_SETTING_NAMES = {
    "data_dir": "--data-dir / HUBCENSUS_DATA_DIR",
    "HF_ENDPOINT": "--endpoint / HF_ENDPOINT",
    "HF_TOKEN": "--token / HF_TOKEN",
    "HF_TOKEN_PATH": "HF_TOKEN_PATH",
    "http_timeout": "--timeout / HUBCENSUS_HTTP_TIMEOUT",
    "max_rate": "--max-rate / HUBCENSUS_MAX_RATE",
    "max_bad_share": "--max-bad-share / HUBCENSUS_MAX_BAD_SHARE",
    "query_timeout": "HUBCENSUS_QUERY_TIMEOUT",
    "keep_alive": "HUBCENSUS_KEEP_ALIVE",
    "log_format": "HUBCENSUS_LOG_FORMAT",
    "cache_mb": "HUBCENSUS_CACHE_MB",
    "query_memory_mb": "HUBCENSUS_QUERY_MEMORY_MB",
    "host": "--host / HUBCENSUS_HOST",
    "port": "--port / HUBCENSUS_PORT",
}


def _settings(**overrides: object) -> Settings:
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in first["loc"])
        _fail(f"bad {_SETTING_NAMES.get(name, name)}: {first['msg'].removeprefix('Value error, ')}")
    # Whichever way a secret came (--token, HF_TOKEN, the HF_TOKEN_PATH file, the admin token), the log filter
    # must know it to keep it out of every line.
    for secret in (settings.token(), settings.admin_token.get_secret_value() if settings.admin_token else None):
        if secret and len(secret) >= 8:
            _SECRETS.add(secret)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    # Messages carry user input and codes in brackets: escape them, or rich would read them as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _usage_fail(message: str) -> NoReturn:
    """A malformed command line: exit 2, as for the errors typer finds itself."""
    _fail(message, code=2)


def _existing(data_dir: Path) -> Path:
    """The data dir of a command that only reads: a missing one is an error, not an empty store."""
    if not data_dir.is_dir():
        _fail(
            f"data dir {data_dir} does not exist"
            if not data_dir.exists()
            else f"data dir {data_dir} is not a directory"
        )
    return data_dir


def _created(data_dir: Path) -> Path:
    """The data dir of a command that writes, created if needed."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create data dir {data_dir}: {exc.strerror or exc}")
    return data_dir


def _report(meta: SnapshotMeta) -> None:
    out.print(
        f"published snapshot [bold]{meta.id}[/]: {meta.models:,} models, {meta.bad_records:,} bad records, "
        f"{meta.duplicates:,} duplicates, {meta.duration_s:.1f} s"
        + (f", read by {meta.reader}" if meta.reader else ""),
        highlight=False,
    )
    for reason, n in meta.bad_reasons.items():
        out.print(f"  bad: {n:,} x {reason}", highlight=False)


@app.command()
def ingest(
    endpoint: EndpointOpt = ENDPOINT,
    token: Annotated[
        str | None, _setting("hf_token", "--token", help="Hub token; sent only to the endpoint, never shown.")
    ] = None,
    data_dir: DataDirOpt = DATA_DIR,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many models.")] = None,
    filter: Annotated[
        list[str] | None, typer.Option("--filter", help="Only models with this tag (repeatable).")
    ] = None,
    timeout: Annotated[
        float, _setting("http_timeout", "--timeout", help="Seconds for each request (connect and read).")
    ] = Settings.default("http_timeout"),
    max_rate: Annotated[
        float, _setting("max_rate", "--max-rate", help="Most requests per second, 0 for no limit.")
    ] = Settings.default("max_rate"),
) -> None:
    """Snapshot the Hub's model list through the official client (resumes a failed run)."""
    settings = _settings(
        data_dir=data_dir, hf_endpoint=endpoint, hf_token=token, http_timeout=timeout, max_rate=max_rate
    )
    out.print(f"ingesting from {redact_url(settings.hf_endpoint)} into {settings.data_dir}", highlight=False)
    _created(settings.data_dir)
    stop = _stop_on_signals()
    with _progress(limit) as on_progress:
        try:
            meta = ingest_hub(
                settings.data_dir,
                limit=limit,
                filters=filter or (),
                options=settings.hub_options(stop=stop),
                on_progress=on_progress,
            )
        except IngestError as exc:
            _fail(str(exc))
    _report(meta)


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
    filter: Annotated[
        list[str] | None, typer.Option("--filter", help="Only models with this tag (repeatable).")
    ] = None,
    seed_bundled: Annotated[
        bool,
        _setting(
            "seed_bundled",
            "--seed-bundled",
            help="Into a store with no snapshot, first import the bundled 2022-02-21 crawl, so the API has "
            "something to serve before the first run ends.",
        ),
    ] = Settings.default("seed_bundled"),
) -> None:
    """Take snapshots on a schedule until SIGTERM/SIGINT; prune by retention after each success."""
    from hubcensus.ingest.worker import Retention, run_worker, validate_schedule

    settings = _settings(data_dir=data_dir, hf_endpoint=endpoint, seed_bundled=seed_bundled)
    try:
        validate_schedule(schedule)
    except ValueError as exc:
        _fail(str(exc))
    _created(settings.data_dir)
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
        filters=filter or (),
        limit=limit,
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


@contextlib.contextmanager
def _progress(total: int | None, pages: bool = True) -> Iterator[Callable[[Progress_], None] | None]:
    """A progress bar on an interactive terminal (pages, models, rate, ETA when the total is known)."""
    if not err.is_terminal:
        yield None
        return
    columns = [
        SpinnerColumn(),
        TextColumn("{task.fields[pages]} pages" if pages else ""),
        BarColumn() if total else TextColumn(""),
        TextColumn("{task.fields[done]}"),
        TimeRemainingColumn() if total else TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("ingest", total=total, pages=0, done="")

        def update(p: Progress_) -> None:
            if p.percent is not None:
                # A DuckDB load: no rows until it ends, only its own estimate of how far it is.
                bar.update(task, done=f"{p.percent:.0f} % loaded by DuckDB")
                return
            rate = p.models / max(p.elapsed, 1e-9)
            bar.update(task, completed=p.models, pages=p.pages, done=f"{p.models:,} models  {rate:,.0f} models/s")

        yield update


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
        float, _setting("max_bad_share", "--max-bad-share", help="Fail above this share of bad records.")
    ] = Settings.default("max_bad_share"),
) -> None:
    """Import a dump of Hub API model objects as a snapshot."""
    settings = _settings(data_dir=data_dir, max_bad_share=max_bad_share)
    when = (taken_at or datetime.now(UTC)).replace(tzinfo=(taken_at.tzinfo if taken_at else None) or UTC)
    _created(settings.data_dir)
    with _progress(None, pages=False) as on_progress:
        try:
            meta = import_dump(
                path, settings.data_dir, taken_at=when, max_bad_share=settings.max_bad_share, on_progress=on_progress
            )
        except IngestError as exc:
            _fail(str(exc))
    _report(meta)


@app.command()
def snapshots(data_dir: DataDirOpt = DATA_DIR) -> None:
    """List published snapshots, newest first."""
    settings = _settings(data_dir=data_dir)
    table = Table("kind", "source", "models", "bad", "seconds")
    table.columns.insert(0, Column("taken_at", no_wrap=True))
    table.columns.insert(0, Column("id", no_wrap=True))
    for m in SnapshotStore(_existing(settings.data_dir)).snapshots():
        table.add_row(
            m.id,
            m.taken_at.isoformat(),
            m.kind,
            redact_url(m.source),  # also for snapshots recorded before sources were redacted
            f"{m.models:,}",
            f"{m.bad_records:,}",
            f"{m.duration_s:.1f}",
        )
    out.print(table)


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
        _fail("delete needs an explicit snapshot id, not `latest` (see `hubcensus snapshots`); nothing deleted")
    settings = _settings(data_dir=data_dir)
    store = SnapshotStore(_existing(settings.data_dir))
    try:
        meta = store.get(snapshot)
    except SnapshotNotFound:
        _fail(f"no snapshot with id {snapshot!r} in {settings.data_dir}; nothing deleted")
    what = (
        f"snapshot {meta.id} (taken {meta.taken_at.isoformat()}, {meta.kind} of {redact_url(meta.source)}, "
        f"{meta.models:,} models)"
    )
    if not yes:
        # Never a silent yes: a script or a pipe says so with --yes, and a prompt nobody sees cannot be answered.
        if not sys.stdin.isatty():
            _fail(f"not deleting {meta.id} without confirmation: stdin is not a terminal; pass --yes")
        if not typer.confirm(f"delete {what}?"):
            _fail("nothing deleted")
    try:
        remove_snapshot(settings.data_dir, meta.id)
    except SnapshotNotFound:
        _fail(f"snapshot {meta.id} was removed meanwhile; nothing deleted")
    out.print(f"deleted {what}", highlight=False)


@app.command()
def reclassify(
    snapshots: Annotated[
        list[str] | None,
        typer.Argument(help="Snapshot ids; none: every snapshot another classifier version computed."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even snapshots that are current.")] = False,
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Recompute snapshots' framework columns from their stored facts under this classifier (no new crawl)."""
    from hubcensus.ingest.reclassify import outdated
    from hubcensus.ingest.reclassify import reclassify as reclassify_one

    settings = _settings(data_dir=data_dir)
    store = SnapshotStore(_existing(settings.data_dir))
    try:
        ids = [store.get(s).id for s in snapshots] if snapshots else [m.id for m in outdated(settings.data_dir)]
    except SnapshotNotFound as exc:
        _fail(f"no snapshot with id {exc.snapshot_id!r} in {settings.data_dir}; nothing reclassified")
    if not ids:
        out.print(f"every snapshot is computed with classifier {CLASSIFIER_VERSION}; nothing to do", highlight=False)
        return
    for snapshot_id in ids:
        try:
            new = reclassify_one(settings.data_dir, snapshot_id, force=force or bool(snapshots))
        except IngestError as exc:
            _fail(str(exc))
        if new is not None and new.reclassified is not None:
            r = new.reclassified
            changed = ", ".join(f"{m} {n:,}" for m, n in r.changed.items())
            missing = f"; facts it predates (null): {', '.join(r.missing_facts)}" if r.missing_facts else ""
            out.print(
                f"reclassified {new.id}: classifier {r.from_version} -> {new.classifier_version}, "
                f"models changed per method: {changed}{missing}",
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def serve(
    host: Annotated[str, _setting("host", "--host", help="Address to listen on.")] = Settings.default("host"),
    port: Annotated[int, _setting("port", "--port", help="Port to listen on.")] = Settings.default("port"),
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Serve the HTTP API over the snapshot store."""
    settings = _settings(data_dir=data_dir, host=host, port=port)
    _existing(settings.data_dir)
    _serve(settings)


@app.command()
def demo(
    host: Annotated[
        str, _setting("host", "--host", help="Address to listen on (0.0.0.0 in a container).")
    ] = Settings.default("host"),
    port: Annotated[int, _setting("port", "--port", help="Port to listen on.")] = Settings.default("port"),
    data_dir: DataDirOpt = DATA_DIR,
) -> None:
    """Import the bundled real 2022-02-21 Hub crawl if it is not there yet, and serve it."""
    settings = _settings(data_dir=data_dir, host=host, port=port)
    store = SnapshotStore(_created(settings.data_dir))
    if not any(m.source == BUNDLED for m in store.snapshots()):
        _import_bundled(settings.data_dir)
    # One process here, no worker: bring snapshots an older version stored up to this classifier first.
    from hubcensus.ingest.reclassify import reclassify_outdated

    for meta in reclassify_outdated(settings.data_dir):
        out.print(f"reclassified {meta.id} under classifier {meta.classifier_version}", highlight=False)
    _serve(settings)


def _import_bundled(data_dir: Path) -> None:
    """Import the crawl shipped in the package as a snapshot dated 2022-02-21, when it was taken."""
    out.print(f"importing the bundled crawl {BUNDLED} (29,432 models, taken 2022-02-21) ...", highlight=False)
    with resources.as_file(resources.files("hubcensus") / "data" / BUNDLED) as path:
        try:
            _report(import_dump(path, data_dir, taken_at=BUNDLED_TAKEN_AT, max_bad_share=0.0))
        except IngestError as exc:
            _fail(str(exc))


# Each named query is an API route (its OpenAPI path): the CLI runs the very same route in-process (no
# server, no socket), so parameters, validation, errors and numbers are identical to the HTTP answers.
QUERIES: dict[str, str] = {
    "share": "/v1/frameworks/share",
    "trend": "/v1/frameworks/trend",
    "history": "/v1/frameworks/history",
    "diff": "/v1/snapshots/{a}/diff/{b}",
    "diff-models": "/v1/snapshots/{a}/diff/{b}/models",
    "tasks": "/v1/tasks",
    "libraries": "/v1/libraries",
    "authors": "/v1/authors",
    "models": "/v1/models",
    "model": "/v1/models/{model_id}",
    "snapshots": "/v1/snapshots",
}
# The HTTP parameters the CLI sets itself: it fetches every page and chooses the format from --format.
_CONTROL = frozenset({"_next", "_size", "_format"})
# The options every query has, besides its route's.
_OWN_OPTIONS = frozenset({"--format", "--data-dir", "--help"})


@dataclass(frozen=True)
class _Param:
    """One route parameter as a command-line option: `min_downloads` is `--min-downloads`, `_sort` `--sort`."""

    name: str  # as HTTP spells it
    where: str  # "path" or "query"
    required: bool
    default: Any
    help: str
    metavar: str

    @property
    def option(self) -> str:
        return "--" + self.name.lstrip("_").replace("_", "-")

    @property
    def ident(self) -> str:
        # A Python identifier for typer, whatever the HTTP name (`from` is a keyword).
        return "p_" + self.name.lstrip("_")


@dataclass(frozen=True)
class _Query:
    """A named query: its route, its parameters, and whether it pages (and so also answers CSV)."""

    name: str
    path: str
    summary: str
    params: tuple[_Param, ...]
    tabular: bool

    @property
    def formats(self) -> tuple[str, ...]:
        return ("table", "csv", "json") if self.tabular else ("table", "json")

    def translate(self, message: str) -> str:
        """An API error message with the CLI's option names instead of the HTTP parameter names."""
        names = {p.name: p.option for p in self.params} | {"_format": "--format"}
        for http, option in names.items():
            if message.startswith(f"{http}: "):
                message = option + message[len(http) :]
            if "_" in http:  # never an English word; but 'pipeline_tag' in quotes is a value (of `by`), kept
                message = re.sub(rf"(?<![\w'-]){re.escape(http)}(?![\w'-])", option, message)
        return message


@cache
def _openapi() -> dict[str, Any]:
    """The API's OpenAPI document: what each route takes, with descriptions, defaults and allowed values."""
    from hubcensus.service.app import create_app

    # The defaults, not the environment (a bad setting is the command's to report); no store is opened.
    doc: dict[str, Any] = create_app(Settings.model_construct(data_dir=Path("."))).openapi()
    return doc


def _query(name: str) -> _Query:
    operation = _openapi()["paths"][QUERIES[name]]["get"]
    params = []
    tabular = False
    for p in operation.get("parameters", []):
        if p["name"] in _CONTROL:
            tabular = True
            continue
        schema = next((s for s in p["schema"].get("anyOf", [p["schema"]]) if s.get("type") != "null"), p["schema"])
        params.append(
            _Param(
                name=p["name"],
                where=p["in"],
                required=p.get("required", False),
                default=p["schema"].get("default"),
                help=" ".join(filter(None, [p.get("description", ""), _range(schema)])),
                metavar=_metavar(schema),
            )
        )
    query = _Query(
        name, QUERIES[name], operation.get("description") or operation.get("summary", ""), tuple(params), tabular
    )
    clash = {p.option for p in query.params} & _OWN_OPTIONS
    if clash:
        raise RuntimeError(f"query {name}: route parameter(s) {sorted(clash)} clash with the CLI's own options")
    return query


def _metavar(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "<" + "|".join(str(v) for v in schema["enum"]) + ">"
    kind = {"integer": "int", "number": "float", "boolean": "bool"}.get(schema.get("type", ""))
    return f"<{kind or schema.get('format') or 'str'}>"


def _range(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"[{low}<=x<={high}]"
    return f"[x>={low}]" if low is not None else f"[x<={high}]" if high is not None else ""


class _Queries(TyperGroup):
    """`hubcensus query NAME`: one sub-command per named query, built from its route only when asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(QUERIES)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return _query_command(_query(cmd_name)) if cmd_name in QUERIES else None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in QUERIES:
            _usage_fail(f"unknown query {args[0]!r}; one of: {', '.join(QUERIES)}")
        return super().resolve_command(ctx, args)


query_app = typer.Typer(
    cls=_Queries,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Run a named query, the API's routes in-process: `hubcensus query share --method tags --top 30`. "
    "`hubcensus query NAME --help` lists its options. The whole answer is fetched, page by page.",
)
app.add_typer(query_app, name="query")


def _query_command(query: _Query) -> Any:
    """The sub-command of one query, its options generated from the route's parameters."""

    def run(ctx: typer.Context, **values: Any) -> None:
        output, data_dir = values.pop("output"), values.pop("data_dir")
        if ctx.args:
            options = ", ".join(p.option for p in query.params)
            _usage_fail(f"query {query.name} has no option {ctx.args[0]}; its options: {options}, --format, --data-dir")
        if output not in query.formats:
            _usage_fail(f"--format: query {query.name} answers {', '.join(query.formats)}, not {output!r}")
        given = {p: values[p.ident] for p in query.params if values[p.ident] is not None}
        settings = _settings(data_dir=data_dir)
        _existing(settings.data_dir)
        _run_query(query, given, output, settings)

    keyword = inspect.Parameter.KEYWORD_ONLY
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("ctx", keyword, annotation=typer.Context),
            *(
                inspect.Parameter(
                    p.ident,
                    keyword,
                    default=inspect.Parameter.empty if p.required else p.default,
                    annotation=Annotated[
                        str if p.required else str | None,
                        typer.Option(p.option, help=p.help, metavar=p.metavar),
                    ],
                )
                for p in query.params
            ),
            inspect.Parameter(
                "output",
                keyword,
                default="table",
                annotation=Annotated[
                    str,
                    typer.Option(
                        "--format",
                        metavar=f"<{'|'.join(query.formats)}>",
                        help="How to print the answer" + ("; csv is the API's CSV feed." if query.tabular else "."),
                    ),
                ],
            ),
            inspect.Parameter("data_dir", keyword, default=DATA_DIR, annotation=DataDirOpt),
        ]
    )
    single = typer.Typer(rich_markup_mode=None, add_completion=False)
    single.command(
        name=query.name,
        help=query.summary,
        # Unknown options reach `run`, which refuses them with the list of this query's options.
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )(run)
    return typer.main.get_command(single)


def _run_query(query: _Query, given: dict[_Param, str], output: str, settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from hubcensus.service.app import create_app
    from hubcensus.service.paging import MAX_PAGE

    path = query.path
    params: dict[str, Any] = {}
    for param, value in given.items():
        if param.where == "path":
            path = path.replace("{" + param.name + "}", quote(value, safe="/"))
        else:
            params[param.name] = value
    if query.tabular:
        params["_size"] = MAX_PAGE
    # The app the command's settings give, as `hubcensus serve` would build it.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        if output == "csv":
            response = client.get(path, params={**params, "_format": "csv"})
            _check(response, query)
            out.file.write(response.text)
            # Every page has the header line; the pages after the first are written without it.
            while "next" in response.links:
                response = client.get(response.links["next"]["url"])
                _check(response, query)
                out.file.write(response.text.partition("\n")[2])
            return
        response = client.get(path, params=params)
        _check(response, query)
        body = response.json()
        rows = body.get("rows")
        while rows is not None and body.get("next_url"):
            page = client.get(body["next_url"])
            _check(page, query)
            body = page.json()
            rows.extend(body["rows"])
    first = response.json()
    if output == "json":
        # json.dumps, not rich's print_json: that one takes about a second per thousand rows.
        whole = first if rows is None else {**first, "rows": rows, "next": None, "next_url": None}
        out.file.write(json.dumps(whole, indent=2, ensure_ascii=False) + "\n")
    elif rows is not None:
        _print_table(first, rows)
    else:
        _print_object(first)


def _check(response: Any, query: _Query) -> None:
    if response.status_code >= 400:
        error = response.json().get("error", {})
        message = query.translate(error.get("message", response.text))
        _fail(f"{message} [{error.get('code', response.status_code)}]")


def _facts(envelope: dict[str, Any]) -> str:
    """The envelope's scalars on one line: `snapshot ID · method tags · …`, the context of the rows."""
    facts = []
    for key, value in envelope.items():
        if key in ("rows", "query", "next", "next_url"):
            continue
        if isinstance(value, dict) and "id" in value:
            facts.append(f"{key} {value['id']}")
        elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            facts.append(f"{key} {','.join(map(str, value))}")
        elif isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values()):
            facts.append(f"{key} " + ", ".join(f"{k} {v}" for k, v in value.items()))
        elif value is not None and not isinstance(value, (dict, list)):
            facts.append(f"{key} {value}")
    return " · ".join(facts)


def _print_table(envelope: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.print(_facts(envelope), highlight=False)
    flat = [_flatten(r) for r in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))  # every row's keys, in order
    # The first column (id, group, value) is never cut; the others fold rather than lose characters.
    table = Table(*(Column(c, no_wrap=i == 0, overflow="fold") for i, c in enumerate(columns or ["(no rows)"])))
    for row in flat:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)


def _print_object(body: dict[str, Any]) -> None:
    """An answer that is not rows: its list (the snapshots) as a table, or its object field by field."""
    lists = [v for v in body.values() if isinstance(v, list)]
    if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
        _print_table({k: v for k, v in body.items() if not isinstance(v, list)}, lists[0])
        return
    objects = {k: v for k, v in body.items() if isinstance(v, dict) and k != "snapshot"}
    out.print(_facts({k: v for k, v in body.items() if k not in objects}), highlight=False)
    fields = _flatten(next(iter(objects.values()))) if len(objects) == 1 else _flatten(objects)
    table = Table("field", "value")
    for key, value in fields.items():
        table.add_row(key, _cell(value))
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(_cell(v) if not isinstance(v, dict) else " ".join(map(str, v.values())) for v in value)
    return str(value)


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _serve(settings: Settings) -> None:
    import pyarrow as pa
    import uvicorn

    from hubcensus.service.app import create_app

    out.print(
        f"serving {settings.data_dir} on http://{settings.host}:{settings.port}  (docs: /docs)",
        highlight=False,
    )
    app = create_app(settings)
    # uvicorn re-raises the signal that stopped it after its graceful shutdown; with the default action that
    # kills the process (-15, exit 143 under `docker stop`). A no-op handler lets SIGTERM exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # pyarrow imports pandas (when installed) on its first Table.from_pylist: 0.2-0.5 s that the first
    # uncached request would otherwise pay. Done here, before the freeze below, so those objects are frozen too.
    pa.Table.from_pylist([{"warm": 1}])
    # The ~120k objects of start-up (modules, app, routes) never become garbage: freezing them keeps each
    # full collection short, which was the whole p99 tail under load (97 -> 33 ms at c=32, 2M models).
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        # None: uvicorn installs no handlers of its own; its error and access records reach the one root
        # handler of _configure_logging, so they are JSON lines with the rest under HUBCENSUS_LOG_FORMAT=json.
        log_config=None,
        # Longer than the idle expiry of clients' connection pools (httpx 5 s, aiohttp 15 s) and of load
        # balancers in front (AWS ALB 60 s): the client side closes an idle connection first. A server that
        # closes first races a client reusing the connection, whose request is then lost (a ReadError).
        timeout_keep_alive=settings.keep_alive,
    )


def _configure_logging(log_format: str) -> None:
    """Text or JSON lines on stderr, through one root handler; the token is never written, even by mistake.

    Every logger goes through it: libraries' own handlers are removed (huggingface_hub adds one that writes
    plain text), warnings become log records, and an uncaught exception is logged with its traceback.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        # A traceback goes in the record's `exc_info` field, never on lines of its own; uvicorn's
        # `color_message` (the message again, with terminal colour codes) is left out.
        reserved = [*RESERVED_ATTRS, "color_message"]
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", reserved_attrs=reserved))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_redact_token)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.propagate = True
    logging.captureWarnings(True)
    if log_format == "json":
        threading.excepthook = _log_thread_exception


# The secrets the logs must never show: HF_TOKEN from the start, and every token the settings resolve.
_SECRETS: set[str] = set()


def _redact_token(record: logging.LogRecord) -> bool:
    secrets = [s for s in {*_SECRETS, os.environ.get("HF_TOKEN") or ""} if len(s) >= 8]
    if not secrets:
        return True
    message = record.getMessage()
    redacted = message
    for secret in secrets:
        redacted = redacted.replace(secret, "***")
    if redacted != message:
        record.msg, record.args = redacted, None
    return True


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit and args.exc_value is not None:
        thread = args.thread.name if args.thread else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        logging.getLogger("hubcensus").error("unhandled error in thread %s", thread, exc_info=exc_info)


def main() -> None:
    """Entry point for `python -m hubcensus`."""
    try:
        log_format = Settings().log_format
    except ValidationError:
        log_format = "text"  # the command reports the bad setting itself, as `error: ...`
    _configure_logging(log_format)
    # One line per HTTP request is noise on a terminal; warnings (retries, rate limits) still show.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_format != "json":
        app()
        return
    try:
        app()
    except Exception:
        # Not typer's plain-text traceback: under JSON logs a crash is one JSON record like any other.
        logging.getLogger("hubcensus").exception("unhandled error")
        raise SystemExit(1) from None
