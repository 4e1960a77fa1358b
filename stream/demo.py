"""`cx-stream demo`: a broker (the embedded one, Apache Kafka with --kafka, or the one
configured), a worker, the simulator and a view of the worker's /metrics: live in a terminal,
plain lines elsewhere. Ctrl-C (or SIGTERM) stops all of it, by pid, and deletes the state the
demo made; its logs stay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from .apache_kafka import ApacheKafka, KafkaUnavailable, kafka_version
from .broker import EmbeddedBroker, check_reachable, client_options, free_port, stop_process
from .config import Settings
from .live import Rate, Series, render, scrape, status_line
from .simulate import run_simulation

BrokerChoice = Literal["embedded", "kafka", "configured"]
"""The embedded broker (Tansu), Apache Kafka (--kafka), or CX_BROKER / --broker."""

KAFKA_PORT = 9092
"""Where the demo's broker listens when the port is free, as a Kafka client expects it."""

SCRAPE_INTERVAL = 2.0
"""Seconds between two looks at the worker's /metrics."""

LINE_INTERVAL = 10.0
"""Seconds between two status lines when the output is not a terminal."""


def port_is_free(port: int) -> bool:
    """Whether a server can listen on `port` of the loopback address now. With SO_REUSEADDR,
    as servers bind (the worker's aiohttp, the brokers): the TIME_WAIT connections a stopped
    demo's scrapes left on its port for a minute must not move the next demo off it."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Simulator:
    """The simulator on a thread of its own, with its own event loop. Scheduling the history
    is a stretch of Python that would stall the view for seconds; and a stop signal, which
    Python delivers to the main thread, then never lands inside the simulator's code."""

    def __init__(self, simulation: Coroutine[Any, Any, int]) -> None:
        self._loop = asyncio.new_event_loop()
        self._task = self._loop.create_task(simulation)
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self.error: BaseException | None = None
        """What stopped the simulator, if it stopped on its own."""

    def _run(self) -> None:
        # the kernel hands a process's signal to any thread that does not block it: blocked
        # here (and in the threads the loop starts), a stop signal wakes the main thread at once
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as error:
            self.error = error
        finally:
            self._loop.close()

    def start(self) -> Simulator:
        self._thread.start()
        return self

    def stop(self, timeout: float) -> bool:
        """Cancel it (its producer sends what it holds) and wait up to `timeout` seconds;
        whether it ended. A simulator still scheduling its history cannot be cancelled: being a
        daemon thread, it ends with the process."""
        with contextlib.suppress(RuntimeError):  # its loop closed: it has ended
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class View(Protocol):
    def waiting(self, message: str) -> None: ...

    def show(self, series: Series, outcomes: dict[str, float], rate: float, sent: int) -> None: ...


class TerminalView:
    """The live tables, redrawn in place."""

    def __init__(self, live: Live, metrics_url: str) -> None:
        self.live = live
        self.metrics_url = metrics_url

    def waiting(self, message: str) -> None:
        self.live.update(Text(message))

    def show(self, series: Series, outcomes: dict[str, float], rate: float, sent: int) -> None:
        self.live.update(render(series, outcomes, rate, self.metrics_url, sent))


class LinesView:
    """Plain lines for a pipe, a file, a CI job or a log collector, which would see nothing of
    the live view until it stops: where /metrics is, then a status line every `interval`."""

    def __init__(self, metrics_url: str, interval: float = LINE_INTERVAL) -> None:
        self.metrics_url = metrics_url
        self.interval = interval
        self.last_line: float | None = None
        self.last_waiting = ""

    def waiting(self, message: str) -> None:
        if message != self.last_waiting:
            self.last_waiting = message
            click.echo(message)

    def show(self, series: Series, outcomes: dict[str, float], rate: float, sent: int) -> None:
        now = time.monotonic()
        if self.last_line is None:
            click.echo(f"metrics: {self.metrics_url} (a status line every {self.interval:g}s)")
        elif now - self.last_line < self.interval:
            return
        self.last_line = now
        click.echo(status_line(series, outcomes, rate, sent))


@contextlib.contextmanager
def _view(metrics_url: str) -> Iterator[View]:
    console = Console()
    if console.is_terminal and not console.is_dumb_terminal:
        with Live(console=console, refresh_per_second=2) as live:
            yield TerminalView(live, metrics_url)
    else:
        yield LinesView(metrics_url)


