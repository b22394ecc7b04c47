"""Framework buckets: from (key, framework combination, count) rows to the bucket columns every
framework query answers (models, with_framework, none, shared, exclusive.*, combinations.*, pct.*).

Flat column names with dots are the one table shape for every format; the JSON renderer nests the
dotted names back into objects (`exclusive.pytorch` → `{"exclusive": {"pytorch": …}}`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from hubcensus.queries.frameworks import BIT, Framework, combination_name, shared_combinations


class Bucket(BaseModel):
    """Counts (or download / like sums, with `weight`) of models by the frameworks they ship."""

    models: int = Field(description="All models counted (with_framework + none).")
    with_framework: int = Field(description="Models with at least one framework of the universe.")
    none: int = Field(description="Models with no framework of the universe.")
    shared: int = Field(description="Models with two or more frameworks of the universe.")
    exclusive: dict[str, int] = Field(description="Per framework: models with that framework only.")
    # Empty (no columns to nest) when the universe is a single framework.
    combinations: dict[str, int] = Field(
        default_factory=dict,
        description="Per combination of 2+ frameworks that occurs, e.g. `pytorch+tensorflow` (feeds: a column each).",
    )
    pct: dict[str, float | None] = Field(
        description="`<framework>_only` and `shared` as percent of with_framework (null when it is 0)."
    )


@cache
def _layout(universe: tuple[Framework, ...]) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    """(column, mask) of each framework alone and of each combination, for a universe: computed once, as a
    share of 100 groups in the universe of seven would otherwise name 12,000 combinations per answer."""
    alone = tuple((fw, BIT[fw]) for fw in universe)
    together = tuple((f"combinations.{combination_name(m)}", m) for m in shared_combinations(universe))
    return alone, together


def bucket_columns(universe: Sequence[Framework]) -> list[tuple[str, pa.DataType]]:
    """The flat bucket columns for a universe, in order, with their Arrow types."""
    alone, together = _layout(tuple(universe))
    cols: list[tuple[str, pa.DataType]] = [(c, pa.int64()) for c in ("models", "with_framework", "none", "shared")]
    cols += [(f"exclusive.{fw}", pa.int64()) for fw, _ in alone]
    cols += [(name, pa.int64()) for name, _ in together]
    cols += [(f"pct.{fw}_only", pa.float64()) for fw, _ in alone]
    cols.append(("pct.shared", pa.float64()))
    return cols


def bucket_values(counts: dict[int, int], universe: Sequence[Framework]) -> dict[str, Any]:
    """One flat bucket from counts per framework bitmask (already restricted to the universe)."""
    alone, together = _layout(tuple(universe))
    models = sum(counts.values())
    none = counts.get(0, 0)
    with_framework = models - none
    shared = sum(n for mask, n in counts.items() if mask.bit_count() >= 2)

    def pct(n: int) -> float | None:
        return round(100 * n / with_framework, 2) if with_framework else None

    values: dict[str, Any] = {
        "models": models,
        "with_framework": with_framework,
        "none": none,
        "shared": shared,
    }
    for fw, bit in alone:
        values[f"exclusive.{fw}"] = counts.get(bit, 0)
    for name, mask in together:
        values[name] = counts.get(mask, 0)
    for fw, bit in alone:
        values[f"pct.{fw}_only"] = pct(counts.get(bit, 0))
    values["pct.shared"] = pct(shared)
    return values


def bucket_value_columns(counts: Sequence[Mapping[int, int]], universe: Sequence[Framework]) -> dict[str, list[Any]]:
    """`bucket_values` of many buckets at once, as columns (name -> one value per bucket): for a history of
    thousands of groups, building columns costs a fraction of a dict per bucket (most combinations are 0)."""
    alone, together = _layout(tuple(universe))
    n = len(counts)
    models = [sum(c.values()) for c in counts]
    none = [c.get(0, 0) for c in counts]
    with_framework = [m - z for m, z in zip(models, none, strict=True)]
    shared = [sum(v for mask, v in c.items() if mask.bit_count() >= 2) for c in counts]
    columns: dict[str, list[Any]] = {"models": models, "with_framework": with_framework, "none": none}
    columns["shared"] = shared
    for fw, bit in alone:
        columns[f"exclusive.{fw}"] = [c.get(bit, 0) for c in counts]
    combination_of = {mask: name for name, mask in together}
    for name, _ in together:
        columns[name] = [0] * n
    for i, c in enumerate(counts):
        for mask, v in c.items():
            if mask in combination_of:
                columns[combination_of[mask]][i] = v

    def pct(part: list[int]) -> list[float | None]:
        # As bucket_values: percent of with_framework, rounded by Python's round, null when it is 0.
        return [round(100 * x / w, 2) if w else None for x, w in zip(part, with_framework, strict=True)]

    for fw, _ in alone:
        columns[f"pct.{fw}_only"] = pct(columns[f"exclusive.{fw}"])
    columns["pct.shared"] = pct(shared)
    return columns


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """`{"a.b": 1}` → `{"a": {"b": 1}}`, one level, keeping key order.

    A bucket (a row with `exclusive.*` columns) always gets its `combinations` object, holding the combinations
    that occur (a count other than 0). The feeds have a column for each combination of two or more frameworks of
    the universe, 120 for all seven, most of them 0 on any snapshot: listing them all made the default JSON
    answer ten times larger (191 KB against 18 KB for a share by task at 100,000 models). A universe of one
    framework has no combination: its object is empty.
    """
    return nest_rows([flat], list(flat))[0]


def nest_rows(rows: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """`nest` for many rows with the same columns: the key plan is worked out once (a share of 100 groups in the
    universe of seven has 14,000 dotted keys)."""
    plan: list[tuple[str, str, str | None]] = []  # (column, head, tail or None for a top-level key)
    heads: list[str] = []
    for name in names:
        head, dot, tail = name.partition(".")
        if head == "pct" and "exclusive" in heads and "combinations" not in heads:
            heads.append("combinations")  # an empty object where a one-framework bucket has no combination
        if head not in heads:
            heads.append(head)
        plan.append((name, head, tail if dot else None))
    groups = {key for _, key, sub in plan if sub is not None} | ({"combinations"} & set(heads))
    out = []
    for row in rows:
        nested: dict[str, Any] = {}
        for head in heads:
            nested[head] = {} if head in groups else None
        for column, key, sub in plan:
            if sub is None:
                nested[key] = row[column]
            elif key != "combinations" or row[column]:
                nested[key][sub] = row[column]
        out.append(nested)
    return out


def to_bucket(flat: dict[str, Any]) -> Bucket:
    """A flat bucket as the typed Bucket model."""
    return Bucket.model_validate(nest(flat))


def flatten(nested: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`: the inverse of `nest`, one level, keeping key order."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def bucketize(
    rows: pa.Table,
    keys: Sequence[tuple[str, pa.DataType]],
    universe: Sequence[Framework],
    sort_key: Callable[[dict[str, Any]], Any] | None = None,
) -> pa.Table:
    """Group `(key columns…, combo, n)` rows into one bucket row per key; Arrow table out.

    The input is small (distinct keys x at most 8 combinations), so this runs in Python.
    """
    key_names = [k for k, _ in keys]
    per_key: dict[tuple[Any, ...], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows.to_pylist():
        per_key[tuple(row[k] for k in key_names)][row["combo"]] += row["n"]
    out = [
        {**dict(zip(key_names, key, strict=True)), **bucket_values(counts, universe)} for key, counts in per_key.items()
    ]
    if sort_key is not None:
        out.sort(key=sort_key)
    schema = pa.schema([*keys, *bucket_columns(universe)])
    return pa.Table.from_pylist(out, schema=schema)


def total_of(rows: pa.Table, universe: Sequence[Framework]) -> Bucket:
    """The bucket over all `(…, combo, n)` rows."""
    counts: dict[int, int] = defaultdict(int)
    for combo, n in zip(rows.column("combo").to_pylist(), rows.column("n").to_pylist(), strict=True):
        counts[combo] += n
    return to_bucket(bucket_values(counts, universe))
