"""Framework share by task or library."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from queries.frameworks import FRAMEWORKS, Framework, Method
from queries.share import Bucket, GroupBucket, GroupBy, framework_share
from service.deps import CursorDep, SnapshotDep
from service.errors import ERROR_RESPONSES, ApiError

router = APIRouter(prefix="/v1/frameworks", tags=["frameworks"], responses=ERROR_RESPONSES)


class SnapshotRef(BaseModel):
    """Which snapshot answered: every answer states it, so it can be reproduced."""

    id: str
    taken_at: datetime


class ShareResponse(BaseModel):
    """Framework share per group; `pct` values are percent of `with_framework`."""

    snapshot: SnapshotRef
    method: Method
    by: GroupBy
    frameworks: list[Framework]
    total: Bucket = Field(description="All models matching the filters.")
    rows: list[GroupBucket] = Field(description="One bucket per group, largest first.")


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


@router.get("/share", response_model=ShareResponse)
def read_framework_share(
    meta: SnapshotDep,
    cursor: CursorDep,
    by: Annotated[GroupBy, Query(description="The grouping column.")] = "pipeline_tag",
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
    pipeline_tag: Annotated[str | None, Query(description="Only models with this task.")] = None,
    library_name: Annotated[str | None, Query(description="Only models of this library.")] = None,
    author: Annotated[str | None, Query(description="Only models of this user or organisation.")] = None,
) -> ShareResponse:
    """Of the models in each group, how many ship each framework only, several, or none."""
    result = framework_share(
        cursor,
        by=by,
        method=method,
        frameworks=parse_frameworks(frameworks),
        pipeline_tag=pipeline_tag,
        library_name=library_name,
        author=author,
    )
    return ShareResponse(
        snapshot=SnapshotRef(id=meta.id, taken_at=meta.taken_at),
        **result.model_dump(),
    )
