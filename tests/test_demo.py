"""`cx-stream demo`: live numbers on /metrics, and Ctrl-C or SIGTERM leaves no process behind,
nor the demo's state; on the embedded broker, and on Apache Kafka with --kafka."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from stream.apache_kafka import kafka_version
from stream.broker import free_port
from tests.kafka import (
    Samples,
    WorkerProcess,
    alive,
    as_a_background_job,
    children,
    kill_demo,
    wait_for,
)
from tests.test_demo_parts import time_wait_on

pytestmark = pytest.mark.broker


def environment(tmp_path: Path, port: int, **env: str) -> dict[str, str]:
    """The demo's environment: no CX_ setting of the test run's, its /metrics on `port`, and
    its folder (logs, state) in the test's own (TMPDIR), not in /tmp for good."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("CX_")}
    return {**kept, "CX_WEB_PORT": str(port), "TMPDIR": str(tmp_path), **env}


def whole(samples: Samples, name: str, window: str) -> float:
    labels = {"team": "all", "channel": "all", "priority": "all", "window": window}
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def opened(port: int, windows: tuple[str, ...]) -> list[float]:
    samples = WorkerProcess.scrape(f"http://127.0.0.1:{port}")
    return [whole(samples, "cx_tickets_opened", window) for window in windows]


def assert_state_deleted_and_logs_kept(tmp_path: Path, logs: list[str]) -> Path:
    """The demo's folder keeps its logs; the worker's RocksDB state and a broker's data went
    with the broker they belonged to."""
    (workdir,) = tmp_path.glob("cx-stream-demo-*")
    assert not (workdir / "data").exists(), "the worker's state was left behind"
    assert not list(workdir.glob("kafka/node-*/data")), "Kafka's data was left behind"
    for log in logs:
        assert (workdir / log).stat().st_size > 0, log
    return workdir


