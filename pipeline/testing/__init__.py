"""Helpers for tests (and local experiments) on the real embedded services.

* :mod:`pipeline.testing.kafka`: the Tansu broker, unique names, topics, read-back.
* :mod:`pipeline.testing.stack`: embedded ClickHouse server, worker processes, waiting.
"""

from pipeline.testing.kafka import (
    ConsumerRecord,
    EmbeddedTansu,
    create_topics,
    free_port,
    read_json,
    read_topic,
    unique_name,
)

__all__ = [
    "ConsumerRecord",
    "EmbeddedTansu",
    "create_topics",
    "free_port",
    "read_json",
    "read_topic",
    "unique_name",
]
