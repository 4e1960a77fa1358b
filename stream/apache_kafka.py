"""Apache Kafka's own broker, on this machine's Java: what the tests, the benchmarks and
`cx-stream demo --kafka` run against.

The broker's jars come from Maven Central (stream/kafka/pom.xml pins the version), resolved
once with `mvn dependency:build-classpath` into Maven's local repository; the classpath is kept
in the user's cache, so a second run starts without Maven. Each node is a combined KRaft broker and
controller with its storage in a folder of its own, formatted here, on free loopback ports, and
stopped by its pid.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from .broker import free_port, stop_process

JAVA_OPTIONS = (
    # Kafka's own start script gives a broker a 1 GiB heap and G1 with short pauses
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)

BROKER_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
CONFIG_COMMAND = "org.apache.kafka.tools.ConfigCommand"


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot be resolved or started here; the message says why, in one line."""


def kafka_dir() -> Path:
    """stream/kafka/ (pom.xml, log4j2.properties), shipped in the wheel with the code."""
    return Path(__file__).resolve().parent / "kafka"


@cache
def kafka_version() -> str:
    """The Apache Kafka version stream/kafka/pom.xml pins."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ElementTree.parse(kafka_dir() / "pom.xml").getroot()
    version = root.findtext("m:properties/m:kafka.version", namespaces=namespace)
    if not version:
        raise KafkaUnavailable("stream/kafka/pom.xml has no <kafka.version>")
    return version


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cx-stream"


def classpath() -> list[Path]:
    """The broker's jars, resolved with Maven the first time (and whenever the pom changes)."""
    pom = kafka_dir() / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    listing = _cache_dir() / f"kafka-{kafka_version()}-{digest}.classpath"
    if listing.exists():
        jars = [Path(jar) for jar in listing.read_text().strip().split(os.pathsep)]
        if jars and all(jar.exists() for jar in jars):
            return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(
            "Apache Kafka's broker is resolved with Maven, and mvn is not on PATH"
        )
    listing.parent.mkdir(parents=True, exist_ok=True)
    partial = listing.with_suffix(".partial")
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={partial}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not partial.exists():
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise KafkaUnavailable(f"Maven could not resolve Apache Kafka {kafka_version()}: {last[0]}")
    partial.replace(listing)
    return [Path(jar) for jar in listing.read_text().strip().split(os.pathsep)]


