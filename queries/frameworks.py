"""Framework classification: which frameworks a model ships (or can be loaded with), by four methods.

The rules are data, kept once (queries/rules.py, over the conditions of queries/conditions.py). Here they
generate the SQL that computes the per-method bitmask columns of a snapshot, and the Python classifier that
explains one model with its evidence; tests/test_frameworks.py checks that SQL and Python agree. This module
is the import home of the classifier's public names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from hubcensus.queries.conditions import FILES_COLUMN, FILES_TEXT
from hubcensus.queries.facts import Facts
from hubcensus.queries.rules import CLASSIFIER_VERSION, FRAMEWORKS, METHODS, RULES, Framework, Method, Rule

__all__ = [
    "BIT",
    "CLASSIFIER_VERSION",
    "FRAMEWORKS",
    "METHODS",
    "RULES",
    "Evidence",
    "Facts",
    "Framework",
    "Method",
    "Rule",
    "atom_columns",
    "classified_sql",
    "classify",
    "combination_name",
    "explain",
    "frameworks_of",
    "mask_of",
    "mask_sql",
    "shared_combinations",
]

# One bit per framework: a model's frameworks under a method are stored as a small integer (UTINYINT), so
# that restricting the comparison to a universe of frameworks is a bitwise AND and grouping is cheap.
BIT: dict[Framework, int] = {fw: 1 << i for i, fw in enumerate(FRAMEWORKS)}


# ------------------------------------------------------------------------------------------------------
# Classification in Python (one model, with evidence) and in SQL (a whole snapshot).
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """Why a framework was assigned: the rule, and the tags, files, library or config fields it read."""

    framework: Framework
    rule: str
    matched: list[str]
    reason: str
    convention: bool


def explain(facts: Facts) -> dict[Method, list[Evidence]]:
    """Classify one model under every method, with the evidence for each framework assigned."""
    out: dict[Method, list[Evidence]] = {m: [] for m in METHODS}
    for rule in RULES:
        found = rule.match(facts)
        if found is None:
            continue
        for method in METHODS:
            if method in rule.methods:
                out[method].append(Evidence(rule.framework, rule.id, found, rule.reason, rule.convention))
    return out


def classify(facts: Facts) -> dict[Method, int]:
    """The bitmask of each method for one model (the Python twin of `mask_sql`)."""
    return {m: mask_of(e.framework for e in ev) for m, ev in explain(facts).items()}


def atom_columns() -> dict[str, str]:
    """Every atomic test SQL evaluates (its SQL), each with the name of a column to compute it in once."""
    seen = dict.fromkeys(a for rule in RULES for a in rule.atoms())
    return {sql: f"_c{i}" for i, sql in enumerate(seen)}


def mask_sql(method: Method, atoms: dict[str, str] | None = None) -> str:
    """A SQL expression giving the method's bitmask (UTINYINT): over the evidence columns, or over the
    atomic tests' columns (`atom_columns`) when `atoms` is given."""
    terms = []
    for fw in FRAMEWORKS:
        parts = [r.sql(atoms) for r in RULES if r.framework == fw and method in r.methods]
        if parts:
            terms.append(f"(CASE WHEN {' OR '.join(parts)} THEN {BIT[fw]} ELSE 0 END)")
    return "(" + " + ".join(terms) + ")::UTINYINT"


def classified_sql(source: str) -> str:
    """`SELECT *, fw_<method> …` over `source` (a query or table with the fact columns): every method's
    bitmask, with each atomic test computed once per row rather than once per rule that reads it."""
    atoms = atom_columns()
    tests = ",\n    ".join(f"{sql} AS {name}" for sql, name in atoms.items())
    masks = ",\n    ".join(f"{mask_sql(m, atoms)} AS fw_{m}" for m in METHODS)
    return (
        f"SELECT * EXCLUDE ({FILES_COLUMN}, {', '.join(atoms.values())}),\n    {masks}\n"
        f"FROM (SELECT *,\n    {tests}\nFROM (SELECT *, {FILES_TEXT} AS {FILES_COLUMN} FROM ({source})))"
    )


# ------------------------------------------------------------------------------------------------------
# Bitmask helpers.
# ------------------------------------------------------------------------------------------------------


def mask_of(frameworks: Iterable[Framework]) -> int:
    """The bitmask of a set of frameworks."""
    mask = 0
    for fw in frameworks:
        mask |= BIT[fw]
    return mask


def frameworks_of(mask: int) -> list[Framework]:
    """The frameworks in a bitmask, in canonical order."""
    return [fw for fw in FRAMEWORKS if mask & BIT[fw]]


def combination_name(mask: int) -> str:
    """`pytorch+tensorflow` style name of a bitmask, canonical order."""
    return "+".join(frameworks_of(mask))


def shared_combinations(universe: Sequence[Framework]) -> list[int]:
    """Every mask of two or more frameworks within the universe, in a stable order."""
    return [mask_of(c) for size in range(2, len(universe) + 1) for c in combinations(universe, size)]
