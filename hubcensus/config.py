"""Configuration from flags and environment, built once at start (never at import time)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    http_timeout: float = Field(30.0, gt=0, description="Seconds for each Hub request (connect and read).")
    max_bad_share: float = Field(0.05, ge=0, le=1, description="Import fails above this share of bad records.")
    query_timeout: float = Field(10.0, gt=0, description="Seconds a query may run before the API answers 504.")
    cache_mb: int = Field(64, ge=0, description="Memory for cached answers, in MiB (0 turns the cache off).")
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on.")

    @field_validator("hf_endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")
