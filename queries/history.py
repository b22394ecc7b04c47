"""Framework share across snapshots, and what changed between two snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from hubcensus.queries.buckets import bucket_columns, bucket_value_columns, flatten
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.filters import METHOD_COLUMNS, ModelFilter, Weight, universe_of
from hubcensus.queries.frameworks import FRAMEWORKS, METHODS, Framework, Method, combination_name
from hubcensus.queries.share import GroupBy, by_size, framework_share, framework_total
from hubcensus.queries.sql import run
from hubcensus.queries.store import SnapshotStore
from hubcensus.queries.summary import answers_from_summary

Change = Literal["added", "removed", "changed"]


def framework_history(
    store: SnapshotStore,
    snapshots: Sequence[SnapshotMeta],
    *,
    by: GroupBy | None = None,
    method: Method = "inferred",
    frameworks: Sequence[Framework] = FRAMEWORKS,
    weight: Weight = "models",
    filters: ModelFilter | None = None,
) -> pa.Table:
    """The share at each of `snapshots` (oldest first): one row per snapshot, or per snapshot and group.

    Each snapshot is immutable, so a dashboard can draw one line per bucket column over `taken_at`. Read from
    the snapshots' summaries (one small table, whatever the number of snapshots) unless a filter needs single
    models (author, min_downloads, created_*, top: `answers_from_summary`); then from each model table.
    """
    read = history_from_summaries if answers_from_summary(filters) else history_from_models
    return read(store, snapshots, by=by, method=method, frameworks=frameworks, weight=weight, filters=filters)


def history_from_models(
    store: SnapshotStore,
    snapshots: Sequence[SnapshotMeta],
    *,
    by: GroupBy | None = None,
    method: Method = "inferred",
    frameworks: Sequence[Framework] = FRAMEWORKS,
    weight: Weight = "models",
    filters: ModelFilter | None = None,
) -> pa.Table:
    """`framework_history` by querying each snapshot's model table: one scan per snapshot, any filter."""
    tables = []
    for meta in sorted(snapshots, key=lambda m: (m.taken_at, m.id)):
        with store.cursor(meta.id) as con:
            if by is None:
                # Totals only: one group-by on the framework mask, not a share per group (2.5x faster at 2M).
                total = framework_total(con, method=method, frameworks=frameworks, weight=weight, filters=filters)
                schema = pa.schema(bucket_columns(universe_of(frameworks)[0]))
                # The bucket lists the combinations that occur; the table has a column (0 or more) for each.
                flat = dict.fromkeys(schema.names, 0) | flatten(total.model_dump())
                rows = pa.Table.from_pylist([flat], schema=schema)
            else:
                rows = framework_share(
                    con, by=by, method=method, frameworks=frameworks, weight=weight, filters=filters
                ).rows
        n = rows.num_rows
        rows = rows.add_column(0, "taken_at", pa.array([meta.taken_at] * n, pa.timestamp("us", tz="UTC")))
        tables.append(rows.add_column(0, "snapshot", pa.array([meta.id] * n, pa.string())))
    if not tables:
        return _empty_history(by, frameworks)
    return pa.concat_tables(tables, promote_options="permissive")


def _empty_history(by: GroupBy | None, frameworks: Sequence[Framework]) -> pa.Table:
    # No snapshot in range: no rows, but the same columns, so a feed's schema never depends on the data.
    universe, _ = universe_of(frameworks)
    return pa.schema(_history_keys(by) + bucket_columns(universe)).empty_table()


def _history_keys(by: GroupBy | None) -> list[tuple[str, pa.DataType]]:
    keys = [("snapshot", pa.string()), ("taken_at", pa.timestamp("us", tz="UTC"))]
    return keys + ([("group", pa.string())] if by is not None else [])


# What a summary row sums for each weight, and the columns a history can group by (allow-lists).
_SUMMARY_WEIGHT: dict[Weight, str] = {"models": "models", "downloads": "downloads", "likes": "likes"}
_SUMMARY_GROUP: dict[GroupBy, str] = {"pipeline_tag": "pipeline_tag", "library_name": "library_name"}

_SUMMARY_HISTORY_SQL = """SELECT sid, {key} AS key, {col} & $mask AS combo, sum({weight})::BIGINT AS n
FROM summaries
WHERE ($complete OR list_contains($sids::INTEGER[], sid))
  AND {col} IS NOT NULL
  AND ($pipeline_tag IS NULL OR pipeline_tag = $pipeline_tag)
  AND ($library_name IS NULL OR library_name = $library_name)
GROUP BY ALL
"""


