"""What the OpenAPI document says each route answers: the formats of a tabular answer, and its errors."""

from __future__ import annotations

from typing import Any

from hubcensus.service.errors import ErrorResponse
from hubcensus.service.formats import CHART_FORMATS, FORMATS, MEDIA_TYPES, Format

Responses = dict[int | str, dict[str, Any]]


def error_doc(description: str) -> dict[str, Any]:
    """The OpenAPI entry of an error status: the envelope, with what the status means here."""
    return {"model": ErrorResponse, "description": description}


# Every route answers 422 to a parameter it does not take (service/params.py); the routes over a snapshot
# answer 404 and 503 too.
INVALID_RESPONSE: Responses = {422: error_doc("A parameter is invalid or unknown")}
ERROR_RESPONSES: Responses = {
    404: error_doc("Unknown snapshot or path"),
    **INVALID_RESPONSE,
    503: error_doc(
        "`no_snapshots`: no snapshot has been published yet; or, on an API node of the archive, "
        "`snapshot_unavailable`: the snapshot's file cannot be fetched now (Retry-After)"
    ),
}
TIMEOUT_RESPONSE: Responses = {504: error_doc("A query ran past HUBCENSUS_QUERY_TIMEOUT.")}


def json_errors(responses: Responses) -> Responses:
    """Error entries for a route whose own answer is not JSON (FastAPI would document them in its type)."""
    schema = {"$ref": "#/components/schemas/ErrorResponse"}  # registered by the routes that use the model
    return {
        status: {"description": doc["description"], "content": {"application/json": {"schema": schema}}}
        for status, doc in responses.items()
    }


def _table_responses(formats: tuple[Format, ...], charts: str) -> Responses:
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
