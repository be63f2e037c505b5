"""`wss://` manager addresses: the certificate is verified, with the system's trust store."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORD
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.config import Settings
from service.local.driver import spawn_service
from service.local.manager import ManagerStandIn
from service.server import UploadService


@pytest.fixture
def certificate(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1: (certificate, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "manager stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    yield cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


class _Seen(logging.Handler):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_an_untrusted_certificate_is_refused(
    certificate: tuple[Path, Path], settings: Settings
) -> None:
    seen = _Seen("TLS certificate was not accepted")
    logging.getLogger("service").addHandler(seen)
    try:
        async with ManagerStandIn(
            password=PASSWORD, ssl_context=server_context(certificate)
        ) as tls:
            async with UploadService(dataclasses.replace(settings, manager_address=tls.address)):
                await seen.event.wait()
            assert tls.services == []
    finally:
        logging.getLogger("service").removeHandler(seen)


async def test_a_certificate_the_trust_store_holds_is_accepted(
    certificate: tuple[Path, Path], settings: Settings
) -> None:
    async with ManagerStandIn(password=PASSWORD, ssl_context=server_context(certificate)) as tls:
        process = await spawn_service(
            dataclasses.replace(settings, manager_address=tls.address),
            stderr=asyncio.subprocess.DEVNULL,
            SSL_CERT_FILE=str(certificate[0]),
        )
        try:
            link = await tls.next_service()
            assert link.own_address == settings.own_address
        finally:
            process.terminate()
            assert await process.wait() == 0
