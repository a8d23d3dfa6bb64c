"""The HTTP collector against a real Tansu broker (aiohttp test server, real Kafka)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.kafka_config import KafkaConfig
from pipeline.producers.client import local_validation_config
from pipeline.producers.collector import CollectorConfig, build_collector_app
from pipeline.producers.kafka import TrackedProducer, make_producer
from pipeline.settings import Settings
from pipeline.validate import ValidationConfig
from pipeline.testing import EmbeddedTansu, create_topics, read_topic, unique_name
from schemas.records import DeadLetter

pytestmark = pytest.mark.integration

T = TypeVar("T")
ALLOWED = "https://shop.example"
NOW = datetime.now(UTC).isoformat()
URL = "/v1/touchpoints"


def event(i: int, **identifiers: str) -> dict[str, Any]:
    return {
        "event_id": f"c-{i}",
        "channel": "chat",
        "event_type": "chat_started",
        "occurred_at": NOW,
        "identifiers": identifiers or {"chat_visitor_id": f"v-{i}"},
    }


@dataclass
class Topics:
    raw: str
    dlq: str


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    names = Topics(raw=unique_name("raw"), dlq=unique_name("dlq"))
    create_topics(kafka_bootstrap, [names.raw, names.dlq], partitions=2)
    return names


@pytest.fixture
def producer(kafka_config: KafkaConfig) -> Iterator[TrackedProducer]:
    producer = make_producer(kafka_config, client_id="test-collector")
    yield producer
    producer.close(timeout=10)


CONFIG = CollectorConfig(
    validation=local_validation_config(max_event_bytes=2048),
    max_body_bytes=16 * 1024,
    cors_origins=(ALLOWED,),
    flush_interval=0.2,
    redaction=ValidationConfig(hash_key=b"collector-test"),  # the workers' hashing
)


def serve(
    producer: TrackedProducer,
    topics: Topics,
    test: Callable[[TestClient[Any, Any]], Awaitable[T]],
    cfg: CollectorConfig = CONFIG,
) -> T:
    async def main() -> T:
        app = build_collector_app(producer, topics.raw, topics.dlq, cfg)
        async with TestClient(TestServer(app)) as client:
            return await test(client)

    return asyncio.run(main())


def test_single_event(producer, topics, kafka_bootstrap):
    body = orjson.dumps(event(1, user_id="u-1", chat_visitor_id="v-1"))

    async def post(client):
        response = await client.post(URL, data=body, headers={"Content-Type": "application/json"})
        return response.status, await response.json()

    status, answer = serve(producer, topics, post)
    assert status == 202
    assert answer == {"accepted": 1, "rejected": []}
    (record,) = read_topic(kafka_bootstrap, topics.raw, timeout=20, expected=1)
    assert record.value == body  # exactly as received
    assert record.key == b"u-1"
    assert read_topic(kafka_bootstrap, topics.dlq, timeout=5, idle=0.5) == []


def test_array_with_valid_and_invalid_events(producer, topics, kafka_bootstrap):
    bad_email = event(2, email="not-an-email")
    batch = [event(1), bad_email, 42, event(3, crm_id="crm-3"), {**event(4), "channel": "fax"}]

    async def post(client):
        response = await client.post(URL, json=batch)
        return response.status, await response.json()

    status, answer = serve(producer, topics, post)
    assert status == 202
    assert answer["accepted"] == 2
    rejected = {r["index"]: r for r in answer["rejected"]}
    assert set(rejected) == {1, 2, 4}
    assert rejected[1]["event_id"] == "c-2"
    assert rejected[1]["reason"] == "invalid_value"
    assert rejected[1]["errors"][0]["path"] == "identifiers.email"
    assert rejected[1]["errors"][0]["value"] == "not-an-email"
    assert rejected[1]["errors"][0]["message"]
    assert rejected[2] == {
        "index": 2,
        "event_id": None,
        "reason": "not_object",
        "errors": [{"path": "$", "message": "expected a JSON object, got int", "value": "b'42'"}],
    }
    assert rejected[4]["errors"][0]["path"] == "channel"
    assert rejected[4]["errors"][0]["value"] == "fax"

    raw = read_topic(kafka_bootstrap, topics.raw, timeout=20, expected=2)
    assert {orjson.loads(r.value)["event_id"]: r.key for r in raw} == {
        "c-1": b"v-1",
        "c-3": b"crm-3",
    }
    dead = [
        DeadLetter.model_validate_json(r.value)
        for r in read_topic(kafka_bootstrap, topics.dlq, timeout=20, expected=3)
    ]
    assert sorted(d.event_id for d in dead) == ["", "c-2", "c-4"]
    by_id = {d.event_id: d for d in dead}
    stored = orjson.loads(by_id["c-2"].original)  # kept, its email pseudonymised (hashing on)
    assert stored["event_id"] == "c-2" and b"not-an-email" not in by_id["c-2"].original
    assert stored["identifiers"]["email"].startswith("email:")
    assert {**stored, "identifiers": bad_email["identifiers"]} == bad_email
    assert by_id["c-2"].reason == "invalid_value"
    assert by_id[""].original == b"42"
    assert all(d.src.topic == "collector" and d.src.partition == 0 for d in dead)
    assert len({d.src.offset for d in dead}) == 3  # a running counter: distinct offsets


def test_size_limits_are_413_and_nothing_is_produced(producer, topics, kafka_bootstrap):
    big_event = {**event(1), "properties": {"text": "x" * 4000}}  # over the 2 KiB event limit

    async def post(client):
        answers = []
        for body in (
            orjson.dumps([event(0)] * 200),  # ~26 KiB body: over the 16 KiB limit
            orjson.dumps(big_event),
            orjson.dumps([event(2), big_event]),
        ):
            response = await client.post(URL, data=body)
            answers.append((response.status, await response.json()))
        return answers

    (body_status, body), (one_status, one), (arr_status, arr) = serve(producer, topics, post)
    assert body_status == 413 and body["error"] == "body_too_large"
    assert "16384" in body["message"]
    assert one_status == 413 and one["error"] == "event_too_large"
    assert arr_status == 413 and arr["indexes"] == [1]
    assert read_topic(kafka_bootstrap, topics.raw, timeout=5, idle=0.5) == []
    assert read_topic(kafka_bootstrap, topics.dlq, timeout=5, idle=0.5) == []


def test_chunked_body_over_the_limit_is_413(producer, topics):
    async def post(client):
        async def chunks():
            for _ in range(40):
                yield b" " * 1024  # no Content-Length: the limit is enforced while reading

        response = await client.post(URL, data=chunks())
        return response.status, await response.json()

    status, answer = serve(producer, topics, post)
    assert status == 413 and answer["error"] == "body_too_large"


def test_bad_bodies_are_400(producer, topics):
    async def post(client):
        answers = []
        for body in (b"{not json", b"\xff\xfe", b'"a string"', b"", b"null"):
            response = await client.post(URL, data=body)
            answers.append((response.status, (await response.json())["error"]))
        return answers

    assert serve(producer, topics, post) == [
        (400, "not_json"),
        (400, "not_json"),
        (400, "not_object_or_array"),
        (400, "not_json"),
        (400, "not_object_or_array"),
    ]


def test_cors(producer, topics, kafka_bootstrap):
    async def calls(client):
        out = {}
        allowed = await client.options(
            URL,
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        out["allowed"] = (allowed.status, dict(allowed.headers))
        refused = await client.options(
            URL, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        out["refused"] = (refused.status, dict(refused.headers), await refused.json())
        post = await client.post(URL, json=event(1), headers={"Origin": ALLOWED})
        out["post"] = (post.status, dict(post.headers))
        evil = await client.post(URL, json=event(2), headers={"Origin": "https://evil.example"})
        out["evil_post"] = (evil.status, dict(evil.headers))
        return out

    out = serve(producer, topics, calls)
    status, headers = out["allowed"]
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "content-type"
    status, headers, body = out["refused"]
    assert status == 403 and body["error"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers
    status, headers = out["post"]
    assert status == 202 and headers["Access-Control-Allow-Origin"] == ALLOWED
    status, headers = out["evil_post"]
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    raw = read_topic(kafka_bootstrap, topics.raw, timeout=20, expected=1)
    assert [orjson.loads(r.value)["event_id"] for r in raw] == ["c-1"]


def test_healthz_and_counters(producer, topics):
    async def calls(client):
        await client.post(URL, json=[event(1), {"event_id": "x"}])
        response = await client.get("/healthz")
        return response.status, await response.json()

    status, health = serve(producer, topics, calls)
    assert status == 200
    assert health["status"] == "ok"
    assert (health["accepted"], health["rejected"], health["delivery_failures"]) == (1, 1, 0)
    assert health["idempotent"] is True


def test_kafka_down_is_503():
    with EmbeddedTansu() as broker:
        raw, dlq = unique_name("raw"), unique_name("dlq")
        create_topics(broker.bootstrap, [raw, dlq], 1)
        producer = make_producer(
            broker.kafka_config,
            client_id="test-collector-down",
            linger_ms=0,
            request_timeout_ms=1000,
            delivery_timeout_ms=2000,
            max_block_ms=2000,
        )
        cfg = CollectorConfig(ack_timeout=10, flush_interval=0.2)

        async def calls(client):
            first = await client.post(URL, json=event(1))
            broker.stop()
            second = await client.post(URL, json=event(2))
            return first.status, second.status, await second.json()

        try:
            first, second, body = serve(producer, Topics(raw, dlq), calls, cfg)
        finally:
            producer.close(timeout=1, null_logger=True)
        assert first == 202
        assert second == 503 and body["error"] == "kafka_unavailable"


def test_config_from_settings():
    settings = Settings(collector_cors_origins="https://a.example, https://b.example")
    cfg = CollectorConfig.from_settings(settings, flush_interval=2.0)
    assert cfg.cors_origins == ("https://a.example", "https://b.example")
    assert cfg.max_event_bytes == settings.max_event_bytes
    assert cfg.max_body_bytes >= cfg.max_event_bytes
    assert cfg.validation.hash_pii is False  # checks validity; the raw event goes on as sent
    assert cfg.redaction is not None and cfg.redaction.hash_pii  # its dead letters: hashed
    assert cfg.flush_interval == 2.0
