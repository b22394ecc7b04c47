"""The formats of an answer: which one a request asks for (`_format` or Accept), and the body in it.

Every tabular route answers the same flat columns as JSON (nested back into objects, inside the envelope),
CSV, NDJSON or Parquet; the routes with a chart also as Vega-Lite, SVG or PNG. One renderer per format,
no per-route format code.
"""

from __future__ import annotations

import io
import json
from datetime import date, datetime
from typing import Any, Literal, get_args

import mimeparse
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import Request

from hubcensus.queries.buckets import nest_rows
from hubcensus.service.charts.common import ChartBuilder, to_png, to_svg
from hubcensus.service.errors import InvalidParameterError, NotAcceptableError

Format = Literal["json", "csv", "ndjson", "parquet", "vl", "svg", "png"]
TableFormat = Literal["json", "csv", "ndjson", "parquet"]  # every tabular route
ALL_FORMATS: tuple[Format, ...] = get_args(Format)
FORMATS: tuple[Format, ...] = get_args(TableFormat)
CHART_FORMATS: tuple[Format, ...] = tuple(f for f in ALL_FORMATS if f not in FORMATS)  # routes with a chart
MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "vl": "application/vnd.vegalite.v5+json",
    "svg": "image/svg+xml",
    "png": "image/png",
}
_ACCEPT: dict[str, Format] = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/json": "json",
    "application/vnd.vegalite.v5+json": "vl",
    "application/vnd.vegalite+json": "vl",
    "image/svg+xml": "svg",
    "image/png": "png",
}


def negotiate(request: Request, charts: bool = False) -> Format:
    """`_format` wins; else the Accept header with its q-values (RFC 9110 12.5.1); JSON without one.

    Of equally acceptable types JSON is preferred. Accept naming nothing this route serves (or only with
    q=0) is 406 not_acceptable; an Accept header that does not parse is ignored, as if absent.
    """
    offered = FORMATS + CHART_FORMATS if charts else FORMATS
    explicit = request.query_params.get("_format")
    if explicit is not None:
        if explicit not in offered:
            raise InvalidParameterError(
                f"_format: this route answers {', '.join(offered)}; got {explicit!r}.",
                [{"parameter": "_format", "in": "query", "message": "unsupported format"}],
            )
        return explicit
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return "json"
    # best_match prefers the last of equally acceptable types: JSON goes last, so `*/*` gives JSON.
    supported = sorted((m for m, fmt in _ACCEPT.items() if fmt in offered), key=lambda m: m == "application/json")
    try:
        best: str = mimeparse.best_match(supported, accept)
    except (mimeparse.MimeTypeParseException, ValueError):
        return "json"
    if not best:
        served = ", ".join(MEDIA_TYPES[f].split(";")[0] for f in offered)
        raise NotAcceptableError(f"Accept: this route answers {served}; got {accept!r}. Or use _format.")
    return _ACCEPT[best]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        # Naive timestamps in snapshots are UTC by construction.
        return value.isoformat().replace("+00:00", "Z") + ("" if value.tzinfo else "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps_json(obj: Any) -> bytes:
    """Compact JSON; datetimes as ISO 8601 UTC with Z."""
    return json.dumps(obj, default=_json_default, separators=(",", ":"), allow_nan=False).encode()


def _utc_timestamps(rows: pa.Table, as_text: bool) -> pa.Table:
    """Timestamps as UTC in every format: zoned in Parquet, ISO 8601 with Z in CSV.

    Snapshot timestamps are naive UTC by construction; saying so keeps Parquet and CSV readers from
    guessing a local zone.
    """
    for i, col in enumerate(rows.schema):
        if pa.types.is_timestamp(col.type):
            values = rows.column(i).cast(pa.timestamp(col.type.unit, tz="UTC"))
            if as_text:
                values = pc.strftime(values, format="%Y-%m-%dT%H:%M:%SZ")
            rows = rows.set_column(i, col.name, values)
    return rows


def render(
    rows: pa.Table,
    envelope: dict[str, Any],
    fmt: Format,
    *,
    next_cursor: str | None = None,
    next_url: str | None = None,
    chart: ChartBuilder | None = None,
) -> bytes:
    """The body of an answer (its rows, and the JSON envelope's other keys) in a format; the columns are the
    same in every tabular format."""
    if fmt in CHART_FORMATS:
        assert chart is not None  # negotiate() offers chart formats only with a chart
        spec = json.loads(dumps_json(chart(rows, envelope)))
        if fmt == "vl":
            return dumps_json(spec)
        return to_svg(spec).encode() if fmt == "svg" else to_png(spec)
    if fmt == "json":
        body = {
            **envelope,
            "rows": nest_rows(rows.to_pylist(), rows.column_names),
            "next": next_cursor,
            "next_url": next_url,
        }
        return dumps_json(body)
    if fmt == "ndjson":
        return b"".join(dumps_json(r) + b"\n" for r in rows.to_pylist())
    buf = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(_utc_timestamps(rows, as_text=True), buf)
    else:
        pq.write_table(_utc_timestamps(rows, as_text=False), buf, compression="zstd")
    return buf.getvalue()
