"""CX_KAFKA_*: what reaches aiokafka and Faust, one-line errors, and no secret shown."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaConnectionError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from stream import broker, simulate
from stream.app import create_app
from stream.config import ConfigError, from_env
from tests.secure import KEY_PASSWORD, Certificates

SECRET = "sasl-Pw-8e2d41"
LOGIN = {"CX_KAFKA_SASL_USERNAME": "cx", "CX_KAFKA_SASL_PASSWORD": SECRET}


def tls_env(certificates: Certificates) -> dict[str, str]:
    return {
        "CX_KAFKA_SSL_CAFILE": str(certificates.ca),
        "CX_KAFKA_SSL_CERTFILE": str(certificates.client),
        "CX_KAFKA_SSL_KEYFILE": str(certificates.client_key),
        "CX_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
    }


def described(options: Mapping[str, Any]) -> dict[str, Any]:
    """Connection options with the TLS context replaced by what it verifies and trusts (and
    without the None that Faust gives as ssl_context for SASL_PLAINTEXT, aiokafka's default)."""
    context = options.get("ssl_context")
    if not isinstance(context, ssl.SSLContext):
        return {key: value for key, value in options.items() if value is not None}
    trusted = sorted(str(ca["subject"]) for ca in context.get_ca_certs(binary_form=False))
    return {**options, "ssl_context": (context.verify_mode, context.check_hostname, trusted)}


TEST_CA = (ssl.CERT_REQUIRED, True, [str(((("commonName", "cx-test-ca"),),))])
"""A context that verifies the broker's certificate and name, and trusts the test CA only."""


def scenarios(certificates: Certificates, tmp_path: Path) -> list[tuple[dict[str, str], Any]]:
    """(variables, the aiokafka options they must give, described)."""
    password_file = tmp_path / "password"
    password_file.write_text(SECRET + "\n")  # as `echo` writes it: the newline is no part of it
    ca = {"CX_KAFKA_SSL_CAFILE": str(certificates.ca)}
    login = {"sasl_plain_username": "cx", "sasl_plain_password": SECRET}
    system = described({"ssl_context": ssl.create_default_context()})["ssl_context"]
    return [
        ({}, {"security_protocol": "PLAINTEXT"}),
        (ca, {"security_protocol": "SSL", "ssl_context": TEST_CA}),
        (tls_env(certificates), {"security_protocol": "SSL", "ssl_context": TEST_CA}),
        (
            {**LOGIN, "CX_KAFKA_SASL_MECHANISM": "scram-sha-256", **tls_env(certificates)},
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                **login,
                "ssl_context": TEST_CA,
            },
        ),
        (
            {
                "CX_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "CX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "CX_KAFKA_SASL_USERNAME": "cx",
                "CX_KAFKA_SASL_PASSWORD_FILE": str(password_file),
                "CX_KAFKA_SSL_CAFILE": "",  # empty is unset, as compose's ${X:-} gives it
            },
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", **login},
        ),
        (
            LOGIN,  # SASL without a protocol is SASL_SSL, trusting the system's CAs
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                **login,
                "ssl_context": system,
            },
        ),
    ]


def test_settings_reach_aiokafka_and_faust_alike(
    certificates: Certificates, tmp_path: Path
) -> None:
    for variables, want in scenarios(certificates, tmp_path):
        settings = from_env(variables)
        assert described(broker.client_options(settings)) == {
            "bootstrap_servers": "localhost:9092",
            **want,
        }, variables
        # Faust's aiokafka driver gives the worker's consumer and producer what its
        # broker_credentials say (faust/transport/drivers/aiokafka.py)
        credentials = create_app(settings).conf.broker_credentials
        assert described(credentials_to_aiokafka_auth(credentials)) == want, variables


