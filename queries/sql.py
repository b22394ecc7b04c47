"""The one place that runs analytics SQL: bound parameters, Arrow out, and a time limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


def run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | list[Any] | None = None) -> pa.Table:
    """Execute one statement with bound parameters and return its rows as an Arrow table.

    Under `time_limit`, a timer interrupts the connection when the limit passes, and QueryTimeout is
    raised; DuckDB stops the query at its next check, so the thread is free again at once.
    """
    seconds = _limit.get()
    timer = threading.Timer(seconds, con.interrupt) if seconds else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        return con.sql(sql, params=params or {}).to_arrow_table()
    except duckdb.InterruptException:
        raise QueryTimeout(seconds or 0) from None
    finally:
        if timer is not None:
            timer.cancel()
