"""Query parameters shared by the analytics routes, validated once, as dependencies."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel

from hubcensus.queries.filters import ModelFilter, PopularityOrder, Weight
from hubcensus.queries.frameworks import FRAMEWORKS, Framework, Method
from hubcensus.service.errors import ApiError
from hubcensus.service.render import DEFAULT_PAGE, FORMATS, MAX_PAGE, PageRequest


def parse_frameworks(value: str) -> list[Framework]:
    """The `frameworks` parameter: a comma list, a non-empty subset of pytorch,tensorflow,jax."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown or not names:
        raise ApiError(
            422,
            "invalid_parameter",
            f"frameworks: expected a comma list of {', '.join(FRAMEWORKS)}; got {value!r}.",
            [{"parameter": "frameworks", "in": "query", "message": f"unknown framework(s): {unknown}"}],
        )
    return [fw for fw in FRAMEWORKS if fw in names]


class Analysis(BaseModel):
    """How models are classified and counted."""

    method: Method
    frameworks: list[Framework]
    weight: Weight


async def analysis(
    method: Annotated[
        Method, Query(description="`tags`, `files` or `inferred`: see docs/METHODOLOGY.md.")
    ] = "inferred",
    frameworks: Annotated[
        str,
        Query(
            description="The universe of the comparison, a comma list of pytorch,tensorflow,jax.",
            examples=["pytorch,tensorflow"],
        ),
    ] = ",".join(FRAMEWORKS),
    weight: Annotated[
        Weight,
        Query(
            description="`models` counts models; `downloads` (the Hub's rolling 30-day count) and `likes` sum "
            "them instead, so the buckets give the share of downloads or likes."
        ),
    ] = "models",
) -> Analysis:
    """The method, universe and weight of a framework query."""
    return Analysis(method=method, frameworks=parse_frameworks(frameworks), weight=weight)


async def base_filter(
    pipeline_tag: Annotated[str | None, Query(description="Only models with this task.")] = None,
    library_name: Annotated[str | None, Query(description="Only models of this library.")] = None,
    author: Annotated[str | None, Query(description="Only models of this user or organisation.")] = None,
    min_downloads: Annotated[
        int | None, Query(ge=0, description="Only models with at least this many downloads.")
    ] = None,
    created_after: Annotated[
        date | None, Query(description="Only models created on or after this day; unknown creation dates never pass.")
    ] = None,
    created_before: Annotated[date | None, Query(description="Only models created before this day.")] = None,
) -> ModelFilter:
    """The models a query counts, by their attributes."""
    if created_after and created_before and created_after >= created_before:
        raise ApiError(422, "invalid_parameter", "created_after must be before created_before.")
    return ModelFilter(
        pipeline_tag=pipeline_tag,
        library_name=library_name,
        author=author,
        min_downloads=min_downloads,
        created_after=created_after,
        created_before=created_before,
    )


BaseFilterDep = Annotated[ModelFilter, Depends(base_filter)]


async def model_filter(
    base: BaseFilterDep,
    top: Annotated[
        int | None, Query(ge=1, le=100_000, description="Only the N most popular models (after the other filters).")
    ] = None,
    order: Annotated[PopularityOrder, Query(description="What `top` ranks by.")] = "downloads",
) -> ModelFilter:
    """The models a query counts, by their attributes and popularity."""
    return base.model_copy(update={"top": top, "order": order})


async def page_request(
    next_: Annotated[
        str | None, Query(alias="_next", description="The cursor from the previous page's `next`.")
    ] = None,
    size: Annotated[int, Query(alias="_size", ge=1, le=MAX_PAGE, description="Rows per page.")] = DEFAULT_PAGE,
    format_: Annotated[
        str | None,
        Query(
            alias="_format",
            description=f"One of {', '.join(FORMATS)}; or use the Accept header. Default json.",
        ),
    ] = None,
) -> PageRequest:
    """Pagination and format, the control parameters (underscored, so they never clash with filters)."""
    return PageRequest(cursor=next_, size=size)


AnalysisDep = Annotated[Analysis, Depends(analysis)]
FilterDep = Annotated[ModelFilter, Depends(model_filter)]
PageDep = Annotated[PageRequest, Depends(page_request)]


def normalized(*models: BaseModel, **extra: Any) -> dict[str, Any]:
    """The effective query, defaults included, for the ETag, the cache key and the envelope's `query`."""
    out: dict[str, Any] = {}
    for m in models:
        out.update(m.model_dump(mode="json"))
    out.update(extra)
    return out
