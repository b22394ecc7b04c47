"""The charts over time: the trend (by creation period, within one snapshot) and the history (across
snapshots), one line per bucket in percent of the models with a framework.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from hubcensus.service.charts.common import (
    CHART_WIDTH,
    CONFIG,
    SCHEMA,
    bucket_color,
    bucket_value,
    buckets,
    color_encoding,
    day,
    method_and_unit,
    snapshot_label,
    unit_of,
)

# A period's share is drawn as part of the trend line only when at least this many models with a framework
# were created in it: below that one model moves a line by more than 3 points, and single-model months swing
# 0-100 %. The data feeds keep every period with its counts; only the chart marks the small ones.
MIN_TREND_SAMPLE = 30
# A history chart names at most this many breaks in its subtitle; the data lists every one.
MAX_BREAKS_SHOWN = 3


def _points(row: dict[str, Any], frameworks: list[str], unit: str, where: str, **keys: Any) -> list[dict[str, Any]]:
    """One point per framework bucket of a row (percent of with_framework), with its tooltip."""
    out = []
    for bucket in buckets(frameworks, with_none=False):
        count, pct = bucket_value(row, bucket)
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
    unit = unit_of(envelope)
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
        "$schema": SCHEMA,
        "title": {
            "text": "Framework share of new models, by creation period",
            "subtitle": [
                f"{snapshot_label(envelope)} · {method_and_unit(envelope)}",
                f"% of the {unit} created in the period with a framework",
                f"{unknown:,} with unknown creation date left out",
                f"below: n, the {unit} with a framework per period",
                rule,
            ],
        },
        "config": CONFIG,
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
                    "color": color_encoding(names),
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
    unit = unit_of(envelope)
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
        where = f"{day(taken)} ({meta.get('models', row['models']):,} models, {meta.get('source', '?')})"
        data += _points(row, frameworks, unit, where, taken_at=taken.isoformat(), segment=segment)
    n = len(snapshots)
    subtitle = [
        f"{n} snapshot{'s' if n != 1 else ''} · {method_and_unit(envelope)}",
        f"% of each snapshot's {unit} with a framework",
    ]
    for b in breaks[:MAX_BREAKS_SHOWN]:
        subtitle.append("not comparable across the dashed line:")
        subtitle.append(f"  {_short('; '.join(b['reasons']), 72)}")
        for side in (snapshots.get(b["before"], {}), snapshots.get(b["after"], {})):
            subtitle.append(
                f"  {day(side.get('taken_at'))}: {side.get('models', 0):,} models, {side.get('kind', '?')} "
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
            "encoding": {"y": y, "color": color_encoding(names), "detail": {"field": "segment", "type": "nominal"}},
        },
        {
            "mark": {"type": "point", "filled": True, "size": 50, "opacity": 1},
            "encoding": {"y": y, "color": color_encoding(names), "description": {"field": "tip", "type": "nominal"}},
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
        "$schema": SCHEMA,
        "title": {"text": "Framework share across snapshots", "subtitle": subtitle},
        "config": CONFIG,
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
