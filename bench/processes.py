"""Child processes (brokers, workers, no-op/Quix apps, py-spy): started, watched, stopped by pid.

Every child is started in its own session, so a Ctrl-C in the terminal reaches only the
benchmark, which then stops each child it started (stream.broker.stop_process) and nothing else.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

import stream
from stream.apache_kafka import ApacheKafka
from stream.broker import EmbeddedBroker, free_port, stop_process
from stream.config import ProcessingGuarantee

from .context import AT_LEAST_ONCE, Suite

REPO_ROOT = Path(stream.__file__).absolute().parent.parent
"""The checkout whose worker is measured: the one the `stream` package was imported from."""

_started: list[subprocess.Popen[bytes]] = []


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so that every child is stopped on the way out."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def stop_children_on_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)


def start_child(
    command: list[str], env: Mapping[str, str], log_path: Path, output: Path | None = None
) -> subprocess.Popen[bytes]:
    """`command` with its stderr, and its stdout unless `output` names a file for it, in the log."""
    with ExitStack() as files:
        log = files.enter_context(open(log_path, "ab"))
        stdout = files.enter_context(open(output, "wb")) if output else log
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=REPO_ROOT,
            stdout=stdout,
            stderr=log,
            start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop the children
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    _started.append(process)
    return process


def stop_all_children() -> None:
    """Stop every child this benchmark started that still runs (the last safety net)."""
    while _started:
        stop_process(_started.pop(), timeout=10)


@dataclass(frozen=True)
class Broker:
    """The broker a benchmark runs against, as the benchmark sees it."""

    kind: str
    """"kafka" or "tansu" (context.BROKERS)."""
    url: str
    """CX_BROKER's form."""
    bootstrap: str
    """aiokafka's form."""
    pid: int
    """Its process, whose CPU use the throughput runs record."""

    def env(self) -> dict[str, str]:
        """How a worker or the no-op app reaches it. Only Tansu gets CX_EMBEDDED_BROKER: its
        workarounds (corrected end offsets, a short fetch wait and group timeouts) are wrong
        against Kafka."""
        embedded = {"CX_EMBEDDED_BROKER": "1"} if self.kind == "tansu" else {}
        return {"CX_BROKER": self.url, **embedded}


KAFKA_PROPERTIES = {"group.initial.rebalance.delay.ms": "3000"}
"""Kafka's default, which stream.apache_kafka sets to 0 for the tests: a new consumer group's
first rebalance waits 3 s for more members, so that two workers started together both join its
first generation (with 0, in a quick run, the first to join took all 8 partitions and still held
them at the end: the two-worker figure was one worker's). Single processes are timed from their
assignment, after the wait."""


@contextmanager
def running_broker(suite: Suite, name: str) -> Iterator[Broker]:
    """A fresh broker of the suite's kind (--broker) on free loopback ports, stopped by its pid
    on exit: Apache Kafka (one KRaft node, its storage under the work directory and deleted
    when it stops; its log kept) or the embedded Tansu broker (memory storage)."""
    if suite.broker == "tansu":
        tansu = EmbeddedBroker(log_path=suite.workdir / f"broker-{name}.log")
        try:
            tansu.start()
            assert tansu.process is not None
            _started.append(tansu.process)
            yield Broker("tansu", tansu.url, tansu.bootstrap, tansu.process.pid)
        finally:
            tansu.stop()
        return
    kafka = ApacheKafka(suite.workdir / f"kafka-{name}", properties=KAFKA_PROPERTIES)
    try:
        kafka.start()
        _started.extend(node.process for node in kafka.cluster if node.process is not None)
        yield Broker("kafka", kafka.url, kafka.bootstrap, kafka.pids()[0])
    finally:
        kafka.stop()
        for node in kafka.cluster:  # gigabytes of records: the log stays, as Tansu's
            shutil.rmtree(node.folder / "data", ignore_errors=True)


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a Python child that imports this checkout's `stream` package."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


class ChildFailed(RuntimeError):
    """A child process exited or stalled; the message says which and where its log is."""


def http_request(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of GET `path` on a loopback port; OSError when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def http_get(port: int, path: str, timeout: float = 10.0) -> bytes:
    """The body of GET `path`; OSError unless it answers 200."""
    status, body = http_request(port, path, timeout)
    if status != 200:
        raise OSError(f"GET {path} answered {status}")
    return body


def events_total(metrics_text: str) -> float:
    """Sum of cx_events_total over topics and outcomes (a line scan: cheap enough to poll)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("cx_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(metrics_text: str) -> Samples:
    """/metrics parsed with prometheus-client's own parser, as the tests do."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
    }


