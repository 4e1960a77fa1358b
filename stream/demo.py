"""`cx-stream demo`: a broker (embedded unless one is configured), a worker, the simulator and
a live view of the worker's /metrics. Ctrl-C (or SIGTERM) stops all of it, by pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from .broker import EmbeddedBroker, check_reachable, client_options, free_port, stop_process
from .config import Settings
from .live import render, scrape
from .simulate import run_simulation


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def _watch(
    metrics_url: str,
    worker: subprocess.Popen[bytes],
    worker_log: Path,
    simulation: asyncio.Task[int],
    sent: list[int],
) -> None:
    console = Console()
    last: tuple[float, float] | None = None
    waiting = Text(f"starting the worker ({worker_log}) ...")
    with Live(waiting, console=console, refresh_per_second=2) as live:
        while True:
            if worker.poll() is not None:
                raise click.ClickException(
                    f"the worker exited with {worker.returncode}; see {worker_log}"
                )
            if simulation.done():
                simulation.result()  # raises what stopped the simulator
            try:
                series, outcomes = await asyncio.to_thread(scrape, metrics_url)
            except OSError:
                await asyncio.sleep(1)
                continue
            processed, now = sum(outcomes.values()), time.monotonic()
            rate = 0.0 if last is None else (processed - last[0]) / max(now - last[1], 1e-6)
            last = (processed, now)
            live.update(render(series, outcomes, rate, metrics_url, sent[0]))
            await asyncio.sleep(2)


async def _run(
    settings: Settings,
    metrics_url: str,
    worker: subprocess.Popen[bytes],
    worker_log: Path,
    events_per_second: float,
    backfill_seconds: float,
    history_events_per_second: float,
) -> None:
    sent = [0]

    def progress(count: int) -> None:
        sent[0] = count

    # the worker creates the topics with the partitions it wants; traffic sent earlier would
    # make the broker create them with its own default
    while worker.poll() is None:
        try:
            await asyncio.to_thread(scrape, metrics_url)
            break
        except OSError:
            await asyncio.sleep(0.5)

    simulation = asyncio.create_task(
        run_simulation(
            client_options(settings),
            events_per_second,
            backfill_seconds,
            settings.topic_prefix,
            on_progress=progress,
            history_events_per_second=history_events_per_second,
        )
    )
    try:
        await _watch(metrics_url, worker, worker_log, simulation, sent)
    finally:
        simulation.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await simulation


def run_demo(
    settings: Settings,
    broker_configured: bool,
    events_per_second: float,
    backfill_seconds: float,
    history_events_per_second: float,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cx-stream-demo-"))
    broker: EmbeddedBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    console = Console(stderr=True)
    try:
        if not broker_configured:
            port = 9092 if _port_is_free(9092) else None
            broker = EmbeddedBroker(port, log_path=workdir / "broker.log").start()
            settings = settings.with_overrides(broker=broker.url, embedded_broker=True)
            console.print(f"embedded Kafka-compatible broker (Tansu) on {broker.bootstrap}")
        problem = check_reachable(settings)
        if problem:
            raise click.ClickException(problem)
        web_port = settings.web_port if _port_is_free(settings.web_port) else free_port()
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
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        asyncio.run(
            _run(
                settings,
                metrics_url,
                worker,
                worker_log,
                events_per_second,
                backfill_seconds,
                history_events_per_second,
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            stop_process(worker, timeout=20)
        if broker is not None:
            broker.stop()
        console.print(f"stopped; logs are in {workdir}")
