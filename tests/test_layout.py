"""The tree's layering, as docs/ARCHITECTURE.md states it, checked on the code's own imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.data import ROOT

PACKAGES = ("queries", "ingest", "service")


def _imports(path: Path) -> set[str]:
    """The modules `path` imports (absolute names), from its syntax tree: nothing is run."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "hubcensus" and len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    if module == "hubcensus.config":
        return "config"  # the settings: read by the app factory and the commands
    if parts[0] == "hubcensus":
        return "hubcensus"
    return parts[0] if parts[0] in ("tests", "benchmarks") else None


# What each package may import of ours: queries nothing, ingest queries, service queries and the settings
# (`create_app(settings)`); ingest and service never each other, and none of them the commands.
ALLOWED = {"queries": {"queries"}, "ingest": {"queries", "ingest"}, "service": {"queries", "service", "config"}}


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in _imports(path)
        if (layer := _layer(name)) is not None and layer not in ALLOWED[package]
    )
    assert wrong == []


def test_no_test_module_imports_another() -> None:
    # Shared test code lives in tests/data.py, tests/helpers.py, tests/hubserver.py, tests/hubdatasets.py and the
    # feeds' common.py: a test module that imports another runs its import-time work and couples the two.
    shared = {"tests.data", "tests.helpers", "tests.hubserver", "tests.hubdatasets", "tests.feeds.common"}
    wrong = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in _imports(path)
        if name.startswith("tests.") and name not in shared and not name.startswith("tests.faults.")
    )
    assert wrong == []
