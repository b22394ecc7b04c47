"""What every chart shares: the Vega-Lite config, the colours of frameworks and buckets, the labels titles
and tooltips use, and rendering to SVG/PNG offline.

Every title states the snapshot, the method and the denominator, so a chart pasted into a report is still
reproducible. Every mark carries its numbers as an SVG `<title>`: a browser shows it on hover, also in the
inline SVG of the dashboard, which has no script.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import vl_convert

from hubcensus.queries.frameworks import FRAMEWORKS

ChartBuilder = Callable[[pa.Table, dict[str, Any]], dict[str, Any]]

# The whole width of a chart, labels included, in px: one fits half the dashboard (two charts a row at 1366 px),
# a wide one a whole row. The dashboard never scales a chart, so its text shows at the size it was drawn.
CHART_WIDTH = 540
WIDE_CHART_WIDTH = 900
# Long group names are cut at this width (with an ellipsis); the full name is in the mark's tooltip and in
# the dashboard's table.
LABEL_LIMIT = 150

# Fixed colours, so every chart (and the dashboard's legend) reads the same way. A framework without a fixed
# colour gets the next free one of the palette, in FRAMEWORKS order, so adding one needs no change here.
FRAMEWORK_COLORS = {
    "pytorch": "#ee4c2c",
    "tensorflow": "#ff9f00",
    "jax": "#5e97f6",
    "keras": "#2e7d32",
    "mlx": "#111111",
    "gguf": "#00a3a3",
    "onnx": "#8c564b",
}
PALETTE = ("#2ca02c", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#1f3a93", "#6b6ecf", "#9c9ede")
SHARED_COLOR = "#8e6bbf"
NONE_COLOR = "#c7c7c7"
# Readable at the size the dashboard shows the SVG (it never scales a chart down): 12 px labels.
CONFIG: dict[str, Any] = {
    "font": "sans-serif",
    "padding": 8,
    "title": {"fontSize": 16, "subtitleFontSize": 12, "subtitleColor": "#59636e", "anchor": "start", "offset": 12},
    "axis": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal", "labelLimit": LABEL_LIMIT},
    "legend": {"labelFontSize": 12, "titleFontSize": 12, "symbolSize": 120, "labelLimit": 200},
    "header": {"labelFontSize": 12, "titleFontSize": 12},
    "text": {"fontSize": 12},
}
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"


def framework_color(fw: str, frameworks: Sequence[str] = FRAMEWORKS) -> str:
    """The colour of a framework: fixed for the known ones, else the next palette colour in `frameworks`."""
    if fw in FRAMEWORK_COLORS:
        return FRAMEWORK_COLORS[fw]
    others = [f for f in frameworks if f not in FRAMEWORK_COLORS]
    return PALETTE[others.index(fw) % len(PALETTE)] if fw in others else PALETTE[-1]


def buckets(frameworks: Sequence[str], with_none: bool) -> list[str]:
    """The bucket names of a universe, in order: each framework only, shared (2+ frameworks), none."""
    names = [f"{fw} only" for fw in FRAMEWORKS if fw in frameworks]
    if len(names) >= 2:  # within one framework nothing can be shared
        names.append("shared")
    return [*names, "none"] if with_none else names


def bucket_color(bucket: str) -> str:
    """The colour of a bucket name (`pytorch only`, `shared`, `none`)."""
    if bucket == "shared":
        return SHARED_COLOR
    if bucket == "none":
        return NONE_COLOR
    return framework_color(bucket.removesuffix(" only"))


def color_encoding(names: list[str]) -> dict[str, Any]:
    return {
        "field": "bucket",
        "type": "nominal",
        "title": None,
        "sort": names,
        "scale": {"domain": names, "range": [bucket_color(b) for b in names]},
        "legend": {"orient": "top", "columns": min(len(names), 4)},
    }


def unit_of(envelope: dict[str, Any]) -> str:
    return {"models": "models", "downloads": "downloads (30-day)", "likes": "likes"}[envelope.get("weight", "models")]


def method_and_unit(envelope: dict[str, Any]) -> str:
    return f"method {envelope['method']} · {unit_of(envelope)}"


def day(value: Any) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else str(value)[:10]


def snapshot_label(envelope: dict[str, Any]) -> str:
    snap = envelope["snapshot"]
    return f"snapshot {snap['id']} ({day(snap['taken_at'])})"


def number(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def bucket_value(row: dict[str, Any], bucket: str) -> tuple[int, float | None]:
    """The count and percent-of-with_framework of one bucket in a flat row."""
    if bucket == "shared":
        return row["shared"], row["pct.shared"]
    if bucket == "none":
        return row["none"], None
    fw = bucket.removesuffix(" only")
    return row[f"exclusive.{fw}"], row[f"pct.{fw}_only"]


def group_label(group: str | None, by: str) -> str:
    """A group's name as charts and the dashboard show it; models without a task (library) are a group too."""
    if group is not None:
        return group
    return "(no task)" if by == "pipeline_tag" else "(no library)"


_SVG = "http://www.w3.org/2000/svg"
ET.register_namespace("", _SVG)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
_MARK_TAGS = {f"{{{_SVG}}}{tag}" for tag in ("path", "rect", "circle", "line")}


def with_tooltips(svg: str) -> str:
    """Give every mark its accessible label (Vega's `aria-label`, from the `description` channel) as an SVG
    `<title>`: browsers show it on hover, with no script."""
    root = ET.fromstring(svg)
    for element in root.iter():
        label = element.get("aria-label")
        if label and element.tag in _MARK_TAGS and element.get("role") == "graphics-symbol":
            title = ET.Element(f"{{{_SVG}}}title")
            title.text = label
            element.insert(0, title)
    return ET.tostring(root, encoding="unicode")


def to_svg(spec: dict[str, Any]) -> str:
    """Render a spec to SVG, offline (vl-convert bundles Vega; no CDN, no network), with hover tooltips."""
    return with_tooltips(vl_convert.vegalite_to_svg(spec))


def to_png(spec: dict[str, Any]) -> bytes:
    """Render a spec to PNG at 2x, offline."""
    png: bytes = vl_convert.vegalite_to_png(spec, scale=2)
    return png
