"""The `hubcensus` command: ingest, import, list snapshots, serve, demo."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn

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

from hubcensus.config import Settings
from hubcensus.ingest.dumps import import_dump
from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.hub import ingest_hub
from hubcensus.ingest.progress import Progress as Progress_
from hubcensus.queries.store import SnapshotMeta, SnapshotStore

app = typer.Typer(help="Reproducible numbers about the Hugging Face Hub.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)
# Piped output is not cut to 80 columns: tables of ids must stay whole for scripts and logs.
out = Console(width=None if sys.stdout.isatty() else 200)

BUNDLED = "hub-2022-02-21.jsonl.gz"
BUNDLED_TAKEN_AT = datetime(2022, 2, 21, tzinfo=UTC)

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Snapshot store [env HUBCENSUS_DATA_DIR, default ./data].")
]


# How each setting is spelled on the command line and in the environment, for error messages.
_SETTING_NAMES = {
    "data_dir": "--data-dir / HUBCENSUS_DATA_DIR",
    "HF_ENDPOINT": "--endpoint / HF_ENDPOINT",
    "HF_TOKEN": "--token / HF_TOKEN",
    "http_timeout": "--timeout / HUBCENSUS_HTTP_TIMEOUT",
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
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in first["loc"])
        _fail(f"bad {_SETTING_NAMES.get(name, name)}: {first['msg'].removeprefix('Value error, ')}")


def _fail(message: str) -> NoReturn:
    # Messages carry user input and codes in brackets: escape them, or rich would read them as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(1)


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
    endpoint: Annotated[
        str | None, typer.Option(help="Hub URL [env HF_ENDPOINT, default https://huggingface.co].")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Hub token [env HF_TOKEN]; sent only to the endpoint.")] = None,
    data_dir: DataDirOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many models.")] = None,
    filter: Annotated[
        list[str] | None, typer.Option("--filter", help="Only models with this tag (repeatable).")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per request [env HUBCENSUS_HTTP_TIMEOUT, 30].")] = None,
    max_rate: Annotated[
        float | None, typer.Option(help="Most requests per second, 0 for no limit [env HUBCENSUS_MAX_RATE, 1.5].")
    ] = None,
) -> None:
    """Snapshot the Hub's model list through the official client (resumes a failed run)."""
    settings = _settings(
        data_dir=data_dir, hf_endpoint=endpoint, hf_token=token, http_timeout=timeout, max_rate=max_rate
    )
    out.print(f"ingesting from {settings.hf_endpoint} into {settings.data_dir}", highlight=False)
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
    endpoint: Annotated[str | None, typer.Option(help="Hub URL [env HF_ENDPOINT].")] = None,
    data_dir: DataDirOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop each run after this many models.")] = None,
    filter: Annotated[
        list[str] | None, typer.Option("--filter", help="Only models with this tag (repeatable).")
    ] = None,
) -> None:
    """Take snapshots on a schedule until SIGTERM/SIGINT; prune by retention after each success."""
    from hubcensus.ingest.worker import Retention, run_worker, validate_schedule

    settings = _settings(data_dir=data_dir, hf_endpoint=endpoint)
    try:
        validate_schedule(schedule)
    except ValueError as exc:
        _fail(str(exc))
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
            help="When the dump was taken (UTC unless a zone is given) [default: now].",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    max_bad_share: Annotated[
        float | None,
        typer.Option(help="Fail above this share of bad records [env HUBCENSUS_MAX_BAD_SHARE, 0.05]."),
    ] = None,
) -> None:
    """Import a dump of Hub API model objects as a snapshot."""
    settings = _settings(data_dir=data_dir, max_bad_share=max_bad_share)
    when = (taken_at or datetime.now(UTC)).replace(tzinfo=(taken_at.tzinfo if taken_at else None) or UTC)
    with _progress(None, pages=False) as on_progress:
        try:
            meta = import_dump(
                path, settings.data_dir, taken_at=when, max_bad_share=settings.max_bad_share, on_progress=on_progress
            )
        except IngestError as exc:
            _fail(str(exc))
    _report(meta)


@app.command()
def snapshots(data_dir: DataDirOpt = None) -> None:
    """List published snapshots, newest first."""
    settings = _settings(data_dir=data_dir)
    table = Table("kind", "source", "models", "bad", "seconds")
    table.columns.insert(0, Column("taken_at", no_wrap=True))
    table.columns.insert(0, Column("id", no_wrap=True))
    for m in SnapshotStore(settings.data_dir).snapshots():
        table.add_row(
            m.id,
            m.taken_at.isoformat(),
            m.kind,
            m.source,
            f"{m.models:,}",
            f"{m.bad_records:,}",
            f"{m.duration_s:.1f}",
        )
    out.print(table)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address [env HUBCENSUS_HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env HUBCENSUS_PORT, 8000].")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the HTTP API over the snapshot store."""
    settings = _settings(data_dir=data_dir, host=host, port=port)
    _serve(settings)


