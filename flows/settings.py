"""The one settings object: built once at the entry point, passed down as plain values."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.db import libpq_url
from schemas.errors import ConfigurationError

# Run defaults (docs/PERFORMANCE.md): batches big enough that per-batch costs (statements,
# Polars set-up) are small next to the rows, small enough to keep a batch's memory to ~100 MB;
# two batches at once keep 2 cores busy (one transforms while the other's load runs in
# PostgreSQL).
DEFAULT_BATCH_SIZE = 2500
DEFAULT_CONCURRENCY = 2


class Settings(BaseSettings):
    """Connection URLs and options; from CLI flags, else the environment (``SOURCE_DATABASE_URL``,
    ``TARGET_DATABASE_URL``, ...)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    source_database_url: SecretStr | None = None
    target_database_url: SecretStr | None = None
    source_schema: str = Field(default="public", min_length=1)
    target_schema: str = Field(default="public", min_length=1)

    def source_url(self) -> str:
        """The source URL as libpq takes it, or a clear error (naming the flag and variable that
        set it when missing; redacted when malformed)."""
        return _required(self.source_database_url, "--source-url", "SOURCE_DATABASE_URL")

    def target_url(self) -> str:
        """The target URL as libpq takes it, or a clear error (naming the flag and variable that
        set it when missing; redacted when malformed)."""
        return _required(self.target_database_url, "--target-url", "TARGET_DATABASE_URL")


def _required(value: SecretStr | None, flag: str, env: str) -> str:
    if value is None or not value.get_secret_value().strip():
        raise ConfigurationError(f"no database URL: pass {flag} or set {env}")
    try:
        return libpq_url(value.get_secret_value())
    except ConfigurationError as exc:
        raise ConfigurationError(f"{flag} / {env}: {exc}") from None


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with the non-None ``overrides`` (CLI flags) on top."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)  # type: ignore[arg-type]
