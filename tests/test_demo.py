"""`cx-stream demo`: live numbers on /metrics, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from stream.broker import free_port
from tests.kafka import wait_for

pytestmark = pytest.mark.broker


def children(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the parent pid
            found.add(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_shows_live_numbers_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CX_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--rate", "20", "--backfill", "30m"],
        env={**env, "CX_WEB_PORT": str(port), "TERM": "dumb"},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "demo.err", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    try:

        def tickets_counted() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            return 'cx_tickets_opened{channel="all",priority="all",team="all",window="1h"}' in text

        wait_for(tickets_counted, 120, "live numbers from the demo's worker")
        started = children(demo.pid)
        assert len(started) >= 2, "the demo should run a broker and a worker"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
        assert not [pid for pid in started if alive(pid)], "processes left behind"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
