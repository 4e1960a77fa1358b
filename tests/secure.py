"""A secured Kafka for the tests: throwaway certificates (made with the openssl CLI) and a TLS
proxy in front of the embedded broker that requires a client certificate and authenticates
SASL (PLAIN, SCRAM-SHA-256/512) itself, as a secured Kafka listener does.

Tansu 0.6 cannot be that listener: it parses --cert but never wraps its listener in TLS, and
its SCRAM users can only be created over an already authenticated connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import ssl
import struct
import subprocess
import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path

KEY_PASSWORD = "key-pw-5b81e0"
"""The client key is encrypted with it."""
CLIENT_NAME = "cx-stream-test-client"
"""The common name of the client certificate."""

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server: Path
    """The proxy's certificate (127.0.0.1 and localhost) with its key, signed by `ca`."""
    client: Path
    client_key: Path
    """Encrypted with KEY_PASSWORD."""
    other_ca: Path
    """A CA that signed nothing here."""


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
    openssl(
        f"{signed} -passout pass:{KEY_PASSWORD} -subj /CN={CLIENT_NAME}"
        " -keyout client.key -out client.pem"
    )
    server = directory / "server-with-key.pem"
    server.write_bytes(
        b"".join((directory / name).read_bytes() for name in ("server.pem", "server.key"))
    )
    return Certificates(
        directory / "ca.pem",
        server,
        directory / "client.pem",
        directory / "client.key",
        directory / "other-ca.pem",
    )


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _frame(correlation_id: int, body: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(body), correlation_id) + body


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


Exchange = Generator[bytes, bytes, tuple[str, bytes] | None]
"""Takes the client's SASL tokens, yields the replies; returns (user, last reply) or None."""


class SecureProxy:
    """A TLS listener on a loopback port, in a thread of its own, that requires a client
    certificate signed by the test CA and, with `users`, a SASL login before any other request;
    then relays the connection to the broker on `upstream_port`. It records what it saw."""

    def __init__(
        self, certificates: Certificates, port: int, upstream_port: int, users: Mapping[str, str]
    ) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.users = dict(users)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certificates.ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_cert_chain(certificates.server)
        self.client_names: list[str] = []
        """The common name of each connection's client certificate."""
        self.logins: list[tuple[str, str]] = []
        """(mechanism, user) of each successful SASL login."""
        self.refused: list[str] = []
        """Why connections were refused: a failed TLS handshake or SASL login."""
        self._loop = asyncio.new_event_loop()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="secure-proxy")

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def start(self) -> SecureProxy:
        self._thread.start()
        assert self._listening.wait(10), f"the proxy did not listen on port {self.port}"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._listening.set()
        loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # TLS on the accepted connection, so a refused handshake is seen here
            await writer.start_tls(self.context)
        except (ssl.SSLError, ConnectionError) as error:
            self.refused.append(f"TLS: {error!r}")
            writer.close()
            return
        subject = dict(
            field for rdn in writer.get_extra_info("peercert")["subject"] for field in rdn
        )
        self.client_names.append(subject["commonName"])
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream_port
        )
        try:
            if not self.users or await self._login(
                reader, writer, upstream_reader, upstream_writer
            ):
                await asyncio.gather(
                    _pipe(reader, upstream_writer),
                    _pipe(upstream_reader, writer),
                    return_exceptions=True,
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # stopping: asyncio would log a cancelled connection handler as an error
        finally:
            writer.close()
            upstream_writer.close()

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer the SASL requests like a broker (aiokafka: ApiVersions, SaslHandshake v1,
        SaslAuthenticate v0/v1); True once a login succeeded."""
        exchange: Exchange | None = None
        mechanism = ""
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation_id, client_id = struct.unpack(">hhih", frame[:10])
            body = frame[10 + max(client_id, 0) :]
            if api_key == API_VERSIONS:  # the broker's versions, from the broker
                upstream_writer.write(struct.pack(">i", len(frame)) + frame)
                response = await _read_frame(upstream_reader)
                writer.write(struct.pack(">i", len(response)) + response)
            elif api_key == SASL_HANDSHAKE:
                assert version == 1, f"SaslHandshake v{version}"
                (length,) = struct.unpack(">h", body[:2])
                mechanism = body[2 : 2 + length].decode()
                code = 0 if mechanism in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                names = b"".join(_string(name) for name in MECHANISMS)
                writer.write(
                    _frame(correlation_id, struct.pack(">hi", code, len(MECHANISMS)) + names)
                )
                exchange = self._exchange(mechanism) if code == 0 else None
                if exchange is not None:
                    next(exchange)
            elif api_key == SASL_AUTHENTICATE and exchange is not None:
                (length,) = struct.unpack(">i", body[:4])
                session = struct.pack(">q", 0) if version >= 1 else b""
                try:
                    reply = exchange.send(body[4 : 4 + length])
                    done = None
                except StopIteration as end:
                    done = end.value
                    if done is None:
                        self.refused.append(f"SASL {mechanism}: authentication failed")
                        failure = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + _string(
                            "Authentication failed"
                        )
                        writer.write(
                            _frame(correlation_id, failure + struct.pack(">i", 0) + session)
                        )
                        return False
                    reply = done[1]
                ok = struct.pack(">h", 0) + _string(None) + struct.pack(">i", len(reply)) + reply
                writer.write(_frame(correlation_id, ok + session))
                if done is not None:
                    self.logins.append((mechanism, done[0]))
                    return True
            else:
                self.refused.append(f"request {api_key} before a SASL login")
                return False
            await writer.drain()

    def _exchange(self, mechanism: str) -> Exchange:
        token = yield b""
        if mechanism == "PLAIN":
            _, user, password = token.decode().split("\0")
            return (user, b"") if self.users.get(user) == password else None
        algorithm = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        client_first = token.decode().split(",", 2)[2]  # after the GS2 header "n,,"
        fields = dict(part.split("=", 1) for part in client_first.split(","))
        user, nonce = fields["n"], fields["r"] + secrets.token_hex(12)
        salt, iterations = secrets.token_bytes(16), 4096
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        client_final, _, proof = (yield server_first.encode()).decode().rpartition(",p=")
        password = self.users.get(user, secrets.token_hex(16))  # an unknown user fails too
        salted = hashlib.pbkdf2_hmac(algorithm, password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", algorithm)
        stored_key = hashlib.new(algorithm, client_key).digest()
        auth_message = f"{client_first},{server_first},{client_final}".encode()
        signature = hmac.digest(stored_key, auth_message, algorithm)
        claimed = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if f"r={nonce}" not in client_final or not hmac.compare_digest(
            hashlib.new(algorithm, claimed).digest(), stored_key
        ):
            return None
        server_key = hmac.digest(salted, b"Server Key", algorithm)
        server_final = (
            "v=" + base64.b64encode(hmac.digest(server_key, auth_message, algorithm)).decode()
        )
        return user, server_final.encode()
