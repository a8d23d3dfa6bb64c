"""Kafka helpers for tests: a real embedded broker, unique names, topic set-up and
read-back. Nothing here is used by the pipeline at run time.

Sections (add new helpers to the matching one, or start a new one):

* ports and names: :func:`free_port`, :func:`unique_name`
* embedded Kafka (Tansu): :class:`EmbeddedTansu`, :func:`create_scram_user`
* Kafka topics: :func:`create_topics`, :func:`read_topic`, :func:`read_json`

Tansu notes, checked against Tansu 0.6.0 with kafka-python 3.0.12:

* ``KafkaAdminClient.create_topics`` works (explicit partition counts are honoured);
  producing to an unknown topic also auto-creates it, with the broker's default count.
* the idempotent producer works (InitProducerId is answered).
* a group consumer gets no partitions: read back with ``assign()`` only.
* ListOffsets "latest" is not the high watermark (it answers one past the *base* offset of
  the last batch), so :func:`read_topic` reads until the topic goes quiet instead of
  trusting ``end_offsets()``.

Tansu 0.6.0 authentication (``--authentication``, :class:`EmbeddedTansu` with
``authentication=True``), checked with kafka-python 3.0.12 and aiokafka 0.14.0:

* the broker offers SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER; PLAIN is not offered (the
  broker closes the connection on a PLAIN handshake instead of answering
  UNSUPPORTED_SASL_MECHANISM).
* SCRAM users live in the broker's storage and are created with AlterUserScramCredentials
  (``tansu user create``, or kafka-python's ``alter_user_scram_credentials``), which itself
  needs an authenticated connection. With memory storage a broker that requires
  authentication therefore starts with no user and none can be added: every client is
  refused. Only persistent storage (S3; the postgres engine is not compiled into this
  binary) lets users be created before a restart with ``--authentication``.
* a broker without ``--authentication`` accepts ``tansu user create``, but SASL clients
  cannot connect to it (kafka-python: "Unable to bootstrap").
* the ``--cert`` and ``--key`` flags are refused together ("cannot be used with"), and
  ``--cert`` alone does not make the listener speak TLS (a TLS handshake times out).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.broker import broker_reachable, tansu_argv, tansu_binary
from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig

__all__ = [
    "ConsumerRecord",
    "EmbeddedTansu",
    "create_scram_user",
    "create_topics",
    "free_port",
    "read_json",
    "read_topic",
    "unique_name",
]

# --- ports and names ---------------------------------------------------------------------

_name_counter = itertools.count(1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def unique_name(prefix: str = "t") -> str:
    """A name no other call in any process returns: ``<prefix>.<pid>.<n>.<random>``.

    Valid as a Kafka topic name (letters, digits, ``.``, ``_``, ``-``) if the prefix is.
    """
    return f"{prefix}.{os.getpid()}.{next(_name_counter)}.{uuid.uuid4().hex[:8]}"


# --- embedded Kafka (Tansu) ----------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the broker when the process that started it dies."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class EmbeddedTansu:
    """A throw-away Tansu broker (memory storage) on a free port.

    ::

        with EmbeddedTansu() as broker:
            producer = make_producer(broker.kafka_config, client_id="test")

    The broker is ready (it answered a metadata request) when ``__enter__`` returns; it is
    stopped on exit (SIGTERM, then SIGKILL). On Linux it is also killed if this process dies
    without cleaning up, so no broker outlives its test run. Its output goes to a log file
    (:attr:`log_path`), whose tail is included in any start-up error.

    With ``authentication=True`` the broker requires SASL (Tansu's ``--authentication``);
    readiness is then a TCP connect, as an unauthenticated metadata request is refused.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
        authentication: bool = False,
    ) -> None:
        self.host = host
        self.port = port or 0
        self._fixed_port = port is not None
        self._binary = binary
        self._start_timeout = start_timeout
        self._extra_args = tuple(extra_args)
        self.authentication = authentication
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.log_path: Path | None = None

    # -- public -----------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kafka_config(self) -> KafkaConfig:
        return KafkaConfig(bootstrap=self.bootstrap)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> EmbeddedTansu:
        """Start the broker and wait until it answers; retry on a port race."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port else 3
        last: BrokerError | None = None
        for _ in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            try:
                self._spawn()
                self._wait_ready()
                atexit.register(self.stop)
                return self
            except BrokerError as exc:
                last = exc
                self.stop()
        assert last is not None
        raise last

    def stop(self, grace: float = 1.0) -> None:
        """Stop the broker (idempotent): SIGTERM, then SIGKILL after ``grace`` seconds.

        (Tansu waits for connected clients before it exits on SIGTERM; with memory storage
        there is nothing to lose by killing it.)
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        atexit.unregister(self.stop)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the broker's output, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def __enter__(self) -> EmbeddedTansu:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _resolve_binary(self) -> str:
        return self._binary or tansu_binary()

    def _spawn(self) -> None:
        argv = tansu_argv(self.host, self.port, authentication=self.authentication)
        command = [self._resolve_binary(), *argv[1:], *self._extra_args]
        fd, name = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
        self.log_path = Path(name)
        self._log_file = os.fdopen(fd, "wb")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                raise BrokerError(
                    f"Tansu exited with code {code} while starting on {self.bootstrap}:\n"
                    + self.log_tail()
                )
            if self.authentication:
                if broker_reachable(self.host, self.port, timeout=0.5):
                    return
                last_error = ConnectionRefusedError(f"nothing listens on {self.bootstrap} yet")
                time.sleep(0.1)
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=[self.bootstrap],
                    request_timeout_ms=2000,
                    bootstrap_timeout_ms=2000,
                    client_id="touchpoint-testing-probe",
                )
                try:
                    admin.list_topics()  # a metadata request
                finally:
                    admin.close()
                return
            except Exception as exc:  # not up yet: any client error means "retry"
                last_error = exc
                time.sleep(0.1)
        raise BrokerError(
            f"Tansu on {self.bootstrap} did not answer within {self._start_timeout}s "
            f"(last error: {last_error!r}):\n" + self.log_tail()
        )


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

