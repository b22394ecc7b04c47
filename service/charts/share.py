"""The share chart: per group, the percent of the models with a framework that ship each framework only or
several (`scale="percent"`, beside it the percent of all models with none), or the model counts of every
bucket, none included (`scale="count"`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from hubcensus.service.charts.common import (
    CHART_WIDTH,
    CONFIG,
    NONE_COLOR,
    SCHEMA,
    bucket_value,
    buckets,
    color_encoding,
    group_label,
    method_and_unit,
    number,
    snapshot_label,
    unit_of,
)

Scale = Literal["percent", "count"]

MAX_BARS = 25


@dataclass(frozen=True)
class _Groups:
    """The groups a share chart draws (the largest MAX_BARS rows), with their labels, and its frame."""

    top: list[dict[str, Any]]
    label: list[str]
    y: dict[str, Any]  # the group axis
    envelope: dict[str, Any]
    title: str
    largest: str  # "25 largest of 40 groups"
    width: int


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
    unit = unit_of(envelope)
    by = envelope.get("by", "pipeline_tag")
    top = rows.slice(0, MAX_BARS).to_pylist()
    label = [group_label(r["group"], by) for r in top]
    title = f"Framework share by {'task' if by == 'pipeline_tag' else 'library'}"
    largest = f"{len(top)} largest of {rows.num_rows} groups" if rows.num_rows > len(top) else f"{len(top)} groups"
    y = {"field": "group", "type": "nominal", "sort": label, "title": None}
    if scale == "count":
        return _share_counts(_Groups(top, label, y, envelope, title, largest, width))
    if len(frameworks) == 1:
        return _share_of_one(_Groups(top, label, y, envelope, title, largest, width))
    names = buckets(frameworks, with_none=False)
    data: list[dict[str, Any]] = []
    for name, row in zip(label, top, strict=True):
        with_fw, models = row["with_framework"], row["models"]
        for order, bucket in enumerate(names):
            count, pct = bucket_value(row, bucket)
            if pct is None:
                continue  # no model of the group has a framework: no bar, only its `none` beside
            tip = f"{name} · {bucket}: {pct:.1f} % of {with_fw:,} {unit} with a framework ({count:,})"
            data.append({"part": "fw", "group": name, "bucket": bucket, "order": order, "pct": pct, "tip": tip})
        none_pct = round(100 * row["none"] / models, 2) if models else None
        tip = f"{name} · no framework: {number(none_pct, ' %')} of all {models:,} {unit} ({row['none']:,})"
        data.append({"part": "none", "group": name, "none_pct": none_pct, "tip": tip})
    percent_axis = {"values": [0, 25, 50, 75, 100]}
    return {
        "$schema": SCHEMA,
        "title": {
            "text": title,
            "subtitle": [
                f"{snapshot_label(envelope)} · {method_and_unit(envelope)}",
                f"bars: % of each group's {unit} with a framework ({largest})",
                "right: % of all its models with none of the compared frameworks",
                "hover a bar for its numbers",
            ],
        },
        "config": CONFIG,
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
                    "color": color_encoding(names),
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


def _share_of_one(g: _Groups) -> dict[str, Any]:
    # With one framework, percent of the models with a framework is 100 % everywhere: the question is how many
    # of all the models ship it.
    (fw,) = g.envelope["frameworks"]
    unit = unit_of(g.envelope)
    data = []
    for name, row in zip(g.label, g.top, strict=True):
        pct = round(100 * row["with_framework"] / row["models"], 2) if row["models"] else None
        tip = f"{name} · {fw}: {number(pct, ' %')} of all {row['models']:,} {unit} ({row['with_framework']:,})"
        data.append({"group": name, "bucket": f"{fw} only", "pct": pct, "tip": tip})
    return _bar_chart(
        g,
        f"bars: % of all of each group's {unit} that ship {fw} ({g.largest})",
        data,
        {
            "y": g.y,
            "x": {
                "field": "pct",
                "type": "quantitative",
                "scale": {"domain": [0, 100], "nice": False},
                "axis": {"values": [0, 25, 50, 75, 100]},
                "title": f"% of all {unit} that ship {fw}",
            },
            "color": {**color_encoding([f"{fw} only"]), "legend": None},
            "description": {"field": "tip", "type": "nominal"},
        },
    )


def _share_counts(g: _Groups) -> dict[str, Any]:
    unit = unit_of(g.envelope)
    names = buckets(list(g.envelope["frameworks"]), with_none=True)
    data = []
    for name, row in zip(g.label, g.top, strict=True):
        for order, bucket in enumerate(names):
            count, pct = bucket_value(row, bucket)
            share = f", {pct:.1f} % of those with a framework" if pct is not None and bucket != "none" else ""
            tip = f"{name} · {bucket}: {count:,} of {row['models']:,} {unit}{share}"
            data.append({"group": name, "bucket": bucket, "order": order, "value": count, "tip": tip})
    return _bar_chart(
        g,
        f"bars: all {unit} per group, none included ({g.largest})",
        data,
        {
            "y": g.y,
            "x": {"field": "value", "type": "quantitative", "stack": "zero", "title": unit},
            "color": color_encoding(names),
            "order": {"field": "order", "type": "quantitative"},
            "description": {"field": "tip", "type": "nominal"},
        },
    )


def _bar_chart(g: _Groups, bars: str, data: list[dict[str, Any]], encoding: dict[str, Any]) -> dict[str, Any]:
    """One bar per group: the title with what the bars show, the data and its encoding."""
    return {
        "$schema": SCHEMA,
        "title": {
            "text": g.title,
            "subtitle": [
                f"{snapshot_label(g.envelope)} · {method_and_unit(g.envelope)}",
                bars,
                "hover a bar for its numbers",
            ],
        },
        "config": CONFIG,
        "width": g.width - 180,  # labels and padding
        "height": {"step": 18},
        "data": {"values": data},
        "mark": {"type": "bar"},
        "encoding": encoding,
    }
