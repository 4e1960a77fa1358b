"""Fixtures: one Apache Kafka broker per test session (each test has topics and a consumer group
of its own, by its topic prefix), the embedded Tansu broker for the demo's own tests, and
workers that are always stopped."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from stream.apache_kafka import ApacheKafka
from stream.broker import EmbeddedBroker
from tests.kafka import WorkerProcess
from tests.secure import Certificates, make_certificates

# CI runs the same examples every time; locally Hypothesis keeps exploring
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """Apache Kafka, a single KRaft node, for every pipeline test of the session."""
    with ApacheKafka(tmp_path_factory.mktemp("kafka")) as running:
        yield running


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The demo's embedded broker, for the tests of the demo and of its workarounds."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA, a broker certificate for 127.0.0.1, client certificates (tests/secure.py)."""
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def prefix() -> str:
    """A topic prefix (and so a consumer group) of the test's own on the shared broker."""
    return f"t{next(_prefixes)}-"


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def workers(
    broker: ApacheKafka, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[WorkerFactory]:
    started: list[WorkerProcess] = []

    def start(name: str = "worker", **env: str) -> WorkerProcess:
        worker = WorkerProcess(broker.url, tmp_path, name, CX_TOPIC_PREFIX=prefix, **env).start()
        started.append(worker)
        return worker

    yield start
    failed = getattr(request.node, "rep_call", None)
    for worker in started:
        worker.stop()
        if failed is not None and failed.failed:
            print(f"--- {worker.log_path.name} ---\n{worker.log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
