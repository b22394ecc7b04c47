"""The dashboard at `/`: server-rendered HTML, charts as inline SVG (they show with JavaScript off).

A browser that asks for `/` gets its errors as an HTML page too (unknown snapshot, empty store, a bad
parameter; service/html.py); any other client gets the JSON error envelope, as everywhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from hubcensus.queries.buckets import flatten
from hubcensus.queries.datadir import SnapshotMeta
from hubcensus.queries.frameworks import FRAMEWORKS, Framework, Method
from hubcensus.queries.history import Break, breaks, framework_history
from hubcensus.queries.share import GroupBy, ShareResult, framework_share, framework_trend
from hubcensus.queries.store import SnapshotStore
from hubcensus.service.answers import AnswerCache, snapshot_ref
from hubcensus.service.charts.common import CHART_WIDTH, WIDE_CHART_WIDTH, bucket_color, buckets, group_label, to_svg
from hubcensus.service.charts.share import MAX_BARS, share_spec
from hubcensus.service.charts.timelines import MIN_TREND_SAMPLE, history_spec, trend_spec
from hubcensus.service.deps import StoreDep, lookup_snapshot
from hubcensus.service.formats import dumps_json
from hubcensus.service.html import HtmlErrorRoute, templates
from hubcensus.service.openapi import ERROR_RESPONSES, TIMEOUT_RESPONSE, json_errors
from hubcensus.service.routes.frameworks import select_source

METHOD_LABELS: list[tuple[Method, str]] = [
    ("inferred", "inferred (tags, files, library, config)"),
    ("loadable", "loadable (inferred + transformers 4.x)"),
    ("tags", "tags (the Hub's weight tags)"),
    ("files", "files (weight file names)"),
]
View = Literal["percent", "count"]
VIEW_LABELS: list[tuple[View, str]] = [
    ("percent", "percent of models with a framework"),
    ("count", "model counts, none included"),
]
TABLE_FORMATS = ["json", "csv", "parquet"]
MAX_SOURCES = 50  # sources offered in the form's list
CHART_FORMATS = ["svg", "png", "vl"]

router = APIRouter(tags=["dashboard"], route_class=HtmlErrorRoute)


@dataclass(frozen=True)
class Choices:
    """What the reader chose: a snapshot, a method, a grouping, the frameworks compared, a view, and the source
    the history keeps to (None: every snapshot)."""

    meta: SnapshotMeta
    method: Method
    by: GroupBy
    frameworks: list[Framework]
    view: View
    source: str | None = None


@router.get("/", response_class=HTMLResponse, responses=json_errors({**ERROR_RESPONSES, **TIMEOUT_RESPONSE}))
def read_dashboard(
    request: Request,
    store: StoreDep,
    snapshot: Annotated[str, Query(description="A snapshot id, or `latest`.", max_length=100)] = "latest",
    method: Annotated[Method, Query()] = "inferred",
    by: Annotated[GroupBy, Query()] = "pipeline_tag",
    fw: Annotated[list[Framework] | None, Query(description="Frameworks compared (repeatable).")] = None,
    view: Annotated[
        View, Query(description="`percent` of the models with a framework (default), or model `count`s.")
    ] = "percent",
    source: Annotated[
        str | None,
        Query(
            max_length=500,
            description="The history keeps to the snapshots of this source (or of a repository covering it).",
        ),
    ] = None,
) -> HTMLResponse:
    """The dashboard: share by task, trend, history and a table, each with links to its feeds."""
    meta = lookup_snapshot(store, snapshot)
    source = source or None  # the form's empty field: every source
    choices = Choices(meta, method, by, [f for f in FRAMEWORKS if f in (fw or FRAMEWORKS)], view, source)
    snapshots = store.snapshots()
    select_source(snapshots, source)  # an unknown source is an error before anything is drawn
    # The page depends only on immutable snapshots and these choices: render it once, serve it from cache.
    listing = [(m.id, m.classifier_version) for m in snapshots]
    material = [meta.id, method, by, choices.frameworks, view, source, listing]
    key = "dashboard:" + hashlib.sha256(dumps_json(material)).hexdigest()
    cache: AnswerCache = request.app.state.answer_cache
    cached = cache.get(key)
    if cached is not None:
        return HTMLResponse(cached[0].decode())
    html = _page(store, snapshots, choices)
    cache.put(key, html.encode(), {})
    return HTMLResponse(html)


def _page(store: SnapshotStore, snapshots: Sequence[SnapshotMeta], c: Choices) -> str:
    """The whole page: the charts, the table of the largest groups, and the links to every feed."""
    with store.cursor(c.meta.id) as cursor:
        share = framework_share(cursor, by=c.by, method=c.method, frameworks=c.frameworks)
        trend = framework_trend(cursor, interval="month", method=c.method, frameworks=c.frameworks)
    has_dates = any(p != "unknown" for p in trend.rows.column("period").to_pylist())
    history = select_source(list(snapshots), c.source)
    not_comparable = breaks(history)
    # The chart panels, two to a row; a last one alone takes the whole row (and is drawn wide), so no row is
    # ever half empty: a snapshot without creation dates has no trend, a store of one snapshot no history.
    panels = ["share", *(["trend"] if has_dates else []), *(["history"] if len(history) >= 2 else [])]
    wide = panels[-1] if len(panels) % 2 else None
    widths = {panel: WIDE_CHART_WIDTH if panel == wide else CHART_WIDTH for panel in panels}
    svgs = _charts(store, history, c, share, trend, not_comparable, widths)
    return templates.get_template("dashboard.html").render(
        snapshot=c.meta,
        snapshots=snapshots,
        history=history,
        source=c.source or "",
        # The sources to pick from, as recorded (a backfill records one per file: the form takes a prefix too).
        sources=sorted({m.source for m in snapshots})[:MAX_SOURCES],
        methods=METHOD_LABELS,
        method=c.method,
        by=c.by,
        views=VIEW_LABELS,
        view=c.view,
        all_frameworks=FRAMEWORKS,
        frameworks=c.frameworks,
        buckets=buckets(c.frameworks, with_none=False),
        bucket_color=bucket_color,
        svgs=svgs,
        panels=panels,
        wide=wide,
        has_dates=has_dates,
        not_comparable=not_comparable,
        min_sample=MIN_TREND_SAMPLE,
        **_feed_links(c),
        total=flatten(share.total.model_dump()),
        table=share.rows.slice(0, MAX_BARS).to_pylist(),
        groups=share.rows.num_rows,
        group_label=lambda g: group_label(g, c.by),
        pct=_pct,
        share_of=_share_of,
    )


def _charts(
    store: SnapshotStore,
    snapshots: Sequence[SnapshotMeta],
    c: Choices,
    share: ShareResult,
    trend: ShareResult,
    not_comparable: list[Break],
    widths: dict[str, int],
) -> dict[str, str]:
    """The chart of each panel (a key of `widths`) as SVG, drawn at the width the page shows it."""
    envelope = {"snapshot": snapshot_ref(c.meta), "method": c.method, "frameworks": c.frameworks, "weight": "models"}
    svgs = {"share": to_svg(share_spec(share.rows, {**envelope, "by": c.by}, scale=c.view, width=widths["share"]))}
    if "trend" in widths:
        svgs["trend"] = to_svg(trend_spec(trend.rows, {**envelope, "interval": "month"}, width=widths["trend"]))
    if "history" in widths:
        history = framework_history(store, snapshots, method=c.method, frameworks=c.frameworks)
        refs = [{**snapshot_ref(m), "kind": m.kind, "source": m.source, "models": m.models} for m in snapshots]
        history_envelope = {**envelope, "snapshots": refs, "not_comparable": [b.as_json() for b in not_comparable]}
        svgs["history"] = to_svg(history_spec(history, history_envelope, width=widths["history"]))
    return svgs


def _feed_links(c: Choices) -> dict[str, list[tuple[str, str]]]:
    """Beside each chart, its data and chart feeds, with the page's choices (the share chart also its view)."""
    params: dict[str, Any] = {"snapshot": c.meta.id, "method": c.method, "frameworks": ",".join(c.frameworks)}
    share_params = {**params, "by": c.by}
    scale = {"scale": "count"} if c.view == "count" else {}
    history_params = {k: v for k, v in params.items() if k != "snapshot"} | ({"source": c.source} if c.source else {})
    return {
        "share_links": _links("/v1/frameworks/share", share_params, TABLE_FORMATS)
        + _links("/v1/frameworks/share", {**share_params, **scale}, CHART_FORMATS),
        "trend_links": _links("/v1/frameworks/trend", params, [*TABLE_FORMATS, *CHART_FORMATS]),
        "history_links": _links("/v1/frameworks/history", history_params, [*TABLE_FORMATS, *CHART_FORMATS]),
    }


def _links(path: str, params: dict[str, Any], formats: list[str]) -> list[tuple[str, str]]:
    names = {"json": "JSON", "csv": "CSV", "parquet": "Parquet", "svg": "SVG", "png": "PNG", "vl": "Vega-Lite"}
    return [(names[f], f"{path}?{urlencode({**params, '_format': f})}") for f in formats]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _share_of(part: int, whole: int) -> str:
    return "n/a" if not whole else f"{100 * part / whole:.1f}"
