"""`hubcensus query NAME`: the API's routes run in-process, one sub-command each, with options generated
from the route's OpenAPI parameters, every page fetched and printed as a table, CSV or JSON."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from typer.core import TyperGroup

from hubcensus import options
from hubcensus.config import Settings
from hubcensus.display import fail, out, print_object, print_table, usage_fail
from hubcensus.options import DATA_DIR, DataDirOpt, existing

# Each named query is an API route (its OpenAPI path): the CLI runs the very same route in-process (no
# server, no socket), so parameters, validation, errors and numbers are identical to the HTTP answers.
QUERIES: dict[str, str] = {
    "share": "/v1/frameworks/share",
    "trend": "/v1/frameworks/trend",
    "history": "/v1/frameworks/history",
    "diff": "/v1/snapshots/{a}/diff/{b}",
    "diff-models": "/v1/snapshots/{a}/diff/{b}/models",
    "tasks": "/v1/tasks",
    "libraries": "/v1/libraries",
    "authors": "/v1/authors",
    "models": "/v1/models",
    "model": "/v1/models/{model_id}",
    "snapshots": "/v1/snapshots",
}
# The HTTP parameters the CLI sets itself: it fetches every page and chooses the format from --format.
_CONTROL = frozenset({"_next", "_size", "_format"})
# The options every query has, besides its route's.
_OWN_OPTIONS = frozenset({"--format", "--data-dir", "--help"})


@dataclass(frozen=True)
class _Param:
    """One route parameter as a command-line option: `min_downloads` is `--min-downloads`, `_sort` `--sort`."""

    name: str  # as HTTP spells it
    where: str  # "path" or "query"
    required: bool
    default: Any
    help: str
    metavar: str

    @property
    def option(self) -> str:
        return "--" + self.name.lstrip("_").replace("_", "-")

    @property
    def ident(self) -> str:
        # A Python identifier for typer, whatever the HTTP name (`from` is a keyword).
        return "p_" + self.name.lstrip("_")


@dataclass(frozen=True)
class _Query:
    """A named query: its route, its parameters, and whether it pages (and so also answers CSV)."""

    name: str
    path: str
    summary: str
    params: tuple[_Param, ...]
    tabular: bool

    @property
    def formats(self) -> tuple[str, ...]:
        return ("table", "csv", "json") if self.tabular else ("table", "json")

    def translate(self, message: str) -> str:
        """An API error message with the CLI's option names instead of the HTTP parameter names."""
        names = {p.name: p.option for p in self.params} | {"_format": "--format"}
        for http, option in names.items():
            if message.startswith(f"{http}: "):
                message = option + message[len(http) :]
            if "_" in http:  # never an English word; but 'pipeline_tag' in quotes is a value (of `by`), kept
                message = re.sub(rf"(?<![\w'-]){re.escape(http)}(?![\w'-])", option, message)
        return message


@cache
def _openapi() -> dict[str, Any]:
    """The API's OpenAPI document: what each route takes, with descriptions, defaults and allowed values."""
    from hubcensus.service.app import create_app

    # The defaults, not the environment (a bad setting is the command's to report); no store is opened.
    doc: dict[str, Any] = create_app(Settings.model_construct(data_dir=Path("."))).openapi()
    return doc


def _query(name: str) -> _Query:
    operation = _openapi()["paths"][QUERIES[name]]["get"]
    params = []
    tabular = False
    for p in operation.get("parameters", []):
        if p["name"] in _CONTROL:
            tabular = True
            continue
        schema = next((s for s in p["schema"].get("anyOf", [p["schema"]]) if s.get("type") != "null"), p["schema"])
        params.append(
            _Param(
                name=p["name"],
                where=p["in"],
                required=p.get("required", False),
                default=p["schema"].get("default"),
                help=" ".join(filter(None, [p.get("description", ""), _range(schema)])),
                metavar=_metavar(schema),
            )
        )
    query = _Query(
        name, QUERIES[name], operation.get("description") or operation.get("summary", ""), tuple(params), tabular
    )
    clash = {p.option for p in query.params} & _OWN_OPTIONS
    if clash:
        raise RuntimeError(f"query {name}: route parameter(s) {sorted(clash)} clash with the CLI's own options")
    return query


