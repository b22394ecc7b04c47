"""The fast readers for dumps: DuckDB parses and converts every record, Python touches none.

`ingest.records.HubModelRecord` defines what a record means. These readers accept only the plain
shape the Hub API writes (ids and names as strings, counters as integers, `private` a boolean, ISO
8601 times, `tags` a list of strings, `siblings` a list of objects whose `rfilename` is a string) and
convert those values exactly as the pydantic model would. Any other value marks its row; the caller
(`ingest.dumps`) re-reads marked rows with the exact record-by-record reader, and leaves a file DuckDB
cannot read as one record per row (or Parquet with a column of another type) to that reader whole.
Both readers must give the same snapshot: tests/test_import_paths.py checks it on every fixture and on
a matrix of odd values.

Why: the Python reader spends about 33 us per record (pydantic, Arrow batches); DuckDB's readers run
in C++ on every core, which the whole-Hub benchmark needs (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import re
from typing import Literal

from hubcensus.ingest.records import MAX_CONFIG_TEXT
from hubcensus.queries.facts import WEIGHT_FILE
from hubcensus.queries.frameworks import classified_sql
from hubcensus.queries.sql import sql_literal

JsonFormat = Literal["newline_delimited", "array"]
Compression = Literal["gzip", "none"]

MAX_OBJECT_BYTES = 16 * 2**20
"""read_json's `maximum_object_size` (DuckDB's default, made explicit): a file with a larger record fails
here and goes to the exact reader, whose own limit (`ingest.jsonread.MAX_RECORD_BYTES`) follows from this."""

# The keys `HubModelRecord` reads, each kept as raw JSON text so its type can be checked here.
_SCALARS = (
    "id", "modelId", "author", "createdAt", "created_at", "lastModified", "last_modified",
    "downloads", "likes", "pipeline_tag", "library_name", "private", "gated",
)  # fmt: skip
# The Hub's `config` and `transformersInfo` objects, read for three facts and never checked (a value of another
# shape is no fact, as in ingest.records.config_facts).
_CONFIGS = ("config", "transformersInfo", "transformers_info")
# Lists are typed: DuckDB refuses a non-list (the whole file then goes to the exact reader), and
# elements stay JSON text, so a number among the tags is seen rather than silently made text.
_COLUMNS = (
    "{"
    + ", ".join(f"{k}: 'JSON'" for k in (*_SCALARS, *_CONFIGS))
    + ", tags: 'JSON[]', siblings: 'STRUCT(rfilename JSON)[]'}"
)

# A time as text that pydantic and DuckDB read alike: ISO 8601, at most millisecond precision
# (snapshots store milliseconds), UTC, an offset, or none (both then take it as UTC).
_ISO_TIME = r"^[12]\d{3}-\d\d-\d\dT([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,3})?(Z|[+-]\d\d:\d\d)?$"
_INTEGER = r"^-?\d{1,18}$"  # fits BIGINT whatever the digits


def _is_text(col: str) -> str:
    return f"({col} IS NULL OR starts_with({col}, '\"'))"


def _is_integer(col: str) -> str:
    return f"({col} IS NULL OR regexp_matches({col}, '{_INTEGER}'))"


def _text_time(text: str) -> str:
    """The naive UTC timestamp of ISO text `text`, or NULL if it is not one pydantic reads alike."""
    # TRY_CAST: a well-formed but impossible date (Feb 30) becomes NULL here and marks the row.
    return f"TRY_CAST(CASE WHEN regexp_matches({text}, '{_ISO_TIME}') THEN {text} END AS TIMESTAMPTZ)::TIMESTAMP"


# True when every known field of the record has the plain shape; JSON null counts as absent, as in
# HubModelRecord (which drops null keys first, so `"id": null` falls back to `modelId` in both).
_PLAIN = f"""(
    starts_with(mid, '"') AND mid <> '""'
    AND {_is_text("author")} AND {_is_text("pipeline_tag")} AND {_is_text("library_name")}
    AND (gated IS NULL OR starts_with(gated, '"') OR gated IN ('true', 'false'))
    AND {_is_integer("downloads")} AND {_is_integer("likes")}
    AND (private IS NULL OR private IN ('true', 'false'))
    AND (c_raw IS NULL OR c_at IS NOT NULL) AND (m_raw IS NULL OR m_at IS NOT NULL)
    AND (tags IS NULL OR coalesce(list_bool_and(
        list_transform(tags, lambda t: coalesce(starts_with(t, '"'), false))), true))
    AND (siblings IS NULL OR coalesce(list_bool_and(
        list_transform(siblings, lambda s: coalesce(starts_with(s.rfilename, '"'), false))), true))
)"""


def _json_object(value: str) -> str:
    """A JSON value as itself, or JSON text in a string (a Parquet column) parsed, as config_facts does."""
    text = f"({value}->>'$')"
    parsed = f"CASE WHEN length({text}) <= {MAX_CONFIG_TEXT} THEN TRY_CAST({text} AS JSON) END"
    return f"CASE WHEN json_type({value}) = 'VARCHAR' THEN {parsed} ELSE {value} END"


def _json_text_at(value: str, path: str) -> str:
    return f"CASE WHEN json_type({value}, '{path}') = 'VARCHAR' THEN json_extract_string({value}, '{path}') END"


def config_facts_sql(config: str, info: str) -> tuple[str, str, str]:
    """SQL of `model_type`, `architectures` and `auto_model` from JSON values `config` and `info`
    (transformersInfo): strings and a list of strings, anything else NULL, as ingest.records.config_facts."""
    cfg = _json_object(config)
    elements = f"json_extract({cfg}, '$.architectures[*]')"
    architectures = (
        f"CASE WHEN json_type({cfg}, '$.architectures') = 'ARRAY' AND coalesce(list_bool_and("
        f"list_transform({elements}, lambda e: json_type(e) = 'VARCHAR')), true) "
        f"THEN json_extract_string({cfg}, '$.architectures[*]') END"
    )
    return _json_text_at(cfg, "$.model_type"), architectures, _json_text_at(_json_object(info), "$.auto_model")


def _when_plain(expr: str) -> str:
    # Conversions run only on plain rows: on any other value a cast could raise and stop the load.
    return f"CASE WHEN plain THEN {expr} END"


_FILE_NAMES = "list_transform(siblings, lambda s: s.rfilename->>'$')"
# The Hub writes gated as false, "auto" or "manual": one text column, as HubModelRecord keeps it.
_GATED = "CASE WHEN starts_with(gated, '\"') THEN gated->>'$' ELSE gated::VARCHAR END"


def rows_sql(fmt: JsonFormat, compression: Compression) -> str:
    """SQL selecting one snapshot row per record of the JSON file bound as the only parameter.

    A record that is not plain gives a row whose columns are all NULL, id included.
    """
    weight = sql_literal(WEIGHT_FILE.pattern)
    model_type, architectures, auto_model = config_facts_sql("config", "coalesce(transformersInfo, transformers_info)")
    return f"""
