"""Charts of the framework answers: Vega-Lite specs with the data inline, rendered to SVG/PNG offline.

Share: per group, the percent of the models with a framework that ship each framework only or several
(`scale="percent"`, beside it the percent of all models with none), or the model counts of every bucket,
none included (`scale="count"`). Trend and history: one line per bucket over time, in percent of the models
with a framework. Every title states the snapshot, the method and the denominator, so a chart pasted into a
report is still reproducible. Every mark carries its numbers as an SVG `<title>`: a browser shows it on hover,
also in the inline SVG of the dashboard, which has no script.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import vl_convert

from hubcensus.queries.frameworks import FRAMEWORKS

ChartBuilder = Callable[[pa.Table, dict[str, Any]], dict[str, Any]]
Scale = Literal["percent", "count"]

MAX_BARS = 25
# The whole width of a chart, labels included, in px: one fits half the dashboard (two charts a row at 1366 px),
# a wide one a whole row. The dashboard never scales a chart, so its text shows at the size it was drawn.
CHART_WIDTH = 540
WIDE_CHART_WIDTH = 900
# A period's share is drawn as part of the trend line only when at least this many models with a framework
# were created in it: below that one model moves a line by more than 3 points, and single-model months swing
# 0-100 %. The data feeds keep every period with its counts; only the chart marks the small ones.
MIN_TREND_SAMPLE = 30
# Long group names are cut at this width (with an ellipsis); the full name is in the mark's tooltip and in
# the dashboard's table.
LABEL_LIMIT = 150
# A history chart names at most this many breaks in its subtitle; the data lists every one.
MAX_BREAKS_SHOWN = 3

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
_CONFIG: dict[str, Any] = {
    "font": "sans-serif",
    "padding": 8,
    "title": {"fontSize": 16, "subtitleFontSize": 12, "subtitleColor": "#59636e", "anchor": "start", "offset": 12},
    "axis": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal", "labelLimit": LABEL_LIMIT},
    "legend": {"labelFontSize": 12, "titleFontSize": 12, "symbolSize": 120, "labelLimit": 200},
    "header": {"labelFontSize": 12, "titleFontSize": 12},
    "text": {"fontSize": 12},
}
_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"


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


def _color(names: list[str]) -> dict[str, Any]:
    return {
        "field": "bucket",
        "type": "nominal",
        "title": None,
        "sort": names,
        "scale": {"domain": names, "range": [bucket_color(b) for b in names]},
        "legend": {"orient": "top", "columns": min(len(names), 4)},
    }


def _unit(envelope: dict[str, Any]) -> str:
    return {"models": "models", "downloads": "downloads (30-day)", "likes": "likes"}[envelope.get("weight", "models")]


def _what(envelope: dict[str, Any]) -> str:
    return f"method {envelope['method']} · {_unit(envelope)}"


def _day(value: Any) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else str(value)[:10]


def _snapshot_label(envelope: dict[str, Any]) -> str:
    snap = envelope["snapshot"]
    return f"snapshot {snap['id']} ({_day(snap['taken_at'])})"


def _num(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def _bucket_value(row: dict[str, Any], bucket: str) -> tuple[int, float | None]:
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


def share_spec(
    rows: pa.Table, envelope: dict[str, Any], scale: Scale = "percent", width: int = CHART_WIDTH
) -> dict[str, Any]:
    """Per group (largest first): the framework buckets in percent of the models with a framework, with the
    percent of models without one beside them; or (`scale="count"`) the counts of every bucket, none included.

    Percent of the models *with* a framework answers the question "of the models that ship a framework, how
    many ship PyTorch only, TF only, … or several", and is the `pct` of the data; the models with none (most
    of the Hub: GGUF, safetensors-only, adapters, datasets of weights) would otherwise fill most of every bar.
    """
    frameworks = list(envelope["frameworks"])
    unit = _unit(envelope)
    by = envelope.get("by", "pipeline_tag")
    top = rows.slice(0, MAX_BARS).to_pylist()
    label = [group_label(r["group"], by) for r in top]
    title = f"Framework share by {'task' if by == 'pipeline_tag' else 'library'}"
    largest = f"{len(top)} largest of {rows.num_rows} groups" if rows.num_rows > len(top) else f"{len(top)} groups"
    y = {"field": "group", "type": "nominal", "sort": label, "title": None}
    if scale == "count":
        return _share_counts(top, label, y, envelope, title, largest, width)
    if len(frameworks) == 1:
        return _share_of_one(top, label, y, envelope, title, largest, width)
    names = buckets(frameworks, with_none=False)
    data: list[dict[str, Any]] = []
    for name, row in zip(label, top, strict=True):
        with_fw, models = row["with_framework"], row["models"]
        for order, bucket in enumerate(names):
            count, pct = _bucket_value(row, bucket)
            if pct is None:
                continue  # no model of the group has a framework: no bar, only its `none` beside
            tip = f"{name} · {bucket}: {pct:.1f} % of {with_fw:,} {unit} with a framework ({count:,})"
            data.append({"part": "fw", "group": name, "bucket": bucket, "order": order, "pct": pct, "tip": tip})
        none_pct = round(100 * row["none"] / models, 2) if models else None
        tip = f"{name} · no framework: {_num(none_pct, ' %')} of all {models:,} {unit} ({row['none']:,})"
        data.append({"part": "none", "group": name, "none_pct": none_pct, "tip": tip})
    percent_axis = {"values": [0, 25, 50, 75, 100]}
    return {
        "$schema": _SCHEMA,
        "title": {
            "text": title,
            "subtitle": [
                f"{_snapshot_label(envelope)} · {_what(envelope)}",
                f"bars: % of each group's {unit} with a framework ({largest})",
                "right: % of all its models with none of the compared frameworks",
                "hover a bar for its numbers",
            ],
        },
        "config": _CONFIG,
        "data": {"values": data},
        "spacing": 14,
        "resolve": {"scale": {"y": "shared"}},
        "hconcat": [
            {
                "width": width - 80 - 200,  # the `none` column; labels, spacing and padding
                "height": {"step": 18},
                "transform": [{"filter": "datum.part === 'fw'"}],
                "mark": {"type": "bar", "clip": True},
                "encoding": {
                    "y": y,
                    "x": {
                        "field": "pct",
                        "type": "quantitative",
                        "stack": "zero",
                        "scale": {"domain": [0, 100], "nice": False},
                        "axis": percent_axis,
                        "title": f"% of {unit} with a framework",
                    },
                    "color": _color(names),
                    "order": {"field": "order", "type": "quantitative"},
                    "description": {"field": "tip", "type": "nominal"},
                },
            },
            {
                "width": 80,
                "height": {"step": 18},
                "transform": [{"filter": "datum.part === 'none'"}],
                "mark": {"type": "bar", "color": NONE_COLOR},
                "encoding": {
                    "y": {**y, "axis": None},
                    "x": {
                        "field": "none_pct",
                        "type": "quantitative",
                        "scale": {"domain": [0, 100], "nice": False},
                        "axis": {"values": [0, 50, 100]},
                        "title": "% with none",
                    },
                    "description": {"field": "tip", "type": "nominal"},
                },
            },
        ],
    }


def _share_of_one(
    top: list[dict[str, Any]],
    label: list[str],
    y: dict[str, Any],
    envelope: dict[str, Any],
    title: str,
    largest: str,
    width: int,
) -> dict[str, Any]:
    # With one framework, percent of the models with a framework is 100 % everywhere: the question is how many
    # of all the models ship it.
    (fw,) = envelope["frameworks"]
    unit = _unit(envelope)
    data = []
    for name, row in zip(label, top, strict=True):
        pct = round(100 * row["with_framework"] / row["models"], 2) if row["models"] else None
        tip = f"{name} · {fw}: {_num(pct, ' %')} of all {row['models']:,} {unit} ({row['with_framework']:,})"
        data.append({"group": name, "bucket": f"{fw} only", "pct": pct, "tip": tip})
    return {
        "$schema": _SCHEMA,
        "title": {
            "text": title,
            "subtitle": [
                f"{_snapshot_label(envelope)} · {_what(envelope)}",
                f"bars: % of all of each group's {unit} that ship {fw} ({largest})",
                "hover a bar for its numbers",
            ],
        },
        "config": _CONFIG,
        "width": width - 180,  # labels and padding
        "height": {"step": 18},
        "data": {"values": data},
        "mark": {"type": "bar"},
        "encoding": {
            "y": y,
            "x": {
                "field": "pct",
                "type": "quantitative",
                "scale": {"domain": [0, 100], "nice": False},
                "axis": {"values": [0, 25, 50, 75, 100]},
                "title": f"% of all {unit} that ship {fw}",
            },
            "color": {**_color([f"{fw} only"]), "legend": None},
            "description": {"field": "tip", "type": "nominal"},
        },
    }


def _share_counts(
    top: list[dict[str, Any]],
    label: list[str],
    y: dict[str, Any],
    envelope: dict[str, Any],
    title: str,
    largest: str,
    width: int,
) -> dict[str, Any]:
    unit = _unit(envelope)
    names = buckets(list(envelope["frameworks"]), with_none=True)
    data = []
    for name, row in zip(label, top, strict=True):
        for order, bucket in enumerate(names):
            count, pct = _bucket_value(row, bucket)
            share = f", {pct:.1f} % of those with a framework" if pct is not None and bucket != "none" else ""
            tip = f"{name} · {bucket}: {count:,} of {row['models']:,} {unit}{share}"
            data.append({"group": name, "bucket": bucket, "order": order, "value": count, "tip": tip})
    return {
        "$schema": _SCHEMA,
        "title": {
            "text": title,
            "subtitle": [
                f"{_snapshot_label(envelope)} · {_what(envelope)}",
                f"bars: all {unit} per group, none included ({largest})",
                "hover a bar for its numbers",
            ],
        },
        "config": _CONFIG,
        "width": width - 180,  # labels and padding
        "height": {"step": 18},
        "data": {"values": data},
        "mark": {"type": "bar"},
        "encoding": {
            "y": y,
            "x": {"field": "value", "type": "quantitative", "stack": "zero", "title": unit},
            "color": _color(names),
            "order": {"field": "order", "type": "quantitative"},
            "description": {"field": "tip", "type": "nominal"},
        },
    }


def _points(row: dict[str, Any], frameworks: list[str], unit: str, where: str, **keys: Any) -> list[dict[str, Any]]:
    """One point per framework bucket of a row (percent of with_framework), with its tooltip."""
    out = []
    for bucket in buckets(frameworks, with_none=False):
        count, pct = _bucket_value(row, bucket)
        if pct is None:
            continue
        tip = f"{where} · {bucket}: {pct:.1f} % of {row['with_framework']:,} {unit} with a framework ({count:,})"
        out.append({**keys, "bucket": bucket, "pct": pct, "tip": tip})
    return out


def _axis_values(periods: list[str], most: int = 16) -> list[str]:
    """At most `most` evenly spaced period labels, so that 12 px labels never overlap."""
    step = max(1, -(-len(periods) // most))
    return periods[::step]


def trend_spec(rows: pa.Table, envelope: dict[str, Any], width: int = CHART_WIDTH) -> dict[str, Any]:
    """One line per bucket over creation periods, and below it the sample size of each period.

    Periods with fewer than MIN_TREND_SAMPLE models with a framework are drawn as hollow points, not
    joined by the line; the `unknown` period is left out, and counted in the subtitle.
    """
    frameworks = list(envelope["frameworks"])
    unit = _unit(envelope)
    weighted = envelope.get("weight", "models") != "models"
    names = buckets(frameworks, with_none=False)
    lines: list[dict[str, Any]] = []
    sizes: list[dict[str, Any]] = []
    unknown = 0
    small = 0
    for row in rows.to_pylist():
        period = row["period"]
        if period == "unknown":
            unknown = row["models"]
            continue
        # A sample size is a number of models; a sum of downloads or likes has none, so no minimum applies.
        ok = weighted or row["with_framework"] >= MIN_TREND_SAMPLE
        small += not ok
        for point in _points(row, frameworks, unit, period, period=period):
            lines.append({**point, "ok": ok, "line": point["pct"] if ok else None})
        tip = f"{period}: {row['with_framework']:,} of {row['models']:,} {unit} with a framework"
        sizes.append({"period": period, "n": row["with_framework"], "ok": ok, "tip": tip})
    periods = [s["period"] for s in sizes]
    ytitle = f"% of {unit} with a framework"
    largest_n = max((s["n"] for s in sizes), default=0)
    n_axis: dict[str, Any] = {"format": "~s"}  # 1.2M, not 1,200,000: the axis stays narrow
    n_axis |= {"tickCount": 2} if weighted else {"values": sorted({0, MIN_TREND_SAMPLE, largest_n})}
    interval = envelope.get("interval", "month")
    x = {"field": "period", "type": "ordinal", "sort": periods, "scale": {"domain": periods}}
    rule = (
        "no minimum sample: the sizes are sums of " + unit
        if weighted
        else f"hollow, not joined: fewer than {MIN_TREND_SAMPLE} models with a framework ({small} of {len(periods)})"
    )
    return {
        "$schema": _SCHEMA,
        "title": {
            "text": "Framework share of new models, by creation period",
            "subtitle": [
                f"{_snapshot_label(envelope)} · {_what(envelope)}",
                f"% of the {unit} created in the period with a framework",
                f"{unknown:,} with unknown creation date left out",
                f"below: n, the {unit} with a framework per period",
                rule,
            ],
        },
        "config": _CONFIG,
        "datasets": {"lines": lines, "sizes": sizes},
        "spacing": 6,
        "resolve": {"scale": {"x": "shared"}},
        "vconcat": [
            {
                "width": width - 70,  # the y axis and padding
                "height": 220,
                "data": {"name": "lines"},
                "encoding": {
                    "x": {**x, "axis": {"labels": False, "ticks": False, "title": None}},
                    "color": _color(names),
                },
                "layer": [
                    {
                        "mark": {"type": "line", "aria": False},
                        "encoding": {
                            "y": {
                                "field": "line",
                                "type": "quantitative",
                                "scale": {"domain": [0, 100]},
                                "title": ytitle,
                            }
                        },
                    },
                    {
                        "mark": {"type": "point", "size": 36, "strokeWidth": 1.5},
                        "encoding": {
                            "y": {"field": "pct", "type": "quantitative", "title": ytitle},
                            "fill": {
                                "condition": {"test": "!datum.ok", "value": "white"},
                                "field": "bucket",
                                "type": "nominal",
                                "scale": {"domain": names, "range": [bucket_color(b) for b in names]},
                                "legend": None,
                            },
                            "opacity": {"condition": {"test": "datum.ok", "value": 1}, "value": 0.6},
                            "description": {"field": "tip", "type": "nominal"},
                        },
                    },
                ],
            },
            {
                "width": width - 70,  # the y axis and padding
                "height": 60,
                "data": {"name": "sizes"},
                "layer": [
                    {
                        "mark": {"type": "bar"},
                        "encoding": {
                            "x": {
                                **x,
                                "axis": {"values": _axis_values(periods, (width - 70) // 36), "labelAngle": -45},
                                "title": f"created ({interval})",
                            },
                            "y": {"field": "n", "type": "quantitative", "title": "n", "axis": n_axis},
                            "color": {"condition": {"test": "datum.ok", "value": "#59636e"}, "value": "#d1d9e0"},
                            "description": {"field": "tip", "type": "nominal"},
                        },
                    },
                    *(
                        []
                        if weighted
                        else [
                            {
                                "data": {"values": [{"n": MIN_TREND_SAMPLE}]},
                                "mark": {"type": "rule", "strokeDash": [4, 3], "color": "#59636e", "aria": False},
                                "encoding": {"y": {"field": "n", "type": "quantitative"}},
                            }
                        ]
                    ),
                ],
            },
        ],
    }


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def history_spec(rows: pa.Table, envelope: dict[str, Any], width: int = CHART_WIDTH) -> dict[str, Any]:
    """One line per bucket across snapshots (the totals: the route offers no chart with `by`).

    The line is broken, with a dashed rule, between two snapshots that are not comparable (envelope
    `not_comparable`: different coverage or rules), and the subtitle says why.
    """
    frameworks = list(envelope["frameworks"])
    unit = _unit(envelope)
    names = buckets(frameworks, with_none=False)
    snapshots = {s["id"]: s for s in envelope.get("snapshots", [])}
    breaks = envelope.get("not_comparable", [])
    starts = {b["after"] for b in breaks}
    data: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    segment = 0
    previous: Any = None
    for row in rows.to_pylist():
        taken = row["taken_at"]
        if row["snapshot"] in starts:
            segment += 1
            # The rule between the two snapshots: halfway, on the time axis.
            rules.append({"taken_at": (previous + (taken - previous) / 2).isoformat()})
        previous = taken
        meta = snapshots.get(row["snapshot"], {})
        where = f"{_day(taken)} ({meta.get('models', row['models']):,} models, {meta.get('source', '?')})"
        data += _points(row, frameworks, unit, where, taken_at=taken.isoformat(), segment=segment)
    n = len(snapshots)
    subtitle = [
        f"{n} snapshot{'s' if n != 1 else ''} · {_what(envelope)}",
        f"% of each snapshot's {unit} with a framework",
    ]
    for b in breaks[:MAX_BREAKS_SHOWN]:
        subtitle.append("not comparable across the dashed line:")
        subtitle.append(f"  {_short('; '.join(b['reasons']), 72)}")
        for side in (snapshots.get(b["before"], {}), snapshots.get(b["after"], {})):
            subtitle.append(
                f"  {_day(side.get('taken_at'))}: {side.get('models', 0):,} models, {side.get('kind', '?')} "
                f"of {_short(str(side.get('source', '?')))}"
            )
    if len(breaks) > MAX_BREAKS_SHOWN:
        subtitle.append(f"and {len(breaks) - MAX_BREAKS_SHOWN} more breaks (`not_comparable` in the data)")
    y = {
        "field": "pct",
        "type": "quantitative",
        "scale": {"domain": [0, 100]},
        "title": f"% of {unit} with a framework",
    }
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "line", "aria": False},
            "encoding": {"y": y, "color": _color(names), "detail": {"field": "segment", "type": "nominal"}},
        },
        {
            "mark": {"type": "point", "filled": True, "size": 50, "opacity": 1},
            "encoding": {"y": y, "color": _color(names), "description": {"field": "tip", "type": "nominal"}},
        },
    ]
    if rules:
        layers.append(
            {
                "data": {"values": rules},
                "mark": {"type": "rule", "strokeDash": [6, 4], "color": "#59636e", "aria": False},
            }
        )
    return {
        "$schema": _SCHEMA,
        "title": {"text": "Framework share across snapshots", "subtitle": subtitle},
        "config": _CONFIG,
        "width": width - 90,  # the y axis and padding
        "height": 260,
        "data": {"values": data},
        "encoding": {
            "x": {
                "field": "taken_at",
                "type": "temporal",
                "title": "snapshot taken",
                "scale": {"padding": 16},  # the first and last points clear of the axes
                "axis": {"format": "%Y-%m", "tickCount": 6, "labelAngle": 0},
            }
        },
        "layer": layers,
    }


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
