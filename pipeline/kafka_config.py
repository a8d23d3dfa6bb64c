"""Kafka connection settings in one place, translated for each client library.

Producers (kafka-python), faust workers (aiokafka underneath) and admin calls all take a
:class:`KafkaConfig`, so SASL and TLS settings reach every client the same way.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.settings import Settings


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConfig:
        return cls(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
        )

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    def _ssl_context(self) -> ssl.SSLContext | None:
        if "SSL" not in self.security_protocol:
            return None
        return ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)

    def _password(self) -> str | None:
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    def _common(self) -> dict[str, Any]:
        """Servers, protocol and SASL: the same keyword names in kafka-python and aiokafka."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self._password(),
            }
        return kwargs

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients."""
        kwargs = self._common()
        if self.ssl_cafile:
            kwargs["ssl_cafile"] = str(self.ssl_cafile)
        return kwargs

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients."""
        kwargs = self._common()
        if (context := self._ssl_context()) is not None:
            kwargs["ssl_context"] = context
        return kwargs

    def faust_credentials(self) -> Any:
        """faust ``broker_credentials`` for the configured protocol, or None."""
        import faust

        context = self._ssl_context()
        if self.sasl_mechanism and self.sasl_mechanism.startswith("SCRAM"):
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self._password(),
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
        if self.sasl_mechanism:
            return faust.SASLCredentials(
                username=self.sasl_username, password=self._password(), ssl_context=context
            )
        return faust.SSLCredentials(context) if context is not None else None
