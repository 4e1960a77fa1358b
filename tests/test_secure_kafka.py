"""A worker and the simulator against a secured listener: TLS with a client certificate and
SASL SCRAM (tests/secure.py, in front of the embedded broker); refused credentials are one
line; no secret ever shows in the output or on /health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.apache_kafka import ApacheKafka
from stream.broker import EmbeddedBroker, check_reachable, free_port
from stream.config import from_env
from tests.kafka import (
    WorkerProcess,
    assert_one_line_error,
    kill_demo,
    processed,
    run_cli,
    wait_for,
)
from tests.secure import CLIENT_NAME, KEY_PASSWORD, Certificates, SecureProxy

pytestmark = pytest.mark.broker

USER, PASSWORD = "cx-worker", "sasl-Pw-31f7c2"


@pytest.fixture
def proxy(certificates: Certificates, tmp_path: Path) -> Iterator[SecureProxy]:
    """The secured listener; the broker behind it tells clients to connect to it."""
    port = free_port()
    with EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=port) as broker:
        secured = SecureProxy(certificates, port, broker.port, {USER: PASSWORD}).start()
        try:
            yield secured
        finally:
            secured.stop()


def secured(certificates: Certificates, proxy: SecureProxy, **variables: str) -> dict[str, str]:
    return {
        "CX_BROKER": proxy.url,
        "CX_KAFKA_SSL_CAFILE": str(certificates.ca),
        "CX_KAFKA_SSL_CERTFILE": str(certificates.client),
        "CX_KAFKA_SSL_KEYFILE": str(certificates.client_key),
        "CX_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
        "CX_KAFKA_SASL_USERNAME": USER,
        **variables,
    }


def test_worker_and_simulator_over_tls_with_client_certificate_and_scram(
    certificates: Certificates, proxy: SecureProxy, tmp_path: Path
) -> None:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    scram = secured(
        certificates,
        proxy,
        CX_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        CX_KAFKA_SASL_PASSWORD_FILE=str(password_file),
    )
    # debug: even aiokafka's and Faust's debug logs must not show a secret
    worker = WorkerProcess(proxy.url, tmp_path, "worker", CX_LOG_LEVEL="debug", **scram).start()
    try:
        # the worker creates the topics; traffic sent earlier would create them its own way
        health = wait_for(lambda: _get(worker.url + "/health"), 60, "the worker's /health")
        simulated = run_cli(
            "simulate",
            "--backfill",
            "2h",
            "--duration",
            "1s",
            **secured(
                certificates,
                proxy,
                CX_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
                CX_KAFKA_SASL_PASSWORD=PASSWORD,
            ),
        )
        assert simulated.returncode == 0, simulated.stderr
        sent = int(simulated.stderr.split("sent ")[-1].split()[0])
        assert sent > 100
        wait_for(lambda: processed(worker) == sent, 60, f"the worker processing all {sent} events")
        health += _get(worker.url + "/health")
    finally:
        worker.stop()
    # every connection was TLS with the client certificate, then a SCRAM login: the worker's
    # topic helpers, Faust's consumer and producer, and the simulator's producer
    assert proxy.refused == []
    assert set(proxy.client_names) == {CLIENT_NAME}
    assert len(proxy.client_names) == len(proxy.logins)
    assert proxy.logins.count(("SCRAM-SHA-512", USER)) >= 3, proxy.logins
    assert ("SCRAM-SHA-256", USER) in proxy.logins
    output = worker.log_path.read_text() + simulated.stdout + simulated.stderr + health
    assert "Authenticated as cx-worker via SCRAM-SHA-512" in output  # aiokafka's debug line
    assert PASSWORD not in output and KEY_PASSWORD not in output


def test_plain_password_stays_out_of_debug_logs(
    certificates: Certificates, proxy: SecureProxy, tmp_path: Path
) -> None:
    """A PLAIN token is the password itself, and aiokafka would log each request at debug."""
    plain = secured(
        certificates, proxy, CX_KAFKA_SASL_MECHANISM="PLAIN", CX_KAFKA_SASL_PASSWORD=PASSWORD
    )
    worker = WorkerProcess(proxy.url, tmp_path, "worker", CX_LOG_LEVEL="debug", **plain).start()
    try:
        wait_for(lambda: ("PLAIN", USER) in proxy.logins, 60, "Faust's clients logging in")
        wait_for(lambda: worker.samples(), 60, "the worker serving")
    finally:
        worker.stop()
    assert ("PLAIN", USER) in proxy.logins
    assert PASSWORD not in worker.log_path.read_text()


def test_demo_against_a_secured_broker(
    certificates: Certificates, proxy: SecureProxy, tmp_path: Path
) -> None:
    """The demo's reachability check and simulator, and the worker it starts, all log in."""
    port = free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CX_")}
    scram = secured(
        certificates,
        proxy,
        CX_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        CX_KAFKA_SASL_PASSWORD=PASSWORD,
    )
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--backfill", "2h", "--history-rate", "1"],
        # the broker behind the proxy is the embedded one: its workarounds apply
        env={**environment, **scram, "CX_EMBEDDED_BROKER": "1", "CX_WEB_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "demo.err", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: processed_at(f"http://127.0.0.1:{port}") > 100,
            60,
            "events on the demo's /metrics",
        )
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            kill_demo(demo)
    assert proxy.refused == []
    assert set(proxy.client_names) == {CLIENT_NAME}
    assert len(proxy.logins) == len(proxy.client_names) >= 4
    errors = (tmp_path / "demo.err").read_text()
    workdir = Path(errors.rsplit("logs are in ", 1)[1].strip())
    output = errors + (workdir / "worker.log").read_text()
    assert PASSWORD not in output and KEY_PASSWORD not in output