def history_from_summaries(
    store: SnapshotStore,
    snapshots: Sequence[SnapshotMeta],
    *,
    by: GroupBy | None = None,
    method: Method = "inferred",
    frameworks: Sequence[Framework] = FRAMEWORKS,
    weight: Weight = "models",
    filters: ModelFilter | None = None,
) -> pa.Table:
    """`framework_history` from the snapshots' summaries: one grouped query over a few thousand rows per snapshot,
    no model table read. Filters beyond task and library are refused (ValueError): use `history_from_models`."""
    if not answers_from_summary(filters):
        raise ValueError("a summary answers no filter on single models (author, min_downloads, created_*, top)")
    ordered = sorted(snapshots, key=lambda m: (m.taken_at, m.id))
    if not ordered:
        return _empty_history(by, frameworks)
    universe, mask = universe_of(frameworks)
    flt = filters or ModelFilter()
    sql = _SUMMARY_HISTORY_SQL.format(
        key="NULL" if by is None else _SUMMARY_GROUP[by], col=METHOD_COLUMNS[method], weight=_SUMMARY_WEIGHT[weight]
    )
    with store.summaries.cursor(ordered) as loaded:
        params = {
            "complete": loaded.complete,
            "sids": list(loaded.keys.values()),
            "mask": mask,
            "pipeline_tag": flt.pipeline_tag,
            "library_name": flt.library_name,
        }
        combos = run(loaded.con, sql, params).to_pylist()
    # A snapshot removed since the listing was read has no point (as it has no longer a model table).
    present = [m for m in ordered if m.id in loaded.keys]
    snapshot_of = {loaded.keys[m.id]: m.id for m in present}
    counts: dict[str, dict[str | None, dict[int, int]]] = {m.id: {} for m in present}
    for row in combos:
        if row["sid"] not in snapshot_of:
            continue  # loaded meanwhile by another request
        per_combo = counts[snapshot_of[row["sid"]]].setdefault(row["key"], {})
        per_combo[row["combo"]] = per_combo.get(row["combo"], 0) + row["n"]
    # The rows in order: per snapshot (oldest first), its groups largest first (as a share orders them), built as
    # columns: a history by task across 100 snapshots has some 5,000 rows of ~140 columns.
    keys: list[tuple[SnapshotMeta, str | None]] = []
    buckets: list[dict[int, int]] = []
    for meta in present:
        if by is None:
            # One row per snapshot, zeros included, as a total over no model is still a point of the series.
            keys.append((meta, None))
            buckets.append(counts[meta.id].get(None, {}))
            continue
        groups = sorted(counts[meta.id].items(), key=lambda g: by_size({"models": sum(g[1].values()), "group": g[0]}))
        keys += [(meta, group) for group, _ in groups]
        buckets += [c for _, c in groups]
    columns: dict[str, list[Any]] = {"snapshot": [m.id for m, _ in keys], "taken_at": [m.taken_at for m, _ in keys]}
    if by is not None:
        columns["group"] = [g for _, g in keys]
    columns |= bucket_value_columns(buckets, universe)
    schema = pa.schema(_history_keys(by) + bucket_columns(universe))
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)


def matches_source(recorded: str, wanted: str) -> bool:
    """Whether a snapshot's recorded source is `wanted`, or lies under it (`wanted` then `/` or `@`): the
    repository `hf://datasets/org/name` covers the files and revisions read from it. Credentials are ignored."""
    recorded, wanted = _bare(recorded), _bare(wanted)
    return recorded == wanted or recorded.startswith((wanted + "/", wanted + "@"))


def _bare(url: str) -> str:
    # Without `user:password@` (redacted or not) and a trailing slash: the same endpoint whatever the credentials.
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")


def _catalogs(store: SnapshotStore, a: str, b: str) -> dict[str, str]:
    # Both snapshots are attached to the store's one instance: the join runs inside DuckDB, and the SQL
    # names them by their catalogs.
    return {"a": store.catalog(a), "b": store.catalog(b)}


_DIFF_COUNTS_SQL = """
SELECT
    count_if(a.id IS NULL)::BIGINT AS added,
    count_if(b.id IS NULL)::BIGINT AS removed,
    count_if(a.id IS NOT NULL AND b.id IS NOT NULL)::BIGINT AS common,
    {changed}
FROM {a}.models AS a FULL OUTER JOIN {b}.models AS b USING (id)
"""


def diff_counts(store: SnapshotStore, a: str, b: str, frameworks: Sequence[Framework] = FRAMEWORKS) -> dict[str, Any]:
    """How many models were added, removed, kept, and (per method) changed framework set, from a to b."""
    _, mask = universe_of(frameworks)
    changed = ",\n    ".join(
        f"count_if(a.{col} & $mask <> b.{col} & $mask)::BIGINT AS changed_{m}" for m, col in METHOD_COLUMNS.items()
    )
    with store.cursor(b, also=(a,)) as con:
        sql = _DIFF_COUNTS_SQL.format(changed=changed, **_catalogs(store, a, b))
        row = run(con, sql, {"mask": mask}).to_pylist()[0]
    return {
        "added": row["added"],
        "removed": row["removed"],
        "common": row["common"],
        "changed": {m: row[f"changed_{m}"] for m in METHODS},
    }