def java() -> str:
    """The java command: $JAVA_HOME's, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found or not Path(found).exists():
        raise KafkaUnavailable(
            "Apache Kafka's broker needs Java 17 or newer, and java is not found"
        )
    return found


def run_java(main: str, *args: str, timeout: float = 120) -> str:
    """Run a Kafka command-line tool to its end; its output, or KafkaUnavailable."""
    result = subprocess.run(
        [java(), "-cp", os.pathsep.join(map(str, classpath())), *_log_option(), main, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise KafkaUnavailable(f"{main} failed: {lines[-1] if lines else result.returncode}")
    return result.stdout


def _log_option() -> list[str]:
    return [f"-Dlog4j2.configurationFile={kafka_dir() / 'log4j2.properties'}"]


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid).
    Like Kafka's own, never one that starts with '-': the storage tool would read it as an
    option (one start in 64 failed so)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class Node:
    """One combined broker and controller of a cluster: its id, folder, ports and process."""

    node_id: int
    folder: Path
    ports: dict[str, int]
    """Listener name -> its loopback port (CONTROLLER included)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.folder / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.folder / "broker.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ApacheKafka:
    """A KRaft cluster of `nodes` combined brokers and controllers on loopback ports.

    `listeners` adds listeners beside PLAINTEXT (which the nodes use among themselves), as
    name -> security protocol (e.g. {"SASL_SSL": "SASL_SSL"}); `properties` go into every
    node's server.properties (TLS files, SASL settings, topic defaults).
    """

    folder: Path
    nodes: int = 1
    listeners: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    cluster: list[Node] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        names = ["PLAINTEXT", *self.listeners, "CONTROLLER"]
        self.cluster = [
            Node(node_id, self.folder / f"node-{node_id}", {name: free_port() for name in names})
            for node_id in range(1, self.nodes + 1)
        ]

    @property
    def version(self) -> str:
        return kafka_version()

    def servers(self, listener: str = "PLAINTEXT") -> list[str]:
        """host:port of every node's `listener`."""
        return [f"127.0.0.1:{node.ports[listener]}" for node in self.cluster]

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listeners, in aiokafka's form (host:port,host:port)."""
        return ",".join(self.servers())

    @property
    def url(self) -> str:
        """The PLAINTEXT listeners, in Faust's form (CX_BROKER: kafka://host:port;host:port)."""
        return "kafka://" + ";".join(self.servers())

    def _server_properties(self, node: Node) -> str:
        replicas = min(3, self.nodes)
        voters = ",".join(
            f"{other.node_id}@127.0.0.1:{other.ports['CONTROLLER']}" for other in self.cluster
        )
        served = [name for name in node.ports if name != "CONTROLLER"]
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **self.listeners}
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(f"{name}://127.0.0.1:{node.ports[name]}" for name in node.ports),
            "advertised.listeners": ",".join(
                f"{name}://127.0.0.1:{node.ports[name]}" for name in served
            ),
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "log.dirs": str(node.folder / "data"),
            # the internal topics as replicated as the cluster allows
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min(2, replicas)),
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min(2, replicas)),
            # a new consumer group starts at once (the default waits 3 s for more members)
            "group.initial.rebalance.delay.ms": "0",
            **self.properties,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def start(self, timeout: float = 90.0) -> ApacheKafka:
        """Format every node's storage, start the nodes, and wait until all brokers answer."""
        jars = classpath()  # before any node: Maven's output must not interleave
        cluster_id = new_cluster_id()
        for node in self.cluster:
            node.folder.mkdir(parents=True, exist_ok=True)
            node.config.write_text(self._server_properties(node))
        formats = [
            subprocess.Popen(
                [
                    java(),
                    "-cp",
                    os.pathsep.join(map(str, jars)),
                    *_log_option(),
                    STORAGE_TOOL,
                    "format",
                    "--ignore-formatted",
                    "-t",
                    cluster_id,
                    "-c",
                    str(node.config),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for node in self.cluster
        ]
        for node, formatting in zip(self.cluster, formats, strict=True):
            output, _ = formatting.communicate(timeout=120)
            if formatting.returncode != 0:
                last = output.decode(errors="replace").strip().splitlines()[-1:]
                raise KafkaUnavailable(f"formatting node {node.node_id} failed: {last}")
        try:
            for node in self.cluster:
                self.start_node(node.node_id)
            self.wait_until_serving(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node_id: int) -> None:
        """Start (or restart, on its kept storage) one node."""
        node = self.node(node_id)
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                [
                    java(),
                    *JAVA_OPTIONS,
                    "-cp",
                    os.pathsep.join(map(str, classpath())),
                    *_log_option(),
                    BROKER_CLASS,
                    str(node.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches its owner, not the JVM
            )

    def node(self, node_id: int) -> Node:
        return self.cluster[node_id - 1]

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, no leadership handed over."""
        node = self.node(node_id)
        if node.process is not None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()

    def wait_until_serving(self, timeout: float = 90.0, brokers: int | None = None) -> None:
        """Until the cluster's metadata lists `brokers` (default: every node) as brokers."""
        wanted = self.nodes if brokers is None else brokers
        deadline = time.monotonic() + timeout
        while True:
            for node in self.cluster:
                if node.process is not None and node.process.poll() is not None:
                    raise KafkaUnavailable(
                        f"Kafka node {node.node_id} exited with {node.process.returncode};"
                        f" see {node.log_path}"
                    )
            listening = [node for node in self.cluster if _listens(node.ports["PLAINTEXT"])]
            # (aiokafka logs an error for every refused connection: ask only nodes that listen)
            if len(listening) >= wanted and asyncio.run(_brokers_listed(listening)) >= wanted:
                return
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"Apache Kafka did not answer within {timeout:g}s; see {self.folder}"
                )
            time.sleep(0.2)

    def create_scram_user(self, mechanism: str, user: str, password: str) -> None:
        """A SCRAM user, created through Kafka's admin API (ConfigCommand, as an operator would)."""
        run_java(
            CONFIG_COMMAND,
            "--bootstrap-server",
            self.bootstrap,
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            user,
            "--add-config",
            f"{mechanism}=[iterations=4096,password={password}]",
        )

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.cluster if node.alive and node.process]

    def stop(self) -> None:
        """Stop every node by its pid (SIGTERM: a controlled shutdown; SIGKILL after 20 s)."""
        for node in self.cluster:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.cluster:
            if node.process is not None:
                stop_process(node.process, timeout=20)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _listens(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


async def _brokers_listed(nodes: Sequence[Node]) -> int:
    bootstrap = ",".join(f"127.0.0.1:{node.ports['PLAINTEXT']}" for node in nodes)
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(client.bootstrap(), 3)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), 3)
        return len(metadata.brokers())
    except (KafkaError, OSError, TimeoutError):
        return 0
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def resolve() -> Sequence[Path]:
    """Resolve the broker's jars now (scripts/test does, so that a missing Maven or Java says so
    before any test runs)."""
    java()
    return classpath()


if __name__ == "__main__":  # python -m stream.apache_kafka: resolve the jars, say how many
    print(f"Apache Kafka {kafka_version()}: {len(resolve())} jars resolved")
