"""Query parameters: the ones the analytics routes share, validated once, as dependencies; and the check that
a request names no parameter its route does not take."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, WithJsonSchema

from hubcensus.queries.filters import ModelFilter, PopularityOrder, Weight
from hubcensus.queries.frameworks import FRAMEWORKS, Framework, Method
from hubcensus.service.errors import InvalidParameterError, UnknownParameterError
from hubcensus.service.formats import Format, TableFormat
from hubcensus.service.paging import DEFAULT_PAGE, MAX_PAGE, PageRequest


def _iso(pattern: str, expected: str) -> BeforeValidator:
    """Only text in `pattern`: pydantic alone would also take a number as a Unix time (`0` as 1970-01-01)."""
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, str) and not compiled.fullmatch(value):
            raise ValueError(f"expected {expected}")
        return value

    return BeforeValidator(check)


_DATE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIME = "[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
IsoDate = Annotated[date, _iso(_DATE, "a date, YYYY-MM-DD")]
# A day, or a time with an optional zone (none means UTC, like every time hubcensus stores).
IsoDateTime = Annotated[
    datetime,
    _iso(f"{_DATE}({_TIME})?", "a date or a time, ISO 8601"),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}),
]

# The `frameworks` grammar, in the OpenAPI document too: one or more names, commas, optional spaces, and a
# trailing comma (`pytorch,`, what a form or a script joining names often sends) names the same universe.
_NAME = "(" + "|".join(FRAMEWORKS) + ")"
FRAMEWORKS_PATTERN = f"^ *{_NAME} *(, *{_NAME} *)*(, *)?$"


def parse_frameworks(value: str) -> list[Framework]:
    """The `frameworks` parameter: a comma list, a non-empty subset of FRAMEWORKS (the seven of 2026)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown or not names:
        raise InvalidParameterError(
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
        Method,
        Query(
            description="How frameworks are decided: `tags` (the Hub's weight tags, as the 2021-22 analyses), `files`"
            " (file names), `inferred` (tags, files, library, config and how today's tools write files; the default),"
            " `loadable` (inferred, plus what transformers 4.x could load the weights into). See docs/METHODOLOGY.md."
        ),
    ] = "inferred",
    frameworks: Annotated[
        str,
        Query(
            description=f"The universe of the comparison, a comma list of {','.join(FRAMEWORKS)} (default: all)."
            " Frameworks outside it are ignored: `pytorch,tensorflow` asks the 2021-22 question.",
            examples=["pytorch,tensorflow"],
            pattern=FRAMEWORKS_PATTERN,
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
        int | None,
        # At most BIGINT's largest value, the type of the column: beyond it DuckDB cannot bind the number.
        Query(ge=0, le=2**63 - 1, description="Only models with at least this many downloads."),
    ] = None,
    created_after: Annotated[
        IsoDate | None,
        Query(description="Only models created on or after this day; unknown creation dates never pass."),
    ] = None,
    created_before: Annotated[IsoDate | None, Query(description="Only models created before this day.")] = None,
) -> ModelFilter:
    """The models a query counts, by their attributes."""
    if created_after and created_before and created_after >= created_before:
        raise InvalidParameterError("created_after must be before created_before.")
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


_NEXT_DOC = "The cursor from the previous page's `next`; valid only for the route and query that issued it."
_SIZE_DOC = "Rows per page."


async def page_request(
    next_: Annotated[str | None, Query(alias="_next", description=_NEXT_DOC)] = None,
    size: Annotated[int, Query(alias="_size", ge=1, le=MAX_PAGE, description=_SIZE_DOC)] = DEFAULT_PAGE,
    format_: Annotated[
        TableFormat | None,
        Query(alias="_format", description="The answer's format; or use the Accept header. Default json."),
    ] = None,
) -> PageRequest:
    """Pagination and format, the control parameters (underscored, so they never clash with filters)."""
    return PageRequest(cursor=next_, size=size)


async def chart_page_request(
    next_: Annotated[str | None, Query(alias="_next", description=_NEXT_DOC)] = None,
    size: Annotated[int, Query(alias="_size", ge=1, le=MAX_PAGE, description=_SIZE_DOC)] = DEFAULT_PAGE,
    format_: Annotated[
        Format | None,
        Query(
            alias="_format",
            description="The answer's format, a table or a chart (vl: Vega-Lite, svg, png); or use the Accept "
            "header. Default json.",
        ),
    ] = None,
) -> PageRequest:
    """`page_request` for the routes that also answer as a chart."""
    return PageRequest(cursor=next_, size=size)


AnalysisDep = Annotated[Analysis, Depends(analysis)]
FilterDep = Annotated[ModelFilter, Depends(model_filter)]
PageDep = Annotated[PageRequest, Depends(page_request)]
ChartPageDep = Annotated[PageRequest, Depends(chart_page_request)]


def normalized(*models: BaseModel, **extra: Any) -> dict[str, Any]:
    """The effective query, defaults included, for the ETag, the cache key and the envelope's `query`."""
    out: dict[str, Any] = {}
    for m in models:
        out.update(m.model_dump(mode="json"))
    out.update(extra)
    return out


def query_defaults(request: Request) -> dict[str, Any]:
    """The query parameters the request's route takes, with their defaults."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return {}
    deps = [route.dependant, *_all_dependants(route)]
    return {p.alias: p.field_info.default for dep in deps for p in dep.query_params}


async def reject_unknown_parameters(request: Request) -> None:
    """Answer 422 for a query parameter the route does not take: a typo must not pass silently."""
    if not isinstance(request.scope.get("route"), APIRoute):
        return
    known = set(query_defaults(request))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise UnknownParameterError(unknown, sorted(known))


def _all_dependants(route: APIRoute) -> Iterator[Dependant]:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        yield dep
        stack.extend(dep.dependencies)
