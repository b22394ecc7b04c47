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


def run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | list[Any] | None = None) -> pa.Table:
    """Execute one statement with bound parameters and return its rows as an Arrow table.

    Under `time_limit`, a timer interrupts the connection when the limit passes, and QueryTimeout is
    raised; DuckDB stops the query at its next check, so the thread is free again at once.
    """
    seconds: float | None = getattr(_local, "seconds", None)
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
