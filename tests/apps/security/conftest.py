"""Fixtures for the security tests: a test CA with server and client certificates (made here with
`cryptography`), the X-ray classifier bundle and helpers of the X-ray tests."""

from __future__ import annotations

import datetime
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

XRAY_TESTS = Path(__file__).resolve().parents[1] / "xray"
sys.path.insert(0, str(XRAY_TESTS))  # xray_helpers: Server, SinkSCP, write_study, wait_for


def _load_xray_conftest():
    spec = importlib.util.spec_from_file_location("xray_conftest_for_security", XRAY_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_xray = _load_xray_conftest()
xray_bundle = _xray.xray_bundle  # the same session fixture: cxr-densenet-tiny compiled for `local`
start_server = _xray.start_server


@dataclass(frozen=True)
class Pki:
    """PEM files: the test CA, a server certificate (localhost, 127.0.0.1) with its chain, a client
    certificate, and a certificate from another CA (not trusted)."""

    ca: Path
    server_cert: Path
    server_chain: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path
    ca_spki_sha256_b64: str


def _name(cn: str):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, issuer_key, issuer_name, *, ca: bool = False, sans=None, key=None):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name or _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    root = tmp_path_factory.mktemp("pki")

    def pem_key(key, name: str) -> Path:
        path = root / name
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def pem(name: str, *certs) -> Path:
        path = root / name
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        return path

    ca_key, ca = _issue("medge test CA", None, None, ca=True)
    server_key, server = _issue("localhost", ca_key, ca.subject, sans=True)
    client_key, client = _issue("MEDGE-TEST-CLIENT", ca_key, ca.subject)
    rogue_ca_key, rogue_ca = _issue("rogue CA", None, None, ca=True)
    rogue_key, rogue = _issue("ROGUE-CLIENT", rogue_ca_key, rogue_ca.subject)
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Pki(ca=pem("ca.pem", ca), server_cert=pem("server.pem", server), server_chain=pem("server-chain.pem", server, ca),
               server_key=pem_key(server_key, "server.key"), client_cert=pem("client.pem", client),
               client_key=pem_key(client_key, "client.key"), rogue_cert=pem("rogue.pem", rogue),
               rogue_key=pem_key(rogue_key, "rogue.key"),
               ca_spki_sha256_b64=base64.b64encode(hashlib.sha256(spki).digest()).decode())
