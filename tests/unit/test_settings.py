"""Settings: env vars, *_FILE secrets, masking, and the env handed to child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import Settings, load_settings, settings_env


def test_secret_file_variable_is_read_and_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "ch-password"
    secret.write_text("s3cr3t-value\n")
    monkeypatch.setenv("TOUCHPOINT_CLICKHOUSE_PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert settings.clickhouse_password.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(settings)


def test_env_vars_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", "https://ch.example:8443")
    monkeypatch.setenv("TOUCHPOINT_EXTRA_PLACEHOLDERS", "test, n.a.")
    settings = load_settings(partitions=12)
    assert settings.clickhouse_url == "https://ch.example:8443"
    assert settings.partitions == 12
    assert {"test", "n.a.", "null", "[object object]"} <= settings.placeholders


def test_child_process_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings(partitions=4, pii_hash_key="k1", collector_cors_origins="https://a,https://b")
    for key, value in settings_env(original).items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="partitionz"):
        load_settings(partitionz=3)
