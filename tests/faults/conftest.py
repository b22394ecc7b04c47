"""Fault-injection suite (`make test-faults`): slow by nature; each case records what it measured."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.data import ROOT

ARTIFACT = ROOT / "test-artifacts" / "fault-matrix.json"
_rows: list[dict[str, Any]] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a fault test: `make test` leaves them out, `make test-faults` runs them."""
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def report() -> Iterator[Callable[..., None]]:
    """Record one case's measured figures; all are written to test-artifacts/fault-matrix.json."""

    def add(case: str, **figures: Any) -> None:
        _rows.append({"case": case, **figures})

    yield add
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(_rows, indent=2, default=str))
