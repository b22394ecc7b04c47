"""The conditions the framework rules test on a model's facts (queries/facts.py): atoms on one fact and their
combinations, each both a SQL expression over a snapshot's columns and a Python test that gives its evidence.
queries/rules.py builds the rules from these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from hubcensus.queries.facts import NOT_WEIGHTS, NOT_WEIGHTS_RE, Facts
from hubcensus.queries.sql import sql_literal


class Condition(Protocol):
    """A test on a model's facts, as SQL over the snapshot columns and in Python with its evidence."""

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        """A boolean SQL expression (never NULL) over the evidence columns.

        With `atoms` (an atomic test's SQL -> a column name), atomic tests are read from columns computed
        once per row instead of being repeated in every rule that uses them.
        """
        ...

    def atoms(self) -> list[str]:
        """The SQL of every atomic test within."""
        ...

    def match(self, facts: Facts) -> list[str] | None:
        """The evidence (e.g. `file model.safetensors`) when the condition holds, else None."""
        ...


# A row's file names, lower-cased and joined by newlines: computed once per row by classified_sql (as this
# column), and read by every file rule with one regular expression in multi-line mode.
FILES_COLUMN = "_hc_files"
FILES_TEXT = "lower(array_to_string(weight_files, chr(10)))"


class Atom:
    """A test on one fact; its SQL is computed once per row when the classifier runs as SQL."""

    def atom_sql(self) -> str:
        raise NotImplementedError

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        own = self.atom_sql()
        if atoms:
            return atoms.get(own, own)
        # Standalone (mask_sql without classified_sql's prepared columns): the file names joined in place.
        return own.replace(FILES_COLUMN, FILES_TEXT)

    def atoms(self) -> list[str]:
        return [self.atom_sql()]


@dataclass(frozen=True)
class Tag(Atom):
    """Any of these exact (case-sensitive) tags."""

    names: frozenset[str]

    def atom_sql(self) -> str:
        if len(self.names) == 1:
            return f"coalesce(list_contains(tags, {sql_literal(next(iter(self.names)))}), false)"
        # One regular expression over the tags joined by newlines: ten times faster than list_has_any with
        # hundreds of names (the transformers model types), and DuckDB compiles it once.
        alternatives = "|".join(re.escape(n) for n in sorted(self.names))
        return (
            f"coalesce(regexp_matches(array_to_string(tags, chr(10)), {sql_literal(f'(?m)^({alternatives})$')}), false)"
        )

    def match(self, facts: Facts) -> list[str] | None:
        # Split as the SQL's join does, so a (pathological) tag holding a newline is read alike.
        hit = next((line for t in facts.tags or () for line in t.split("\n") if line in self.names), None)
        return None if hit is None else [f"tag {hit}"]


@dataclass(frozen=True)
class UnlistedTag(Atom):
    """Files are not listed (a list response) and the model has any of these tags: the only evidence such a
    record has. Gated in SQL, so the tag test runs only on those rows."""

    names: frozenset[str]

    def atom_sql(self) -> str:
        return f"CASE WHEN weight_files IS NULL THEN {Tag(self.names).atom_sql()} ELSE false END"

    def match(self, facts: Facts) -> list[str] | None:
        return Tag(self.names).match(facts) if facts.files is None else None


@dataclass(frozen=True)
class File(Atom):
    """Any file whose lower-cased path matches the pattern (RE2 and Python `re` compatible)."""

    pattern: str
    _re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", re.compile(self.pattern))

    def atom_sql(self) -> str:
        # One regular expression over the row's file names, lower-cased and joined by newlines once per row
        # (FILES_COLUMN, see classified_sql), in multi-line mode, rather than a lambda over the list per rule.
        # The patterns never cross a line: `[^/]` is read as `[^/\n]`.
        multiline = "(?m)" + self.pattern.replace("[^/]", r"[^/\n]")
        return f"coalesce(regexp_matches({FILES_COLUMN}, {sql_literal(multiline)}), false)"

    def match(self, facts: Facts) -> list[str] | None:
        hit = next((f for f in facts.files or () if self._re.search(f.lower())), None)
        return None if hit is None else [f"file {hit}"]