class Recorder:
    """Stands in for aiokafka's clients: records the keyword arguments, fails to connect."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **options: Any) -> None:
        Recorder.calls.append(options)

    async def start(self) -> None:
        raise KafkaConnectionError("recorded")

    async def stop(self) -> None:
        pass


def test_the_topic_helpers_and_the_simulator_pass_the_security(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = from_env({**tls_env(certificates), **LOGIN})
    for client in ("AIOKafkaConsumer", "AIOKafkaAdminClient"):
        monkeypatch.setattr(broker, client, Recorder)
    monkeypatch.setattr(simulate, "AIOKafkaProducer", Recorder)
    monkeypatch.setattr(Recorder, "calls", [])
    with pytest.raises(broker.BrokerUnreachable):
        broker.partition_counts(settings, ["ticket-opened"])
    with pytest.raises(KafkaConnectionError):
        broker.create_topics(settings, {"cx-metrics": {}}, 4)
    with pytest.raises(KafkaConnectionError):
        asyncio.run(simulate.run_simulation(broker.client_options(settings), 1.0, 0.0))
    want = described(broker.client_options(settings))
    assert want["security_protocol"] == "SASL_SSL"
    assert len(Recorder.calls) == 3
    for options in Recorder.calls:
        assert {key: value for key, value in described(options).items() if key in want} == want


def test_no_secret_in_settings_or_faust_credentials(certificates: Certificates) -> None:
    settings = from_env({**tls_env(certificates), **LOGIN})
    shown = repr(settings) + str(settings) + repr(create_app(settings).conf.broker_credentials)
    assert "cx" in shown and "SASL_SSL" in shown
    assert SECRET not in shown and KEY_PASSWORD not in shown


@pytest.mark.parametrize(
    ("variables", "mentions"),
    [
        ({"CX_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CX_KAFKA_SECURITY_PROTOCOL='TLS' is not one of"),
        ({**LOGIN, "CX_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CX_KAFKA_SASL_MECHANISM='GSSAPI'"),
        (
            {"CX_KAFKA_SASL_MECHANISM": "PLAIN"},
            "CX_KAFKA_SASL_MECHANISM needs CX_KAFKA_SASL_USERNAME",
        ),
        ({"CX_KAFKA_SASL_PASSWORD": SECRET}, "CX_KAFKA_SASL_PASSWORD needs CX_KAFKA_SASL_USERNAME"),
        ({"CX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_SSL needs CX_KAFKA_SASL_USERNAME"),
        (
            {"CX_KAFKA_SASL_USERNAME": "cx"},
            "needs CX_KAFKA_SASL_PASSWORD or CX_KAFKA_SASL_PASSWORD_FILE",
        ),
        ({**LOGIN, "CX_KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka"}, "not both"),
        (
            {"CX_KAFKA_SASL_USERNAME": "cx", "CX_KAFKA_SASL_PASSWORD_FILE": "/no/such/secret"},
            "CX_KAFKA_SASL_PASSWORD_FILE=/no/such/secret: cannot read it",
        ),
        ({**LOGIN, "CX_KAFKA_SECURITY_PROTOCOL": "SSL"}, "CX_KAFKA_SASL_USERNAME is set but"),
        (
            {"CX_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "CX_KAFKA_SSL_CAFILE": "/ca.pem"},
            "CX_KAFKA_SSL_CAFILE is set but CX_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS",
        ),
        ({"CX_KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "CX_KAFKA_SSL_CAFILE=/no/such/ca.pem"),
        (
            {"CX_KAFKA_SSL_KEYFILE": "/client.key"},
            "CX_KAFKA_SSL_KEYFILE needs CX_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_unusable_settings_are_one_line_naming_the_variable(
    variables: dict[str, str], mentions: str
) -> None:
    with pytest.raises(ConfigError) as error:
        from_env(variables)
    message = str(error.value)
    assert mentions in message and "\n" not in message and SECRET not in message


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"CX_KAFKA_SSL_KEY_PASSWORD": "wrong-" + KEY_PASSWORD}, "wrong CX_KAFKA_SSL_KEY_PASSWORD"),
        ({"CX_KAFKA_SSL_KEY_PASSWORD": ""}, "cannot load the client certificate and key"),
        ({"CX_KAFKA_SSL_CAFILE": "key"}, "cannot load the CA certificates"),
        ({"CX_KAFKA_SSL_CERTFILE": "ca", "CX_KAFKA_SSL_KEYFILE": "key"}, "does not match"),
    ],
)
def test_unusable_certificates_and_keys_are_one_line(
    certificates: Certificates, change: dict[str, str], mentions: str
) -> None:
    files = {"ca": str(certificates.ca), "key": str(certificates.client_key)}
    variables = {
        **tls_env(certificates),
        **{name: files.get(value, value) for name, value in change.items()},
    }
    with pytest.raises(ConfigError) as error:
        from_env(variables)
    message = str(error.value)
    assert mentions in message and "\n" not in message and KEY_PASSWORD not in message
