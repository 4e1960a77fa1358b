"""Throwaway certificates for the secured-Kafka tests, made with the openssl CLI: a CA, the
broker's certificate for 127.0.0.1 and localhost, a client certificate with an encrypted key,
and another CA with a client certificate of its own."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY_PASSWORD = "key-pw-5b81e0"
"""The client key is encrypted with it."""
CLIENT_NAME = "cx-stream-test-client"
"""The common name of the client certificate."""


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server: Path
    """The broker's certificate (127.0.0.1 and localhost), signed by `ca`, followed by its
    unencrypted PKCS#8 key: what Kafka takes as a PEM keystore."""
    client: Path
    client_key: Path
    """Encrypted with KEY_PASSWORD."""
    other_ca: Path
    """A CA the broker does not trust."""
    stranger: Path
    """A client certificate signed by `other_ca`, its unencrypted key in the same file."""


def make_certificates(directory: Path) -> Certificates:
    def openssl(command: str) -> None:
        subprocess.run(
            ["openssl", *command.split()], cwd=directory, check=True, capture_output=True
        )

    new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 2"
    for ca in ("ca", "other-ca"):
        openssl(f"req -x509 {new_key} -nodes -subj /CN=cx-test-{ca} -keyout {ca}.key -out {ca}.pem")
    signed = f"req -x509 -CA ca.pem -CAkey ca.key {new_key}"
    openssl(
        f"{signed} -nodes -subj /CN=localhost -keyout server.key -out server.pem"
        " -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
    )
    # Kafka reads only PKCS#8 keys ("BEGIN PRIVATE KEY"), whatever openssl wrote
    openssl("pkcs8 -topk8 -nocrypt -in server.key -out server.pk8")
    openssl(
        f"{signed} -passout pass:{KEY_PASSWORD} -subj /CN={CLIENT_NAME}"
        " -keyout client.key -out client.pem"
    )
    openssl(
        f"req -x509 -CA other-ca.pem -CAkey other-ca.key {new_key} -nodes"
        " -subj /CN=cx-test-stranger -keyout stranger.key -out stranger.pem"
    )

    def joined(name: str, *parts: str) -> Path:
        path = directory / name
        path.write_bytes(b"".join((directory / part).read_bytes() for part in parts))
        return path

    return Certificates(
        directory / "ca.pem",
        joined("server-with-key.pem", "server.pem", "server.pk8"),
        directory / "client.pem",
        directory / "client.key",
        directory / "other-ca.pem",
        joined("stranger-with-key.pem", "stranger.pem", "stranger.key"),
    )
