"""Dimensions and models: the values a dashboard filters by, and the models themselves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import duckdb
import pyarrow as pa

from hubcensus.queries.filters import METHOD_COLUMNS, ModelFilter, selected_cte, universe_of
from hubcensus.queries.frameworks import (
    BIT,
    CLASSIFIER_VERSION,
    FRAMEWORKS,
    METHODS,
    Facts,
    Framework,
    Method,
    combination_name,
    explain,
    frameworks_of,
    shared_combinations,
)
from hubcensus.queries.sql import run

Dimension = Literal["pipeline_tag", "library_name", "author"]
ModelSort = Literal["downloads", "-downloads", "likes", "-likes", "created", "-created", "id", "-id"]

_DIMENSION_COLUMNS: dict[Dimension, str] = {
    "pipeline_tag": "pipeline_tag",
    "library_name": "library_name",
    "author": "author",
}
_SORT_SQL: dict[ModelSort, str] = {
    "downloads": "downloads ASC NULLS FIRST, id",
    "-downloads": "downloads DESC NULLS LAST, id",
    "likes": "likes ASC NULLS FIRST, id",
    "-likes": "likes DESC NULLS LAST, id",
    "created": "created_at ASC NULLS FIRST, id",
    "-created": "created_at DESC NULLS LAST, id",
    "id": "id",
    "-id": "id DESC",
}


def dimension_values(
    con: duckdb.DuckDBPyConnection,
    dimension: Dimension,
    *,
    filters: ModelFilter | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> pa.Table:
    """The values of a dimension with their model counts, most models first (null last)."""
    cte, params = selected_cte(filters or ModelFilter())
    col = _DIMENSION_COLUMNS[dimension]
    sql = f"""{cte}
SELECT {col} AS value, count(*) AS models, coalesce(sum(downloads), 0)::BIGINT AS downloads
FROM selected
GROUP BY ALL
ORDER BY models DESC, value NULLS LAST
LIMIT $limit OFFSET $offset
"""
    return run(con, sql, {**params, "limit": limit, "offset": offset})


def bucket_sql(method: Method, universe: Sequence[Framework]) -> dict[str, str]:
    """SQL conditions for each framework bucket name (`pytorch_only`, `shared`, `none`, ...)."""
    col = METHOD_COLUMNS[method]
    mask = sum(BIT[fw] for fw in universe)
    conditions = {f"{fw}_only": f"{col} & {mask} = {BIT[fw]}" for fw in universe}
    conditions["shared"] = f"bit_count({col} & {mask}) >= 2"
    conditions["none"] = f"{col} & {mask} = 0"
    conditions["any"] = f"{col} & {mask} <> 0"
    # Every combination of two or more is a bucket too (`pytorch+gguf`): the models behind a share's
    # `combinations` count.
    conditions |= {combination_name(m): f"{col} & {mask} = {m}" for m in shared_combinations(universe)}
    return conditions


def bucket_names(universe: Sequence[Framework] = FRAMEWORKS) -> list[str]:
    """Valid `bucket` filter values: `<fw>_only`, `shared`, `none`, `any`, and each exact combination."""
    return list(bucket_sql("inferred", universe))


def list_models(
    con: duckdb.DuckDBPyConnection,
    *,
    method: Method = "inferred",
    frameworks: Sequence[Framework] = FRAMEWORKS,
    filters: ModelFilter | None = None,
    bucket: str | None = None,
    search: str | None = None,
    sort: ModelSort = "-downloads",
    limit: int = 100,
    offset: int = 0,
) -> pa.Table:
    """Models matching the filters, with their frameworks under `method`, in a stable order."""
    universe, mask = universe_of(frameworks)
    cte, params = selected_cte(filters or ModelFilter())
    conditions = bucket_sql(method, universe)
    if bucket is not None and bucket not in conditions:
        raise ValueError(f"bucket must be one of {', '.join(conditions)}")
    where = conditions[bucket] if bucket else "true"
    sql = f"""{cte}
SELECT id, author, pipeline_tag, library_name, created_at, last_modified, downloads, likes,
    {METHOD_COLUMNS[method]} & $mask AS mask
FROM selected
WHERE {where} AND ($search IS NULL OR contains(lower(id), lower($search)))
ORDER BY {_SORT_SQL[sort]}
LIMIT $limit OFFSET $offset
"""
    rows = run(con, sql, {**params, "mask": mask, "search": search, "limit": limit, "offset": offset})
    names = [combination_name(m) or "none" for m in rows.column("mask").to_pylist()]
    return rows.drop_columns(["mask"]).append_column("frameworks", pa.array(names, pa.string()))


def model_detail(con: duckdb.DuckDBPyConnection, model_id: str) -> dict[str, Any] | None:
    """One model: its metadata, the facts the classifier read, and its frameworks under each method with the
    evidence (the rule, and the tags, files, library or config fields it matched), under this classifier."""
    rows = run(
        con,
        """SELECT id, author, pipeline_tag, library_name, created_at, last_modified, downloads, likes,
                  private, gated, tags, weight_files, model_type, architectures, auto_model,
                  fw_tags, fw_files, fw_inferred, fw_loadable
           FROM models WHERE id = $id""",
        {"id": model_id},
    ).to_pylist()
    if not rows:
        return None
    row: dict[str, Any] = rows[0]
    stored = {m: row.pop(f"fw_{m}") for m in METHODS}
    ev = explain(Facts.of_row(row))
    row["frameworks"] = {
        m: {
            # What every other answer counts (the snapshot's columns); the evidence is this classifier's, the
            # same rules unless the snapshot predates it (then `hubcensus reclassify` brings it up to date).
            "frameworks": frameworks_of(stored[m]),
            "evidence": [
                {
                    "framework": e.framework,
                    "rule": e.rule,
                    "matched": e.matched,
                    "reason": e.reason,
                    "convention": e.convention,
                }
                for e in ev[m]
            ],
        }
        for m in METHODS
    }
    row["evidence_classifier_version"] = CLASSIFIER_VERSION
    return row