def test_refused_credentials_are_one_line_without_the_secret(
    certificates: Certificates, proxy: SecureProxy
) -> None:
    wrong = "not-" + PASSWORD
    scram = {"CX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "CX_KAFKA_SASL_PASSWORD": PASSWORD}
    cases = [
        ({**scram, "CX_KAFKA_SASL_PASSWORD": wrong}, "Authentication failed", "SASL"),
        (
            {**scram, "CX_KAFKA_SSL_CAFILE": str(certificates.other_ca)},
            "certificate verify failed",
            "TLS",
        ),
        (
            {
                **scram,
                "CX_KAFKA_SSL_CERTFILE": "",
                "CX_KAFKA_SSL_KEYFILE": "",
                "CX_KAFKA_SSL_KEY_PASSWORD": "",
            },
            "closed",
            "certificate",
        ),
    ]
    for variables, mentions, refused in cases:
        result = run_cli("worker", **secured(certificates, proxy, **variables))
        assert_one_line_error(result, mentions)
        assert PASSWORD not in result.stderr and wrong not in result.stderr
        assert KEY_PASSWORD not in result.stderr
        assert refused in proxy.refused[-1]


def test_security_against_a_plaintext_broker_is_one_line_without_the_secret(
    broker: ApacheKafka, certificates: Certificates
) -> None:
    login = {"CX_KAFKA_SASL_USERNAME": USER, "CX_KAFKA_SASL_PASSWORD": PASSWORD}
    sasl = run_cli(
        "worker", CX_BROKER=broker.url, CX_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", **login
    )
    assert_one_line_error(sasl, "UnsupportedSaslMechanism")
    unreachable = run_cli("worker", CX_BROKER=f"kafka://127.0.0.1:{free_port()}", **login)
    assert_one_line_error(unreachable, "cannot reach the Kafka broker")
    demo = run_cli("demo", **login)  # the embedded broker has no TLS or SASL
    assert_one_line_error(demo, "CX_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs CX_BROKER")
    for result in (sasl, unreachable, demo):
        assert PASSWORD not in result.stdout + result.stderr
    # a TLS handshake sent to a plaintext listener is never answered: the worker waits 10 s
    tls = from_env({"CX_BROKER": broker.url, "CX_KAFKA_SSL_CAFILE": str(certificates.ca), **login})
    problem = check_reachable(tls, timeout=1)
    assert problem is not None and "no answer within 1s: is it a TLS listener?" in problem
    assert PASSWORD not in problem


def processed_at(url: str) -> float:
    samples = WorkerProcess.scrape(url)
    return sum(value for (name, _), value in samples.items() if name == "cx_events_total")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()
