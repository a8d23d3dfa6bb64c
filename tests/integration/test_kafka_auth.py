"""Kafka SASL against the embedded Tansu broker started with ``--authentication`` (issue 6).

What Tansu 0.6.0 allows (details in the notes of :mod:`pipeline.testing.kafka`): the
authenticating broker offers SCRAM-SHA-256/512 only (no PLAIN), and its users are created
with AlterUserScramCredentials, which needs an authenticated connection. On memory storage
there is no first user, so :func:`test_scram_round_trip` cannot get past provisioning and
is marked xfail *at that step only*; once a Tansu release can provision a user it runs the
whole round trip (produce, create topics, consume) for real.

The other tests hold today: the broker really requires authentication, and refused
credentials end in an error within seconds, not a hang.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from pipeline.broker import TopicSpec, create_topics, tansu_argv
from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.testing.kafka import EmbeddedTansu, create_scram_user, unique_name

pytestmark = pytest.mark.integration

FAIL_WITHIN = 20.0
"""Seconds a refused client may take to give up (kafka-python's bootstrap is set to 3 s)."""


@pytest.fixture(scope="module")
def auth_broker() -> Iterator[EmbeddedTansu]:
    with EmbeddedTansu(authentication=True) as broker:
        yield broker


def sasl_config(broker: EmbeddedTansu, mechanism: str, user: str, password: str) -> KafkaConfig:
    return KafkaConfig(
        bootstrap=broker.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username=user,
        sasl_password=SecretStr(password),
    )


async def consume(config: KafkaConfig, topic: str, expected: int, within: float) -> list[bytes]:
    """Read ``expected`` values from ``topic`` with an aiokafka consumer built from ``config``."""
    consumer = AIOKafkaConsumer(
        topic,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **config.aiokafka(),
    )
    values: list[bytes] = []
    try:
        await asyncio.wait_for(consumer.start(), within)
        deadline = time.monotonic() + within
        while len(values) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values.extend(r.value for records in batches.values() for r in records if r.value)
    finally:
        await consumer.stop()
    return values


async def start_consumer(config: KafkaConfig, topic: str) -> None:
    consumer = AIOKafkaConsumer(topic, group_id=None, request_timeout_ms=5000, **config.aiokafka())
    try:
        await asyncio.wait_for(consumer.start(), FAIL_WITHIN)
    finally:
        await consumer.stop()


def assert_refused_quickly(config: KafkaConfig) -> None:
    """The project's producer and an aiokafka consumer both fail, in seconds, on ``config``."""
    started = time.monotonic()
    with pytest.raises(BrokerError, match="cannot connect to Kafka"):
        make_producer(config, client_id="test-auth-refused", bootstrap_timeout_ms=3000)
    assert time.monotonic() - started < FAIL_WITHIN

    started = time.monotonic()
    # aiokafka 0.14.0 says KafkaConnectionError for PLAINTEXT (Tansu closes the connection)
    # and KeyError('v') for refused SCRAM credentials (no server signature in the answer):
    # an error either way, never the wait_for timeout.
    with pytest.raises(Exception) as refused:  # the type differs per mechanism
        asyncio.run(start_consumer(config, unique_name("auth-refused")))
    assert not isinstance(refused.value, TimeoutError), "aiokafka hung instead of failing"
    assert time.monotonic() - started < FAIL_WITHIN


def test_argv_asks_tansu_for_authentication() -> None:
    assert tansu_argv("127.0.0.1", 9092, authentication=True)[-1] == "--authentication"
    assert "--authentication" not in tansu_argv("127.0.0.1", 9092)


def test_authenticating_broker_refuses_clients_without_credentials(
    auth_broker: EmbeddedTansu,
) -> None:
    assert_refused_quickly(KafkaConfig(bootstrap=auth_broker.bootstrap))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_unknown_scram_credentials_fail_with_an_error_not_a_hang(
    auth_broker: EmbeddedTansu, mechanism: str
) -> None:
    assert_refused_quickly(sasl_config(auth_broker, mechanism, "nobody", "not-the-password"))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_round_trip(auth_broker: EmbeddedTansu, mechanism: str) -> None:
    user = f"touchpoint-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    log_before = len(auth_broker.log_tail(10**9))
    try:
        create_scram_user(auth_broker, user, password, mechanism)
    except BrokerError as exc:
        if "NotAuthenticated" in auth_broker.log_tail(10**9)[log_before:]:
            pytest.xfail(
                "Tansu 0.6.0 refuses AlterUserScramCredentials before authentication, and "
                f"a memory-storage broker has no user to authenticate as: {exc}"
            )
        raise
    config = sasl_config(auth_broker, mechanism, user, password)
    topic = unique_name("auth")

    # (b) the project's topic creation (KafkaAdminClient from KafkaConfig.kafka_python())
    assert create_topics(config, [TopicSpec(topic, 2)], timeout=10) == [topic]

    # (a) the project's producer
    sent = [f"message-{i}".encode() for i in range(20)]
    producer = make_producer(config, client_id="test-auth-producer")
    try:
        for value in sent:
            producer.send(topic, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    # (c) aiokafka (what faust runs on) with the kwargs KafkaConfig gives it
    received = asyncio.run(consume(config, topic, len(sent), within=30))
    assert sorted(received) == sorted(sent)

    # (d) the same user with a wrong password is refused
    assert_refused_quickly(sasl_config(auth_broker, mechanism, user, "wrong-" + password))
