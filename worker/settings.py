"""Settings, read once: defaults < a YAML config file < environment (``FEEDWORKER_*``, nested with ``__``).

Example::

    FEEDWORKER_STORE_URL=postgresql+psycopg://app@db/feeds \
    FEEDWORKER_IMAGES__ALLOW_NETWORKS='["10.0.0.0/8"]' feedworker run ./drops

No other module reads the environment: they take a ``Settings`` (or one of its parts) as an argument.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tasks.errors import BrokerUnavailable, FeedworkerError
from tasks.limits import ImageLimits, ParseLimits

STATE_DIR = Path(".feedworker")  # embedded broker data and its URL file, beside the default SQLite store
BROKER_URL_FILE = "broker.url"  # in the state folder: the embedded broker's URL (see broker_url below)


class WatchSettings(BaseModel):
    """How the watcher decides a file is complete, and what it does with it afterwards."""

    settle_seconds: float = 1.0  # size and mtime must hold still this long for a file written in place
    rescan_seconds: float = 30.0  # the reconciling scan: finds what events missed (NFS, overflow, downtime)
    recursive: bool = True
    after: Literal["move", "keep", "delete"] = "move"  # move: processed/YYYY-MM-DD/ and failed/
    batch_max: int = 100  # drops per task batch
    batch_window_ms: int = 20  # how long a live batch waits for company: latency vs broker round trips
    requeue_after_seconds: float = 300.0  # a drop queued this long with no outcome is enqueued again
    # Where finished drops go (absolute; default: processed/ and failed/ inside the drop folder). Folders outside
    # the drop folder are out of producers' reach: the safe layout when producers are not trusted (docs/security.md).
    processed_dir: Path | None = None
    failed_dir: Path | None = None

    @field_validator("processed_dir", "failed_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, not {str(value)!r}")
        return value


class ChangeSettings(BaseModel):
    """The change log (`feedworker changes`, docs/changes.md)."""

    retention_days: float = 30.0  # changes older than this are pruned (by publishing workers, every 10 min)


class WebhookEndpoint(BaseModel):
    """One receiver of the change feed (docs/changes.md, "Webhooks")."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # its cursor's key in the store; keep it when the URL moves
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr  # HMAC-SHA256 key of the X-Feedworker-Signature header
    batch_max: int = Field(default=100, ge=1, le=1000)  # changes per POST


class WebhookSettings(BaseModel):
    """Webhooks: off while no endpoint is configured."""

    endpoints: list[WebhookEndpoint] = []
    timeout_seconds: float = 10.0  # one POST
    retry_max_seconds: float = 50.0  # backoff cap: below visibility_timeout, so a waiting retry is never sent twice


class Settings(BaseSettings):
    """Everything feedworker can be told. See config/feedworker.example.yaml for each setting."""

    model_config = SettingsConfigDict(env_prefix="FEEDWORKER_", env_nested_delimiter="__", extra="forbid")

    config: Path | None = None  # FEEDWORKER_CONFIG: a YAML file read below the environment
    broker_url: str | None = None  # None: the embedded broker that `feedworker run` starts
    store_url: str = "sqlite:///feedworker.db"
    state_dir: Path = STATE_DIR
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    worker_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 2)
    live_concurrency: int = Field(default=2, ge=0)  # `run`: processes serving live drops first (0: none of its own)
    verify_concurrency: int = Field(default=16, ge=0)  # `run`: threads checking a backfill's images (0: none)
    visibility_timeout: int = 60  # seconds before an unacked task of a dead worker is redelivered
    task_soft_time_limit: int = 45  # a stage that runs this long is interrupted and its drops failed
    task_time_limit: int = 55  # hard limit: must stay below visibility_timeout (no second delivery while running)
    max_worker_deaths: int = 3  # a drop alone whose worker process died this often on it is failed (poison)
    lost_sweep_seconds: float = 60.0  # workers look for drops whose messages are gone this often (0: never)
    cache_url: str | None = None  # Redis for image outcomes; default: the broker, when it is Redis
    rabbitmq_queue_type: Literal["quorum", "classic"] = "quorum"  # RabbitMQ brokers only; quorum needs 3.8+
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"  # where /metrics, /livez, /readyz listen; "0.0.0.0" for every interface
    flower_basic_auth: SecretStr | None = None  # user:password for `run --flower`; default: generated
    parse: ParseLimits = ParseLimits()
    images: ImageLimits = ImageLimits()
    watch: WatchSettings = WatchSettings()
    changes: ChangeSettings = ChangeSettings()
    webhooks: WebhookSettings = WebhookSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSource(settings_cls)


class YamlConfigSource(PydanticBaseSettingsSource):
    """The YAML file named by FEEDWORKER_CONFIG (or ``config/feedworker.yaml`` when it exists)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        path = _config_path()
        if path is None:
            return {}
        data = _read_config(path)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping, not {type(data).__name__}")
        return data


class ConfigError(FeedworkerError):
    """The config file can't be read: ``str()`` names the file, the line and what is wrong."""


def _read_config(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start})") from exc
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {_yaml_problem(exc)}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``line 3, column 1: did not find expected ',' or ']' (while parsing a flow sequence from line 2)``."""
    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"

    text = f"{at(exc.problem_mark)}: {exc.problem or 'unreadable'}"
    if exc.context:
        text += f" ({exc.context}" + (f" from {at(exc.context_mark)})" if exc.context_mark else ")")
    return text


def _config_path() -> Path | None:
    named = os.environ.get("FEEDWORKER_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"FEEDWORKER_CONFIG names {named}, which is not a file")
        return path
    default = Path("config/feedworker.yaml")
    return default if default.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()


def url_file(settings: Settings) -> Path:
    """Where `feedworker run` writes its embedded broker's URL (worker/running/broker.py starts it), for the
    commands started from the same folder to find it."""
    return settings.state_dir / BROKER_URL_FILE


def broker_url(settings: Settings) -> str:
    """The configured broker URL, else the running embedded broker's; raises when there is neither."""
    if settings.broker_url:
        return settings.broker_url
    path = url_file(settings)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    raise BrokerUnavailable(
        "no broker: set FEEDWORKER_BROKER_URL (e.g. redis://127.0.0.1:6379/0), "
        f"or start `feedworker run` in this folder, which starts an embedded one (looked for {path})")
