"""Settings: one frozen model, read once at the entry point from env vars (prefix
``TOUCHPOINT_``), optional ``*_FILE`` variables for secrets, and CLI flags.

Inner code never reads the environment: it takes the values it needs as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TOUCHPOINT_"

DEFAULT_PLACEHOLDERS = (
    "null",
    "undefined",
    "anonymous",
    "0",
    "-1",
    "",
    "[object object]",
    "none",
    "nil",
    "n/a",
)


class Settings(BaseSettings):
    """Every knob of touchpoint. Field docs become ``--help`` text and docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", populate_by_name=True
    )

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path(".touchpoint"), description="Directory for all embedded data.")
    app_id: str = Field("touchpoint", description="faust application id (consumer group).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )

    # --- Kafka ------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for Kafka TLS.")
    kafka_rebalance_timeout: float = Field(
        5.0, gt=0, description="Seconds a rebalance waits for members (joins take this long)."
    )
    kafka_session_timeout: float = Field(
        10.0, gt=0, description="Seconds without heartbeat before a worker is presumed dead."
    )
    raw_topic: str = Field(
        "touchpoints.raw", description="Public input topic, one event a message."
    )
    dlq_topic: str = Field("touchpoints.dlq", description="Dead-letter topic for rejected events.")
    topic_prefix: str = Field("touchpoint", description="Prefix of the internal topics.")
    partitions: int = Field(
        6, ge=1, le=1024, description="Partitions of the raw and internal topics."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor of created topics.")

    # --- ClickHouse -------------------------------------------------------------------
    clickhouse_url: str = Field(
        "http://127.0.0.1:8123",
        validation_alias=AliasChoices(
            "TOUCHPOINT_CLICKHOUSE_URL", "CLICKHOUSE_URL", "clickhouse_url"
        ),
        description="ClickHouse HTTP(S) URL (also read from CLICKHOUSE_URL).",
    )
    clickhouse_database: str = Field("touchpoint", description="ClickHouse database.")
    clickhouse_user: str = Field("default", description="ClickHouse user for writes.")
    clickhouse_password: SecretStr = Field(SecretStr(""), description="Password of that user.")
    clickhouse_readonly_user: str = Field("reader", description="Read-only ClickHouse user.")
    clickhouse_readonly_password: SecretStr = Field(
        SecretStr("reader"), description="Password of the read-only user."
    )
    clickhouse_verify_tls: bool = Field(True, description="Verify the ClickHouse TLS certificate.")

    # --- contract and privacy ---------------------------------------------------------
    pii_mode: Literal["hash", "clear"] = Field(
        "hash", description="hash: emails and phones leave validation as HMAC-SHA256; clear: as is."
    )
    pii_hash_key: SecretStr = Field(
        SecretStr("touchpoint-dev-key-change-me"), description="HMAC key for PII hashing."
    )
    extra_placeholders: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="More identifier values to reject as placeholders (comma separated)."
    )
    max_event_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted raw message.")
    max_future_seconds: int = Field(86_400, description="How far in the future occurred_at may be.")
    default_phone_region: str = Field("US", description="Region for phones without a + prefix.")

    # --- worker -----------------------------------------------------------------------
    batch_max_events: int = Field(2000, ge=1, description="Events per stage batch (stream.take).")
    batch_max_seconds: float = Field(0.2, gt=0, description="Longest wait to fill a stage batch.")
    sink_max_rows: int = Field(10_000, ge=1, description="Rows per ClickHouse insert.")
    sink_max_seconds: float = Field(0.5, gt=0, description="Longest wait before an insert.")
    sink_retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest backoff between retries."
    )
    gc_young_threshold: int = Field(
        100_000,
        ge=0,
        description="Allocations between young garbage collections (Python: 700; 0 keeps "
        "Python's settings). Fewer passes over long-lived state: pipeline.gc_tuning.",
    )
    shutdown_deadline: float = Field(
        25.0,
        ge=0,
        description="Seconds a worker's clean stop (SIGTERM) may take before it exits anyway "
        "with code 76, its stacks logged (0: no deadline). Keep it under the orchestrator's "
        "grace period.",
    )
    worker_web_port: int = Field(6066, description="faust web port of a worker (metrics, health).")
    worker_web_host: str = Field("127.0.0.1", description="Bind address of the worker web server.")

    # --- journeys, stage metrics and alerts ---------------------------------------------
    stage_model_path: Path | None = Field(
        None, description="Stage model TOML file (unset: the shipped default)."
    )
    journey_hot_states: int = Field(
        10_000, ge=1, description="Journey states kept decoded per partition (the rest compressed)."
    )
    metrics_allowed_lateness: float = Field(
        1800.0, gt=0, description="Event-time seconds after a window's end before it is final."
    )
    metrics_completeness_grace: float = Field(
        120.0, gt=0, description="Event-time seconds after a window's end before it is complete."
    )
    alert_span_windows: int = Field(
        5, ge=1, description="1-minute windows of the long alert span (finds small increases)."
    )
    alert_fast_span_windows: int = Field(
        2, ge=1, description="1-minute windows of the short alert span (finds large ones fast)."
    )
    alert_baseline_windows: int = Field(60, ge=5, description="Evaluations in the baseline.")
    alert_relative_increase: float = Field(
        0.5, gt=0, description="Least relative drop-off increase that fires (0.5: +50%)."
    )
    alert_zscore: float = Field(4.0, gt=0, description="Least z-score of the deficit that fires.")
    alert_min_volume: int = Field(
        30, ge=1, description="Least expected conversions in a span to judge it."
    )
    alert_confirm: int = Field(
        1, ge=1, description="Consecutive evaluations over the thresholds needed to fire."
    )
    alert_max_ingest_lag: float = Field(
        60.0, gt=0, description="Seconds of ingest lag above which no alert decision is taken."
    )
    alert_webhook_url: str | None = Field(None, description="Where alerts are POSTed (unset: off).")
    alert_webhook_format: Literal["alertmanager", "json"] = Field(
        "alertmanager", description="Alertmanager webhook JSON, or one plain JSON per alert."
    )
    alert_webhook_token: SecretStr | None = Field(None, description="Bearer token of the webhook.")

    failpoints: str = Field(
        "",
        description="Fault injection for the fault suite (pipeline/failpoints.py); never in production.",
    )

    # --- embedded stack ---------------------------------------------------------------
    embedded_broker: bool = Field(True, description="touchpoint up starts Tansu if none answers.")
    embedded_clickhouse: bool = Field(True, description="touchpoint up serves chDB over HTTP.")
    workers: int = Field(1, ge=1, description="Worker processes touchpoint up starts.")
    demo_rate: float = Field(
        200.0, ge=0, description="Simulated events/s in touchpoint up (0: off)."
    )
    dashboard_host: str = Field("127.0.0.1", description="Bind address of the dashboard.")
    dashboard_port: int = Field(8080, description="Port of the dashboard and its API.")
    collector_host: str = Field("127.0.0.1", description="Bind address of the HTTP collector.")
    collector_port: int = Field(8088, description="Port of the HTTP collector.")
    collector_cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins allowed by CORS."
    )

    # --- dashboard --------------------------------------------------------------------
    dashboard_token: SecretStr | None = Field(
        None,
        description="Token the dashboard requires (Authorization: Bearer, or ?token= once, "
        "which sets a cookie); unset: no token.",
    )
    dashboard_user: str | None = Field(
        None, description="User for HTTP basic auth on the dashboard (unset: no basic auth)."
    )
    dashboard_password: SecretStr | None = Field(
        None, description="Password of the dashboard user (required with it)."
    )
    dashboard_refresh_seconds: float = Field(
        5.0, ge=1, description="Seconds between refreshes of the dashboard page."
    )
    dashboard_stale_seconds: float = Field(
        120.0, gt=0, description="Seconds without new events or metrics before a stale warning."
    )
    dashboard_feed_urls: str | None = Field(
        None,
        description="Worker URLs whose /stages live feed the dashboard reads, comma separated "
        "(unset: the workers touchpoint up starts on this machine).",
    )

    @field_validator("extra_placeholders", "collector_cors_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def placeholders(self) -> frozenset[str]:
        """Lower-cased identifier values that are never real identifiers."""
        return frozenset(p.lower() for p in (*DEFAULT_PLACEHOLDERS, *self.extra_placeholders))

    def topic(self, name: str) -> str:
        """Full name of an internal topic."""
        return f"{self.topic_prefix}.{name}"


def _secret_files() -> dict[str, str]:
    """Values of ``TOUCHPOINT_X_FILE`` variables: the content of the named file, as X."""
    values: dict[str, str] = {}
    for key, path in os.environ.items():
        if key.startswith(ENV_PREFIX) and key.endswith("_FILE"):
            field = key[len(ENV_PREFIX) : -len("_FILE")].lower()
            if field in Settings.model_fields:
                values[field] = Path(path).read_text(encoding="utf-8").strip()
    return values


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once: env vars, then ``*_FILE`` secrets, then explicit overrides."""
    from_files = _secret_files()
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**{**from_files, **given})


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``TOUCHPOINT_*`` env vars, to hand to child processes."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[ENV_PREFIX + name.upper()] = str(value)
    return env
