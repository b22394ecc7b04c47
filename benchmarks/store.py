"""The query store of a benchmark: the imported snapshot plus older ones derived from it."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hubcensus.queries.datadir import DB_NAME, Layout, SnapshotMeta, new_snapshot_id, publish, read_meta, seal, work_dir


def build_store(snapshot_dir: Path, store: Path, older: int) -> list[str]:
    """`store` holds the imported snapshot (moved) and `older` snapshots derived from it by SQL.

    Snapshot i (1..older) is dated i x 30 days earlier and has 4 % x i fewer models (the Hub grew), and 1 %
    of its models lack the `pytorch` tag they have later (their masks recomputed by the product's own
    rules), so diffs have models added and changed. Each is written in a work dir, sealed and published as
    the product's writer does. Returns the ids, newest first.
    """
    import duckdb

    from hubcensus.queries.frameworks import mask_sql
    from hubcensus.queries.sql import sql_path

    shutil.rmtree(store, ignore_errors=True)
    latest = read_meta(snapshot_dir)
    publish(store, snapshot_dir, latest.id)
    source = sql_path(Layout(store).db(latest.id))
    ids = [latest.id]
    for i in range(1, older + 1):
        started = time.perf_counter()
        taken_at = latest.taken_at - timedelta(days=30 * i)
        sid = new_snapshot_id(taken_at)
        with work_dir(store, sid) as build:
            con = duckdb.connect(str(build / DB_NAME))
            con.execute(f"ATTACH {source} AS s (READ_ONLY)")
            edited = f"hash(id || 'v{i}') % 100 = 0"
            # Schema-agnostic (* REPLACE): the snapshot layout is the product's, whatever its columns are.
            con.execute(f"""
                CREATE TABLE models AS
                WITH src AS (
                    SELECT * REPLACE (
                            CASE WHEN {edited} THEN list_filter(tags, lambda t: t <> 'pytorch') ELSE tags END AS tags
                        ),
                        {edited} AS edited
                    FROM s.models WHERE hash(id) % 1000 >= {40 * i}
                )
                SELECT * EXCLUDE (edited) REPLACE (
                    CASE WHEN edited THEN {mask_sql("tags")} ELSE fw_tags END AS fw_tags,
                    CASE WHEN edited THEN {mask_sql("inferred")} ELSE fw_inferred END AS fw_inferred
                )
                FROM src ORDER BY id
            """)
            publish_derived(con, store, build, sid, taken_at, f"benchmark: {latest.id} minus {4 * i}%", started)
        ids.append(sid)
    return ids


def publish_derived(
    con: Any, store: Path, build: Path, sid: str, taken_at: datetime, source: str, started: float
) -> SnapshotMeta:
    """Finish a snapshot whose `models` table SQL wrote into `build` (`con`, with the source attached as `s`):
    its bad_records and meta tables, its summary as the product's writer makes it, then seal and publish it."""
    from hubcensus.queries.frameworks import CLASSIFIER_VERSION
    from hubcensus.queries.summary import publish_with

    con.execute("CREATE TABLE bad_records (position BIGINT, reason VARCHAR, excerpt VARCHAR)")
    models = int(con.execute("SELECT count(*) FROM models").fetchall()[0][0])
    meta = SnapshotMeta(
        id=sid,
        taken_at=taken_at,
        source=source,
        kind="import",
        models=models,
        bad_records=0,
        duration_s=round(time.perf_counter() - started, 3),
        classifier_version=CLASSIFIER_VERSION,
        published_at=datetime.now(UTC),
    )
    meta = publish_with(con, build, meta, "models")
    con.execute("CREATE TABLE meta AS SELECT ?::JSON AS meta", [meta.model_dump_json()])
    con.execute("DETACH s")
    con.execute("CHECKPOINT")
    con.close()
    seal(build, meta)
    publish(store, build, sid)
    return meta
