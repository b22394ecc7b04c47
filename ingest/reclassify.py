"""Reclassify stored snapshots: recompute their framework columns from their stored facts, without a new crawl.

A snapshot keeps the facts the rules read (tags, file names, library, config.model_type and .architectures,
transformersInfo.auto_model: queries.facts.FACT_COLUMNS), so a snapshot taken under one classifier version
can be answered under the next. The new columns are written into a fresh copy of the snapshot, which then
replaces the published one atomically (queries.datadir.replace): readers see the old snapshot or the new one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from hubcensus.ingest.errors import IngestError
from hubcensus.ingest.records import ROW_SCHEMA
from hubcensus.ingest.staging import connect
from hubcensus.ingest.writer import storage_errors
from hubcensus.queries.datadir import DB_NAME, Reclassification, SnapshotMeta, SnapshotNotFound, replace, seal, work_dir
from hubcensus.queries.facts import WEIGHT_FILE
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, METHODS, classified_sql
from hubcensus.queries.lake import write_after_publish
from hubcensus.queries.sql import sql_path
from hubcensus.queries.store import SnapshotStore
from hubcensus.queries.summary import publish_with

log = logging.getLogger(__name__)

# DuckDB types of the fact columns a snapshot written before they existed lacks (read as NULL).
_COLUMN_TYPES = {"model_type": "VARCHAR", "architectures": "VARCHAR[]", "auto_model": "VARCHAR"}


def outdated(data_dir: Path) -> list[SnapshotMeta]:
    """The published snapshots whose framework columns another classifier version computed, oldest first."""
    metas = SnapshotStore(data_dir).snapshots()
    return sorted((m for m in metas if m.classifier_version != CLASSIFIER_VERSION), key=lambda m: m.taken_at)


def reclassify(data_dir: Path, snapshot_id: str, *, force: bool = False) -> SnapshotMeta | None:
    """Recompute one snapshot's framework columns under this classifier and replace it atomically.

    None when it is already current (unless `force`). The meta records the version it came from and how many
    models changed per method.
    """
    store = SnapshotStore(data_dir)
    meta = store.get(snapshot_id)
    if meta.classifier_version == CLASSIFIER_VERSION and not force:
        return None
    # A work dir like a writer's: clean_tmp never takes it, and a kill leaves only a stale tmp dir.
    work_name = f"reclassify-{snapshot_id}-{secrets.token_hex(3)}"
    with storage_errors(f"reclassifying {snapshot_id}"), work_dir(data_dir, work_name) as work:
        con = connect(work / DB_NAME)
        try:
            con.execute(f"ATTACH {sql_path(store.path_of(meta.id))} AS src (READ_ONLY)")
            present = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE src.models)").fetchall()}
            missing = [c for c in ROW_SCHEMA.names if c not in present]
            if meta.weight_file_pattern != WEIGHT_FILE.pattern:
                # The names kept are the older filter's: those it dropped (e.g. split GGUF parts) cannot come back.
                missing.append(
                    f"weight_files kept by the filter {meta.weight_file_pattern or 'of 2026.11.1 or before'}"
                )
            columns = ", ".join(c if c in present else f"NULL::{_COLUMN_TYPES[c]} AS {c}" for c in ROW_SCHEMA.names)
            con.execute(f"CREATE TABLE models AS {classified_sql(f'SELECT {columns} FROM src.models')} ORDER BY id")
            # A method the snapshot predates counts every model as changed.
            counts = [
                f"count_if(n.fw_{m} IS DISTINCT FROM o.fw_{m})" if f"fw_{m}" in present else "count(*)" for m in METHODS
            ]
            changed = con.execute(
                f"SELECT {', '.join(counts)} FROM models AS n JOIN src.models AS o USING (id)"
            ).fetchall()[0]
            con.execute("CREATE TABLE bad_records AS SELECT * FROM src.bad_records")
            new = meta.model_copy(
                update={
                    "classifier_version": CLASSIFIER_VERSION,
                    "reclassified": Reclassification(
                        at=datetime.now(UTC),
                        from_version=meta.classifier_version,
                        changed=dict(zip(METHODS, (int(n) for n in changed), strict=True)),
                        missing_facts=missing,
                    ),
                }
            )
            # The summary of the new columns replaces the old one with the snapshot.
            new = publish_with(con, work, new, "models")
            con.execute("CREATE TABLE meta AS SELECT ?::JSON AS meta", [new.model_dump_json()])
            con.execute("DETACH src")
        finally:
            con.close()
        seal(work, new)
        try:
            replace(data_dir, work, meta.id)
        except SnapshotNotFound:
            raise IngestError(
                f"snapshot {meta.id} was removed while it was reclassified; nothing was changed"
            ) from None
    write_after_publish(data_dir, new)  # the lake of the old columns is replaced with the new
    log.info(
        "reclassified %s: %s -> %s, changed %s", meta.id, meta.classifier_version, CLASSIFIER_VERSION, new.reclassified
    )
    return new


def reclassify_outdated(
    data_dir: Path, *, on_snapshot: Callable[[SnapshotMeta], None] | None = None
) -> list[SnapshotMeta]:
    """Bring every outdated snapshot to this classifier (on upgrade: the worker and the demo call this at start)."""
    done = []
    for meta in outdated(data_dir):
        try:
            new = reclassify(data_dir, meta.id)
        except SnapshotNotFound:
            continue  # removed meanwhile (retention, DELETE): nothing to bring up to date
        if new is not None:
            done.append(new)
            if on_snapshot is not None:
                on_snapshot(new)
    return done
