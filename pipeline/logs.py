"""Logging set-up: structlog renders the stdlib records of every library as one-line
key=value output, so faust's, aiokafka's and ours read the same.
"""

from __future__ import annotations

import logging

import structlog


def configure_logging(level: str = "INFO") -> None:
    """Route stdlib logging through structlog's formatter; idempotent."""
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=structlog.dev.ConsoleRenderer(colors=False),
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "faust.transport.drivers.aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
