"""The one place that runs analytics SQL: bound parameters, Arrow out, and a time limit."""

from __future__ import annotations

import threading
from typing import Any

import duckdb
import pyarrow as pa


class QueryTimeout(TimeoutError):
    """A query ran past its time limit and was interrupted."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the query ran longer than {seconds:g} s and was stopped")
        self.seconds = seconds


_local = threading.local()


class time_limit:
    """Within the block, `run` interrupts any query on this thread that takes longer than `seconds`."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self._previous = getattr(_local, "seconds", None)
        _local.seconds = self.seconds

    def __exit__(self, *exc: object) -> None:
        _local.seconds = self._previous


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
    seconds: float | None = getattr(_local, "seconds", None)
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
