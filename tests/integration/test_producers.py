"""The producer side against a real Tansu broker: make_producer, TouchpointProducer,
produce_file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from pipeline.cli import cli
from pipeline.errors import BrokerError, InvalidEvent
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.client import TouchpointProducer
from pipeline.producers.kafka import (
    BrokerLostData,
    DeliveryFailed,
    DeliveryStalled,
    make_producer,
    strongest_key,
)
from pipeline.producers.produce_file import produce_file
from pipeline.testing import EmbeddedTansu, create_topics, free_port, read_topic, unique_name
from schemas.events import WebEvent

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(i: int, **identifiers: str) -> dict[str, Any]:
    return {
        "event_id": f"e-{i}",
        "channel": "web",
        "event_type": "page_view",
        "occurred_at": NOW,
        "identifiers": identifiers or {"anonymous_id": f"anon-{i}"},
        "properties": {"url": f"https://shop.example/p/{i}"},
    }


# --- make_producer -------------------------------------------------------------------------


def test_producer_sends_every_event_with_the_strongest_key(kafka_config, new_topic):
    topic = new_topic("producer", partitions=3)
    events = []
    for i in range(500):
        ids = {"anonymous_id": f"anon-{i}"}
        if i % 2 == 0:
            ids["user_id"] = f"user-{i % 7}"
        if i % 5 == 0:
            ids["crm_id"] = f"crm-{i % 3}"
        events.append(event(i, **ids))
    producer = make_producer(kafka_config, client_id="test-producer")
    try:
        assert producer.idempotent  # Tansu answers InitProducerId
        for e in events:
            producer.send(topic, orjson.dumps(e), strongest_key(e["identifiers"]))
        producer.flush(30)
        assert producer.delivery_stats().sent == 500
        assert producer.delivery_stats().failed == 0
    finally:
        producer.close()

    records = read_topic(kafka_config.bootstrap, topic, timeout=30, expected=500)
    assert len(records) == 500
    by_id = {orjson.loads(r.value)["event_id"]: r for r in records}
    assert set(by_id) == {e["event_id"] for e in events}
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    for e in events:
        record = by_id[e["event_id"]]
        ids = e["identifiers"]
        expected = ids.get("crm_id") or ids.get("user_id") or ids["anonymous_id"]
        assert record.key == expected.encode()
        partitions_of_key[record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())  # one key, one partition
    assert len({r.partition for r in records}) == 3


def test_delivery_failures_are_raised_at_flush():
    with EmbeddedTansu() as broker:
        topic = unique_name("lost")
        create_topics(broker.bootstrap, [topic], 1)
        producer = make_producer(
            broker.kafka_config,
            client_id="test-lost",
            linger_ms=0,
            request_timeout_ms=1000,
            delivery_timeout_ms=2000,
            max_block_ms=2000,
            reconnect_backoff_max_ms=200,
        )
        producer.send(topic, b"first")
        producer.flush(10)
        broker.stop()
        for i in range(3):
            producer.send(topic, f"lost-{i}".encode())
        with pytest.raises(DeliveryFailed) as failure:
            producer.flush(20)
        assert failure.value.failed == 3
        assert "not delivered" in str(failure.value)
        assert producer.delivery_stats().failed == 3
        producer.flush(1)  # reported once: the next flush does not raise again
        producer.close(timeout=1)


def test_a_broker_that_comes_back_empty_is_reported_as_lost_data():
    """The memory-only broker restarts and accepts writes again from offset 0. Without
    idempotence nothing else fails, so the producer must notice that acknowledged offsets
    went back (logged, raised at the next flush)."""
    first = EmbeddedTansu().start()
    port, topic = first.port, unique_name("restart")
    producer = make_producer(
        first.kafka_config, client_id="test-restart", idempotence=False,
        reconnect_backoff_max_ms=200,
    )  # fmt: skip
    try:
        for i in range(5):
            producer.send(topic, f"before-{i}".encode(), partition=0)
        producer.flush(10)
        first.stop()
        with EmbeddedTansu(port=port):
            producer.send(topic, b"after", partition=0)
            with pytest.raises(BrokerLostData) as lost:
                producer.flush(60)
            assert f"{topic}[0] from 4 to 0" in str(lost.value)
            assert producer.delivery_stats().offsets_went_back == 1
            producer.flush(10)  # reported once
    finally:
        first.stop()
        producer.close(timeout=5)


def test_an_idempotent_producer_fails_every_send_after_the_broker_restarts():
    """With idempotence (the default) the new broker does not know the producer id: every
    send fails from then on (kafka-python: UnknownProducerId, then a fatal InitProducerId
    error) and is raised at the next flush."""
    first = EmbeddedTansu().start()
    port, topic = first.port, unique_name("restart")
    producer = make_producer(first.kafka_config, client_id="test-restart-idem")
    try:
        producer.send(topic, b"before", partition=0)
        producer.flush(10)
        first.stop()
        with EmbeddedTansu(port=port):
            producer.send(topic, b"after", partition=0)
            with pytest.raises(DeliveryFailed, match="lost its state"):
                producer.flush(60)
    finally:
        first.stop()
        producer.close(timeout=5)


def test_a_producer_left_without_answers_says_so_instead_of_waiting_silently():
    """The broker goes away while records are pending: kafka-python would retry quietly
    until the delivery timeout (2 minutes); ``raise_if_stalled`` reports it after the given
    seconds, and not before, nor while answers come."""
    broker = EmbeddedTansu().start()
    topic = unique_name("stall")
    producer = make_producer(broker.kafka_config, client_id="test-stall")
    try:
        producer.send(topic, b"before", partition=0)
        producer.flush(10)
        producer.raise_if_stalled(0.5)  # nothing pending: no stall, however long ago
        broker.stop()
        producer.send(topic, b"into the void", partition=0)
        producer.raise_if_stalled(3.0)  # pending, but not for long yet
        deadline = time.monotonic() + 30
        with pytest.raises(DeliveryStalled, match="no acknowledgement from Kafka") as stalled:
            while time.monotonic() < deadline:
                producer.raise_if_stalled(3.0)
                time.sleep(0.5)
        assert stalled.value.pending == 1 and stalled.value.seconds > 3.0
        with pytest.raises(BrokerError, match="still undelivered"):  # and close says so too
            producer.close(timeout=1)
    finally:
        broker.stop()


def test_close_reports_records_still_in_flight():
    with EmbeddedTansu() as broker:
        topic = unique_name("in-flight")
        create_topics(broker.bootstrap, [topic], 1)
        producer = make_producer(
            broker.kafka_config, client_id="test-in-flight", linger_ms=0, max_block_ms=2000
        )
        producer.send(topic, b"first")
        producer.flush(10)
        broker.stop()
        producer.send(topic, b"never")
        started = time.monotonic()
        with pytest.raises(BrokerError, match="undelivered"):
            producer.close(timeout=0.5)
        assert time.monotonic() - started < 5
        assert producer._closed  # closed anyway, I/O thread stopped


def test_idempotence_fallback_when_the_broker_refuses(kafka_config, caplog):
    # kafka-python refuses idempotence for a broker older than 0.11; pinning api_version
    # makes it believe so (Tansu itself accepts idempotence, see the test above).
    with caplog.at_level("WARNING", logger="pipeline.producers.kafka"):
        producer = make_producer(kafka_config, client_id="test-old", api_version=(0, 10, 2))
    try:
        assert producer.idempotent is False
        assert producer.config["acks"] == -1
        assert producer.config["max_in_flight_requests_per_connection"] == 1
        assert "refused the idempotent producer" in caplog.text
    finally:
        producer.close(timeout=0)


def test_unreachable_broker_is_a_broker_error():
    config = KafkaConfig(bootstrap=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BrokerError, match="cannot connect to Kafka"):
        make_producer(config, client_id="test-nobody", bootstrap_timeout_ms=1000)
    assert time.monotonic() - started < 10


# --- TouchpointProducer --------------------------------------------------------------------


def test_touchpoint_producer_rejects_invalid_and_sends_valid(kafka_config, new_topic):
    topic = new_topic("client")
    good = event(1, email="Ann@Example.COM", anonymous_id="a-1", user_id="null")
    with TouchpointProducer(bootstrap=kafka_config.bootstrap, topic=topic) as tp:
        with pytest.raises(InvalidEvent) as invalid:
            tp.send(event(2, email="not-an-email"))
        message = str(invalid.value)
        assert "identifiers.email" in message
        assert "not-an-email" in message
        assert invalid.value.reason == "invalid_value"
        assert invalid.value.issues[0].path == "identifiers.email"

        with pytest.raises(InvalidEvent, match="channel"):
            tp.send({**event(3), "channel": "fax"})

        tp.send(good)
        model = WebEvent.model_validate(event(4, crm_id="crm-9"))
        tp.send(model)
        tp.flush(10)
        assert tp.stats.sent == 2

    records = read_topic(kafka_config.bootstrap, topic, timeout=20, expected=2)
    assert len(records) == 2
    by_id = {orjson.loads(r.value)["event_id"]: r for r in records}
    # sent as given (not normalised, placeholder kept), keyed by the raw strongest identifier
    assert orjson.loads(by_id["e-1"].value) == good
    assert by_id["e-1"].key == b"Ann@Example.COM"  # user_id "null" is a placeholder
    assert by_id["e-4"].key == b"crm-9"


def test_touchpoint_producer_takes_a_kafka_config(kafka_config, new_topic):
    topic = new_topic("client-config")
    with TouchpointProducer(topic=topic, kafka=kafka_config, client_id="svc") as tp:
        tp.send(event(1, phone="+1 650 253 0000"))
    (record,) = read_topic(kafka_config.bootstrap, topic, timeout=20, expected=1)
    assert record.key == b"+1 650 253 0000"


# --- produce_file --------------------------------------------------------------------------


def write_jsonl(path: Path) -> None:
    lines = [
        orjson.dumps(event(1, user_id="u-1")).decode(),
        "",
        orjson.dumps(event(2, email="nope")).decode(),  # line 3: invalid email
        "{not json",  # line 4
        orjson.dumps(event(5, crm_id="c-5")).decode(),
        orjson.dumps({**event(6), "occurred_at": "2999-01-01T00:00:00Z"}).decode(),  # line 6
        orjson.dumps(event(7)).decode(),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_produce_file_reports_and_sends_the_valid_lines(kafka_config, new_topic, tmp_path):
    topic = new_topic("file")
    path = tmp_path / "events.jsonl"
    write_jsonl(path)
    producer = make_producer(kafka_config, client_id="test-file")
    try:
        report = produce_file(path, producer, topic, progress=False)
    finally:
        producer.close()
    assert (report.lines, report.blank, report.valid, report.invalid) == (6, 1, 3, 3)
    assert report.sent == 3 and report.sent_invalid == 0
    assert dict(report.reasons) == {"invalid_value": 1, "not_json": 1, "future_timestamp": 1}
    errors = {e.line: e for e in report.errors}
    assert set(errors) == {3, 4, 6}
    assert errors[3].path == "identifiers.email" and errors[3].value == "nope"
    assert errors[3].event_id == "e-2"
    assert errors[6].path == "occurred_at"
    assert not report.ok

    records = read_topic(kafka_config.bootstrap, topic, timeout=20, expected=3)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == ["e-1", "e-5", "e-7"]
    keys = {orjson.loads(r.value)["event_id"]: r.key for r in records}
    assert keys == {"e-1": b"u-1", "e-5": b"c-5", "e-7": b"anon-7"}


def test_produce_file_can_send_the_invalid_lines_too(kafka_config, new_topic, tmp_path):
    topic = new_topic("file-invalid")
    path = tmp_path / "events.jsonl"
    write_jsonl(path)
    producer = make_producer(kafka_config, client_id="test-file")
    try:
        report = produce_file(path, producer, topic, progress=True, send_invalid=True)
    finally:
        producer.close()
    assert (report.valid, report.invalid, report.sent, report.sent_invalid) == (3, 3, 6, 3)
    records = read_topic(kafka_config.bootstrap, topic, timeout=20, expected=6)
    assert len(records) == 6
    assert b"{not json" in {r.value for r in records}


def test_produce_file_command(kafka_config, new_topic, tmp_path):
    topic = new_topic("file-cli")
    path = tmp_path / "events.jsonl"
    write_jsonl(path)
    result = CliRunner().invoke(
        cli,
        ["produce", str(path), "--topic", topic, "--bootstrap", kafka_config.bootstrap],
    )
    assert result.exit_code == 1, result.output  # invalid lines were found
    assert "3 valid, 3 invalid" in result.output
    assert len(read_topic(kafka_config.bootstrap, topic, timeout=20, expected=3)) == 3

    good = tmp_path / "good.jsonl"
    good.write_text(orjson.dumps(event(9)).decode() + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["produce", str(good), "--dry-run"])
    assert result.exit_code == 0, result.output


# --- the test helpers themselves -----------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; it only waits to be reaped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PDEATHSIG")
def test_embedded_tansu_never_outlives_its_process():
    code = (
        "from pipeline.testing import EmbeddedTansu; import time;"
        "b = EmbeddedTansu().start(); print(b.pid, flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    parent.kill()  # no cleanup runs: the kernel must take the broker down
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
