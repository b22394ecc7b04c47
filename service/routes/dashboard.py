"""The dashboard at `/`: server-rendered HTML, charts as inline SVG (they show with JavaScript off)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from hubcensus.queries.frameworks import FRAMEWORKS, Framework, Method
from hubcensus.queries.history import framework_history
from hubcensus.queries.share import GroupBy, framework_share, framework_trend
from hubcensus.service.charts import history_spec, share_spec, to_svg, trend_spec
from hubcensus.service.deps import StoreDep, lookup_snapshot
from hubcensus.service.errors import ERROR_RESPONSES, TIMEOUT_RESPONSE, json_errors
from hubcensus.service.render import AnswerCache, dumps_json
from hubcensus.service.responses import snapshot_ref

router = APIRouter(tags=["dashboard"])

_templates = Environment(loader=PackageLoader("hubcensus.service", "templates"), autoescape=select_autoescape(["html"]))
METHOD_LABELS: list[tuple[Method, str]] = [
    ("inferred", "inferred (tags + files + library)"),
    ("tags", "tags (the Hub's weight tags)"),
    ("files", "files (weight file names)"),
]
TABLE_ROWS = 30


def _links(path: str, params: dict[str, Any], formats: list[str]) -> list[tuple[str, str]]:
    names = {"json": "JSON", "csv": "CSV", "parquet": "Parquet", "svg": "SVG", "png": "PNG", "vl": "Vega-Lite"}
    return [(names[f], f"{path}?{urlencode({**params, '_format': f})}") for f in formats]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


@router.get("/", response_class=HTMLResponse, responses=json_errors({**ERROR_RESPONSES, **TIMEOUT_RESPONSE}))
def read_dashboard(
    request: Request,
    store: StoreDep,
    snapshot: Annotated[str, Query(description="A snapshot id, or `latest`.")] = "latest",
    method: Annotated[Method, Query()] = "inferred",
    by: Annotated[GroupBy, Query()] = "pipeline_tag",
    fw: Annotated[list[Framework] | None, Query(description="Frameworks compared (repeatable).")] = None,
) -> HTMLResponse:
    """The dashboard: share by task, trend, history and a table, each with links to its feeds."""
    meta = lookup_snapshot(store, snapshot)
    frameworks = [f for f in FRAMEWORKS if f in (fw or FRAMEWORKS)]
    snapshots = store.snapshots()
    # The page depends only on immutable snapshots and these choices: render it once, serve it from cache.
    key = (
        "dashboard:"
        + hashlib.sha256(dumps_json([meta.id, method, by, frameworks, [m.id for m in snapshots]])).hexdigest()
    )
    cache: AnswerCache = request.app.state.answer_cache
    cached = cache.get(key)
    if cached is not None:
        return HTMLResponse(cached[0].decode())

    params: dict[str, Any] = {"snapshot": meta.id, "method": method, "frameworks": ",".join(frameworks)}
    with store.cursor(meta.id) as cursor:
        share = framework_share(cursor, by=by, method=method, frameworks=frameworks)
        trend = framework_trend(cursor, interval="month", method=method, frameworks=frameworks)
    envelope = {"snapshot": snapshot_ref(meta), "method": method, "frameworks": frameworks, "weight": "models"}
    share_svg = to_svg(share_spec(share.rows, {**envelope, "by": by}))
    known_periods = [p for p in trend.rows.column("period").to_pylist() if p != "unknown"]
    trend_svg = to_svg(trend_spec(trend.rows, {**envelope, "interval": "month"})) if known_periods else None
    history_svg = None
    if len(snapshots) >= 2:
        history = framework_history(store, snapshots, method=method, frameworks=frameworks)
        history_svg = to_svg(history_spec(history, {**envelope, "snapshots": [snapshot_ref(m) for m in snapshots]}))
    history_params = {k: v for k, v in params.items() if k != "snapshot"}
    html = _templates.get_template("dashboard.html").render(
        snapshot=meta,
        snapshots=snapshots,
        methods=METHOD_LABELS,
        method=method,
        by=by,
        all_frameworks=FRAMEWORKS,
        frameworks=frameworks,
        share_svg=share_svg,
        trend_svg=trend_svg,
        history_svg=history_svg,
        share_links=_links(
            "/v1/frameworks/share", {**params, "by": by}, ["json", "csv", "parquet", "svg", "png", "vl"]
        ),
        trend_links=_links("/v1/frameworks/trend", params, ["json", "csv", "parquet", "svg", "png", "vl"]),
        history_links=_links("/v1/frameworks/history", history_params, ["json", "csv", "parquet", "svg", "png", "vl"]),
        total=share.total,
        table=share.rows.slice(0, TABLE_ROWS).to_pylist(),
        pct=_pct,
    )
    cache.put(key, html.encode(), {})
    return HTMLResponse(html)