SELECT
    {_when_plain("mid->>'$'")} AS id,
    {_when_plain("coalesce(author->>'$', CASE WHEN contains(mid->>'$', '/') THEN split_part(mid->>'$', '/', 1) END)")}
        AS author,
    {_when_plain("c_at")} AS created_at,
    {_when_plain("m_at")} AS last_modified,
    {_when_plain("downloads::BIGINT")} AS downloads,
    {_when_plain("likes::BIGINT")} AS likes,
    {_when_plain("list_transform(tags, lambda t: t->>'$')")} AS tags,
    {_when_plain("pipeline_tag->>'$'")} AS pipeline_tag,
    {_when_plain("library_name->>'$'")} AS library_name,
    {_when_plain("private::BOOLEAN")} AS private,
    {_when_plain(_GATED)} AS gated,
    {_when_plain(f"list_filter({_FILE_NAMES}, lambda f: regexp_matches(lower(f), {weight}))")}
        AS weight_files,
    {_when_plain(model_type)} AS model_type,
    {_when_plain(architectures)} AS architectures,
    {_when_plain(auto_model)} AS auto_model
FROM (
    SELECT *, {_PLAIN} AS plain
    FROM (
        SELECT *,
            coalesce(id, modelId) AS mid,
            coalesce(createdAt, created_at) AS c_raw, {_text_time("(coalesce(createdAt, created_at)->>'$')")} AS c_at,
            coalesce(lastModified, last_modified) AS m_raw,
            {_text_time("(coalesce(lastModified, last_modified)->>'$')")} AS m_at
        FROM read_json(?, format = '{fmt}', records = true, compression = '{compression}', columns = {_COLUMNS},
            maximum_object_size = {MAX_OBJECT_BYTES})
    )
)"""


def models_sql(select: str) -> str:
    """SQL creating `out.models` from `rows_sql`'s rows, ordered by id like every snapshot.

    The caller checks the result for rows that were not plain (NULL id) and for repeated ids.
    """
    return f"CREATE TABLE out.models AS\n{classified_sql(select)}\nORDER BY id\n"


CHECK_SQL = "SELECT count(*), count(*) - count(id), count(id) - count(DISTINCT id) FROM out.models"
"""Rows, rows that were not plain, and repeated ids, in the table `models_sql` built."""


# ------------------------------------------------------------------------------------------------
# Parquet (hub-stats style): columns are typed already, so the check is on the column types once
# (a column of another type sends the whole file to the exact reader) and on NULLs per row.
# ------------------------------------------------------------------------------------------------

_INTEGERS = {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UINTEGER", "USMALLINT", "UTINYINT"}
# Timestamps pyarrow hands to pydantic as datetimes (nanoseconds would come as pandas objects), or text.
_TIMES = {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_MS", "TIMESTAMP_S", "VARCHAR"}
PARQUET_TYPES: dict[str, set[str]] = {
    **{k: {"VARCHAR"} for k in ("id", "modelId", "author", "pipeline_tag", "library_name")},
    **{k: _TIMES for k in ("createdAt", "created_at", "lastModified", "last_modified")},
    "downloads": _INTEGERS,
    "likes": _INTEGERS,
    "private": {"BOOLEAN"},
    "gated": {"VARCHAR", "BOOLEAN"},
    "tags": {"VARCHAR[]"},
}
# config and transformersInfo: JSON text, or a struct (read as JSON); any other type goes to the exact reader.
_CONFIG_TYPE = re.compile(r"^(VARCHAR|JSON|STRUCT\(.*\))$")
_SIBLINGS_TYPE = re.compile(r"^STRUCT\((.*, )?rfilename VARCHAR[,)].*\[\]$")
_PARQUET_PLAIN = """(
    mid IS NOT NULL AND mid <> ''
    AND (c_raw IS NULL OR c_at IS NOT NULL) AND (m_raw IS NULL OR m_at IS NOT NULL)
    AND (tags IS NULL OR len(list_filter(tags, lambda t: t IS NULL)) = 0)
    AND (names IS NULL OR len(list_filter(names, lambda f: f IS NULL)) = 0)
)"""


def _parquet_time(col: str, sql_type: str | None) -> str:
    if sql_type is None:
        return "NULL::TIMESTAMP"
    if sql_type == "VARCHAR":
        return _text_time(col)
    # The Python reader stores milliseconds, dropping the rest (pyarrow's cast to timestamp[ms]).
    return f"date_trunc('millisecond', {col}::TIMESTAMP)"


def parquet_rows_sql(columns: dict[str, str]) -> str | None:
    """SQL selecting one snapshot row per row of the Parquet file bound as the only parameter.

    `columns` are the file's column names and DuckDB types. None if a column the records carry has a
    type this reader does not convert exactly as HubModelRecord would (the exact reader then reads it).
    """
    for name, allowed in PARQUET_TYPES.items():
        if name in columns and columns[name] not in allowed:
            return None
    if "siblings" in columns and not _SIBLINGS_TYPE.match(columns["siblings"]):
        return None
    if any(name in columns and not _CONFIG_TYPE.match(columns[name]) for name in _CONFIGS):
        return None
    if {"createdAt", "created_at"} <= columns.keys() or {"lastModified", "last_modified"} <= columns.keys():
        return None  # two spellings of one field: which wins, per row, is left to the exact reader

    def col(name: str, sql_type: str = "VARCHAR") -> str:
        return f'"{name}"' if name in columns else f"NULL::{sql_type}"

    created = col("createdAt") if "createdAt" in columns else col("created_at")
    modified = col("lastModified") if "lastModified" in columns else col("last_modified")
    c_type = columns.get("createdAt") or columns.get("created_at")
    m_type = columns.get("lastModified") or columns.get("last_modified")
    gated = col("gated")
    if columns.get("gated") == "BOOLEAN":
        gated = "CASE WHEN gated THEN 'true' WHEN NOT gated THEN 'false' END"
    names = "list_transform(siblings, lambda s: s.rfilename)" if "siblings" in columns else "NULL::VARCHAR[]"
    weight = sql_literal(WEIGHT_FILE.pattern)

    def as_json(name: str) -> str:
        if name not in columns:
            return "NULL::JSON"
        # A struct as the JSON object it is; text as the JSON string it holds (parsed by config_facts_sql).
        return f'to_json("{name}")'

    info = f"coalesce({as_json('transformersInfo')}, {as_json('transformers_info')})"
    model_type, architectures, auto_model = config_facts_sql("config_json", "info_json")
    return f"""