@app.command()
def demo(
    port: Annotated[int | None, typer.Option(help="Port [env HUBCENSUS_PORT, 8000].")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Import the bundled real 2022-02-21 Hub crawl if it is not there yet, and serve it."""
    settings = _settings(data_dir=data_dir, port=port)
    store = SnapshotStore(settings.data_dir)
    if not any(m.source == BUNDLED for m in store.snapshots()):
        out.print(f"importing the bundled crawl {BUNDLED} (29,432 models) ...")
        with resources.as_file(resources.files("hubcensus") / "data" / BUNDLED) as path:
            try:
                _report(import_dump(path, settings.data_dir, taken_at=BUNDLED_TAKEN_AT, max_bad_share=0.0))
            except IngestError as exc:
                _fail(str(exc))
    _serve(settings)


# Each named query is an API route: the CLI runs the very same route in-process (no server, no socket),
# so parameters, validation, errors and numbers are identical to the HTTP answers.
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
    "model": "/v1/models/{id}",
    "snapshots": "/v1/snapshots",
}


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def query(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(QUERIES)}.")],
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    data_dir: DataDirOpt = None,
) -> None:
    """Run a named query: `hubcensus query share --method tags --frameworks pytorch,tensorflow --top 30`.

    Parameters are the API's, as `--name value` (`--min-downloads 10` for min_downloads; `--a`/`--b`
    for diff snapshots, `--id` for one model). The whole answer is fetched, page by page.
    """
    if name not in QUERIES:
        _fail(f"unknown query {name!r}; one of: {', '.join(QUERIES)}")
    if output not in ("table", "csv", "json"):
        _fail(f"--format must be table, csv or json, not {output!r}")
    params = _parse_params(ctx.args)
    path = QUERIES[name]
    for key in ("a", "b", "id"):
        if "{" + key + "}" in path:
            if key not in params:
                _fail(f"query {name} needs --{key}")
            path = path.replace("{" + key + "}", params.pop(key))
    settings = _settings(data_dir=data_dir)
    from fastapi.testclient import TestClient

    from hubcensus.service.app import create_app

    with TestClient(create_app(settings.data_dir), raise_server_exceptions=False) as client:
        if output == "csv":
            response = client.get(path, params={**params, "_format": "csv", "_size": "10000"})
            _check(response)
            out.file.write(response.text)
            return
        response = client.get(path, params=params)
        _check(response)
        body = response.json()
        rows = body.get("rows") if isinstance(body, dict) else None
        while rows is not None and body.get("next_url"):
            body = client.get(body["next_url"]).json()
            rows.extend(body["rows"])
    if output == "json" or rows is None:
        out.print_json(data=response.json() if rows is None else {**response.json(), "rows": rows, "next": None})
        return
    _print_table(response.json(), rows)


def _parse_params(args: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            _fail(f"expected --name value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            value = next(it, None)  # type: ignore[assignment]
            if value is None:
                _fail(f"--{key} needs a value")
        params[key.replace("-", "_") if key not in ("from", "to") else key] = value
    return params


def _check(response: Any) -> None:
    if response.status_code >= 400:
        error = response.json().get("error", {})
        _fail(f"{error.get('message', response.text)} [{error.get('code', response.status_code)}]")


def _print_table(envelope: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    snapshot = envelope.get("snapshot") or {}
    facts = [f"snapshot {snapshot.get('id')}" if snapshot else None]
    facts += [f"{k} {envelope[k]}" for k in ("method", "weight", "by", "interval") if envelope.get(k)]
    out.print(" · ".join(f for f in facts if f), highlight=False)
    flat = [_flatten(r) for r in rows]
    table = Table(*(flat[0].keys() if flat else ["(no rows)"]))
    for row in flat:
        table.add_row(*("" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    out.print(table)


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _serve(settings: Settings) -> None:
    import pyarrow as pa
    import uvicorn

    from hubcensus.service.app import create_app

    out.print(
        f"serving {settings.data_dir} on http://{settings.host}:{settings.port}  (docs: /docs)",
        highlight=False,
    )
    app = create_app(
        settings.data_dir,
        query_timeout=settings.query_timeout,
        cache_bytes=settings.cache_mb * 2**20,
        query_memory_bytes=settings.query_memory_mb * 2**20,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
    )
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


def _redact_token(record: logging.LogRecord) -> bool:
    token = os.environ.get("HF_TOKEN")
    if token and len(token) >= 8:
        message = record.getMessage()
        if token in message:
            record.msg, record.args = message.replace(token, "***"), None
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
