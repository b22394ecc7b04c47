"""Configuration from flags and environment, built once at start (never at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hubcensus.queries.store import MAX_ATTACHED

if TYPE_CHECKING:
    from hubcensus.ingest.hub import HubOptions


class Settings(BaseSettings):
    """Every setting, with its environment variable; the README lists them all with defaults."""

    model_config = SettingsConfigDict(env_prefix="HUBCENSUS_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where snapshots live (HUBCENSUS_DATA_DIR).")
    hf_endpoint: str = Field(
        "https://huggingface.co",
        validation_alias=AliasChoices("HF_ENDPOINT", "HUBCENSUS_HF_ENDPOINT"),
        description="The Hub to ingest from (HF_ENDPOINT).",
    )
    hf_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("HF_TOKEN"), description="Hub token, sent only to the endpoint."
    )
    # HF_TOKEN_PATH is huggingface_hub's own name for the file holding the token: a Docker secret is such a
    # file (/run/secrets/hf_token), kept out of the environment, `docker inspect` and the process table.
    hf_token_from_file: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("HF_TOKEN_PATH"),
        description="The Hub token read from this file (empty: none); HF_TOKEN and --token win over it.",
    )
    http_timeout: float = Field(30.0, gt=0, description="Seconds for each Hub request (connect and read).")
    max_rate: float = Field(1.5, ge=0, description="Most Hub requests per second (0: no limit).")
    max_retries: int = Field(5, ge=0, le=20, description="Retries of one Hub page on 429, 5xx, timeouts, bad bodies.")
    resume_max_age: float = Field(21600, ge=0, description="Seconds a failed ingest can be resumed from its cursor.")
    max_bad_share: float = Field(0.05, ge=0, le=1, description="Import fails above this share of bad records.")
    query_timeout: float = Field(10.0, gt=0, description="Seconds a query may run before the API answers 504.")
    keep_alive: int = Field(
        75, ge=1, le=3600, description="Seconds the API keeps an idle connection open for the client's next request."
    )
    cache_mb: int = Field(64, ge=0, description="Memory for cached answers, in MiB (0 turns the cache off).")
    query_memory_mb: int = Field(
        1024, ge=64, description="Memory DuckDB may use for queries and cached data, all snapshots together, in MiB."
    )
    max_attached: int = Field(
        MAX_ATTACHED,
        ge=2,
        le=1024,
        description="Snapshots the API keeps open at most (the least recently used is closed).",
    )
    admin_token: SecretStr | None = Field(None, description="Enables POST/DELETE /v1/snapshots; required as Bearer.")
    seed_bundled: bool = Field(
        False, description="The worker imports the bundled 2022-02-21 crawl when the store has no snapshot."
    )
    archive: str | None = Field(
        None,
        description="s3://bucket/prefix: the worker uploads each snapshot there; an API with it serves the archive "
        "from a local cache (credentials and endpoint: the AWS_* variables). Unset: one data dir, shared.",
    )
    archive_cache_mb: int = Field(
        10240, ge=1, description="API node: disk for snapshot files fetched from the archive, in MiB (LRU eviction)."
    )
    archive_poll: float = Field(
        30.0, gt=0, le=3600, description="API node: seconds between syncs of the archive: the delay for new snapshots."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text or JSON lines.")
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on.")

    @field_validator("hf_token_from_file", mode="before")
    @classmethod
    def _read_token_file(cls, value: object) -> str | None:
        if value is None:
            return None
        path = Path(str(value))
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"the token file {path} is not UTF-8 text") from None
        return token or None  # an empty file (compose's default secret is /dev/null): no token

    @field_validator("archive")
    @classmethod
    def _archive_is_s3(cls, value: str | None) -> str | None:
        if not value:
            return None
        from hubcensus.queries.archive import ArchiveLocation

        return ArchiveLocation.parse(value).url

    @field_validator("hf_endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @classmethod
    def env_names(cls, field: str) -> list[str]:
        """The environment variables a setting is read from, first match wins (for help and messages)."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return [str(choice) for choice in alias.choices]
        return [f"{cls.model_config.get('env_prefix', '')}{field}".upper()]

    @classmethod
    def default(cls, field: str) -> Any:
        """A setting's default, as the command line shows it."""
        return cls.model_fields[field].default

    def token(self) -> str | None:
        """The Hub token: --token, else HF_TOKEN, else the file HF_TOKEN_PATH names (as huggingface_hub
        itself prefers HF_TOKEN to its token file); None for anonymous access."""
        secret = self.hf_token or self.hf_token_from_file
        return secret.get_secret_value() if secret else None

    def hub_options(self, **overrides: Any) -> HubOptions:
        """The ingest options these settings give."""
        # Imported here: the API builds its app from these settings, and `service` never imports `ingest`.
        from hubcensus.ingest.hub import HubOptions

        return HubOptions(
            endpoint=self.hf_endpoint,
            token=self.token(),
            timeout=self.http_timeout,
            max_rate=self.max_rate,
            max_retries=self.max_retries,
            resume_max_age=self.resume_max_age,
            **overrides,
        )
