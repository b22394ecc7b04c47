"""Charts of the framework answers: Vega-Lite specs with the data inline, rendered to SVG/PNG offline.

Share: stacked bars of the buckets (each framework only, shared, none) per group. Trend and history: one
line per bucket over time, in percent of the models with a framework. Every title states the snapshot,
the method and the denominator, so a chart pasted into a report is still reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import vl_convert

from hubcensus.queries.frameworks import FRAMEWORKS

ChartBuilder = Callable[[pa.Table, dict[str, Any]], dict[str, Any]]

MAX_BARS = 25
# Fixed colours per bucket, so every chart (and the dashboard's legend) reads the same way.
BUCKET_COLORS = {
    "pytorch only": "#ee4c2c",
    "tensorflow only": "#ff9f00",
    "jax only": "#5e97f6",
    "shared": "#8e6bbf",
    "none": "#c7c7c7",
}
_FONT = {"font": "sans-serif"}


def _buckets(frameworks: list[str], with_none: bool) -> list[str]:
    names = [f"{fw} only" for fw in FRAMEWORKS if fw in frameworks] + ["shared"]
    return [*names, "none"] if with_none else names


def _color(buckets: list[str]) -> dict[str, Any]:
    return {
        "field": "bucket",
        "type": "nominal",
        "title": None,
        "sort": buckets,
        "scale": {"domain": buckets, "range": [BUCKET_COLORS[b] for b in buckets]},
        "legend": {"orient": "top"},
    }


def _what(envelope: dict[str, Any]) -> str:
    weight = envelope.get("weight", "models")
    unit = {"models": "models", "downloads": "downloads (30-day)", "likes": "likes"}[weight]
    return f"method {envelope['method']}, {unit}"


def _snapshot_label(envelope: dict[str, Any]) -> str:
    snap = envelope["snapshot"]
    taken = snap["taken_at"]
    day = taken.date().isoformat() if hasattr(taken, "date") else str(taken)[:10]
    return f"snapshot {snap['id']} ({day})"


def share_spec(rows: pa.Table, envelope: dict[str, Any]) -> dict[str, Any]:
    """Stacked bars: per group, how many models are in each bucket (largest groups first)."""
    frameworks = list(envelope["frameworks"])
    buckets = _buckets(frameworks, with_none=True)
    data = []
    for row in rows.slice(0, MAX_BARS).to_pylist():
        group = row["group"] if row["group"] is not None else "(none)"
        for fw in frameworks:
            data.append(
                {"group": group, "bucket": f"{fw} only", "value": row[f"exclusive.{fw}"], "pct": row[f"pct.{fw}_only"]}
            )
        data.append({"group": group, "bucket": "shared", "value": row["shared"], "pct": row["pct.shared"]})
        data.append({"group": group, "bucket": "none", "value": row["none"], "pct": None})
    by = envelope.get("by", "pipeline_tag")
    order = [r["group"] if r["group"] is not None else "(none)" for r in rows.slice(0, MAX_BARS).to_pylist()]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {
            "text": f"Framework share by {'task' if by == 'pipeline_tag' else 'library'}",
            "subtitle": [
                f"{_snapshot_label(envelope)} · {_what(envelope)}",
                f"bars: all models per group ({min(rows.num_rows, MAX_BARS)} largest); "
                "pct in tooltips: percent of models with a framework",
            ],
        },
        "width": 520,
        "height": {"step": 16},
        "config": _FONT,
        "data": {"values": data},
        "mark": {"type": "bar"},
        "encoding": {
            "y": {"field": "group", "type": "nominal", "sort": order, "title": None},
            "x": {"field": "value", "type": "quantitative", "stack": True, "title": _what(envelope).split(", ")[1]},
            "color": _color(buckets),
            "order": {"field": "bucket_order", "type": "quantitative"},
            "tooltip": [
                {"field": "group", "type": "nominal"},
                {"field": "bucket", "type": "nominal"},
                {"field": "value", "type": "quantitative", "format": ","},
                {"field": "pct", "type": "quantitative", "title": "% of with_framework"},
            ],
        },
        "transform": [{"calculate": f"indexof({buckets!r}, datum.bucket)", "as": "bucket_order"}],
    }


def _line_spec(
    data: list[dict[str, Any]], x: dict[str, Any], title: str, subtitle: list[str], frameworks: list[str]
) -> dict[str, Any]:
    buckets = _buckets(frameworks, with_none=False)
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {"text": title, "subtitle": subtitle},
        "width": 520,
        "height": 260,
        "config": _FONT,
        "data": {"values": data},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": x,
            "y": {"field": "pct", "type": "quantitative", "title": "% of models with a framework"},
            "color": _color(buckets),
            "tooltip": [
                {"field": x["field"], "type": x["type"]},
                {"field": "bucket", "type": "nominal"},
                {"field": "pct", "type": "quantitative"},
                {"field": "with_framework", "type": "quantitative", "format": ","},
            ],
        },
    }


def _pct_points(row: dict[str, Any], frameworks: list[str], key: str, value: Any) -> list[dict[str, Any]]:
    points = [
        {key: value, "bucket": f"{fw} only", "pct": row[f"pct.{fw}_only"], "with_framework": row["with_framework"]}
        for fw in frameworks
    ]
    points.append({key: value, "bucket": "shared", "pct": row["pct.shared"], "with_framework": row["with_framework"]})
    return [p for p in points if p["pct"] is not None]


def trend_spec(rows: pa.Table, envelope: dict[str, Any]) -> dict[str, Any]:
    """One line per bucket over creation periods (the `unknown` period is left out, and counted)."""
    frameworks = list(envelope["frameworks"])
    data: list[dict[str, Any]] = []
    unknown = 0
    for row in rows.to_pylist():
        if row["period"] == "unknown":
            unknown = row["models"]
            continue
        data += _pct_points(row, frameworks, "period", row["period"])
    interval = envelope.get("interval", "month")
    return _line_spec(
        data,
        {"field": "period", "type": "ordinal", "title": f"created ({interval})"},
        "Framework share of new models, by creation period",
        [
            f"{_snapshot_label(envelope)} · {_what(envelope)}",
            f"denominator: models created in the period with a framework; "
            f"{unknown:,} with unknown creation date left out",
        ],
        frameworks,
    )


def history_spec(rows: pa.Table, envelope: dict[str, Any]) -> dict[str, Any]:
    """One line per bucket across snapshots (the totals: the route offers no chart with `by`)."""
    frameworks = list(envelope["frameworks"])
    data: list[dict[str, Any]] = []
    for row in rows.to_pylist():
        taken = row["taken_at"]
        data += _pct_points(row, frameworks, "taken_at", taken.isoformat() if hasattr(taken, "isoformat") else taken)
    n = len(envelope.get("snapshots", []))
    return _line_spec(
        data,
        {"field": "taken_at", "type": "temporal", "title": "snapshot taken"},
        "Framework share across snapshots",
        [
            f"{n} snapshot{'s' if n != 1 else ''} · {_what(envelope)}",
            "denominator: models with a framework in each snapshot",
        ],
        frameworks,
    )


def to_svg(spec: dict[str, Any]) -> str:
    """Render a spec to SVG, offline (vl-convert bundles Vega; no CDN, no network)."""
    svg: str = vl_convert.vegalite_to_svg(spec)
    return svg


def to_png(spec: dict[str, Any]) -> bytes:
    """Render a spec to PNG at 2x, offline."""
    png: bytes = vl_convert.vegalite_to_png(spec, scale=2)
    return png
