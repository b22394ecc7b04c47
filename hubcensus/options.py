"""Settings on the command line: options read from the same environment variables as Settings, the Settings a
command's options give (or `error: bad …`), and the data dir a command reads or writes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from hubcensus.config import Settings
from hubcensus.display import fail
from hubcensus.logs import keep_out_of_logs


def setting(field: str, *decls: str, help: str, **kwargs: Any) -> Any:
    """An option for a setting, read from the same environment variables as Settings, shown in --help."""
    return typer.Option(*decls, envvar=Settings.env_names(field), show_envvar=True, help=help, **kwargs)


DataDirOpt = Annotated[Path, setting("data_dir", "--data-dir", help="The snapshot store.")]
DATA_DIR: Path = Settings.default("data_dir")
EndpointOpt = Annotated[
    str,
    setting(
        "hf_endpoint",
        "--endpoint",
        help="The Hub's URL. A user:password@ in it is sent as basic auth, and shown or stored as ***@.",
    ),
]
ENDPOINT: str = Settings.default("hf_endpoint")

# How each setting is spelled on the command line and in the environment, for error messages.
_SETTING_NAMES = {
    "data_dir": "--data-dir / HUBCENSUS_DATA_DIR",
    "HF_ENDPOINT": "--endpoint / HF_ENDPOINT",
    "HF_TOKEN": "--token / HF_TOKEN",
    "HF_TOKEN_PATH": "HF_TOKEN_PATH",
    "http_timeout": "--timeout / HUBCENSUS_HTTP_TIMEOUT",
    "max_rate": "--max-rate / HUBCENSUS_MAX_RATE",
    "max_bad_share": "--max-bad-share / HUBCENSUS_MAX_BAD_SHARE",
    "query_timeout": "HUBCENSUS_QUERY_TIMEOUT",
    "keep_alive": "HUBCENSUS_KEEP_ALIVE",
    "log_format": "HUBCENSUS_LOG_FORMAT",
    "cache_mb": "HUBCENSUS_CACHE_MB",
    "query_memory_mb": "HUBCENSUS_QUERY_MEMORY_MB",
    "host": "--host / HUBCENSUS_HOST",
    "port": "--port / HUBCENSUS_PORT",
}


def settings(**overrides: object) -> Settings:
    """The settings with a command's options over the environment; `error: bad …` for a bad one."""
    try:
        resolved = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in first["loc"])
        fail(f"bad {_SETTING_NAMES.get(name, name)}: {first['msg'].removeprefix('Value error, ')}")
    # Whichever way a secret came (--token, HF_TOKEN, the HF_TOKEN_PATH file, the admin token), the log filter
    # must know it to keep it out of every line.
    keep_out_of_logs(resolved.token())
    keep_out_of_logs(resolved.admin_token.get_secret_value() if resolved.admin_token else None)
    return resolved


def existing(data_dir: Path) -> Path:
    """The data dir of a command that only reads: a missing one is an error, not an empty store."""
    if not data_dir.is_dir():
        fail(
            f"data dir {data_dir} does not exist"
            if not data_dir.exists()
            else f"data dir {data_dir} is not a directory"
        )
    return data_dir


def created(data_dir: Path) -> Path:
    """The data dir of a command that writes, created if needed."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create data dir {data_dir}: {exc.strerror or exc}")
    return data_dir