SELECT
    {_when_plain("mid")} AS id,
    {_when_plain("coalesce(author, CASE WHEN contains(mid, '/') THEN split_part(mid, '/', 1) END)")} AS author,
    {_when_plain("c_at")} AS created_at,
    {_when_plain("m_at")} AS last_modified,
    {_when_plain("downloads")} AS downloads,
    {_when_plain("likes")} AS likes,
    {_when_plain("tags")} AS tags,
    {_when_plain("pipeline_tag")} AS pipeline_tag,
    {_when_plain("library_name")} AS library_name,
    {_when_plain("private")} AS private,
    {_when_plain("gated")} AS gated,
    {_when_plain(f"list_filter(names, lambda f: regexp_matches(lower(f), {weight}))")} AS weight_files,
    {_when_plain(model_type)} AS model_type,
    {_when_plain(architectures)} AS architectures,
    {_when_plain(auto_model)} AS auto_model
FROM (
    SELECT *, {_PARQUET_PLAIN} AS plain
    FROM (
        SELECT
            coalesce({col("id")}, {col("modelId")}) AS mid, {col("author")} AS author,
            {created} AS c_raw, {_parquet_time(created, c_type)} AS c_at,
            {modified} AS m_raw, {_parquet_time(modified, m_type)} AS m_at,
            {col("downloads", "BIGINT")}::BIGINT AS downloads, {col("likes", "BIGINT")}::BIGINT AS likes,
            {col("tags", "VARCHAR[]")} AS tags, {col("pipeline_tag")} AS pipeline_tag,
            {col("library_name")} AS library_name, {col("private", "BOOLEAN")} AS private,
            ({gated})::VARCHAR AS gated, {names} AS names, {as_json("config")} AS config_json, {info} AS info_json
        FROM read_parquet(?)
    )
)"""