@dataclass(frozen=True)
class OnlyFiles(Atom):
    """Files are listed, at least one is a weight file, and every weight file matches the pattern."""

    pattern: str
    _re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", re.compile(self.pattern))

    def atom_sql(self) -> str:
        weights = f"list_filter(weight_files, lambda f: NOT regexp_matches(lower(f), {sql_literal(NOT_WEIGHTS)}))"
        others = f"list_filter({weights}, lambda f: NOT regexp_matches(lower(f), {sql_literal(self.pattern)}))"
        # Gated on a first match: the full test (two passes over the names) runs only on the few such repos.
        return f"CASE WHEN {File(self.pattern).atom_sql()} THEN coalesce(len({others}) = 0, false) ELSE false END"

    def match(self, facts: Facts) -> list[str] | None:
        weights = [f for f in facts.files or () if not NOT_WEIGHTS_RE.search(f.lower())]
        if any(self._re.search(f.lower()) for f in weights) and all(self._re.search(f.lower()) for f in weights):
            return [f"only {self.pattern_label} weight files ({len(weights)})"]
        return None

    @property
    def pattern_label(self) -> str:
        return "GGUF/GGML" if "gguf" in self.pattern else self.pattern


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(sql_literal(v) for v in sorted(values)) + "]::VARCHAR[]"


@dataclass(frozen=True)
class Library(Atom):
    """`library_name` is one of these (compared lower-cased)."""

    names: frozenset[str]

    def atom_sql(self) -> str:
        return f"coalesce(list_contains({_sql_list(self.names)}, lower(library_name)), false)"

    def match(self, facts: Facts) -> list[str] | None:
        lib = facts.library_name
        return [f"library_name {lib}"] if lib is not None and lib.lower() in self.names else None


@dataclass(frozen=True)
class ModelType(Atom):
    """`config.model_type` is one of these; `None` means any model type at all."""

    names: frozenset[str] | None = None

    def atom_sql(self) -> str:
        if self.names is None:
            return "(model_type IS NOT NULL)"
        # A regular expression, compiled once: ten times faster than list_contains over hundreds of names.
        alternatives = "|".join(re.escape(n) for n in sorted(self.names))
        return f"coalesce(regexp_full_match(model_type, {sql_literal(alternatives)}), false)"

    def match(self, facts: Facts) -> list[str] | None:
        mt = facts.model_type
        if mt is None or (self.names is not None and mt not in self.names):
            return None
        return [f"config.model_type {mt}"]


@dataclass(frozen=True)
class AutoModel(Atom):
    """`transformersInfo` names an auto class: the Hub found a transformers model in the repo."""

    def atom_sql(self) -> str:
        return "(auto_model IS NOT NULL)"

    def match(self, facts: Facts) -> list[str] | None:
        return None if facts.auto_model is None else [f"transformersInfo.auto_model {facts.auto_model}"]


@dataclass(frozen=True)
class FilesUnknown(Atom):
    """The source did not list the repo's files (a list response without `siblings`)."""

    def atom_sql(self) -> str:
        return "(weight_files IS NULL)"

    def match(self, facts: Facts) -> list[str] | None:
        return ["files not listed"] if facts.files is None else None


@dataclass(frozen=True)
class AnyOf:
    """Any of the conditions; the evidence of the first that holds."""

    parts: tuple[Condition, ...]

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        return "(" + " OR ".join(p.sql(atoms) for p in self.parts) + ")"

    def atoms(self) -> list[str]:
        return [a for p in self.parts for a in p.atoms()]

    def match(self, facts: Facts) -> list[str] | None:
        return next((m for p in self.parts if (m := p.match(facts)) is not None), None)


@dataclass(frozen=True)
class AllOf:
    """All of the conditions; the evidence of each."""

    parts: tuple[Condition, ...]

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        return "(" + " AND ".join(p.sql(atoms) for p in self.parts) + ")"

    def atoms(self) -> list[str]:
        return [a for p in self.parts for a in p.atoms()]

    def match(self, facts: Facts) -> list[str] | None:
        found: list[str] = []
        for part in self.parts:
            m = part.match(facts)
            if m is None:
                return None
            found += m
        return found


@dataclass(frozen=True)
class Not:
    """The condition does not hold."""

    part: Condition

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        return f"(NOT {self.part.sql(atoms)})"

    def atoms(self) -> list[str]:
        return self.part.atoms()

    def match(self, facts: Facts) -> list[str] | None:
        return [] if self.part.match(facts) is None else None


def tag(*names: str) -> Tag:
    """Any of these tags."""
    return Tag(frozenset(names))


def library(*names: str) -> Library:
    """library_name is one of these."""
    return Library(frozenset(names))


def any_of(*parts: Condition) -> AnyOf:
    """Any of the conditions."""
    return AnyOf(parts)


def all_of(*parts: Condition) -> AllOf:
    """All of the conditions."""
    return AllOf(parts)
