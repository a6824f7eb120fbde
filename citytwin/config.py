"""Settings, read from the environment (prefix ``CITYTWIN_``) only at the edges: the CLI and the app.

Everything below the edges receives plain values (an engine, a path, a URL) as arguments.
"""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The user's data directory for citytwin (``~/.local/share/citytwin`` on Linux)."""
    return Path(user_data_dir("citytwin", appauthor=False))


class Settings(BaseSettings):
    """Runtime configuration.

    ``database_url`` empty means: use the embedded PostgreSQL + PostGIS cluster under ``data_dir``.
    ``mqtt_url`` empty means: no broker; HTTP ingest and the built-in simulator still work.
    ``dask_scheduler`` empty means: a LocalCluster on this machine.
    """

    model_config = SettingsConfigDict(env_prefix="CITYTWIN_", env_file=None, extra="ignore")

    database_url: str = ""
    mqtt_url: str = ""
    dask_scheduler: str = ""
    data_dir: Path = Field(default_factory=default_data_dir)
    tiles_dir: Path = Path("tiles")
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Reads are open unless this is set; writes always need a key with the right scope.
    require_key_for_reads: bool = False
    max_request_bytes: int = 10 * 1024 * 1024
    # OGC API - Features: the largest page an items request may ask for (larger limits are clamped).
    ogc_max_limit: int = 10_000
    telemetry_retention_days: int = 30
    # How often each API process sends due webhook deliveries (seconds); 0 turns the sender off.
    webhook_dispatch_interval_s: float = 2.0


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (CLI options) on top."""
    values = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**values)
