"""Published snapshots, and the difference between two of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.history import Change, diff_counts, diff_models, share_deltas
from hubcensus.queries.share import GroupBy, framework_share
from hubcensus.service.answers import Answer, analysis_envelope, respond_for_pair, snapshot_ref
from hubcensus.service.deps import StoreDep, lookup_snapshot
from hubcensus.service.openapi import ERROR_RESPONSES, TABLE_RESPONSES
from hubcensus.service.paging import Page, paged
from hubcensus.service.params import AnalysisDep, PageDep, normalized

router = APIRouter(prefix="/v1/snapshots", tags=["snapshots"], responses=ERROR_RESPONSES)

SnapshotPath = Annotated[str, Path(description="A snapshot id, or `latest`.", examples=["latest"])]


class SnapshotList(BaseModel):
    """All published snapshots, newest first."""

    snapshots: list[SnapshotMeta]


@router.get("", response_model=SnapshotList)
def read_snapshots(store: StoreDep) -> SnapshotList:
    """List every published snapshot, newest `taken_at` first, with what each recorded."""
    return SnapshotList(snapshots=store.snapshots())


@router.get("/{snapshot}", response_model=SnapshotMeta)
def read_snapshot(store: StoreDep, snapshot: SnapshotPath) -> SnapshotMeta:
    """One snapshot by id (or `latest`)."""
    return lookup_snapshot(store, snapshot)


@router.get("/{a}/diff/{b}", responses=TABLE_RESPONSES)
def read_snapshot_diff(
    request: Request,
    store: StoreDep,
    analysis: AnalysisDep,
    page: PageDep,
    a: SnapshotPath,
    b: SnapshotPath,
    by: Annotated[GroupBy, Query(description="The grouping of the share deltas.")] = "pipeline_tag",
) -> Response:
    """From snapshot `a` to `b`: models added, removed and (per method) with a changed framework set;
    rows are the share deltas per group (every bucket column of b minus a; `pct` in points)."""
    meta_a, meta_b = lookup_snapshot(store, a), lookup_snapshot(store, b)
    query = normalized(analysis, by=by)

    def compute(p: Page) -> Answer:
        counts = diff_counts(store, meta_a.id, meta_b.id, analysis.frameworks)
        shares = []
        for meta in (meta_a, meta_b):
            with store.cursor(meta.id) as con:
                shares.append(
                    framework_share(
                        con, by=by, method=analysis.method, frameworks=analysis.frameworks, weight=analysis.weight
                    )
                )
        rows, more = paged(share_deltas(shares[0].rows, shares[1].rows), p)
        envelope = {
            "a": snapshot_ref(meta_a),
            "b": snapshot_ref(meta_b),
            **analysis_envelope(analysis, query),
            "by": by,
            **counts,
        }
        return Answer(rows, envelope, more)

    return respond_for_pair(request, meta_a, meta_b, params=query, page_request=page, compute=compute)


@router.get("/{a}/diff/{b}/models", responses=TABLE_RESPONSES)
def read_snapshot_diff_models(
    request: Request,
    store: StoreDep,
    analysis: AnalysisDep,
    page: PageDep,
    a: SnapshotPath,
    b: SnapshotPath,
    change: Annotated[Change, Query(description="`added`, `removed`, or `changed` (framework set under `method`).")],
) -> Response:
    """The models behind a diff count, by id, with their framework sets before and after."""
    meta_a, meta_b = lookup_snapshot(store, a), lookup_snapshot(store, b)
    query = normalized(analysis, change=change)

    def compute(p: Page) -> Answer:
        rows = diff_models(
            store,
            meta_a.id,
            meta_b.id,
            change=change,
            method=analysis.method,
            frameworks=analysis.frameworks,
            limit=p.size + 1,
            offset=p.offset,
        )
        envelope = {
            "a": snapshot_ref(meta_a),
            "b": snapshot_ref(meta_b),
            "method": analysis.method,
            "frameworks": analysis.frameworks,
            "change": change,
            "query": query,
        }
        return Answer(rows.slice(0, p.size), envelope, rows.num_rows > p.size)

    return respond_for_pair(request, meta_a, meta_b, params=query, page_request=page, compute=compute)
