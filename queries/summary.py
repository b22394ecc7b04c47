"""Per-snapshot summaries: what a history needs from a snapshot, prepared once, so that an answer across hundreds
of snapshots reads hundreds of small summaries instead of scanning hundreds of model tables.

A summary counts a snapshot's models, and sums their downloads and likes, grouped by (pipeline_tag,
library_name, the framework mask of every method): about 1,200 rows at 2 million models. That answers a
history for any method, universe of frameworks and weight, by task or library, filtered by task or library.
The filters on single models (author, min_downloads, created_after / created_before, top) it cannot answer:
those histories still read the model tables (`answers_from_summary`).

The writer publishes the summary with the snapshot (`summary.parquet`, recorded in meta.json as
`summary_version`), reclassification writes a fresh one into the copy it publishes, and a snapshot without one
(published by an older release) gets one the first time a history needs it (`SummaryIndex`). Each summary names
the revision of the snapshot it was computed from, so a stale one (its snapshot reclassified since) is never
used: it is computed again.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from hubcensus.queries.datadir import SUMMARY_NAME, SnapshotMeta, add_summary, work_dir
from hubcensus.queries.filters import ModelFilter
from hubcensus.queries.sql import run

if TYPE_CHECKING:
    from hubcensus.queries.store import SnapshotStore

log = logging.getLogger(__name__)

SUMMARY_VERSION = 1
_VERSION_KEY = b"hubcensus.summary_version"
_REVISION_KEY = b"hubcensus.snapshot_revision"

_MASKS = ("fw_tags", "fw_files", "fw_inferred", "fw_loadable")
_SUMMARY_SQL = """SELECT pipeline_tag, library_name, {masks},
    count(*)::BIGINT AS models,
    coalesce(sum(downloads), 0)::BIGINT AS downloads,
    coalesce(sum(likes), 0)::BIGINT AS likes
FROM {models}
GROUP BY ALL
ORDER BY ALL
"""
_COLUMNS = "pipeline_tag, library_name, fw_tags, fw_files, fw_inferred, fw_loadable, models, downloads, likes"
_TABLE_SQL = """CREATE TABLE IF NOT EXISTS summaries (
    sid INTEGER, pipeline_tag VARCHAR, library_name VARCHAR,
    fw_tags UTINYINT, fw_files UTINYINT, fw_inferred UTINYINT, fw_loadable UTINYINT,
    models BIGINT, downloads BIGINT, likes BIGINT
)"""


def answers_from_summary(filters: ModelFilter | None) -> bool:
    """Whether a summary answers a history under these filters (task and library it can; the rest it cannot)."""
    if filters is None:
        return True
    single = (filters.author, filters.min_downloads, filters.created_after, filters.created_before, filters.top)
    return all(value is None for value in single)


def revision(meta: SnapshotMeta) -> str:
    """What tells one published version of a snapshot from another: a reclassification publishes a new one."""
    changed = meta.reclassified.at.isoformat() if meta.reclassified else ""
    return f"{meta.id}|{meta.classifier_version}|{meta.published_at.isoformat()}|{changed}"


def summarize(con: duckdb.DuckDBPyConnection, models: str = "models") -> pa.Table:
    """The summary of the model table `models` (a name the caller chose, never user input).

    A snapshot of an older release may lack a method's column (until it is reclassified): its mask is NULL
    there, and a history under that method leaves the snapshot's models out rather than call them `none`.
    """
    present = {r[0] for r in con.execute(f"SELECT column_name FROM (DESCRIBE {models})").fetchall()}
    masks = ", ".join(c if c in present else f"NULL::UTINYINT AS {c}" for c in _MASKS)
    return run(con, _SUMMARY_SQL.format(models=models, masks=masks))


def write_summary(table: pa.Table, path: Path, meta: SnapshotMeta) -> None:
    """Write a summary as Parquet, naming its version and the snapshot revision it was computed from."""
    tagged = table.replace_schema_metadata(
        {_VERSION_KEY: str(SUMMARY_VERSION).encode(), _REVISION_KEY: revision(meta).encode()}
    )
    pq.write_table(tagged, path, compression="zstd")


def read_summary(path: Path, meta: SnapshotMeta) -> pa.Table | None:
    """The summary in `path` if it is this version's and was computed from this revision of the snapshot."""
    try:
        table = pq.read_table(path)
    except (FileNotFoundError, NotADirectoryError, pa.ArrowInvalid):
        return None
    tags = table.schema.metadata or {}
    if tags.get(_VERSION_KEY) != str(SUMMARY_VERSION).encode() or tags.get(_REVISION_KEY) != revision(meta).encode():
        return None
    return table.replace_schema_metadata(None)


def publish_with(con: duckdb.DuckDBPyConnection, directory: Path, meta: SnapshotMeta, models: str) -> SnapshotMeta:
    """Write the summary of `models` into a snapshot's work dir before it is sealed; the meta that records it."""
    meta = meta.model_copy(update={"summary_version": SUMMARY_VERSION})
    write_summary(summarize(con, models), directory / SUMMARY_NAME, meta)
    return meta


