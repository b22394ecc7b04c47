"""What the OpenAPI document says each route answers: the formats of a tabular answer, and its errors."""

from __future__ import annotations

from typing import Any

from hubcensus.service.errors import ERROR_RESPONSES, TIMEOUT_RESPONSE, error_doc
from hubcensus.service.formats import CHART_FORMATS, FORMATS, MEDIA_TYPES, Format


def _table_responses(formats: tuple[Format, ...], charts: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": (
                "JSON by default: `{snapshot, method, frameworks, query, …, rows, next, next_url}`; rows also as "
                "CSV, NDJSON or Parquet with `_format=` or an Accept header, with the same (flat, dotted) columns"
                f"{charts}. Strong ETag; 304 for a matching If-None-Match."
            ),
            "content": {MEDIA_TYPES[fmt].split(";")[0]: {} for fmt in formats},
        },
        304: {"description": "Not modified: If-None-Match names the ETag, or is `*`."},
        **ERROR_RESPONSES,
        406: error_doc("The Accept header names no format this route answers (and no `_format` is given)."),
        **TIMEOUT_RESPONSE,
    }


TABLE_RESPONSES = _table_responses(FORMATS, "")
CHART_RESPONSES = _table_responses(FORMATS + CHART_FORMATS, "; or as a chart: Vega-Lite, SVG or PNG")
