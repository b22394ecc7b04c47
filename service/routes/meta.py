"""Service health, and the rules every answer was computed with."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hubcensus.queries.frameworks import CLASSIFIER_VERSION, FRAMEWORKS, METHODS, RULES, Framework, Method
from hubcensus.queries.transformers_table import transformers_table
from hubcensus.service.deps import StoreDep
from hubcensus.service.openapi import INVALID_RESPONSE

router = APIRouter(tags=["meta"], responses=INVALID_RESPONSE)


class Health(BaseModel):
    """The service is up; how many snapshots it can serve and which is the newest."""

    status: str
    snapshots: int
    latest: str | None


@router.get("/healthz", response_model=Health)
def read_health(store: StoreDep) -> Health:
    """Liveness and readiness: answers 200 whenever the process serves requests."""
    snapshots = store.snapshots()
    return Health(status="ok", snapshots=len(snapshots), latest=snapshots[0].id if snapshots else None)


class RuleDoc(BaseModel):
    """One classification rule, as queries/rules.py holds it."""

    id: str
    framework: Framework
    methods: list[Method]
    reason: str
    convention: bool = Field(description="The evidence is a convention (how tools write files), not a fact.")


class Rules(BaseModel):
    """How this service decides frameworks: the classifier version every answer states, and its rules."""

    classifier_version: str
    transformers_version: str = Field(description="The transformers 4.x release the `loadable` table came from.")
    frameworks: list[Framework]
    methods: list[Method]
    rules: list[RuleDoc]


@router.get("/v1/rules", response_model=Rules)
def read_rules() -> Rules:
    """Every rule of the classifier with its reason (docs/METHODOLOGY.md has their counts on real data)."""
    return Rules(
        classifier_version=CLASSIFIER_VERSION,
        transformers_version=transformers_table()["transformers_version"],
        frameworks=list(FRAMEWORKS),
        methods=list(METHODS),
        rules=[
            RuleDoc(
                id=r.id,
                framework=r.framework,
                methods=[m for m in METHODS if m in r.methods],
                reason=r.reason,
                convention=r.convention,
            )
            for r in RULES
        ],
    )
