"""Framework share by group, its trend by creation period, and its history across snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from hubcensus.queries.datadir import SnapshotMeta, redact_url
from hubcensus.queries.history import breaks, framework_history, matches_source, resolve_range
from hubcensus.queries.share import GroupBy, Interval, framework_share, framework_trend
from hubcensus.queries.summary import answers_from_summary
from hubcensus.service.answers import Answer, analysis_envelope, respond, respond_for_snapshot, snapshot_ref
from hubcensus.service.charts.share import Scale, share_spec
from hubcensus.service.charts.timelines import history_spec, trend_spec
from hubcensus.service.deps import CursorDep, SnapshotDep, StoreDep
from hubcensus.service.errors import InvalidParameterError
from hubcensus.service.openapi import CHART_RESPONSES
from hubcensus.service.paging import Page, paged
from hubcensus.service.params import Analysis, AnalysisDep, ChartPageDep, FilterDep, IsoDateTime, normalized

router = APIRouter(prefix="/v1/frameworks", tags=["frameworks"], responses=CHART_RESPONSES)


def _envelope(meta: SnapshotMeta, analysis: Analysis, query: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"snapshot": snapshot_ref(meta), **analysis_envelope(analysis, query), **more}


@router.get("/share")
def read_framework_share(
    request: Request,
    meta: SnapshotDep,
    cursor: CursorDep,
    analysis: AnalysisDep,
    flt: FilterDep,
    page: ChartPageDep,
    by: Annotated[GroupBy, Query(description="The grouping column.")] = "pipeline_tag",
    scale: Annotated[
        Scale,
        Query(
            description="Charts only (`_format=svg|png|vl`): `percent` of the models with a framework per bucket, "
            "with the percent of models with none beside; or the `count` of every bucket, none included. "
            "The data formats answer the same data either way."
        ),
    ] = "percent",
) -> Response:
    """Of the models in each group, how many ship each framework only, several, or none.

    `pct` values are percent of `with_framework`. With `weight=downloads` the numbers are sums of the
    Hub's rolling 30-day downloads. `top=30&order=downloads` restricts to the 30 most downloaded models.
    """
    query = normalized(analysis, flt, by=by)

    def compute(p: Page) -> Answer:
        result = framework_share(
            cursor,
            by=by,
            method=analysis.method,
            frameworks=analysis.frameworks,
            weight=analysis.weight,
            filters=flt,
        )
        rows, more = paged(result.rows, p)
        return Answer(rows, _envelope(meta, analysis, query, by=by, total=result.total.model_dump()), more)

    chart = partial(share_spec, scale=scale)
    return respond_for_snapshot(request, meta, params=query, page_request=page, compute=compute, chart=chart)


@router.get("/trend")
def read_framework_trend(
    request: Request,
    meta: SnapshotDep,
    cursor: CursorDep,
    analysis: AnalysisDep,
    flt: FilterDep,
    page: ChartPageDep,
    interval: Annotated[Interval, Query(description="`month` (2024-05), `quarter` (2024-Q2) or `year`.")] = "month",
) -> Response:
    """Framework share of the models created in each period, oldest first.

    Models whose createdAt is missing or the Hub's 2022-03-02 placeholder are in the period `unknown`
    (listed last), never in March 2022.
    """
    query = normalized(analysis, flt, interval=interval)

    def compute(p: Page) -> Answer:
        result = framework_trend(
            cursor,
            interval=interval,
            method=analysis.method,
            frameworks=analysis.frameworks,
            weight=analysis.weight,
            filters=flt,
        )
        rows, more = paged(result.rows, p)
        return Answer(rows, _envelope(meta, analysis, query, interval=interval, total=result.total.model_dump()), more)

    return respond_for_snapshot(request, meta, params=query, page_request=page, compute=compute, chart=trend_spec)


@router.get("/history")
def read_framework_history(
    request: Request,
    store: StoreDep,
    analysis: AnalysisDep,
    flt: FilterDep,
    page: ChartPageDep,
    start: Annotated[
        IsoDateTime | None, Query(alias="from", description="Snapshots taken at or after this time.")
    ] = None,
    end: Annotated[IsoDateTime | None, Query(alias="to", description="Snapshots taken at or before this time.")] = None,
    by: Annotated[
        GroupBy | None, Query(description="Also split by this column (one row per snapshot and group).")
    ] = None,
    source: Annotated[
        str | None,
        Query(
            max_length=500,
            description="Only the snapshots of this source (as each point's `source` says), or of a repository "
            "that covers it: `hf://datasets/ORG/NAME` covers the files read from it. Sources differ in coverage "
            "(a full crawl, a list of trending models): one source keeps the series comparable.",
        ),
    ] = None,
) -> Response:
    """The share at every snapshot in the range, oldest first: one line per bucket column over time.

    Each point (`snapshots`) says its kind, source and model count; `not_comparable` lists the consecutive
    snapshots whose shares are not one series (different coverage, source or rules), with the reasons; the
    chart breaks its lines there. Read from each snapshot's summary (`computed_from: summaries`), except with a
    filter on single models (author, min_downloads, created_after, created_before, top): then from every
    snapshot's model table (`computed_from: models`), which is slower across many snapshots.
    """
    start, end = _utc(start), _utc(end)
    if start and end and start > end:
        raise InvalidParameterError("from must not be after to.")
    snapshots = select_source(store.snapshots(), source)
    snapshots = resolve_range(snapshots, start, end)
    query = normalized(analysis, flt, by=by, source=source, **{"from": start, "to": end})
    snapshot_key = "history:" + ",".join(sorted(m.id for m in snapshots))
    # Each snapshot's classifier is part of the key: reclassifying one changes the history (and its ETag).
    classifiers = {m.id: m.classifier_version for m in snapshots}

    def compute(p: Page) -> Answer:
        table = framework_history(
            store,
            snapshots,
            by=by,
            method=analysis.method,
            frameworks=analysis.frameworks,
            weight=analysis.weight,
            filters=flt,
        )
        rows, more = paged(table, p)
        ordered = sorted(snapshots, key=lambda m: (m.taken_at, m.id))
        envelope = {
            "snapshots": [{**snapshot_ref(m), "kind": m.kind, "source": m.source, "models": m.models} for m in ordered],
            "not_comparable": [b.as_json() for b in breaks(ordered)],
            **analysis_envelope(analysis, query),
            "by": by,
            "source": source,
            "computed_from": "summaries" if answers_from_summary(flt) else "models",
        }
        return Answer(rows, envelope, more)

    # Never immutable: an import with an older --taken-at can add a snapshot inside any range.
    return respond(
        request,
        snapshot_key=snapshot_key,
        params={**query, "_classifier": classifiers},
        page_request=page,
        compute=compute,
        immutable=False,
        chart=history_spec if by is None else None,
    )


def select_source(snapshots: list[SnapshotMeta], source: str | None) -> list[SnapshotMeta]:
    """The snapshots of `source` (all for None); a source no snapshot has is an error naming those there are."""
    if source is None:
        return snapshots
    mine = [m for m in snapshots if matches_source(m.source, source)]
    if not mine:
        known = sorted({m.source for m in snapshots})
        raise InvalidParameterError(
            f"source: no snapshot has the source {redact_url(source)!r}; sources: {', '.join(known) or 'none'}.",
            [{"parameter": "source", "in": "query", "message": "no snapshot has this source", "sources": known}],
        )
    return mine


def _utc(value: datetime | None) -> datetime | None:
    # A bound without a zone is UTC, like every time hubcensus stores.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
