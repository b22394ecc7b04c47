"""Which models a query counts: the filters every analytics query shares, as one SQL CTE."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from hubcensus.queries.frameworks import FRAMEWORKS, Framework, Method, mask_of

PopularityOrder = Literal["downloads", "likes"]
Weight = Literal["models", "downloads", "likes"]
WEIGHTS: tuple[Weight, ...] = get_args(Weight)

# The Hub gave every repository created before March 2022 this createdAt (a migration date, written as
# 23:29:04 or 23:29:05): it says "unknown", never "created in March 2022".
PLACEHOLDER_FROM = "2022-03-02 23:29:04"
PLACEHOLDER_UNTIL = "2022-03-02 23:29:06"

# Allow-lists: the only identifiers user input can select.
METHOD_COLUMNS: dict[Method, str] = {
    "tags": "fw_tags",
    "files": "fw_files",
    "inferred": "fw_inferred",
    "loadable": "fw_loadable",
}
ORDER_COLUMNS: dict[PopularityOrder, str] = {"downloads": "downloads", "likes": "likes"}
WEIGHT_SQL: dict[Weight, str] = {
    "models": "count(*)",
    "downloads": "coalesce(sum(downloads), 0)::BIGINT",
    "likes": "coalesce(sum(likes), 0)::BIGINT",
}


class ModelFilter(BaseModel):
    """The models a query looks at. Every field is optional; all given ones must hold."""

    model_config = ConfigDict(frozen=True)

    pipeline_tag: str | None = Field(None, description="Only models with this task.")
    library_name: str | None = Field(None, description="Only models of this library.")
    author: str | None = Field(None, description="Only models of this user or organisation.")
    min_downloads: int | None = Field(None, ge=0, description="Only models with at least this many downloads.")
    created_after: date | None = Field(None, description="Only models created on or after this day (UTC).")
    created_before: date | None = Field(None, description="Only models created before this day (UTC).")
    top: int | None = Field(None, ge=1, le=100_000, description="Only the N most popular models (after the filters).")
    order: PopularityOrder = Field("downloads", description="What `top` ranks by: `downloads` or `likes`.")


def selected_cte(filters: ModelFilter) -> tuple[str, dict[str, Any]]:
    """`WITH selected AS (...)` over `models`, and its bound parameters.

    Models with a missing or placeholder createdAt never pass a `created_*` filter: their creation date
    is unknown. `top` ranks after the other filters, ties broken by id so the set is reproducible.
    """
    order = ORDER_COLUMNS[filters.order]
    top = f"ORDER BY {order} DESC NULLS LAST, id LIMIT $top" if filters.top is not None else ""
    sql = f"""WITH selected AS (
    SELECT * FROM models
    WHERE ($pipeline_tag IS NULL OR pipeline_tag = $pipeline_tag)
      AND ($library_name IS NULL OR library_name = $library_name)
      AND ($author IS NULL OR author = $author)
      AND ($min_downloads IS NULL OR downloads >= $min_downloads)
      AND ($created_after IS NULL OR (created_at >= $created_after AND {KNOWN_CREATED}))
      AND ($created_before IS NULL OR (created_at < $created_before AND {KNOWN_CREATED}))
    {top}
)"""
    params: dict[str, Any] = {
        "pipeline_tag": filters.pipeline_tag,
        "library_name": filters.library_name,
        "author": filters.author,
        "min_downloads": filters.min_downloads,
        "created_after": filters.created_after,
        "created_before": filters.created_before,
    }
    if filters.top is not None:
        params["top"] = filters.top
    return sql, params


KNOWN_CREATED = (
    f"created_at IS NOT NULL AND NOT (created_at >= TIMESTAMP '{PLACEHOLDER_FROM}' "
    f"AND created_at < TIMESTAMP '{PLACEHOLDER_UNTIL}')"
)


def universe_of(frameworks: Sequence[Framework]) -> tuple[list[Framework], int]:
    """The frameworks in canonical order, and their bitmask; refuses an empty universe."""
    universe = [fw for fw in FRAMEWORKS if fw in frameworks]
    if not universe:
        raise ValueError("frameworks must name at least one of " + ", ".join(FRAMEWORKS))
    return universe, mask_of(universe)
