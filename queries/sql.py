"""The one place that runs analytics SQL: bound parameters, Arrow out, and a time limit; and the quoting of the
few values that cannot be bound."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa


class QueryTimeout(TimeoutError):
    """A query ran past its time limit and was interrupted."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the query ran longer than {seconds:g} s and was stopped")
        self.seconds = seconds


# A context variable, not a thread-local: the API sets the limit once per request in its event loop, and
# the route's body runs in a worker thread, into which Starlette copies the request's context.
_limit: ContextVar[float | None] = ContextVar("hubcensus_query_time_limit", default=None)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Within the block (and in worker threads started from it), `run` stops any query after `seconds`."""
    token = _limit.set(seconds)
    try:
        yield
    finally:
        _limit.reset(token)


def _interrupt_after(con: duckdb.DuckDBPyConnection, seconds: float, done: threading.Event) -> None:
    # DuckDB drops an interrupt that arrives before the statement starts executing (under load, parsing and
    # binding can outlast a short limit): once the limit has passed, interrupt again until `run` is done.
    if done.wait(seconds):
        return
    while True:
        con.interrupt()
        if done.wait(0.005):
            return


def run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | list[Any] | None = None) -> pa.Table:
    """Execute one statement with bound parameters and return its rows as an Arrow table.

    Under `time_limit`, a thread interrupts the connection once the limit passes (and again until the
    statement ends), and QueryTimeout is raised; DuckDB stops the query at its next check, so the thread is
    free again at once.
    """
    seconds = _limit.get()
    done = threading.Event()
    watcher = threading.Thread(target=_interrupt_after, args=(con, seconds, done), daemon=True) if seconds else None
    if watcher is not None:
        watcher.start()
    try:
        return con.sql(sql, params=params or {}).to_arrow_table()
    except duckdb.InterruptException:
        raise QueryTimeout(seconds or 0) from None
    finally:
        if watcher is not None:
            done.set()
            watcher.join()  # no late interrupt may reach the connection's next statement


def sql_literal(value: str) -> str:
    """`value` as a quoted SQL string, for text that cannot be a bound parameter (rule constants in generated
    SQL, file paths in ATTACH). Never for user input: that is always bound."""
    return "'" + value.replace("'", "''") + "'"


def sql_path(path: Path) -> str:
    """A file path as a quoted SQL string literal, for ATTACH, which takes no bound parameter."""
    return sql_literal(str(path))
