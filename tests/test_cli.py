"""The command line: one-line errors, no tracebacks, non-zero exits."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream.apache_kafka import ApacheKafka
from stream.broker import create_topics, free_port
from stream.config import Settings
from stream.events import TOPICS
from tests.kafka import as_a_background_job, assert_one_line_error, read_topic, run_cli, wait_for


def test_unknown_option() -> None:
    assert_one_line_error(run_cli("worker", "--no-such-option"), "--no-such-option")


def test_unreachable_broker() -> None:
    port = free_port()  # nothing listens there
    result = run_cli("worker", "--broker", f"kafka://127.0.0.1:{port}")
    assert_one_line_error(result, f"cannot reach the Kafka broker at 127.0.0.1:{port}")


def test_bad_settings_name_the_setting() -> None:
    assert_one_line_error(run_cli("worker", CX_WEB_PORT="http"), "CX_WEB_PORT")
    assert_one_line_error(run_cli("worker", "--windows", "1h,soon"), "soon")
    assert_one_line_error(
        run_cli("worker", CX_FIRST_RESPONSE_SLA="vip=1h"), "CX_FIRST_RESPONSE_SLA"
    )
    assert_one_line_error(run_cli("worker", CX_WINDOWS="1h,1h"), "CX_WINDOWS")
    assert_one_line_error(run_cli("worker", CX_STATE_RETENTION="1d"), "CX_STATE_RETENTION")
    assert_one_line_error(run_cli("worker", CX_SLA_CLOCK="lunar"), "CX_SLA_CLOCK")
    assert_one_line_error(run_cli("worker", CX_SLA_CLOCK="business"), "CX_BUSINESS_HOURS")
    assert_one_line_error(run_cli("worker", CX_BUSINESS_HOURS="/no/such/hours.yaml"), "hours.yaml")


def test_a_schedule_error_is_one_line_naming_the_place(tmp_path: Path) -> None:
    hours = tmp_path / "hours.yaml"
    hours.write_text('default:\n  timezone: Mars/Olympus\n  hours: {mon-fri: ["09:00-17:00"]}\n')
    result = run_cli("worker", CX_BUSINESS_HOURS=str(hours))
    assert_one_line_error(result, "default.timezone")


def unreachable() -> str:
    """A broker URL nothing answers at: a command that took a bad number would fail on it
    (one line, but not naming the number) instead of starting anything."""
    return f"kafka://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["demo", "--rate", "-5"], "--rate"),
        (["demo", "--rate", "0"], "--rate"),
        (["demo", "--rate", "nan"], "--rate"),
        (["demo", "--rate", "inf"], "--rate"),
        (["demo", "--rate", "1e9"], "--rate"),
        (["demo", "--rate", "fast"], "--rate"),
        (["demo", "--history-rate", "-0.08"], "--history-rate"),
        (["demo", "--history-rate", "0"], "--history-rate"),
        (["demo", "--backfill", "-1d"], "--backfill"),
        (["demo", "--backfill", "0s"], "--backfill"),
        (["demo", "--backfill", "9" * 400 + "d"], "--backfill"),
        (["simulate", "--rate", "-5"], "--rate"),
        (["simulate", "--rate", "nan"], "--rate"),
        (["simulate", "--backfill", "-2h"], "--backfill"),
        (["simulate", "--duration", "0s"], "--duration"),
        (["simulate", "--duration", "-10s"], "--duration"),
        (["simulate", "--seed", "1.5"], "--seed"),
        (["worker", "--web-port", "0"], "--web-port"),
        (["worker", "--web-port", "70000"], "--web-port"),
        (["worker", "--partitions", "0"], "--partitions"),
        (["worker", "--partitions", "-3"], "--partitions"),
    ],
)
def test_every_numeric_option_refuses_a_bad_number_in_one_line(
    args: list[str], mentions: str
) -> None:
    """Before anything starts: `demo --rate -5` ran a simulator that never sent anything (its
    arrival loop never ended), and a stop signal then printed a traceback."""
    assert_one_line_error(run_cli(*args, "--broker", unreachable()), mentions)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CX_WEB_PORT", "0"),
        ("CX_WEB_PORT", "-1"),
        ("CX_WEB_PORT", "65536"),
        ("CX_PARTITIONS", "0"),
        ("CX_PARTITIONS", "2.5"),
        ("CX_REPLICATION_FACTOR", "0"),
        ("CX_MAX_SEGMENT_VALUES", "-1"),
        ("CX_SNAPSHOT_INTERVAL", "nan"),
        ("CX_SNAPSHOT_INTERVAL", "inf"),
        ("CX_SNAPSHOT_INTERVAL", "0"),
        ("CX_RETENTION_SWEEP_INTERVAL", "inf"),
        ("CX_RETENTION_SWEEP_INTERVAL", "-60"),
        ("CX_KAFKA_SESSION_TIMEOUT", "-6s"),
        ("CX_KAFKA_SESSION_TIMEOUT", "0s"),
        ("CX_STATE_RETENTION", "-35d"),
    ],
)
def test_every_numeric_variable_refuses_a_bad_number_in_one_line(variable: str, value: str) -> None:
    result = run_cli("worker", **{variable: value, "CX_BROKER": unreachable()})
    assert_one_line_error(result, variable)


@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_the_demo_and_the_simulator_read_the_variables_alike(command: str) -> None:
    """(The demo took CX_WEB_PORT=70000, and its port check failed with a traceback.)"""
    for variable, value in [("CX_WEB_PORT", "70000"), ("CX_SNAPSHOT_INTERVAL", "nan")]:
        result = run_cli(command, **{variable: value, "CX_BROKER": unreachable()})
        assert_one_line_error(result, variable)


def test_demo_on_kafka_refuses_another_broker() -> None:
    """--kafka starts a broker of its own: a configured one as well is a contradiction."""
    broker = unreachable()
    assert_one_line_error(run_cli("demo", "--kafka", "--broker", broker), "--kafka")
    assert_one_line_error(run_cli("demo", "--kafka", CX_BROKER=broker), "CX_BROKER")


def test_demo_on_kafka_without_java_or_maven_says_so_in_one_line(tmp_path: Path) -> None:
    """Java is looked for first (no download for nothing); Maven only matters while the jars
    were never resolved (a user cache of its own here)."""
    no_java = tmp_path / "bin"
    no_java.mkdir()
    result = run_cli("demo", "--kafka", PATH=str(no_java), XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert_one_line_error(result, "java is not found")
    java = shutil.which("java")
    assert java is not None, "the tests run Apache Kafka: java is on PATH"
    (no_java / "java").symlink_to(os.path.realpath(java))
    result = run_cli("demo", "--kafka", PATH=str(no_java), XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert_one_line_error(result, "mvn is not on PATH")


def test_exactly_once_needs_the_demo_on_kafka() -> None:
    """The embedded broker has no transactions: the worker would stop on its first batch."""
    result = run_cli("demo", CX_PROCESSING_GUARANTEE="exactly_once")
    assert_one_line_error(result, "--kafka")


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "worker" in result.stdout


@pytest.mark.broker
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_simulator_stops_on_a_signal_and_loses_nothing_it_counted(
    broker: ApacheKafka, prefix: str, stop: signal.Signals
) -> None:
    """Ctrl-C, also when started with SIGINT ignored (a script's background job, as CI starts
    it), and SIGTERM (`docker stop`) both stop it cleanly: every event it says it sent is in
    Kafka."""
    topics = [prefix + topic for topic in TOPICS]
    create_topics(Settings(broker=broker.url), {topic: {} for topic in topics}, 1)
    simulator = subprocess.Popen(
        [sys.executable, "-m", "stream", "simulate", "--broker", broker.url, "--rate", "200"],
        env={"PATH": "/usr/bin:/bin", "CX_TOPIC_PREFIX": prefix},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_a_background_job,
    )
    try:
        wait_for(
            lambda: read_topic(broker.bootstrap, f"{prefix}ticket-opened"), 60, "simulated tickets"
        )
        simulator.send_signal(stop)
        _, errors = simulator.communicate(timeout=30)
        assert simulator.returncode == 0, errors
        last_line = errors.strip().splitlines()[-1]
        assert last_line.startswith("stopped after sending "), errors
        sent = int(last_line.split()[3])
        assert sent > 0
        assert sum(len(read_topic(broker.bootstrap, topic)) for topic in topics) == sent
    finally:
        if simulator.poll() is None:
            simulator.kill()
            simulator.wait()
