"""Framework share: of the models in each group, how many ship each framework alone, several, or none."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal, get_args

import duckdb
from pydantic import BaseModel, Field

from queries.frameworks import (
    BIT,
    FRAMEWORKS,
    Framework,
    Method,
    combination_name,
    frameworks_of,
    mask_of,
    shared_combinations,
)

GroupBy = Literal["pipeline_tag", "library_name"]
GROUP_BYS: tuple[GroupBy, ...] = get_args(GroupBy)

# Identifiers that reach SQL come only from these allow-lists, never from the request text.
_GROUP_COLUMNS: dict[GroupBy, str] = {"pipeline_tag": "pipeline_tag", "library_name": "library_name"}
_METHOD_COLUMNS: dict[Method, str] = {"tags": "fw_tags", "files": "fw_files", "inferred": "fw_inferred"}


class Bucket(BaseModel):
    """Counts of models by the frameworks they ship, within a universe of frameworks."""

    models: int = Field(description="All models counted (with_framework + none).")
    with_framework: int = Field(description="Models with at least one framework of the universe.")
    none: int = Field(description="Models with no framework of the universe.")
    shared: int = Field(description="Models with two or more frameworks of the universe.")
    exclusive: dict[str, int] = Field(description="Per framework: models with that framework only.")
    combinations: dict[str, int] = Field(
        description="Per combination of 2+ frameworks, e.g. `pytorch+tensorflow`."
    )
    pct: dict[str, float | None] = Field(
        description="`<framework>_only` and `shared` as percent of with_framework (null when it is 0)."
    )


class GroupBucket(Bucket):
    """A bucket for one value of the grouping column."""

    group: str | None = Field(description="The group's value; null for models without one.")


class ShareResult(BaseModel):
    """The answer of `framework_share`, without the snapshot (the caller knows which it opened)."""

    method: Method
    by: GroupBy
    frameworks: list[Framework]
    total: Bucket
    rows: list[GroupBucket]


def _share_sql(by: GroupBy, method: Method) -> str:
    return f"""
SELECT {_GROUP_COLUMNS[by]} AS grp, {_METHOD_COLUMNS[method]} & $mask AS combo, count(*) AS n
FROM models
WHERE ($pipeline_tag IS NULL OR pipeline_tag = $pipeline_tag)
  AND ($library_name IS NULL OR library_name = $library_name)
  AND ($author IS NULL OR author = $author)
GROUP BY ALL
"""


def framework_share(
    con: duckdb.DuckDBPyConnection,
    *,
    by: GroupBy = "pipeline_tag",
    method: Method = "inferred",
    frameworks: Sequence[Framework] = FRAMEWORKS,
    pipeline_tag: str | None = None,
    library_name: str | None = None,
    author: str | None = None,
) -> ShareResult:
    """Framework share per group in an open snapshot.

    `frameworks` is the universe of the comparison: frameworks outside it are ignored, so with
    `["pytorch", "tensorflow"]` a model with PyTorch and JAX weights counts as PyTorch-only.
    """
    universe = [fw for fw in FRAMEWORKS if fw in frameworks]  # canonical order, no repeats
    if not universe:
        raise ValueError("frameworks must name at least one of " + ", ".join(FRAMEWORKS))
    rows = con.execute(
        _share_sql(by, method),
        {
            "mask": mask_of(universe),
            "pipeline_tag": pipeline_tag,
            "library_name": library_name,
            "author": author,
        },
    ).fetchall()
    per_group: dict[str | None, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[int, int] = defaultdict(int)
    for grp, combo, n in rows:
        per_group[grp][combo] += n
        totals[combo] += n
    groups = [
        GroupBucket(group=g, **_bucket(counts, universe).model_dump()) for g, counts in per_group.items()
    ]
    # Largest first; ties by name so that the order is reproducible, the null group last.
    groups.sort(key=lambda b: (-b.models, b.group is None, b.group or ""))
    return ShareResult(
        method=method, by=by, frameworks=universe, total=_bucket(totals, universe), rows=groups
    )


def _bucket(counts: dict[int, int], universe: list[Framework]) -> Bucket:
    models = sum(counts.values())
    none = counts.get(0, 0)
    with_framework = models - none
    exclusive: dict[str, int] = {fw: counts.get(BIT[fw], 0) for fw in universe}
    combos = {combination_name(m): counts.get(m, 0) for m in shared_combinations(universe)}
    shared = sum(n for mask, n in counts.items() if len(frameworks_of(mask)) >= 2)

    def pct(n: int) -> float | None:
        return round(100 * n / with_framework, 2) if with_framework else None

    return Bucket(
        models=models,
        with_framework=with_framework,
        none=none,
        shared=shared,
        exclusive=exclusive,
        combinations=combos,
        pct={**{f"{fw}_only": pct(n) for fw, n in exclusive.items()}, "shared": pct(shared)},
    )
