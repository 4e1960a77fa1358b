"""How cx-stream's Kafka clients connect to a secured cluster: TLS (optionally with a client
certificate) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), from the CX_KAFKA_* variables.

This is the one place that turns those settings into what the clients take: aiokafka's
keyword arguments (our topic helpers, the simulator's producer) and Faust's
`broker_credentials` (the worker's consumer, producer and topic creation), which Faust's
aiokafka driver turns into the same keyword arguments.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TLS_VARIABLES = (
    "CX_KAFKA_SSL_CAFILE",
    "CX_KAFKA_SSL_CERTFILE",
    "CX_KAFKA_SSL_KEYFILE",
    "CX_KAFKA_SSL_KEY_PASSWORD",
    "CX_KAFKA_SSL_KEY_PASSWORD_FILE",
)
SASL_VARIABLES = (
    "CX_KAFKA_SASL_MECHANISM",
    "CX_KAFKA_SASL_USERNAME",
    "CX_KAFKA_SASL_PASSWORD",
    "CX_KAFKA_SASL_PASSWORD_FILE",
)


@dataclass(frozen=True)
class KafkaSecurity:
    """The connection security of every Kafka client; the passwords stay out of repr()."""

    protocol: str = "PLAINTEXT"
    cafile: str | None = None
    """PEM certificates of the CAs that sign the brokers' certificates; None: the system's."""
    certfile: str | None = None
    """The client certificate (PEM), for brokers that authenticate clients by certificate."""
    keyfile: str | None = None
    """Its private key, when not in `certfile`."""
    key_password: str | None = field(default=None, repr=False)
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (brokers' certificates and host names verified); None without TLS.
        Raises ValueError naming the variable whose file is unusable."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except OSError as error:
            raise ValueError(
                f"CX_KAFKA_SSL_CAFILE={self.cafile}: cannot load the CA certificates"
                f" ({_reason(error)})"
            ) from None
        if self.certfile:
            try:
                # an empty password rather than None: OpenSSL would prompt on the terminal
                context.load_cert_chain(self.certfile, self.keyfile, self.key_password or "")
            except OSError as error:
                files = f"CX_KAFKA_SSL_CERTFILE={self.certfile}"
                if self.keyfile:
                    files += f", CX_KAFKA_SSL_KEYFILE={self.keyfile}"
                causes = (
                    " (not PEM, a key that does not match, or a wrong CX_KAFKA_SSL_KEY_PASSWORD)"
                    if isinstance(error, ssl.SSLError)
                    else ""
                )
                raise ValueError(
                    f"{files}: cannot load the client certificate and key{causes}: {_reason(error)}"
                ) from None
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """aiokafka's connection keyword arguments, as Faust derives them from its credentials."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials`: SASLCredentials, SSLCredentials or None (PLAINTEXT)."""
        import faust  # here, not above: the simulator and topic helpers need no Faust

        if self.sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _secret(given: Mapping[str, str], name: str) -> str | None:
    """A secret from `name`, or from the file named by `name`_FILE (Docker, Kubernetes)."""
    path = given.get(f"{name}_FILE")
    if path is None:
        return given.get(name)
    if name in given:
        raise ValueError(f"set {name} or {name}_FILE, not both")
    try:
        secret = Path(path).read_text().rstrip("\r\n")
    except OSError as error:
        raise ValueError(f"{name}_FILE={path}: cannot read it ({_reason(error)})") from None
    if not secret:
        raise ValueError(f"{name}_FILE={path} is empty")
    return secret


def from_env(env: Mapping[str, str]) -> KafkaSecurity:
    """The CX_KAFKA_* settings of `env` (empty means unset). Raises ValueError naming the
    variable, never quoting a secret. Without CX_KAFKA_SECURITY_PROTOCOL, SASL settings mean
    SASL_SSL and TLS settings SSL: a password never goes out unencrypted unless asked to."""
    given = {name: value for name, value in env.items() if name.startswith("CX_KAFKA_") and value}
    tls_given = [name for name in TLS_VARIABLES if name in given]
    sasl_given = [name for name in SASL_VARIABLES if name in given]
    derived = "SASL_SSL" if sasl_given else "SSL" if tls_given else "PLAINTEXT"
    protocol = given.get("CX_KAFKA_SECURITY_PROTOCOL", derived).upper()
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"CX_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    uses = KafkaSecurity(protocol)
    if tls_given and not uses.tls:
        raise ValueError(
            f"{tls_given[0]} is set but CX_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS"
            " (SSL or SASL_SSL do)"
        )
    if sasl_given and not uses.sasl:
        raise ValueError(
            f"{sasl_given[0]} is set but CX_KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL"
            " (SASL_SSL or SASL_PLAINTEXT do)"
        )
    client_key = [name for name in TLS_VARIABLES if "_KEY" in name and name in given]
    if client_key and "CX_KAFKA_SSL_CERTFILE" not in given:
        raise ValueError(f"{client_key[0]} needs CX_KAFKA_SSL_CERTFILE (the client certificate)")
    mechanism = given.get("CX_KAFKA_SASL_MECHANISM", "PLAIN").upper()
    if mechanism not in MECHANISMS:
        raise ValueError(
            f"CX_KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(MECHANISMS)}"
        )
    username = given.get("CX_KAFKA_SASL_USERNAME")
    password = _secret(given, "CX_KAFKA_SASL_PASSWORD")
    if uses.sasl and username is None:
        setting = sasl_given[0] if sasl_given else f"CX_KAFKA_SECURITY_PROTOCOL={protocol}"
        raise ValueError(f"{setting} needs CX_KAFKA_SASL_USERNAME")
    if uses.sasl and password is None:
        raise ValueError(
            "CX_KAFKA_SASL_USERNAME needs CX_KAFKA_SASL_PASSWORD or CX_KAFKA_SASL_PASSWORD_FILE"
        )
    security = KafkaSecurity(
        protocol,
        cafile=given.get("CX_KAFKA_SSL_CAFILE"),
        certfile=given.get("CX_KAFKA_SSL_CERTFILE"),
        keyfile=given.get("CX_KAFKA_SSL_KEYFILE"),
        key_password=_secret(given, "CX_KAFKA_SSL_KEY_PASSWORD"),
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
    )
    security.ssl_context()  # an unusable file is a one-line error now, not in a client
    return security
