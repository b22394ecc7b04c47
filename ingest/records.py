"""One Hub model record, validated into the row a snapshot stores.

Accepts both shapes the Hub API has had: the modern one (`id`, `createdAt`, `author`, ...) and the
2022 one (`modelId`, no `createdAt`, no `author`). Unknown fields are ignored and missing ones
become null; a record whose known fields have the wrong type is rejected with a reason.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hubcensus.queries.facts import weight_files


class Sibling(BaseModel):
    """A file in the model repository; only its name matters here."""

    model_config = ConfigDict(extra="ignore")
    rfilename: str


class HubModelRecord(BaseModel):
    """The fields of a Hub model object that a snapshot keeps."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, validation_alias=AliasChoices("id", "modelId"))
    author: str | None = None
    created_at: datetime | None = Field(None, validation_alias=AliasChoices("createdAt", "created_at"))
    last_modified: datetime | None = Field(None, validation_alias=AliasChoices("lastModified", "last_modified"))
    downloads: int | None = None
    likes: int | None = None
    # fail_fast: pydantic otherwise reports every bad element, and a 10 MB list of numbers in a dump would
    # become 5 million error objects (60 s, 4.6 GB) for one bad record; the first error is the reason kept.
    tags: list[str] | None = Field(None, fail_fast=True)
    pipeline_tag: str | None = None
    library_name: str | None = None
    private: bool | None = None
    gated: str | None = None
    sha: str | None = None
    siblings: list[Sibling] | None = Field(None, fail_fast=True)
    # Read leniently: a config is the repo's own file, so a value of an unexpected shape is no fact (null), never
    # a bad record. Only `model_type`, `architectures` and `auto_model` are kept (queries.facts.Facts).
    config: Any = None
    transformers_info: Any = Field(None, validation_alias=AliasChoices("transformersInfo", "transformers_info"))

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, value: Any) -> Any:
        # A JSON null says no more than a missing key: `"id": null` beside a `modelId` takes the
        # modelId, as DuckDB's reader (ingest.duckread) does, where a null and a missing key are one.
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return value

    @field_validator("siblings", mode="before")
    @classmethod
    def _siblings_from_strings(cls, value: Any) -> Any:
        # Dumps written with str(ModelInfo) carry "RepoSibling(rfilename='a.bin', ...)" strings, and
        # some tools write bare file names: both name the file as clearly as the API's objects do.
        if not isinstance(value, list):
            return value
        return [_sibling_from_string(v) if isinstance(v, str) else v for v in value]

    @field_validator("gated", mode="before")
    @classmethod
    def _gated_as_text(cls, value: Any) -> Any:
        # The Hub answers false, "auto" or "manual": keep one text column with the Hub's words.
        if isinstance(value, bool):
            return "true" if value else "false"
        return value

    def to_row(self) -> dict[str, Any]:
        """The snapshot row: author derived from the id when the record has none (2022 shape)."""
        author = self.author
        if author is None and "/" in self.id:
            author = self.id.split("/", 1)[0]
        return {
            "id": self.id,
            "author": author,
            "created_at": _utc_naive(self.created_at),
            "last_modified": _utc_naive(self.last_modified),
            "downloads": self.downloads,
            "likes": self.likes,
            "tags": self.tags,
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name,
            "private": self.private,
            "gated": self.gated,
            "weight_files": weight_files(None if self.siblings is None else [s.rfilename for s in self.siblings]),
            **config_facts(self.config, self.transformers_info),
        }


def config_facts(config: Any, transformers_info: Any) -> dict[str, Any]:
    """`model_type` and `architectures` of the Hub's `config`, `auto_model` of its `transformersInfo`.

    A value of any other shape than the Hub's (an object with a string, a list of strings) is null: the same
    rule as ingest.duckread's SQL. A config given as JSON text (a hub-stats Parquet column) is read as JSON.
    """
    if isinstance(config, str):
        config = _json_object(config)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    auto_model = transformers_info.get("auto_model") if isinstance(transformers_info, dict) else None
    return {
        "model_type": model_type if isinstance(model_type, str) else None,
        "architectures": architectures
        if isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)
        else None,
        "auto_model": auto_model if isinstance(auto_model, str) else None,
    }


def _json_object(text: str) -> Any:
    try:
        return json.loads(text) if len(text) <= MAX_CONFIG_TEXT else None
    except (ValueError, RecursionError):
        return None


# A config as JSON text longer than this is not read (a Hub config is a few KB; DuckDB's reader alike).
MAX_CONFIG_TEXT = 1 << 20

_REPR_SIBLING = re.compile(r"""^RepoSibling\(rfilename=(['"])(.*?)\1[,)]""")


def _sibling_from_string(value: str) -> dict[str, str]:
    match = _REPR_SIBLING.match(value)
    return {"rfilename": match.group(2) if match else value}


ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("author", pa.string()),
        ("created_at", pa.timestamp("ms")),
        ("last_modified", pa.timestamp("ms")),
        ("downloads", pa.int64()),
        ("likes", pa.int64()),
        ("tags", pa.list_(pa.string())),
        ("pipeline_tag", pa.string()),
        ("library_name", pa.string()),
        ("private", pa.bool_()),
        ("gated", pa.string()),
        ("weight_files", pa.list_(pa.string())),
        ("model_type", pa.string()),
        ("architectures", pa.list_(pa.string())),
        ("auto_model", pa.string()),
    ]
)


def _keys(model: type[BaseModel]) -> list[str]:
    """The JSON keys `model` reads: each field's aliases, or its name."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        keys.extend([c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else [name])
    return keys


Shape = dict[str, "Shape | None"]
RECORD_SHAPE: Shape = (
    {key: None for key in _keys(HubModelRecord)}
    | {"siblings": dict.fromkeys(_keys(Sibling))}
    | {"config": {"model_type": None, "architectures": None}}
    | {key: {"auto_model": None} for key in ("transformersInfo", "transformers_info")}
)
"""The parts of a record `parse_record` reads: these keys of the record object (the whole value, None), and of
each object in `siblings` only its own keys. The streaming reader (ingest.jsonread) builds only these, as DuckDB's
reader (ingest.duckread) reads only these columns: the rest of a record, however large or deep, is skipped."""


def _utc_naive(value: datetime | None) -> datetime | None:
    # Stored as naive UTC timestamps: DuckDB would otherwise render TIMESTAMPTZ in the session zone.
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def parse_record(obj: Any) -> dict[str, Any]:
    """Validate one decoded JSON value into a row; raises BadRecord with a short reason."""
    if not isinstance(obj, dict):
        raise BadRecord(f"not an object ({type(obj).__name__})")
    try:
        return HubModelRecord.model_validate(obj).to_row()
    except ValidationError as exc:
        raise BadRecord(_reason(exc)) from None


def _reason(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "record"
    # Aliases show as a choice of names; the first (API) name reads best.
    return f"{loc}: {err['msg']}"


class BadRecord(ValueError):
    """A record that cannot be stored, with the reason as its message."""
