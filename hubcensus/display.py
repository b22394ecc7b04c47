"""What the commands print: answers and snapshots as Rich tables, progress bars, and `error: …` on stderr."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import rich.progress
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from hubcensus.ingest.progress import BackfillProgress, BackfillResult, Progress
from hubcensus.queries.buckets import flatten
from hubcensus.queries.datadir import SnapshotMeta, redact_url

err = Console(stderr=True, soft_wrap=True)
# Piped output is not cut to 80 columns: tables of ids must stay whole for scripts and logs.
out = Console(width=None if sys.stdout.isatty() else 200)


def fail(message: str, code: int = 1) -> NoReturn:
    """`error: MESSAGE` on stderr, and exit with `code`."""
    # Messages carry user input and codes in brackets: escape them, or rich would read them as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def usage_fail(message: str) -> NoReturn:
    """A malformed command line: exit 2, as for the errors typer finds itself."""
    fail(message, code=2)


def report(meta: SnapshotMeta) -> None:
    """What a published snapshot holds, and what was left out of it and why."""
    out.print(
        f"published snapshot [bold]{meta.id}[/]: {meta.models:,} models, {meta.bad_records:,} bad records, "
        f"{meta.duplicates:,} duplicates, {meta.duration_s:.1f} s"
        + (f", read by {meta.reader}" if meta.reader else ""),
        highlight=False,
    )
    for reason, n in meta.bad_reasons.items():
        out.print(f"  bad: {n:,} x {reason}", highlight=False)


def report_reclassified(meta: SnapshotMeta) -> None:
    """What reclassifying a snapshot changed: the classifier versions, the models changed per method."""
    if meta.reclassified is None:
        return
    r = meta.reclassified
    changed = ", ".join(f"{m} {n:,}" for m, n in r.changed.items())
    missing = f"; facts it predates (null): {', '.join(r.missing_facts)}" if r.missing_facts else ""
    out.print(
        f"reclassified {meta.id}: classifier {r.from_version} -> {meta.classifier_version}, "
        f"models changed per method: {changed}{missing}",
        highlight=False,
        soft_wrap=True,
    )


@contextlib.contextmanager
def progress(total: int | None, pages: bool = True) -> Iterator[Callable[[Progress], None] | None]:
    """A progress bar on an interactive terminal (pages, models, rate, ETA when the total is known)."""
    if not err.is_terminal:
        yield None
        return
    columns = [
        rich.progress.SpinnerColumn(),
        rich.progress.TextColumn("{task.fields[pages]} pages" if pages else ""),
        rich.progress.BarColumn() if total else rich.progress.TextColumn(""),
        rich.progress.TextColumn("{task.fields[done]}"),
        rich.progress.TimeRemainingColumn() if total else rich.progress.TimeElapsedColumn(),
    ]
    with rich.progress.Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("ingest", total=total, pages=0, done="")

        def update(p: Progress) -> None:
            if p.percent is not None:
                # A DuckDB load: no rows until it ends, only its own estimate of how far it is.
                bar.update(task, done=f"{p.percent:.0f} % loaded by DuckDB")
                return
            rate = p.models / max(p.elapsed, 1e-9)
            bar.update(task, completed=p.models, pages=p.pages, done=f"{p.models:,} models  {rate:,.0f} models/s")

        yield update


@contextlib.contextmanager
def backfill_progress() -> Iterator[Callable[[BackfillProgress], None]]:
    """A line on stderr per archive version as it starts and ends (published, skipped, failed), and on a terminal a
    bar of the bytes read of the current one and of the versions done."""
    bar = rich.progress.Progress(
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.DownloadColumn(),
        rich.progress.TransferSpeedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    last: BackfillProgress | None = None
    with bar:
        overall = bar.add_task("versions", total=None)
        current = bar.add_task("", total=None, visible=False)

        def update(p: BackfillProgress) -> None:
            nonlocal last
            step = f"[{min(p.done + 1, p.total)}/{p.total}]"
            if p.current is not None and (last is None or last.current != p.current or last.done != p.done):
                bar.console.print(f"{step} {escape(redact_url(p.current))}", highlight=False)
            if p.published is not None and (last is None or last.published is None):
                report(p.published)
            elif last is not None and p.skipped > last.skipped:
                bar.console.print(f"{step} already published: skipped", highlight=False)
            elif last is not None and p.failed > last.failed:
                bar.console.print(f"{step} failed (the others go on)", highlight=False)
            bar.update(overall, total=p.total, completed=p.done, description=f"{p.done}/{p.total} versions")
            bar.update(current, total=p.bytes_total, completed=p.bytes_read, visible=p.current is not None)
            last = p

        yield update


def report_backfill(result: BackfillResult) -> None:
    """What a backfill did: snapshots published, versions already there, versions that failed and why."""
    out.print(
        f"backfill: {len(result.published)} published, {len(result.skipped)} already there, "
        f"{len(result.failed)} failed, of {result.planned} versions",
        highlight=False,
    )
    for _, reason in result.failed:  # the reason starts with the version's source
        err.print(f"  failed: {escape(reason)}", highlight=False)


def print_snapshots(snapshots: Sequence[SnapshotMeta]) -> None:
    """The snapshots of a store as a table, one a row."""
    table = Table("kind", "source", "models", "bad", "seconds")
    table.columns.insert(0, Column("taken_at", no_wrap=True))
    table.columns.insert(0, Column("id", no_wrap=True))
    for m in snapshots:
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


def print_table(envelope: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """An answer's rows as a table, under one line of its envelope (snapshot, method, …)."""
    out.print(_facts(envelope), highlight=False)
    flat = [_flat(r) for r in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))  # every row's keys, in order
    # The first column (id, group, value) is never cut; the others fold rather than lose characters.
    table = Table(*(Column(c, no_wrap=i == 0, overflow="fold") for i, c in enumerate(columns or ["(no rows)"])))
    for row in flat:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)


def print_object(body: dict[str, Any]) -> None:
    """An answer that is not rows: its list (the snapshots) as a table, or its object field by field."""
    lists = [v for v in body.values() if isinstance(v, list)]
    if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
        print_table({k: v for k, v in body.items() if not isinstance(v, list)}, lists[0])
        return
    objects = {k: v for k, v in body.items() if isinstance(v, dict) and k != "snapshot"}
    out.print(_facts({k: v for k, v in body.items() if k not in objects}), highlight=False)
    fields = _flat(next(iter(objects.values()))) if len(objects) == 1 else _flat(objects)
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


def _flat(nested: dict[str, Any]) -> dict[str, Any]:
    """Every level of objects as dotted columns (a model's `frameworks.tags.evidence`): `flatten` until flat."""
    flat = flatten(nested)
    while any(isinstance(value, dict) for value in flat.values()):
        flat = flatten(flat)
    return flat