_DIFF_MODELS_SQL = """
SELECT coalesce(b.id, a.id) AS id,
    CASE WHEN a.id IS NULL THEN 'added' WHEN b.id IS NULL THEN 'removed' ELSE 'changed' END AS change,
    a.{col} & $mask AS before_mask, b.{col} & $mask AS after_mask,
    coalesce(b.pipeline_tag, a.pipeline_tag) AS pipeline_tag,
    coalesce(b.library_name, a.library_name) AS library_name,
    b.downloads AS downloads
FROM {a}.models AS a FULL OUTER JOIN {b}.models AS b USING (id)
WHERE CASE $change
    WHEN 'added' THEN a.id IS NULL
    WHEN 'removed' THEN b.id IS NULL
    ELSE a.id IS NOT NULL AND b.id IS NOT NULL AND a.{col} & $mask <> b.{col} & $mask
END
ORDER BY id
LIMIT $limit OFFSET $offset
"""


def diff_models(
    store: SnapshotStore,
    a: str,
    b: str,
    *,
    change: Change,
    method: Method = "inferred",
    frameworks: Sequence[Framework] = FRAMEWORKS,
    limit: int = 100,
    offset: int = 0,
) -> pa.Table:
    """The models behind a diff count, by id, with their framework sets before and after."""
    _, mask = universe_of(frameworks)
    with store.cursor(b, also=(a,)) as con:
        sql = _DIFF_MODELS_SQL.format(col=METHOD_COLUMNS[method], **_catalogs(store, a, b))
        rows = run(con, sql, {"mask": mask, "change": change, "limit": limit, "offset": offset})
    before = [_combo_or_none(m) for m in rows.column("before_mask").to_pylist()]
    after = [_combo_or_none(m) for m in rows.column("after_mask").to_pylist()]
    rows = rows.drop_columns(["before_mask", "after_mask"])
    rows = rows.add_column(2, "before", pa.array(before, pa.string()))
    return rows.add_column(3, "after", pa.array(after, pa.string()))


def _combo_or_none(mask: int | None) -> str | None:
    if mask is None:
        return None  # the model is not in that snapshot
    return combination_name(mask) or "none"


def share_deltas(before: pa.Table, after: pa.Table) -> pa.Table:
    """Per group: every bucket column of `after` minus `before` (groups missing on a side count as 0)."""
    key = "group"
    old = {r[key]: r for r in before.to_pylist()}
    new = {r[key]: r for r in after.to_pylist()}
    value_cols = [c for c in after.column_names if c != key]
    rows = []
    for group in sorted(old.keys() | new.keys(), key=lambda g: (g is None, g or "")):
        o, n = old.get(group, {}), new.get(group, {})
        row: dict[str, Any] = {key: group}
        for col in value_cols:
            ov, nv = o.get(col), n.get(col)
            if col.startswith("pct."):
                row[col] = None if ov is None or nv is None else round(nv - ov, 2)
            else:
                row[col] = (nv or 0) - (ov or 0)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=after.schema)


# Two snapshots whose model counts differ by more than this factor cover different populations (a full
# crawl and a curated list, a `--limit` run): their shares are not one series. The Hub's own growth stays
# well below it between snapshots weeks or months apart.
COVERAGE_FACTOR = 2.0


@dataclass(frozen=True)
class Break:
    """Two consecutive snapshots whose shares are not comparable, and why."""

    before: SnapshotMeta
    after: SnapshotMeta
    reasons: list[str]

    def as_json(self) -> dict[str, Any]:
        """The break as the history answer states it."""
        return {"before": self.before.id, "after": self.after.id, "reasons": self.reasons}


def why_not_comparable(a: SnapshotMeta, b: SnapshotMeta) -> list[str]:
    """Why the shares of two snapshots are not one series (empty when they are).

    Coverage differs when one is an ingest and the other an import, when two ingests read different
    endpoints or ran with different limits or filters, or when the model counts differ by more than
    COVERAGE_FACTOR. Two imports always come from different files, so the file name alone is no reason;
    the counts are. A different classifier version means different rules.
    """
    reasons = []
    if a.kind != b.kind:
        reasons.append(f"an {a.kind} and an {b.kind}")
    elif a.kind == "ingest":
        if a.source != b.source:
            reasons.append(f"ingested from {a.source} and {b.source}")
        coverage = ("limit", "filter")
        if [a.params.get(k) for k in coverage] != [b.params.get(k) for k in coverage]:
            reasons.append("ingested with different limits or filters")
    low, high = sorted((a.models, b.models))
    if high > COVERAGE_FACTOR * low:
        factor = f"by a factor of {high / low:.1f}" if low else "(one is empty)"
        reasons.append(f"model counts differ {factor} ({a.models:,} and {b.models:,})")
    if a.classifier_version != b.classifier_version:
        reasons.append(f"classifier versions {a.classifier_version} and {b.classifier_version}")
    return reasons


def breaks(snapshots: Sequence[SnapshotMeta]) -> list[Break]:
    """Where a history series (oldest first) is not comparable from one snapshot to the next."""
    ordered = sorted(snapshots, key=lambda m: (m.taken_at, m.id))
    return [Break(a, b, reasons) for a, b in pairwise(ordered) if (reasons := why_not_comparable(a, b))]


def resolve_range(
    snapshots: Sequence[SnapshotMeta], start: datetime | None, end: datetime | None
) -> list[SnapshotMeta]:
    """The snapshots taken within [start, end] (either bound optional)."""
    return [m for m in snapshots if (start is None or m.taken_at >= start) and (end is None or m.taken_at <= end)]