class ServiceProcess:
    """A Faust child process with an HTTP port: the cx-stream worker or the no-op app."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path):
        self.name = name
        self.command = command
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["CX_WEB_PORT"])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServiceProcess:
        self.process = start_child(self.command, self.env, self.log_path)
        return self

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise ChildFailed(f"{self.name} exited ({code}); see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the consumer group."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=15)

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        return http_get(self.port, path, timeout)

    def metrics_text(self) -> str:
        return self.get("/metrics").decode()

    def processed(self) -> float | None:
        """Input records processed so far (cx_events_total); None until its web server is up."""
        try:
            return events_total(self.metrics_text())
        except OSError:
            return None

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status, JSON) of GET /health: 200 when ready, 503 while not, (0, {}) when down."""
        try:
            status, body = http_request(self.port, "/health")
            answer: dict[str, Any] = orjson.loads(body)
        except (OSError, orjson.JSONDecodeError):
            return 0, {}
        return status, answer

    def input_partitions(self) -> list[int]:
        """The input partitions /health lists (those whose windows the worker restored)."""
        partitions: list[int] = self.health()[1].get("input_partitions") or []
        return partitions

    def ready(self) -> bool:
        """Assigned, tables restored, windows restored: /health answers 200 (the worker's
        readiness) and lists input partitions."""
        status, answer = self.health()
        return status == 200 and bool(answer.get("input_partitions"))

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _service_env(broker: Broker, suite: Suite, name: str, env: Mapping[str, str]) -> dict[str, str]:
    """CX_* settings as tests/kafka.py's WorkerProcess sets them, then `env`, then the suite's
    --worker-env (for experiments; it may not name the broker or the guarantee). No CX_*
    variable comes from the benchmark's own environment: an exported CX_EMBEDDED_BROKER or
    CX_PROCESSING_GUARANTEE would change what is measured."""
    settings = {
        **broker.env(),
        "CX_WEB_HOST": "127.0.0.1",
        "CX_WEB_PORT": str(free_port()),
        "CX_DATA_DIR": str(suite.workdir / name),
        "CX_LOG_LEVEL": "warning",
        **env,
        **suite.worker_env,
    }
    environment = python_env(**settings).items()
    return {key: value for key, value in environment if key[:3] != "CX_" or key in settings}


def worker_process(
    broker: Broker,
    suite: Suite,
    name: str,
    env: Mapping[str, str],
    guarantee: ProcessingGuarantee = AT_LEAST_ONCE,
) -> ServiceProcess:
    """`python -m stream worker` with `env` and `guarantee` (not started yet)."""
    command = [sys.executable, "-m", "stream", "worker"]
    settings = _service_env(broker, suite, name, {"CX_PROCESSING_GUARANTEE": guarantee, **env})
    return ServiceProcess(name, command, settings, suite.workdir)


def noop_process(broker: Broker, suite: Suite, name: str, env: Mapping[str, str]) -> ServiceProcess:
    """bench/noop_app.py, the framework's floor, with the same settings (not started yet)."""
    command = [sys.executable, "-m", "bench.noop_app"]
    return NoopProcess(name, command, _service_env(broker, suite, name, env), suite.workdir)


def batch_noop_process(
    broker: Broker, suite: Suite, name: str, env: Mapping[str, str]
) -> ServiceProcess:
    """bench/noop_app.py --batches: the floor of cx-stream's batch dispatch (not started yet)."""
    process = noop_process(broker, suite, name, env)
    process.command.append("--batches")
    return process


class NoopProcess(ServiceProcess):
    def _count(self) -> dict[str, int] | None:
        try:
            answer: dict[str, int] = orjson.loads(self.get("/count"))
        except (OSError, orjson.JSONDecodeError):
            return None
        return answer

    def processed(self) -> float | None:
        count = self._count()
        return None if count is None else float(count["events"])

    def ready(self) -> bool:
        count = self._count()
        return count is not None and count["assigned"] > 0


def wait_until_ready(service: ServiceProcess, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not service.ready():
        service.check_alive()
        if time.monotonic() > deadline:
            raise ChildFailed(f"{service.name} not ready in {timeout:.0f}s; see {service.log_path}")
        time.sleep(0.05)