def _metavar(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "<" + "|".join(str(v) for v in schema["enum"]) + ">"
    kind = {"integer": "int", "number": "float", "boolean": "bool"}.get(schema.get("type", ""))
    return f"<{kind or schema.get('format') or 'str'}>"


def _range(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"[{low}<=x<={high}]"
    return f"[x>={low}]" if low is not None else f"[x<={high}]" if high is not None else ""


class QueryGroup(TyperGroup):
    """`hubcensus query NAME`: one sub-command per named query, built from its route only when asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(QUERIES)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return _query_command(_query(cmd_name)) if cmd_name in QUERIES else None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in QUERIES:
            usage_fail(f"unknown query {args[0]!r}; one of: {', '.join(QUERIES)}")
        return super().resolve_command(ctx, args)


def _query_command(query: _Query) -> Any:
    """The sub-command of one query, its options generated from the route's parameters."""

    def run(ctx: typer.Context, **values: Any) -> None:
        output, data_dir = values.pop("output"), values.pop("data_dir")
        if ctx.args:
            known = ", ".join(p.option for p in query.params)
            usage_fail(f"query {query.name} has no option {ctx.args[0]}; its options: {known}, --format, --data-dir")
        if output not in query.formats:
            usage_fail(f"--format: query {query.name} answers {', '.join(query.formats)}, not {output!r}")
        given = {p: values[p.ident] for p in query.params if values[p.ident] is not None}
        settings = options.settings(data_dir=data_dir)
        existing(settings.data_dir)
        _run_query(query, given, output, settings)

    keyword = inspect.Parameter.KEYWORD_ONLY
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("ctx", keyword, annotation=typer.Context),
            *(
                inspect.Parameter(
                    p.ident,
                    keyword,
                    default=inspect.Parameter.empty if p.required else p.default,
                    annotation=Annotated[
                        str if p.required else str | None,
                        typer.Option(p.option, help=p.help, metavar=p.metavar),
                    ],
                )
                for p in query.params
            ),
            inspect.Parameter(
                "output",
                keyword,
                default="table",
                annotation=Annotated[
                    str,
                    typer.Option(
                        "--format",
                        metavar=f"<{'|'.join(query.formats)}>",
                        help="How to print the answer" + ("; csv is the API's CSV feed." if query.tabular else "."),
                    ),
                ],
            ),
            inspect.Parameter("data_dir", keyword, default=DATA_DIR, annotation=DataDirOpt),
        ]
    )
    single = typer.Typer(rich_markup_mode=None, add_completion=False)
    single.command(
        name=query.name,
        help=query.summary,
        # Unknown options reach `run`, which refuses them with the list of this query's options.
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )(run)
    return typer.main.get_command(single)


def _run_query(query: _Query, given: dict[_Param, str], output: str, settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from hubcensus.service.app import create_app
    from hubcensus.service.paging import MAX_PAGE

    path = query.path
    params: dict[str, Any] = {}
    for param, value in given.items():
        if param.where == "path":
            path = path.replace("{" + param.name + "}", quote(value, safe="/"))
        else:
            params[param.name] = value
    if query.tabular:
        params["_size"] = MAX_PAGE
    # The app the command's settings give, as `hubcensus serve` would build it.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        if output == "csv":
            response = client.get(path, params={**params, "_format": "csv"})
            _check(response, query)
            out.file.write(response.text)
            # Every page has the header line; the pages after the first are written without it.
            while "next" in response.links:
                response = client.get(response.links["next"]["url"])
                _check(response, query)
                out.file.write(response.text.partition("\n")[2])
            return
        response = client.get(path, params=params)
        _check(response, query)
        body = response.json()
        rows = body.get("rows")
        while rows is not None and body.get("next_url"):
            page = client.get(body["next_url"])
            _check(page, query)
            body = page.json()
            rows.extend(body["rows"])
    first = response.json()
    if output == "json":
        # json.dumps, not rich's print_json: that one takes about a second per thousand rows.
        whole = first if rows is None else {**first, "rows": rows, "next": None, "next_url": None}
        out.file.write(json.dumps(whole, indent=2, ensure_ascii=False) + "\n")
    elif rows is not None:
        print_table(first, rows)
    else:
        print_object(first)


def _check(response: Any, query: _Query) -> None:
    if response.status_code >= 400:
        error = response.json().get("error", {})
        message = query.translate(error.get("message", response.text))
        fail(f"{message} [{error.get('code', response.status_code)}]")
