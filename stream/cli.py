"""cx-stream worker | demo | simulate."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import click

from .config import GUARANTEES, ConfigError, Settings, check, from_env
from .windows import parse_duration, parse_windows

Command = TypeVar("Command", bound=Callable[..., Any])


class Failure(click.ClickException):
    """An error a person can act on, printed as one line."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # as Ctrl-C: under asyncio.run, whose SIGINT handler cancels the running task so that it
    # cleans up (a KeyboardInterrupt raised here could land inside aiokafka's producer.stop(),
    # leaving its queue unsent: the simulator then counted events Kafka never had)
    signal.raise_signal(signal.SIGINT)


def stop_on_interrupt() -> None:
    """Let Ctrl-C (SIGINT) and `docker stop` (SIGTERM) stop the command the same way, cleaning
    up as it goes. SIGINT is restored even if the command was started with it ignored, as a
    script's background job (`cx-stream demo &`) is; otherwise Ctrl-C and `kill -INT` would do
    nothing. SIGTERM would otherwise end the process at once, without cleaning up."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = from_env()
        if overrides.get("windows") is not None:
            overrides["windows"] = parse_windows(overrides["windows"])
        if overrides.get("state_retention") is not None:
            overrides["state_retention"] = parse_duration(overrides["state_retention"])
        return check(settings.with_overrides(**overrides))
    except (ConfigError, ValueError) as error:
        raise Failure(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cx-stream")
def cli() -> None:
    """Real-time customer-experience metrics from helpdesk events on Kafka."""


@cli.command()
@click.option("--broker", help="Kafka URL, e.g. kafka://kafka:9092 [CX_BROKER]")
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    help="HTTP port of /metrics and /health [CX_WEB_PORT]",
)
@click.option("--web-host", help="address the HTTP server binds [CX_WEB_HOST]")
@click.option("--data-dir", help="where the worker keeps local files [CX_DATA_DIR]")
@click.option("--app-id", help="Kafka consumer group of the workers [CX_APP_ID]")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="partitions of the topics it creates [CX_PARTITIONS]",
)
@click.option("--windows", help="rolling windows, e.g. 1h,24h,7d,28d [CX_WINDOWS]")
@click.option("--topic-prefix", help="prefix of every topic name [CX_TOPIC_PREFIX]")
@click.option(
    "--state-retention", help="forget settled state older than this, e.g. 35d [CX_STATE_RETENTION]"
)
@click.option(
    "--processing-guarantee",
    type=click.Choice(GUARANTEES),
    help="at_least_once, or exactly_once with Kafka transactions [CX_PROCESSING_GUARANTEE]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="the least severe log lines written [CX_LOG_LEVEL]",
)
def worker(**options: Any) -> None:
    """Run one worker; workers with the same app id share the partitions."""
    from .app import run_worker

    settings = _settings(**options)
    run_worker(settings)


class Duration(click.ParamType):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is longer than any clock can count", param, ctx)
        return seconds


MAX_RATE = 100_000
"""Events per second the simulator is asked for at most: more than one simulator sends (it
would only fall behind), and a rate without bound would have it schedule forever."""


class EventRate(click.ParamType):
    """Events per second: a number above 0 and at most MAX_RATE."""

    name = "events/s"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            rate = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not 0 < rate <= MAX_RATE:  # (NaN is neither)
            self.fail(f"{value} is not an event rate above 0 and at most {MAX_RATE:,}", param, ctx)
        return rate


def backfill_option(default: str | None, help: str) -> Callable[[Command], Command]:
    return click.option(
        "--backfill", type=Duration(), default=default, show_default=True, help=help
    )


def accounts_option(default: int) -> Callable[[Command], Command]:
    return click.option(
        "--accounts",
        type=click.IntRange(0, 100_000),
        default=default,
        show_default=True,
        help="B2B customer accounts: with a backfill, 455 days of their subscriptions and"
        " tickets; the tickets after it are theirs",
    )


@cli.command()
@click.option("--broker", help="use this Kafka instead of starting one [CX_BROKER]")
@click.option(
    "--kafka",
    is_flag=True,
    help="start Apache Kafka itself (needs Java 17+; Maven fetches its jars the first time)"
    " instead of the embedded broker",
)
@click.option(
    "--rate",
    type=EventRate(),
    default=10.0,
    show_default=True,
    help="simulated events per second at peak",
)
@backfill_option("28d", "history to generate at start, so every window has data")
@click.option(
    "--history-rate",
    type=EventRate(),
    default=0.08,
    show_default=True,
    help="events per second at peak in the generated history (about 79,000 events in 28 days)",
)
@accounts_option(1500)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="the simulator's seed: the same history every run (the accounts' at least)",
)
def demo(
    broker: str | None,
    kafka: bool,
    rate: float,
    backfill: float,
    history_rate: float,
    accounts: int,
    seed: int,
) -> None:
    """Run a broker, a worker and the simulator, and show the live numbers."""
    from .demo import BrokerChoice, run_demo

    settings = _settings(broker=broker)
    configured = broker is not None or "CX_BROKER" in os.environ
    if kafka and configured:
        raise Failure(
            "--kafka starts an Apache Kafka of the demo's own: leave out --broker and CX_BROKER,"
            " or --kafka"
        )
    choice: BrokerChoice = "configured" if configured else "kafka" if kafka else "embedded"
    problem = _broker_problem(choice, settings)
    if problem:
        raise Failure(problem)
    stop_on_interrupt()
    run_demo(settings, choice, rate, backfill, history_rate, accounts, seed)


def _broker_problem(choice: str, settings: Settings) -> str | None:
    """Why the demo cannot run on the broker chosen, in one line; None if it can."""
    from .apache_kafka import KafkaUnavailable, classpath, java
    from .broker import embedded_broker_missing

    if choice == "configured":
        return None
    if settings.kafka_security.protocol != "PLAINTEXT":
        return (
            f"CX_KAFKA_SECURITY_PROTOCOL={settings.kafka_security.protocol} needs CX_BROKER"
            " (or --broker): the broker the demo starts has no TLS or SASL"
        )
    if choice == "embedded":
        if settings.processing_guarantee == "exactly_once":
            return (
                "CX_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, which the"
                " embedded broker lacks: add --kafka (Apache Kafka), or set CX_BROKER"
            )
        return embedded_broker_missing()
    try:
        java()
        if shutil.which("mvn") is None:
            classpath()  # without Maven, only jars it resolved before will do
    except KafkaUnavailable as error:
        return str(error)
    return None


@cli.command()
@click.option("--broker", help="Kafka URL, e.g. kafka://kafka:9092 [CX_BROKER]")
@click.option("--topic-prefix", help="prefix of every topic name [CX_TOPIC_PREFIX]")
@click.option(
    "--rate",
    type=EventRate(),
    default=20.0,
    show_default=True,
    help="events per second at peak hours",
)
@backfill_option(None, "history to send first, e.g. 24h (default: none)")
@click.option(
    "--duration", type=Duration(), help="stop after this long (default: run until Ctrl-C)"
)
@click.option("--seed", type=int, help="make the traffic repeatable")
@accounts_option(1500)
def simulate(
    broker: str | None,
    topic_prefix: str | None,
    rate: float,
    backfill: float,
    duration: float | None,
    seed: int | None,
    accounts: int,
) -> None:
    """Send realistic helpdesk traffic to the input topics."""
    import asyncio

    from .broker import check_reachable, client_options
    from .simulate import run_simulation

    settings = _settings(broker=broker, topic_prefix=topic_prefix)
    problem = check_reachable(settings)
    if problem:
        raise Failure(problem)
    progress = Progress(interactive=sys.stderr.isatty())
    stop_on_interrupt()
    try:
        sent = asyncio.run(
            run_simulation(
                client_options(settings),
                rate,
                backfill or 0.0,
                settings.topic_prefix,
                duration,
                seed,
                progress,
                accounts=accounts,
            )
        )
    except KeyboardInterrupt:
        progress.end(f"stopped after sending {progress.sent} events")
        return
    progress.end(f"sent {sent} events to {settings.broker}")


class Progress:
    """The simulator's progress on stderr: one line redrawn with \\r in a terminal; elsewhere
    (docker logs, a file) a plain line every `interval` seconds, so logs stay line by line."""

    def __init__(self, interactive: bool, interval: float = 10.0) -> None:
        self.interactive = interactive
        self.interval = interval
        self.started = self.last_line = time.monotonic()
        self.sent = 0

    def __call__(self, sent: int) -> None:
        self.sent = sent
        now = time.monotonic()
        line = f"sent {sent} events ({sent / max(now - self.started, 1e-6):.0f}/s)"
        if self.interactive:
            click.echo(f"\r{line}", nl=False, err=True)
        elif now - self.last_line >= self.interval:
            self.last_line = now
            click.echo(line, err=True)

    def end(self, message: str) -> None:
        click.echo(f"\n{message}" if self.interactive else message, err=True)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"cx-stream: error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