SCRAM_MECHANISMS = {"SCRAM-SHA-256": "scram256", "SCRAM-SHA-512": "scram512"}
"""Kafka's SCRAM mechanism names, and the ``tansu user create --mechanism`` value of each."""


def create_scram_user(
    broker: EmbeddedTansu,
    username: str,
    password: str,
    mechanism: str = "SCRAM-SHA-512",
    *,
    timeout: float = 20.0,
) -> None:
    """Create (or replace) a SCRAM user on ``broker`` with ``tansu user create``.

    Raises :class:`BrokerError` with the command's output if Tansu refuses: Tansu 0.6.0
    refuses it (NotAuthenticated) on a broker that requires authentication, see the notes
    at the top of this module.
    """
    if mechanism not in SCRAM_MECHANISMS:
        raise ValueError(
            f"not a SCRAM mechanism: {mechanism!r} (one of {sorted(SCRAM_MECHANISMS)})"
        )
    command = [
        broker._resolve_binary(),
        "user",
        "create",
        "--broker",
        f"tcp://{broker.bootstrap}",
        "--mechanism",
        SCRAM_MECHANISMS[mechanism],
        username,
        password,
    ]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(
            f"tansu user create {username!r} did not finish within {timeout}s"
        ) from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
        output = _ANSI_ESCAPE.sub("", output).strip()
        raise BrokerError(
            f"tansu user create {username!r} ({mechanism}) on {broker.bootstrap} failed "
            f"with code {result.returncode}: {output[-500:]}"
        )


# --- Kafka topics --------------------------------------------------------------------------


def _kafka_kwargs(bootstrap: str | KafkaConfig) -> dict[str, Any]:
    config = bootstrap if isinstance(bootstrap, KafkaConfig) else KafkaConfig(bootstrap=bootstrap)
    return config.kafka_python()


def create_topics(
    bootstrap: str | KafkaConfig,
    names: Iterable[str],
    partitions: int = 3,
    *,
    replication_factor: int = 1,
    timeout: float = 10.0,
) -> None:
    """Create topics with an explicit partition count; existing ones are left as they are.

    Returns once every topic is visible in the metadata with a leader per partition.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = KafkaAdminClient(**_kafka_kwargs(bootstrap), client_id="touchpoint-testing-admin")
    try:
        response = admin.create_topics(
            {
                name: {"num_partitions": partitions, "replication_factor": replication_factor}
                for name in wanted
            },
            timeout_ms=int(timeout * 1000),
            raise_errors=False,
        )
        failed = [
            f"{t['name']}: error {t['error_code']} {t.get('error_message') or ''}".strip()
            for t in response["topics"]
            if t["error_code"] not in (0, 36)  # 36: TOPIC_ALREADY_EXISTS
        ]
        if failed:
            raise BrokerError("could not create topics: " + "; ".join(failed))
        admin.wait_for_topics(wanted, timeout_ms=int(timeout * 1000))
    finally:
        admin.close()


def read_topic(
    bootstrap: str | KafkaConfig,
    topic: str,
    timeout: float = 10.0,
    *,
    expected: int | None = None,
    idle: float = 1.0,
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, sorted by (partition, offset).

    Reads all partitions with ``assign()`` (no consumer group) until nothing new arrived for
    ``idle`` seconds, or ``timeout`` passed. With ``expected``, stops early once that many
    records were read (after one short extra poll, so surplus records still show up).
    """
    consumer = KafkaConsumer(
        **_kafka_kwargs(bootstrap),
        client_id="touchpoint-testing-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,  # reading must not create the topic it waits for
    )
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] | None = None
        while time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            time.sleep(0.1)
        if not partitions:
            raise BrokerError(f"topic {topic!r} has no partitions after {timeout}s")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)

        records: list[ConsumerRecord] = []
        last_data = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline or now - last_data >= idle:
                break
            if expected is not None and len(records) >= expected:
                extra = consumer.poll(timeout_ms=200)
                records.extend(r for batch in extra.values() for r in batch)
                break
            batch = consumer.poll(timeout_ms=min(200, max(1, int((deadline - now) * 1000))))
            got = [r for part in batch.values() for r in part]
            if got:
                records.extend(got)
                last_data = time.monotonic()
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def read_json(
    bootstrap: str | KafkaConfig,
    topic: str,
    timeout: float = 10.0,
    *,
    expected: int | None = None,
    idle: float = 1.0,
) -> list[tuple[bytes | None, Any]]:
    """Like :func:`read_topic`, decoded: ``(key, parsed JSON value)`` pairs."""
    return [
        (record.key, orjson.loads(record.value))
        for record in read_topic(bootstrap, topic, timeout, expected=expected, idle=idle)
    ]
