"""Docs as tests: every setting, route and classification rule is documented."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, FRAMEWORKS, RULES
from tests.data import ROOT

README = (ROOT / "README.md").read_text()
METHODOLOGY = (ROOT / "docs" / "METHODOLOGY.md").read_text()


def _env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.append(str(choices[0]) if choices else f"HUBCENSUS_{name.upper()}")
    return names


def test_readme_lists_every_setting() -> None:
    missing = [n for n in _env_names() if f"`{n}`" not in README]
    assert missing == []


def test_readme_lists_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    missing = [p for p in paths if p.replace("{snapshot}", "{id}").replace("{model_id}", "{id}") not in README]
    assert missing == []


def test_methodology_names_every_rule() -> None:
    # Every rule by its id, every framework, and the classifier version the figures were measured with.
    missing = [rule.id for rule in RULES if f"`{rule.id}`" not in METHODOLOGY]
    assert missing == []
    assert all(f"`{fw}`" in METHODOLOGY for fw in FRAMEWORKS)
    assert CLASSIFIER_VERSION in METHODOLOGY
