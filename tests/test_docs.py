"""Docs as tests: every setting, route and classification rule is documented, and docs/ARCHITECTURE.md names
only modules and functions that exist."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from fastapi.testclient import TestClient

from hubcensus.config import Settings
from hubcensus.queries.frameworks import CLASSIFIER_VERSION, FRAMEWORKS, RULES
from tests.data import ROOT

README = (ROOT / "README.md").read_text()
METHODOLOGY = (ROOT / "docs" / "METHODOLOGY.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
# The folders of the tree a document may name, and the package each is imported as.
PACKAGES = {
    "queries": "hubcensus.queries",
    "ingest": "hubcensus.ingest",
    "service": "hubcensus.service",
    "hubcensus": "hubcensus",
    "benchmarks": "benchmarks",
    "tests": "tests",
}
PRODUCT = ("queries", "ingest", "service", "hubcensus")
FILE_SUFFIXES = {"py", "json", "md", "duckdb", "gz", "jsonl", "parquet", "html", "toml", "yml", "lock"}


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


def _module_of(path: str) -> str:
    """The import name of a file of the tree: `queries/store.py` -> `hubcensus.queries.store`."""
    top, *rest = Path(path).with_suffix("").parts
    return ".".join([PACKAGES[top], *rest])


def _has(module: str, name: str) -> bool:
    """Whether `module` defines `name` (dotted for a member: `SnapshotWriter.publish`); a function or class it
    only imports does not count: a document names the module where a thing is defined."""
    target: object = importlib.import_module(module)
    for part in name.split("."):
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
        defined_elsewhere = (inspect.isclass(target) or inspect.isroutine(target)) and target.__module__ != module
        if defined_elsewhere and part == name.split(".")[0]:
            return False
    return True


def _product_modules() -> dict[str, list[str]]:
    """Every module of the product by its file's name (`store` -> [`hubcensus.queries.store`])."""
    found: dict[str, list[str]] = {}
    for top in PRODUCT:
        for file in (ROOT / top).rglob("*.py"):
            if file.stem == "__main__":
                continue  # running it is all it does
            found.setdefault(file.stem, []).append(_module_of(str(file.relative_to(ROOT))))
    return found


def names_missing_from_the_tree(text: str) -> list[str]:
    """What a document names in backquotes that the tree lacks: a path of the tree (`queries/store.py`,
    `service/routes/`), a file named alone (`cli.py`), a function of a module (`ingest/dumps.py:import_dump`,
    `records.RECORD_SHAPE`), or a function named alone (`framework_share()`)."""
    modules = _product_modules()
    missing = []
    folders = "|".join(PACKAGES)
    for path, name in re.findall(rf"`((?:{folders})/[\w/.]*)(?::([\w.]+))?`", text):
        if not (ROOT / path).exists() or (name and not _has(_module_of(path), name)):
            missing.append(f"{path}:{name}" if name else path)
    for file in re.findall(r"`(\w+\.py)`", text):
        if not any(next((ROOT / top).rglob(file), None) for top in PACKAGES):
            missing.append(file)
    for stem, name in re.findall(r"`([a-z_]+)\.([A-Za-z_][\w.]*)`", text):
        if name in FILE_SUFFIXES:
            continue  # a file (`meta.json`, `cli.py`), not a module's name
        if stem in modules and not any(_has(m, name) for m in modules[stem]):
            missing.append(f"{stem}.{name}")
    for name in re.findall(r"`(\w+)\(\)`", text):
        if not any(_has(m, name) for ms in modules.values() for m in ms):
            missing.append(f"{name}()")
    return missing


def test_architecture_names_only_what_exists() -> None:
    assert names_missing_from_the_tree(ARCHITECTURE) == []


def test_a_name_that_is_gone_is_found_missing() -> None:
    # What the check reads, each form once: the names of the tree pass, names that are not there do not.
    text = (
        "`queries/store.py` `queries/datadir.py:Layout.snapshot` `service/routes/` `cli.py` `records.RECORD_SHAPE`"
        " `framework_share()` `meta.json` `os.rename`"
    )
    assert names_missing_from_the_tree(text) == []
    gone = "`queries/gone.py` `queries/store.py:replace` `nowhere.py` `dumps.DumpFile` `_share_sql()`"
    assert names_missing_from_the_tree(gone) == [
        "queries/gone.py",
        "queries/store.py:replace",
        "nowhere.py",
        "dumps.DumpFile",
        "_share_sql()",
    ]
