"""Section 4 of the benchmark: every analytics route in-process (server-side time), uncached and cached, beside
the plain SQL on the same snapshot file that answers the same question."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.modes import Profile, sample, stats_ms
from benchmarks.processes import log
from hubcensus.queries.datadir import Layout

_KNOWN_CREATED = (
    "created_at IS NOT NULL AND NOT (created_at >= TIMESTAMP '2022-03-02 23:29:04' "
    "AND created_at < TIMESTAMP '2022-03-02 23:29:06')"
)


def _share_sql(by: str, combo: str) -> str:
    return f"SELECT {by} AS grp, {combo} AS combo, count(*) AS n FROM models GROUP BY ALL"


def _dimension_sql(col: str) -> str:
    return (
        f"SELECT {col} AS value, count(*) AS models, coalesce(sum(downloads), 0)::BIGINT AS downloads "
        f"FROM models GROUP BY ALL ORDER BY models DESC, value NULLS LAST LIMIT 1001"
    )


@dataclass
class Route:
    """A route, and the plain SQL on the snapshot file that answers the same question."""

    key: str
    label: str
    url: str
    sql: str | None = None  # on the latest snapshot
    raw_sql: str | None = None  # the same, deriving frameworks from raw tags/files/library on the fly
    special: str | None = None  # "history" or "diff": SQL over several snapshots
    extra: dict[str, Any] = field(default_factory=dict)


def routes(ids: list[str]) -> list[Route]:
    from hubcensus.queries.frameworks import mask_sql

    out: list[Route] = []
    for by, by_label in (("pipeline_tag", "task"), ("library_name", "library")):
        for method in ("tags", "files", "inferred"):
            out.append(
                Route(
                    key=f"share_{by_label}_{method}",
                    label=f"share by {by_label}, {method}",
                    url=f"/v1/frameworks/share?method={method}" + ("&by=library_name" if by != "pipeline_tag" else ""),
                    sql=_share_sql(by, f"fw_{method} & 7"),
                    raw_sql=_share_sql(by, mask_sql(method)),
                )
            )
    period = f"CASE WHEN {_KNOWN_CREATED} THEN strftime(created_at, '%Y-%m') ELSE 'unknown' END"
    out += [
        Route("trend", "trend by month", "/v1/frameworks/trend", sql=_share_sql(period, "fw_inferred & 7")),
        Route("tasks", "tasks", "/v1/tasks", sql=_dimension_sql("pipeline_tag")),
        Route("libraries", "libraries", "/v1/libraries", sql=_dimension_sql("library_name")),
        Route("authors", "authors", "/v1/authors", sql=_dimension_sql("author")),
        Route(
            "models",
            "models list (1,000)",
            "/v1/models",
            sql="SELECT id, author, pipeline_tag, library_name, created_at, last_modified, downloads, likes, "
            "fw_inferred & 7 AS mask FROM models ORDER BY downloads DESC NULLS LAST, id LIMIT 1001",
        ),
        Route(
            "history",
            f"history ({len(ids)} snapshots)",
            "/v1/frameworks/history",
            special="history",
        ),
        Route("diff", "diff of two snapshots", f"/v1/snapshots/{ids[1]}/diff/{ids[0]}", special="diff"),
    ]
    return out


_DIFF_SQL = """
SELECT count_if(a.id IS NULL) AS added, count_if(b.id IS NULL) AS removed,
    count_if(a.id IS NOT NULL AND b.id IS NOT NULL) AS common,
    count_if(a.fw_tags & 7 <> b.fw_tags & 7) AS changed_tags,
    count_if(a.fw_files & 7 <> b.fw_files & 7) AS changed_files,
    count_if(a.fw_inferred & 7 <> b.fw_inferred & 7) AS changed_inferred
FROM a.models AS a FULL OUTER JOIN b.models AS b USING (id)
"""


class ServerTimer:
    """ASGI wrapper: the server-side time of the last request, from the call to the last body byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last = time.perf_counter() - started

        await self.app(scope, receive, timed_send)


def bench_queries(store: Path, ids: list[str], prof: Profile) -> dict[str, Any]:
    import duckdb
    from fastapi.testclient import TestClient

    from hubcensus.config import Settings
    from hubcensus.service.app import create_app

    paths = [str(Layout(store).db(sid)) for sid in ids]
    cons = [duckdb.connect(p, read_only=True) for p in paths]
    diff_con = duckdb.connect()
    diff_con.execute(f"ATTACH '{paths[1]}' AS a (READ_ONLY)")
    diff_con.execute(f"ATTACH '{paths[0]}' AS b (READ_ONLY)")

    def sql_timer(con: Any, sql: str) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            con.sql(sql).to_arrow_table()
            return time.perf_counter() - started

        return run

    def history_sql() -> float:
        started = time.perf_counter()
        for con in cons:
            con.sql("SELECT fw_inferred & 7 AS combo, count(*) AS n FROM models GROUP BY ALL").to_arrow_table()
        return time.perf_counter() - started

    def diff_sql() -> float:
        started = time.perf_counter()
        diff_con.sql(_DIFF_SQL).to_arrow_table()
        for alias in ("a", "b"):
            share = _share_sql("pipeline_tag", "fw_inferred & 7").replace("FROM models", f"FROM {alias}.models")
            diff_con.sql(share).to_arrow_table()
        return time.perf_counter() - started

    uncached = ServerTimer(create_app(Settings(data_dir=store, cache_mb=0, query_timeout=600)))
    cached = ServerTimer(create_app(Settings(data_dir=store, query_timeout=600)))
    results: dict[str, Any] = {}
    with TestClient(uncached, base_url="http://bench") as client, TestClient(cached, base_url="http://bench") as c2:

        def route_timer(c: TestClient, timer: ServerTimer, url: str) -> Callable[[], float]:
            def run() -> float:
                resp = c.get(url)
                if resp.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {resp.status_code} {resp.text[:300]}")
                return timer.last

            return run

        for route in routes(ids):
            # A long route gets at least its minimum reps, a fast one at most the budget.
            res: dict[str, Any] = {"label": route.label, "url": route.url}
            res["uncached"] = stats_ms(sample(route_timer(client, uncached, route.url), prof))
            res["cached"] = stats_ms(sample(route_timer(c2, cached, route.url), prof))
            if route.special == "history":
                res["sql"] = stats_ms(sample(history_sql, prof))
            elif route.special == "diff":
                res["sql"] = stats_ms(sample(diff_sql, prof))
            elif route.sql is not None:
                res["sql"] = stats_ms(sample(sql_timer(cons[0], route.sql), prof))
            if route.raw_sql is not None:
                # Deriving frameworks from the raw lists is slow at 2M (regexes over every file name): 3 reps.
                res["raw_sql"] = stats_ms(sample(sql_timer(cons[0], route.raw_sql), prof, min_reps=3))
            res["ratio_to_sql"] = res["uncached"]["p50_ms"] / res["sql"]["p50_ms"]
            results[route.key] = res
            log(
                f"  {route.label:<28} uncached p50 {res['uncached']['p50_ms']:8.2f} ms  "
                f"p99 {res['uncached']['p99_ms']:8.2f}  cached p50 {res['cached']['p50_ms']:6.2f}  "
                f"sql p50 {res['sql']['p50_ms']:8.2f}  x{res['ratio_to_sql']:.2f}"
            )
    for con in [*cons, diff_con]:
        con.close()
    return results
