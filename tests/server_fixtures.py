"""Fixtures for the API server tests: a real test CA (``cryptography`` x509) and
``custody serve`` as a subprocess on 127.0.0.1 with a port of its own choosing."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import cli_env


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (PEM): servers and clients trust it
    server_cert: Path
    server_key: Path
    dir: Path

    def client(
        self, name: str, *, ca_key: ec.EllipticCurvePrivateKey | None = None
    ) -> tuple[str, str]:
        """A client certificate for principal *name* (CN), issued by this CA (or by
        *ca_key*, a stranger's): (cert path, key path)."""
        key_pem = self.dir / "ca.key"
        ca_k = ca_key or serialization.load_pem_private_key(key_pem.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        cert, key = _issue(
            ca_k,  # type: ignore[arg-type]
            ca_cert.subject,
            name,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            san=None,
        )
        tag = name if ca_key is None else f"{name}-stranger"
        cp, kp = self.dir / f"{tag}.crt", self.dir / f"{tag}.key"
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(kp, key)
        return str(cp), str(kp)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    cn: str,
    usage: x509.ObjectIdentifier,
    *,
    san: x509.SubjectAlternativeName | None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san is not None:
        b = b.add_extension(san, critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def make_pki(d: Path) -> Pki:
    """A CA, and a server certificate for 127.0.0.1 and localhost."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custody test CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(d / "ca.key", ca_key)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert, key = _issue(ca_key, name, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, san=san)
    (d / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(d / "server.key", key)
    return Pki(ca=d / "ca.crt", server_cert=d / "server.crt", server_key=d / "server.key", dir=d)


class Server:
    """``custody serve`` running as a subprocess; its stderr goes to :attr:`log`."""

    def __init__(self, home: Path, pins: Path, pki: Pki, *extra: str, env: dict | None = None):
        self.home, self.pins, self.pki = home, pins, pki
        self.tokens: dict[str, str] = {}  # the tests' principals' tokens, by name
        self.mfa_key: bytes = b""  # a TOTP key, for tests that enrol a principal
        self.log = home.parent / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
        argv = [
            sys.executable, "-m", "custody_cli", "serve", "--home", str(home),
            "--pin-file", str(pins), "--cert", str(pki.server_cert),
            "--key", str(pki.server_key), "--client-ca", str(pki.ca),
            "--bind", "127.0.0.1:0", *extra,
        ]  # fmt: skip
        self._err = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._err, stderr=subprocess.STDOUT, env=env or cli_env()
        )
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline and port is None:
            m = re.search(rb"listening on https://127\.0\.0\.1:(\d+)", self.log.read_bytes())
            if m:
                port = int(m.group(1))
            elif self.proc.poll() is not None:
                raise AssertionError(f"custody serve exited: {self.log.read_text()}")
            else:
                time.sleep(0.05)
        if port is None:
            self.stop()
            raise AssertionError(f"custody serve did not start: {self.log.read_text()}")
        self.port = port
        self.url = f"https://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def server_home(
    root: Path,
    people: Mapping[str, tuple[str, tuple[str, ...]]],
    *,
    make: Callable[[Path], tuple[Path, Path]] | None = None,
):
    """A home with a dev root and a secrets KEK, and principals *people* (name -> role,
    services) made through :class:`custody.access.AccessControl` on the home's store: a
    super-admin is a person (an enrolled participant key; they authenticate with a client
    certificate), every other one a service with a bearer token. *make* builds the home
    with its dev root (default: :func:`tests.rekey_fixtures.make_deployment`, the embedded
    SoftHSMv2) and returns (home, pins).

    Returns:
        (home, pins, tokens by service name, the server's environment)
    """
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from custody.access import AccessControl
    from custody.audit.log import AuditLog
    from custody.store import open_store
    from custody.store.rows import ParticipantRow
    from tests.rekey_fixtures import cli, make_deployment

    home, pins = (make or make_deployment)(root / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    store = open_store(home / "custody.db")
    log = AuditLog(home / "audit.db")
    tokens: dict[str, str] = {}
    try:
        ac = AccessControl(store, log)
        now = int(time.time())
        for name, (role, services) in people.items():
            public = None
            if role == "super-admin":
                public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
                store.add_participant(
                    ParticipantRow(name=name, role="custodian", public=public,
                                   fingerprint=public.hex()[:16], valid_from=now - 60,
                                   valid_until=now + 86400, revoked_at=None,
                                   enrolled_by="test")
                )  # fmt: skip
            kind = "person" if public is not None else "service"
            _p, tok = ac.add_principal(
                name, kind=kind, role=role, by="test", services=services, public=public
            )
            if tok is not None:
                tokens[name] = tok
    finally:
        log.close()
        store.close()
    return home, pins, tokens, cli_env()


def audit_entries(home: Path) -> list[dict]:
    import json
    import sqlite3

    con = sqlite3.connect(home / "audit.db", timeout=30)
    try:
        return [json.loads(r[0]) for r in con.execute("SELECT line FROM entries ORDER BY seq")]
    finally:
        con.close()
