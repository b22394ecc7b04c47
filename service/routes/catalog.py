"""Dimensions (tasks, libraries, authors) and models."""

from __future__ import annotations

from typing import Annotated

import duckdb
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from hubcensus.queries.catalog import Dimension, ModelSort, bucket_names, dimension_values, list_models, model_detail
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.filters import ModelFilter
from hubcensus.service.answers import Answer, respond_for_snapshot, snapshot_ref
from hubcensus.service.deps import CursorDep, SnapshotDep
from hubcensus.service.errors import InvalidParameterError, ModelNotFoundError
from hubcensus.service.formats import dumps_json
from hubcensus.service.openapi import ERROR_RESPONSES, TABLE_RESPONSES, TIMEOUT_RESPONSE
from hubcensus.service.paging import Page, PageRequest
from hubcensus.service.params import AnalysisDep, BaseFilterDep, FilterDep, PageDep, normalized

router = APIRouter(prefix="/v1", tags=["catalog"])


def _dimension(
    request: Request,
    meta: SnapshotMeta,
    cursor: duckdb.DuckDBPyConnection,
    dimension: Dimension,
    flt: ModelFilter,
    page: PageRequest,
    top: int | None,
) -> Response:
    # For authors `top` caps the authors listed (their filter has no model `top`), so one key serves both.
    query = normalized(flt, dimension=dimension) | ({"top": top} if top is not None else {})

    def compute(p: Page) -> Answer:
        # `top` (values) caps the list; pages never run past it.
        limit = p.size if top is None else max(0, min(p.size, top - p.offset))
        rows = dimension_values(cursor, dimension, filters=flt, limit=limit + 1, offset=p.offset)
        more = rows.num_rows > limit and (top is None or p.offset + limit < top)
        return Answer(
            rows.slice(0, limit),
            {"snapshot": snapshot_ref(meta), "dimension": dimension, "query": query},
            more,
        )

    return respond_for_snapshot(request, meta, params=query, page_request=page, compute=compute)


@router.get("/tasks", responses=TABLE_RESPONSES)
def read_tasks(request: Request, meta: SnapshotDep, cursor: CursorDep, flt: FilterDep, page: PageDep) -> Response:
    """Every `pipeline_tag` with its model count (and summed downloads), most models first."""
    return _dimension(request, meta, cursor, "pipeline_tag", flt, page, None)


@router.get("/libraries", responses=TABLE_RESPONSES)
def read_libraries(request: Request, meta: SnapshotDep, cursor: CursorDep, flt: FilterDep, page: PageDep) -> Response:
    """Every `library_name` with its model count (and summed downloads), most models first."""
    return _dimension(request, meta, cursor, "library_name", flt, page, None)


@router.get("/authors", responses=TABLE_RESPONSES)
def read_authors(
    request: Request,
    meta: SnapshotDep,
    cursor: CursorDep,
    flt: BaseFilterDep,
    page: PageDep,
    top: Annotated[int | None, Query(ge=1, le=100_000, description="Only the N authors with most models.")] = None,
) -> Response:
    """Authors with their model counts, most models first; `top=N` keeps the first N authors."""
    return _dimension(request, meta, cursor, "author", flt, page, top)


@router.get("/models", responses=TABLE_RESPONSES)
def read_models(
    request: Request,
    meta: SnapshotDep,
    cursor: CursorDep,
    analysis: AnalysisDep,
    flt: FilterDep,
    page: PageDep,
    bucket: Annotated[
        str | None,
        Query(
            description="Only models in this framework bucket under `method` and `frameworks`: "
            + ", ".join(bucket_names()),
            # Which buckets exist depends on `frameworks` (jax_only needs jax): the route checks that.
            json_schema_extra={"enum": bucket_names()},
        ),
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Only models whose id contains this text.")] = None,
    sort: Annotated[ModelSort, Query(alias="_sort", description="Order; `-` for descending.")] = "-downloads",
) -> Response:
    """Models matching the filters with their frameworks under `method`, paged with a cursor."""
    if bucket is not None and bucket not in bucket_names(analysis.frameworks):
        raise InvalidParameterError(f"bucket: expected one of {', '.join(bucket_names(analysis.frameworks))}.")
    query = normalized(analysis, flt, bucket=bucket, q=q, sort=sort)

    def compute(p: Page) -> Answer:
        rows = list_models(
            cursor,
            method=analysis.method,
            frameworks=analysis.frameworks,
            filters=flt,
            bucket=bucket,
            search=q,
            sort=sort,
            limit=p.size + 1,
            offset=p.offset,
        )
        envelope = {
            "snapshot": snapshot_ref(meta),
            "method": analysis.method,
            "frameworks": analysis.frameworks,
            "query": query,
        }
        return Answer(rows.slice(0, p.size), envelope, rows.num_rows > p.size)

    return respond_for_snapshot(request, meta, params=query, page_request=page, compute=compute)


@router.get("/models/{model_id:path}", responses={**ERROR_RESPONSES, **TIMEOUT_RESPONSE})
def read_model(
    meta: SnapshotDep,
    cursor: CursorDep,
    model_id: Annotated[
        str, Path(description="The model id, e.g. `google-bert/bert-base-uncased`.", examples=["bert-base-uncased"])
    ],
) -> Response:
    """One model: its metadata, and its frameworks under each method with the evidence that decided."""
    row = model_detail(cursor, model_id)
    if row is None:
        raise ModelNotFoundError(model_id, meta.id)
    return Response(dumps_json({"snapshot": snapshot_ref(meta), "model": row}), media_type="application/json")
