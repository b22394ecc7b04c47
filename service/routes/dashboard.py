"""The dashboard at `/`: server-rendered HTML, charts as inline SVG (they show with JavaScript off).

A browser that asks for `/` gets its errors as an HTML page too (unknown snapshot, empty store, a bad
parameter); any other client gets the JSON error envelope, as everywhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from hubcensus.queries.buckets import flatten
from hubcensus.queries.frameworks import FRAMEWORKS, Framework, Method
from hubcensus.queries.history import breaks, framework_history
from hubcensus.queries.share import GroupBy, framework_share, framework_trend
from hubcensus.service.answers import AnswerCache, snapshot_ref
from hubcensus.service.charts.common import CHART_WIDTH, WIDE_CHART_WIDTH, bucket_color, buckets, group_label, to_svg
from hubcensus.service.charts.share import MAX_BARS, share_spec
from hubcensus.service.charts.timelines import MIN_TREND_SAMPLE, history_spec, trend_spec
from hubcensus.service.deps import StoreDep, lookup_snapshot
from hubcensus.service.errors import ApiError, InvalidParameterError
from hubcensus.service.formats import dumps_json
from hubcensus.service.openapi import ERROR_RESPONSES, TIMEOUT_RESPONSE, json_errors

_templates = Environment(loader=PackageLoader("hubcensus.service", "templates"), autoescape=select_autoescape(["html"]))
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


def prefers_html(request: Request) -> bool:
    """Whether the client ranks HTML above JSON in its Accept header (a browser does; curl and API clients
    send `*/*` or `application/json`)."""
    best: dict[str, float] = {"html": 0.0, "json": 0.0}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        kind = {"text/html": "html", "application/xhtml+xml": "html", "application/json": "json"}.get(media)
        if kind is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best[kind] = max(best[kind], q)
    return best["html"] > best["json"]


def error_page(error: ApiError) -> HTMLResponse:
    """The error as a page for people: what went wrong, and a way back."""
    html = _templates.get_template("error.html").render(status=error.status, code=error.code, message=error.message)
    return HTMLResponse(html, status_code=error.status)


class HtmlErrorRoute(APIRoute):
    """A route whose errors a browser gets as an HTML page; other clients still get the JSON envelope.

    The wrapper sits around the whole request handler, so it also sees the errors of the dependencies
    (unknown parameters, validation) that the app's handlers would turn into JSON.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiError, RequestValidationError) as exc:
                if not prefers_html(request):
                    raise
                error = InvalidParameterError.of(exc) if isinstance(exc, RequestValidationError) else exc
                return error_page(error)

        return handle


router = APIRouter(tags=["dashboard"], route_class=HtmlErrorRoute)


def _links(path: str, params: dict[str, Any], formats: list[str]) -> list[tuple[str, str]]:
    names = {"json": "JSON", "csv": "CSV", "parquet": "Parquet", "svg": "SVG", "png": "PNG", "vl": "Vega-Lite"}
    return [(names[f], f"{path}?{urlencode({**params, '_format': f})}") for f in formats]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _share_of(part: int, whole: int) -> str:
    return "n/a" if not whole else f"{100 * part / whole:.1f}"


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
) -> HTMLResponse:
    """The dashboard: share by task, trend, history and a table, each with links to its feeds."""
    meta = lookup_snapshot(store, snapshot)
    frameworks = [f for f in FRAMEWORKS if f in (fw or FRAMEWORKS)]
    snapshots = store.snapshots()
    # The page depends only on immutable snapshots and these choices: render it once, serve it from cache.
    choices = [meta.id, method, by, frameworks, view, [(m.id, m.classifier_version) for m in snapshots]]
    key = "dashboard:" + hashlib.sha256(dumps_json(choices)).hexdigest()
    cache: AnswerCache = request.app.state.answer_cache
    cached = cache.get(key)
    if cached is not None:
        return HTMLResponse(cached[0].decode())

    params: dict[str, Any] = {"snapshot": meta.id, "method": method, "frameworks": ",".join(frameworks)}
    with store.cursor(meta.id) as cursor:
        share = framework_share(cursor, by=by, method=method, frameworks=frameworks)
        trend = framework_trend(cursor, interval="month", method=method, frameworks=frameworks)
    envelope = {"snapshot": snapshot_ref(meta), "method": method, "frameworks": frameworks, "weight": "models"}
    has_dates = any(p != "unknown" for p in trend.rows.column("period").to_pylist())
    not_comparable = breaks(snapshots)
    # The chart panels, two to a row; a last one alone takes the whole row (and is drawn wide), so no row is
    # ever half empty: a snapshot without creation dates has no trend, a store of one snapshot no history.
    panels = ["share", *(["trend"] if has_dates else []), *(["history"] if len(snapshots) >= 2 else [])]
    wide = panels[-1] if len(panels) % 2 else None

    def width(panel: str) -> int:
        return WIDE_CHART_WIDTH if panel == wide else CHART_WIDTH

    svgs = {"share": to_svg(share_spec(share.rows, {**envelope, "by": by}, scale=view, width=width("share")))}
    if "trend" in panels:
        svgs["trend"] = to_svg(trend_spec(trend.rows, {**envelope, "interval": "month"}, width=width("trend")))
    if "history" in panels:
        history = framework_history(store, snapshots, method=method, frameworks=frameworks)
        refs = [{**snapshot_ref(m), "kind": m.kind, "source": m.source, "models": m.models} for m in snapshots]
        history_envelope = {**envelope, "snapshots": refs, "not_comparable": [b.as_json() for b in not_comparable]}
        svgs["history"] = to_svg(history_spec(history, history_envelope, width=width("history")))
    history_params = {k: v for k, v in params.items() if k != "snapshot"}
    chart_formats = ["svg", "png", "vl"]
    share_params = {**params, "by": by}
    scale = {"scale": "count"} if view == "count" else {}
    html = _templates.get_template("dashboard.html").render(
        snapshot=meta,
        snapshots=snapshots,
        methods=METHOD_LABELS,
        method=method,
        by=by,
        views=VIEW_LABELS,
        view=view,
        all_frameworks=FRAMEWORKS,
        frameworks=frameworks,
        buckets=buckets(frameworks, with_none=False),
        bucket_color=bucket_color,
        svgs=svgs,
        panels=panels,
        wide=wide,
        has_dates=has_dates,
        not_comparable=not_comparable,
        min_sample=MIN_TREND_SAMPLE,
        share_links=_links("/v1/frameworks/share", share_params, ["json", "csv", "parquet"])
        + _links("/v1/frameworks/share", {**share_params, **scale}, chart_formats),
        trend_links=_links("/v1/frameworks/trend", params, ["json", "csv", "parquet", *chart_formats]),
        history_links=_links("/v1/frameworks/history", history_params, ["json", "csv", "parquet", *chart_formats]),
        total=flatten(share.total),
        table=share.rows.slice(0, MAX_BARS).to_pylist(),
        groups=share.rows.num_rows,
        group_label=lambda g: group_label(g, by),
        pct=_pct,
        share_of=_share_of,
    )
    cache.put(key, html.encode(), {})
    return HTMLResponse(html)