@dataclass(frozen=True)
class LoadedSummaries:
    """A cursor on the table `summaries`, and which snapshots' rows it holds: `keys` maps each requested snapshot
    that is loaded to its `sid` in the table (a small integer: grouping on it is faster than on the id);
    `complete` says the table holds no other snapshot's rows, so a query needs no filter on `sid`."""

    con: duckdb.DuckDBPyConnection
    keys: dict[str, int]
    complete: bool


class SummaryIndex:
    """The summaries of the snapshots histories ask for, in one small table (`summaries`) of the store's DuckDB
    instance: a history across any number of snapshots is then one grouped query over a few thousand rows per
    snapshot, and no snapshot file is opened for it.

    Loaded incrementally: a snapshot's rows are read (from its summary file, or computed once from its model
    table and written beside it) the first time a history asks for it and again when it is reclassified; rows
    of snapshots that left the listing are dropped. Its size is bounded by the listing (about 1,200 rows per
    snapshot of 2 million models).
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._loaded: dict[str, str] = {}  # snapshot id -> revision of its rows in the table
        self._keys: dict[str, int] = {}  # snapshot id -> its sid in the table
        self._next_key = 0

    @contextlib.contextmanager
    def cursor(self, snapshots: Sequence[SnapshotMeta]) -> Iterator[LoadedSummaries]:
        """A cursor whose table `summaries` holds the rows of these snapshots (those still listed), by `sid`."""
        with self._lock:
            self._sync(snapshots)
            keys = {m.id: self._keys[m.id] for m in snapshots if m.id in self._loaded}
            complete = len(keys) == len(self._loaded)
        with self._store.own_cursor() as con:
            yield LoadedSummaries(con, keys, complete)

    def prepare(self) -> list[str]:
        """Give every listed snapshot without a current summary file one (computed from its model table); the ids
        done. The worker does this at start, so that the API's first history has nothing to compute."""
        done = []
        with self._lock:
            for meta in self._store.snapshots():
                if read_summary(self._store.layout.summary(meta.id), meta) is None:
                    self._summary_of(meta)
                    done.append(meta.id)
        return done

    def reset(self) -> None:
        """Forget what was loaded (the store closed its instance, and the table with it)."""
        with self._lock:
            self._loaded.clear()
            self._keys.clear()

    def _sync(self, snapshots: Sequence[SnapshotMeta]) -> None:
        # The current listing, not the request's: a snapshot reclassified since has a new revision.
        listed = {m.id: m for m in self._store.snapshots()}
        with self._store.own_cursor() as con:
            con.execute(_TABLE_SQL)
            gone = [snapshot_id for snapshot_id in self._loaded if snapshot_id not in listed]
            if gone:
                con.execute("DELETE FROM summaries WHERE list_contains(?, sid)", [[self._keys[g] for g in gone]])
                for snapshot_id in gone:
                    del self._loaded[snapshot_id], self._keys[snapshot_id]
            for wanted in snapshots:
                meta = listed.get(wanted.id)
                if meta is None or self._loaded.get(meta.id) == revision(meta):
                    continue
                rows = self._summary_of(meta)
                if meta.id not in self._keys:
                    self._keys[meta.id] = self._next_key
                    self._next_key += 1
                con.register("summary_rows", rows)
                try:
                    # One transaction: a history running meanwhile sees the old rows or the new, never both.
                    con.begin()
                    con.execute("DELETE FROM summaries WHERE sid = ?", [self._keys[meta.id]])
                    con.execute(f"INSERT INTO summaries SELECT ?, {_COLUMNS} FROM summary_rows", [self._keys[meta.id]])
                    con.commit()
                except BaseException:
                    with contextlib.suppress(duckdb.Error):  # none open if begin() itself failed
                        con.rollback()  # the old rows stay, still marked as what they are
                    raise
                finally:
                    con.unregister("summary_rows")
                self._loaded[meta.id] = revision(meta)

    def _summary_of(self, meta: SnapshotMeta) -> pa.Table:
        layout = self._store.layout
        found = read_summary(layout.summary(meta.id), meta)
        if found is not None:
            return found
        # Published without one (an older release), or reclassified by one: compute it once, keep it beside.
        with self._store.cursor(meta.id) as con:
            table = summarize(con)
        try:
            with work_dir(self._store.data_dir, f"summary-{meta.id}-{secrets.token_hex(3)}") as work:
                write_summary(table, work / SUMMARY_NAME, meta)
                add_summary(self._store.data_dir, meta.id, work / SUMMARY_NAME)
        except OSError as exc:
            # A read-only data dir: the summary still serves this process, from memory.
            log.warning("could not store the summary of %s: %s", meta.id, exc)
        return table