def _watch(
    metrics_url: str,
    worker: subprocess.Popen[bytes],
    worker_log: Path,
    start_simulator: Callable[[], Simulator],
    sent: list[int],
) -> None:
    """Show the worker's numbers until a stop signal (KeyboardInterrupt) or a failure. The
    simulator starts once the worker serves: the worker creates the topics with the partitions
    it wants, and traffic sent earlier would make the broker create them with its own."""
    rate = Rate()
    simulator: Simulator | None = None
    with _view(metrics_url) as view:
        view.waiting(f"starting the worker (its log: {worker_log}) ...")
        while True:
            if worker.poll() is not None:
                raise click.ClickException(
                    f"the worker exited with {worker.returncode}; see {worker_log}"
                )
            if simulator is not None and simulator.error is not None:
                raise click.ClickException(f"the simulator stopped: {simulator.error!r}")
            try:
                series, outcomes = scrape(metrics_url)
            except OSError:
                time.sleep(0.5)
                continue
            if simulator is None:
                simulator = start_simulator()
            processed = sum(outcomes.values())
            view.show(series, outcomes, rate.add(processed, time.monotonic()), sent[0])
            time.sleep(SCRAPE_INTERVAL)


def _start_kafka(kafka: ApacheKafka) -> None:
    version = kafka_version()
    click.echo(
        f"starting Apache Kafka {version} (the first time, Maven downloads its jars, which can"
        " take minutes; later starts take them from Maven's cache)",
        err=True,
    )
    if port_is_free(KAFKA_PORT):
        kafka.cluster[0].ports["PLAINTEXT"] = KAFKA_PORT
    try:
        kafka.start()
    except KafkaUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Apache Kafka {version} on {kafka.bootstrap} (its log: {kafka.folder})", err=True)


def _forget_state(workdir: Path) -> None:
    """Delete the worker's RocksDB state and the broker's data: they belong to a broker that is
    gone (or, with CX_BROKER, to a demo no later one continues), and a month of history is tens
    of MB. The logs stay."""
    for data in (workdir / "data", *(workdir / "kafka").glob("node-*/data")):
        shutil.rmtree(data, ignore_errors=True)


def run_demo(
    settings: Settings,
    broker: BrokerChoice,
    events_per_second: float,
    backfill_seconds: float,
    history_events_per_second: float,
    accounts: int,
    seed: int | None = None,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cx-stream-demo-"))
    embedded: EmbeddedBroker | None = None
    kafka: ApacheKafka | None = None
    worker: subprocess.Popen[bytes] | None = None
    simulators: list[Simulator] = []
    sent = [0]
    try:
        if broker == "embedded":
            port = KAFKA_PORT if port_is_free(KAFKA_PORT) else None
            embedded = EmbeddedBroker(port, log_path=workdir / "broker.log").start()
            settings = settings.with_overrides(broker=embedded.url, embedded_broker=True)
            where = embedded.bootstrap
            click.echo(f"embedded Kafka-compatible broker (Tansu) on {where}", err=True)
        elif broker == "kafka":
            kafka = ApacheKafka(workdir / "kafka")
            _start_kafka(kafka)
            settings = settings.with_overrides(broker=kafka.url, embedded_broker=False)
        problem = check_reachable(settings)
        if problem:
            raise click.ClickException(problem)
        web_port = settings.web_port if port_is_free(settings.web_port) else free_port()
        worker_log = workdir / "worker.log"
        env = {
            **os.environ,
            "CX_BROKER": settings.broker,
            "CX_EMBEDDED_BROKER": "1" if settings.embedded_broker else "",
            "CX_WEB_PORT": str(web_port),
            "CX_WEB_HOST": "127.0.0.1",
            "CX_DATA_DIR": str(workdir / "data"),
            "CX_TOPIC_PREFIX": settings.topic_prefix,
            "CX_APP_ID": settings.app_id,
        }
        with open(worker_log, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "stream", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the worker in order
            )

        def progress(count: int) -> None:
            sent[0] = count

        def start_simulator() -> Simulator:
            simulation = run_simulation(
                client_options(settings),
                events_per_second,
                backfill_seconds,
                settings.topic_prefix,
                seed=seed,
                on_progress=progress,
                history_events_per_second=history_events_per_second,
                accounts=accounts,
            )
            simulators.append(Simulator(simulation).start())
            return simulators[-1]

        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        _watch(metrics_url, worker, worker_log, start_simulator, sent)
    except KeyboardInterrupt:
        pass
    finally:
        # every process is stopped, in order, whatever signals come meanwhile: a second Ctrl-C
        # must not leave the broker or the worker running (each waits a bounded time)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for simulator in simulators:
            if not simulator.stop(timeout=5):
                # left to end with the process: its Kafka client's complaints about the broker
                # stopping under it are no news to the person who stopped the demo
                logging.getLogger("aiokafka").setLevel(logging.CRITICAL + 1)
        if worker is not None:
            stop_process(worker, timeout=20)
        if embedded is not None:
            embedded.stop()
        if kafka is not None:
            kafka.stop()
        _forget_state(workdir)
        click.echo(f"stopped; the logs are in {workdir} (the demo's state is deleted)", err=True)
