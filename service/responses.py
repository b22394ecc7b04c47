"""Shared response pieces: the snapshot reference every answer carries, and OpenAPI documentation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.service.charts import ChartBuilder
from hubcensus.service.errors import ERROR_RESPONSES, TIMEOUT_RESPONSE, error_doc
from hubcensus.service.params import Analysis
from hubcensus.service.render import CHART_FORMATS, FORMATS, MEDIA_TYPES, Answer, Format, Page, PageRequest, respond


def snapshot_ref(meta: SnapshotMeta) -> dict[str, Any]:
    """Which snapshot answered, and under which classifier: every answer states both, so it can be reproduced."""
    return {"id": meta.id, "taken_at": meta.taken_at, "classifier_version": meta.classifier_version}


def names_snapshot(request: Request) -> bool:
    """Whether the request names a snapshot by id: its answer can then never change."""
    return request.query_params.get("snapshot", "latest") != "latest"


def analysis_envelope(analysis: Analysis, query: dict[str, Any]) -> dict[str, Any]:
    """The envelope keys that state how an answer was computed: method, universe, weight, full query."""
    return {
        "method": analysis.method,
        "frameworks": analysis.frameworks,
        "weight": analysis.weight,
        "query": query,
    }


def respond_for_snapshot(
    request: Request,
    meta: SnapshotMeta,
    *,
    params: dict[str, Any],
    page_request: PageRequest,
    compute: Callable[[Page], Answer],
    chart: ChartBuilder | None = None,
) -> Response:
    """`respond` for a route over one snapshot: immutable when named by id, paging pinned to it.

    The classifier version is part of the answer's key: reclassifying a snapshot changes its answers (and
    ETags) under the same id.
    """
    return respond(
        request,
        snapshot_key=meta.id,
        params={**params, "_classifier": meta.classifier_version},
        page_request=page_request,
        compute=compute,
        immutable=names_snapshot(request),
        pin={"snapshot": meta.id},
        chart=chart,
    )


def respond_for_pair(
    request: Request,
    meta_a: SnapshotMeta,
    meta_b: SnapshotMeta,
    *,
    params: dict[str, Any],
    page_request: PageRequest,
    compute: Callable[[Page], Answer],
) -> Response:
    """`respond` for a route over two snapshots (a diff): immutable when both path ids name a snapshot."""
    named = "latest" not in (request.path_params.get("a"), request.path_params.get("b"))
    return respond(
        request,
        snapshot_key=f"{meta_a.id}..{meta_b.id}",
        params={**params, "_classifier": [meta_a.classifier_version, meta_b.classifier_version]},
        page_request=page_request,
        compute=compute,
        immutable=named,
    )


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
