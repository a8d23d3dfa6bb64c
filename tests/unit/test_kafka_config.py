"""KafkaConfig: SASL (PLAIN, SCRAM) and TLS settings reach kafka-python, aiokafka and faust."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import SecretStr

from pipeline.kafka_config import KafkaConfig
from pipeline.settings import load_settings

PASSWORD = "s3cr3t-pw"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate (PEM), made with the openssl command line."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command line")
    folder = tmp_path_factory.mktemp("ca")
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=touchpoint-test-ca"
    subprocess.run(
        [*command.split(), "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt")],
        check=True,
        capture_output=True,
    )
    return folder / "ca.crt"


def sasl(protocol: str, mechanism: str, cafile: Path | None = None) -> KafkaConfig:
    return KafkaConfig(
        bootstrap="k1:9093, k2:9093",
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="touchpoint",
        sasl_password=SecretStr(PASSWORD),
        ssl_cafile=cafile,
    )


def accepted_by_kafka_python(kwargs: dict[str, Any]) -> None:
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        unknown = set(kwargs) - set(client.DEFAULT_CONFIG)
        assert not unknown, f"{client.__name__} has no setting {unknown}"


def built_by_aiokafka(kwargs: dict[str, Any]) -> None:
    """aiokafka checks protocol, mechanism, credentials and ssl_context when it is built."""

    async def build() -> None:
        AIOKafkaConsumer("t", **kwargs)
        AIOKafkaProducer(**kwargs)

    asyncio.run(build())


def test_plaintext_has_no_security_settings() -> None:
    config = KafkaConfig(bootstrap="k1:9092")
    assert config.kafka_python() == {
        "bootstrap_servers": ["k1:9092"],
        "security_protocol": "PLAINTEXT",
    }
    assert config.aiokafka() == config.kafka_python()
    assert config.faust_credentials() is None
    built_by_aiokafka(config.aiokafka())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_reaches_both_clients(mechanism: str) -> None:
    config = sasl("SASL_PLAINTEXT", mechanism)
    expected = {
        "bootstrap_servers": ["k1:9093", "k2:9093"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "touchpoint",
        "sasl_plain_password": PASSWORD,
    }
    assert config.kafka_python() == expected
    assert config.aiokafka() == expected
    accepted_by_kafka_python(config.kafka_python())
    built_by_aiokafka(config.aiokafka())

    credentials = config.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("touchpoint", PASSWORD)
    assert credentials.mechanism.value == mechanism
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.ssl_context is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_sasl_ssl_carries_the_ca_to_every_client(mechanism: str, ca_file: Path) -> None:
    config = sasl("SASL_SSL", mechanism, ca_file)

    kp = config.kafka_python()
    assert kp["security_protocol"] == "SASL_SSL"
    assert kp["sasl_mechanism"] == mechanism
    assert kp["sasl_plain_password"] == PASSWORD
    assert kp["ssl_cafile"] == str(ca_file)
    accepted_by_kafka_python(kp)

    ak = config.aiokafka()
    assert ak["security_protocol"] == "SASL_SSL"
    assert ak["sasl_plain_username"] == "touchpoint"
    assert "ssl_cafile" not in ak  # aiokafka takes an SSLContext, not a file
    context = ak["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(
        ("commonName", "touchpoint-test-ca") in rdn
        for cert in context.get_ca_certs()
        for rdn in cert["subject"]
    )
    built_by_aiokafka(ak)

    credentials = config.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == mechanism
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_ssl_without_sasl(ca_file: Path) -> None:
    config = KafkaConfig(bootstrap="k1:9093", security_protocol="SSL", ssl_cafile=ca_file)
    kp = config.kafka_python()
    assert kp == {
        "bootstrap_servers": ["k1:9093"],
        "security_protocol": "SSL",
        "ssl_cafile": str(ca_file),
    }
    ak = config.aiokafka()
    assert not any(key.startswith("sasl") for key in ak)
    assert isinstance(ak["ssl_context"], ssl.SSLContext)
    built_by_aiokafka(ak)

    credentials = config.faust_credentials()
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"


def test_ssl_without_a_ca_file_uses_the_system_trust_store() -> None:
    config = KafkaConfig(bootstrap="k1:9093", security_protocol="SASL_SSL")
    assert "ssl_cafile" not in config.kafka_python()
    context = config.aiokafka()["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_from_settings_takes_every_security_setting(
    ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("TOUCHPOINT_KAFKA_BOOTSTRAP", "k1:9093, k2:9093")
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SASL_USERNAME", "touchpoint")
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SSL_CAFILE", str(ca_file))
    config = KafkaConfig.from_settings(load_settings())
    assert config == sasl("SASL_SSL", "SCRAM-SHA-256", ca_file)
    assert PASSWORD not in repr(config)