class Lines:
    """The lines a process writes to a pipe, read as they come."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.append(line.decode().rstrip("\n"))

    def starting(self, prefix: str) -> list[str]:
        return [line for line in list(self.lines) if line.startswith(prefix)]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_shows_live_numbers_and_a_stop_signal_stops_everything(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """Ctrl-C from a terminal, SIGTERM from `docker stop` or a process manager."""
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo"],  # the defaults: 28 days of history
        env=environment(tmp_path, port, TERM="dumb"),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "demo.err", "wb"),  # noqa: SIM115
        start_new_session=True,
        preexec_fn=as_a_background_job,  # Ctrl-C must stop it even so (it did not, in CI)
    )
    try:

        def history_counted() -> bool:
            # every window differs, and the month has hundreds of NPS and CSAT responses
            samples = WorkerProcess.scrape(f"http://127.0.0.1:{port}")
            opened = [whole(samples, "cx_tickets_opened", w) for w in ("1h", "24h", "7d", "28d")]
            return (
                0 < opened[0] < opened[1] < opened[2] < opened[3]
                and whole(samples, "cx_nps_responses", "28d") >= 200
                and whole(samples, "cx_csat_responses", "28d") >= 200
            )

        wait_for(history_counted, 60, "28 days of history on the demo's /metrics")
        started = children(demo.pid)
        assert len(started) >= 2, "the demo should run a broker and a worker"
        demo.send_signal(stop_signal)
        assert demo.wait(timeout=60) == 0
        assert not [pid for pid in started if alive(pid)], "processes left behind"
    finally:
        if demo.poll() is None:
            kill_demo(demo)
    assert_state_deleted_and_logs_kept(tmp_path, ["worker.log"])


def test_demo_output_reaches_a_pipe_and_the_demo_keeps_its_port(tmp_path: Path) -> None:
    """`scripts/demo 2>&1 | tee demo.log`, as a CI job or a log collector runs it: the /metrics
    URL, then a status line every 10 s (the live view shows nothing outside a terminal until it
    stops). And a demo started again within a minute keeps its port, whatever TIME_WAIT
    connections the scrapes of the one before left there."""
    port = free_port()
    time_wait_on(port)
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--backfill", "2h", "--history-rate", "2"],
        env=environment(tmp_path, port, TERM="xterm-256color"),  # a pipe, in a terminal's shell
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "demo.err", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    assert demo.stdout is not None
    output = Lines(demo.stdout)
    try:
        url = f"metrics: http://127.0.0.1:{port}/metrics"
        wait_for(lambda: output.starting(url), 60, f"{url!r} on the demo's output")

        def counts() -> list[tuple[int, int]]:
            """(processed, simulator sent) of each status line so far."""
            found = []
            for line in output.starting("processed "):
                match = re.match(r"processed (\d+) events .*, simulator sent (\d+),", line)
                assert match, line
                found.append((int(match.group(1)), int(match.group(2))))
            return found

        wait_for(lambda: len(counts()) >= 3 and counts()[-1][0] > 0, 60, "three status lines")
        lines = counts()
        assert [processed for processed, _ in lines] == sorted(p for p, _ in lines)
        assert all(processed <= sent for processed, sent in lines)
        # what the last line said the worker had processed, it had (and no more than now)
        samples = WorkerProcess.scrape(f"http://127.0.0.1:{port}")
        now = sum(value for (name, _), value in samples.items() if name == "cx_events_total")
        assert 0 < lines[-1][0] <= now
        started = children(demo.pid)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0
        assert not [pid for pid in started if alive(pid)], "processes left behind"
    finally:
        if demo.poll() is None:
            kill_demo(demo)
    errors = (tmp_path / "demo.err").read_text()
    assert "Traceback" not in errors, errors
    workdir = assert_state_deleted_and_logs_kept(tmp_path, ["worker.log"])
    assert errors.splitlines()[-1] == (
        f"stopped; the logs are in {workdir} (the demo's state is deleted)"
    )


def test_a_stop_signal_while_the_history_is_made_stops_everything_cleanly(
    tmp_path: Path,
) -> None:
    """Scheduling 28 days of history at 0.3 events/s takes seconds of Python: a SIGTERM then
    printed a 40-line traceback (and with a negative rate, which never ended, always did)."""
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--history-rate", "0.3"],
        env=environment(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "demo.err", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    assert demo.stdout is not None
    output = Lines(demo.stdout)
    try:
        # the simulator starts (and makes its history) as the worker first answers
        wait_for(lambda: output.starting("metrics: "), 60, "the worker serving")
        started = children(demo.pid)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0
        assert not [pid for pid in started if alive(pid)], "processes left behind"
    finally:
        if demo.poll() is None:
            kill_demo(demo)
    errors = (tmp_path / "demo.err").read_text()
    assert "Traceback" not in errors and "Unclosed" not in errors, errors
    assert len(errors.splitlines()) == 2, errors  # the broker's line, and "stopped; ..."
    assert_state_deleted_and_logs_kept(tmp_path, ["worker.log"])


def kafka_jvm(pid: int) -> int | None:
    """The demo's child running Apache Kafka's broker (kafka.Kafka on a JVM), if any."""
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in command:
            return child
    return None


def test_demo_on_apache_kafka_with_exactly_once(tmp_path: Path) -> None:
    """`--kafka` runs the demo on Apache Kafka itself, where exactly-once (Kafka transactions)
    works; Ctrl-C stops the broker's JVM too, and its data goes with it."""
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--kafka", "--backfill", "7d"],
        env=environment(tmp_path, port, CX_PROCESSING_GUARANTEE="exactly_once", TERM="dumb"),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "demo.err", "wb"),  # noqa: SIM115
        start_new_session=True,
        preexec_fn=as_a_background_job,
    )
    try:
        week = ("1h", "24h", "7d")
        wait_for(
            lambda: 0 < (counts := opened(port, week))[0] < counts[1] < counts[2],
            240,  # Apache Kafka starts in seconds once Maven resolved it (scripts/test does)
            "a week of history on the demo's /metrics",
        )
        jvm = kafka_jvm(demo.pid)
        assert jvm is not None, "no Apache Kafka among the demo's processes"
        started = children(demo.pid)
        assert len(started) >= 2, "the demo should run Apache Kafka and a worker"
        (workdir,) = tmp_path.glob("cx-stream-demo-*")
        worker_log = (workdir / "worker.log").read_text()
        assert "for transactional id" in worker_log, "the worker runs without transactions"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=90) == 0
        assert not alive(jvm), f"Apache Kafka (pid {jvm}) left running"
        assert not [pid for pid in started if alive(pid)], "processes left behind"
    finally:
        if demo.poll() is None:
            kill_demo(demo)
    errors = (tmp_path / "demo.err").read_text()
    assert "Traceback" not in errors, errors
    assert "Maven" in errors.splitlines()[0], errors  # the first start resolves it with Maven
    listens = re.search(
        rf"^Apache Kafka {re.escape(kafka_version())} on 127\.0\.0\.1:(\d+) ", errors, re.M
    )
    assert listens, errors
    assert_state_deleted_and_logs_kept(tmp_path, ["worker.log", "kafka/node-1/broker.log"])
