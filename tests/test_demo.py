"""`cx-stream demo`: live numbers on /metrics, and Ctrl-C or SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_shows_live_numbers_and_a_stop_signal_stops_everything(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """Ctrl-C from a terminal, SIGTERM from `docker stop` or a process manager."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CX_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo"],  # the defaults: 28 days of history
        env={**env, "CX_WEB_PORT": str(port), "TERM": "dumb"},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "demo.err", "wb"),  # noqa: SIM115
        start_new_session=True,
        preexec_fn=as_a_background_job,  # Ctrl-C must stop it even so (it did not, in CI)
    )
    try:

        def whole(samples: Samples, name: str, window: str) -> float:
            labels = {"team": "all", "channel": "all", "priority": "all", "window": window}
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

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
