"""Prometheus-family servers (Debian's binaries) on loopback ports, for the ops tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream.broker import free_port, stop_process


@contextlib.contextmanager
def serving(binary: str, *args: str, log: Path) -> Iterator[str]:
    """Run `binary` with `args` plus --web.listen-address on a free loopback port; yields its
    base URL and always stops the process it started."""
    path = shutil.which(binary)
    assert path, f"Debian's {binary} is not installed; scripts/test installs it"
    port = free_port()
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [path, *args, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(server, timeout=20)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
