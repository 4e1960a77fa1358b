"""Workers, the simulator and the demo against Apache Kafka's own secured listeners: SSL, which
requires a client certificate, and SASL_SSL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (the
SCRAM users created through Kafka's admin API), with certificates the tests make. Refusals are
one line and a non-zero exit; no secret ever shows in the output or on /health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stream.apache_kafka import ApacheKafka
from stream.broker import check_reachable, free_port
from stream.config import from_env
from tests.kafka import (
    WorkerProcess,
    assert_one_line_error,
    kill_demo,
    processed,
    run_cli,
    wait_for,
)
from tests.secure import KEY_PASSWORD, Certificates

pytestmark = pytest.mark.broker

USER, PASSWORD = "cx-worker", "sasl-Pw-31f7c2"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@pytest.fixture(scope="module")
def kafka(
    certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApacheKafka]:
    """One secured broker for the module: SSL requires a client certificate signed by the test
    CA; SASL_SSL knows USER in every mechanism (PLAIN from its JAAS line, SCRAM from users made
    with Kafka's admin API); PLAINTEXT is the nodes' own listener."""
    properties = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certificates.server),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certificates.ca),
        "listener.name.ssl.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required"
            f' user_{USER}="{PASSWORD}";'
        ),
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": SCRAM_LOGIN,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": SCRAM_LOGIN,
    }
    listeners = {"SSL": "SSL", "SASL_SSL": "SASL_SSL"}
    folder = tmp_path_factory.mktemp("secured-kafka")
    with ApacheKafka(folder, listeners=listeners, properties=properties) as running:
        for mechanism in MECHANISMS[1:]:
            running.create_scram_user(mechanism, USER, PASSWORD)
        for mechanism in MECHANISMS[1:]:
            # a SCRAM user reaches the broker's metadata just after the controller has it
            login = from_env(sasl(running, certificates, mechanism))
            wait_for(lambda: check_reachable(login) is None, 30, f"a {mechanism} login")  # noqa: B023
        yield running


def url(kafka: ApacheKafka, listener: str) -> str:
    return "kafka://" + ";".join(kafka.servers(listener))


def mtls(kafka: ApacheKafka, certificates: Certificates, **variables: str) -> dict[str, str]:
    """A client of the SSL listener, known by its certificate (the key encrypted)."""
    return {
        "CX_BROKER": url(kafka, "SSL"),
        "CX_KAFKA_SSL_CAFILE": str(certificates.ca),
        "CX_KAFKA_SSL_CERTFILE": str(certificates.client),
        "CX_KAFKA_SSL_KEYFILE": str(certificates.client_key),
        "CX_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
        **variables,
    }


def sasl(
    kafka: ApacheKafka, certificates: Certificates, mechanism: str, **variables: str
) -> dict[str, str]:
    """A client of the SASL_SSL listener, logging in as USER (no client certificate)."""
    return {
        "CX_BROKER": url(kafka, "SASL_SSL"),
        "CX_KAFKA_SSL_CAFILE": str(certificates.ca),
        "CX_KAFKA_SASL_MECHANISM": mechanism,
        "CX_KAFKA_SASL_USERNAME": USER,
        "CX_KAFKA_SASL_PASSWORD": PASSWORD,
        **variables,
    }


def test_every_mechanism_logs_in_and_a_wrong_password_is_refused(
    kafka: ApacheKafka, certificates: Certificates
) -> None:
    for mechanism in MECHANISMS:
        assert check_reachable(from_env(sasl(kafka, certificates, mechanism))) is None
        wrong = sasl(kafka, certificates, mechanism, CX_KAFKA_SASL_PASSWORD="not-" + PASSWORD)
        problem = check_reachable(from_env(wrong))
        assert problem is not None and "SaslAuthenticationFailed" in problem, problem
        assert PASSWORD not in problem
    assert check_reachable(from_env(mtls(kafka, certificates))) is None


def run_worker_and_simulator(
    tmp_path: Path, prefix: str, worker_env: dict[str, str], simulator_env: dict[str, str]
) -> str:
    """A worker (debug logs) processes every event the simulator sends; returns all they
    printed and every /health answer."""
    worker = WorkerProcess(
        worker_env["CX_BROKER"],
        tmp_path,
        "worker",
        CX_TOPIC_PREFIX=prefix,
        # debug: even aiokafka's and Faust's debug logs must not show a secret
        CX_LOG_LEVEL="debug",
        **worker_env,
    ).start()
    try:
        # the worker creates the topics; traffic sent earlier would create them its own way
        health = wait_for(lambda: _get(worker.url + "/health"), 60, "the worker's /health")
        simulated = run_cli(
            "simulate",
            "--backfill",
            "2h",
            "--duration",
            "1s",
            CX_TOPIC_PREFIX=prefix,
            **simulator_env,
        )
        assert simulated.returncode == 0, simulated.stderr
        sent = int(simulated.stderr.split("sent ")[-1].split()[0])
        assert sent > 100
        wait_for(lambda: processed(worker) == sent, 60, f"the worker processing all {sent} events")
        health += _get(worker.url + "/health")
    finally:
        worker.stop()
    return worker.log_path.read_text() + simulated.stdout + simulated.stderr + health


def test_worker_over_tls_with_a_client_certificate(
    kafka: ApacheKafka, certificates: Certificates, tmp_path: Path, prefix: str
) -> None:
    """The worker at the SSL listener (Faust's SSLCredentials), the simulator at SASL_SSL."""
    key_password = tmp_path / "key-password"
    key_password.write_text(KEY_PASSWORD + "\n")
    worker = mtls(
        kafka,
        certificates,
        CX_KAFKA_SSL_KEY_PASSWORD="",
        CX_KAFKA_SSL_KEY_PASSWORD_FILE=str(key_password),
    )
    output = run_worker_and_simulator(
        tmp_path, prefix, worker, sasl(kafka, certificates, "SCRAM-SHA-256")
    )
    assert PASSWORD not in output and KEY_PASSWORD not in output


def test_worker_over_sasl_plain(
    kafka: ApacheKafka, certificates: Certificates, tmp_path: Path, prefix: str
) -> None:
    """The worker at SASL_SSL with PLAIN, whose token is the password itself (aiokafka logs
    each request at debug); the simulator at the SSL listener with its client certificate."""
    password = tmp_path / "kafka-password"
    password.write_text(PASSWORD + "\n")
    worker = sasl(
        kafka,
        certificates,
        "PLAIN",
        CX_KAFKA_SASL_PASSWORD="",
        CX_KAFKA_SASL_PASSWORD_FILE=str(password),
    )
    output = run_worker_and_simulator(tmp_path, prefix, worker, mtls(kafka, certificates))
    assert "Authenticated as cx-worker via PLAIN" in output  # aiokafka's debug line
    assert PASSWORD not in output and KEY_PASSWORD not in output


def test_demo_against_a_secured_broker(
    kafka: ApacheKafka, certificates: Certificates, tmp_path: Path, prefix: str
) -> None:
    """The demo's reachability check and simulator, and the worker it starts, all log in."""
    port = free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CX_")}
    scram = sasl(kafka, certificates, "SCRAM-SHA-512", CX_TOPIC_PREFIX=prefix)
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--backfill", "2h", "--history-rate", "1"],
        # TMPDIR: the demo's folder of logs and state, in the test's own
        env={**environment, **scram, "CX_WEB_PORT": str(port), "TMPDIR": str(tmp_path)},
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
    errors = (tmp_path / "demo.err").read_text()
    (workdir,) = tmp_path.glob("cx-stream-demo-*")  # (rich wraps the path it prints)
    output = errors + (workdir / "worker.log").read_text()
    assert "Authenticated as cx-worker via SCRAM-SHA-512" in output  # aiokafka's line
    assert PASSWORD not in output


def test_refused_connections_are_one_line_without_the_secret(
    kafka: ApacheKafka, certificates: Certificates
) -> None:
    wrong = "not-" + PASSWORD
    login = {"CX_KAFKA_SASL_USERNAME": USER, "CX_KAFKA_SASL_PASSWORD": PASSWORD}
    no_certificate = {
        "CX_KAFKA_SSL_CERTFILE": "",
        "CX_KAFKA_SSL_KEYFILE": "",
        "CX_KAFKA_SSL_KEY_PASSWORD": "",
    }
    stranger = str(certificates.stranger)  # signed by a CA the broker does not trust
    worker = "worker"
    cases = [
        (
            worker,
            sasl(kafka, certificates, "SCRAM-SHA-512", CX_KAFKA_SASL_PASSWORD=wrong),
            "SaslAuthenticationFailed: Authentication failed during authentication due to"
            " invalid credentials with SASL mechanism SCRAM-SHA-512",
        ),
        (
            worker,
            sasl(kafka, certificates, "PLAIN", CX_KAFKA_SSL_CAFILE=str(certificates.other_ca)),
            "certificate verify failed",
        ),
        (
            worker,
            {**mtls(kafka, certificates), **no_certificate},
            "the listener requires a client certificate (CX_KAFKA_SSL_CERTFILE)",
        ),
        (
            worker,
            {**mtls(kafka, certificates), **no_certificate, "CX_KAFKA_SSL_CERTFILE": stranger},
            "the broker refused the client certificate (CX_KAFKA_SSL_CERTFILE)",
        ),
        (
            worker,
            {"CX_BROKER": kafka.url, "CX_KAFKA_SSL_CAFILE": str(certificates.ca), **login},
            "connection reset: is it a TLS listener?",
        ),
        (
            worker,
            {"CX_BROKER": kafka.url, "CX_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", **login},
            "IllegalSaslStateError: Request is not valid given the current SASL state."
            " The listener takes no SASL login",
        ),
        # no broker at all; the demo's embedded broker, which has no TLS or SASL
        (worker, {"CX_BROKER": f"kafka://127.0.0.1:{free_port()}", **login}, "cannot reach"),
        ("demo", login, "CX_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs CX_BROKER"),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: run_cli(case[0], **case[1]), cases))
    for (_, _, mentions), result in zip(cases, results, strict=True):
        assert_one_line_error(result, mentions)
        output = result.stdout + result.stderr
        assert PASSWORD not in output and wrong not in output and KEY_PASSWORD not in output


def processed_at(url: str) -> float:
    samples = WorkerProcess.scrape(url)
    return sum(value for (name, _), value in samples.items() if name == "cx_events_total")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()
