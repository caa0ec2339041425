"""A throwaway PostgreSQL server for the tests: ``initdb`` in a temporary directory, run as
a non-root user (PostgreSQL refuses to run as root), listening on a Unix socket in that
directory and on a free loopback port, with ``fsync=off`` (the data dies with the test run).

The server starts once per test session (per xdist worker) and stops at the end. Each test
that asks for :func:`pg_url` gets a database of its own. Tests that need the server carry
the ``postgres`` marker, so ``pytest -m postgres`` runs them alone. When the binaries are
missing the tests are skipped, unless ``CUSTODY_REQUIRE_PG`` is set (CI sets it through
``make test``, which installs ``postgresql``): then they fail.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from custody.store import open_store
from custody.store.postgres import PostgresStore
from custody.store.sqlite import SqliteStore

PG_USER = "custody"
PG_PASSWORD = "pg-test-password-5531"
_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_bin(name: str) -> str | None:
    """The path of a PostgreSQL server binary (Debian keeps them off PATH)."""
    for d in _BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


@dataclass(frozen=True)
class PgServer:
    """A running throwaway server: its socket directory, loopback port and superuser."""

    datadir: Path
    socket_dir: Path
    port: int
    user: str = PG_USER
    password: str = PG_PASSWORD
    ca: Path | None = None  # the CA that signed the server's TLS certificate (127.0.0.1)

    def url(self, db: str = "postgres", *, tcp: bool = False) -> str:
        """A password-less URL (the password is never in a URL custody sees)."""
        if tcp:
            return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"
        return f"postgresql://{self.user}@/{db}?host={self.socket_dir}&port={self.port}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(sql)

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        self.admin(f'CREATE DATABASE "{name}"')
        return name


_WATCHDOG = """
import os, shutil, subprocess, sys, time
parent, base, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1.0)
subprocess.run(stop, capture_output=True, timeout=60, check=False)
shutil.rmtree(base, ignore_errors=True)
"""


def _tls(base: Path, data: Path, uid: int | None, gid: int | None) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 (TLS tests: sslmode=verify-full)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custody test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = base / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ca_file.chmod(0o644)
    (data / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kf = data / "server.key"
    kf.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    kf.chmod(0o600)  # the server refuses a key others can read
    if uid is not None and gid is not None:
        for f in (data / "server.crt", kf, ca_file):
            os.chown(f, uid, gid)
    return ca_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user() -> tuple[list[str], int | None, int | None]:
    """How to run the server binaries: directly when not root, else as ``postgres`` (or a
    ``custody-pg`` user created for the purpose) through ``setpriv``."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "custody-pg"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            break
    else:
        # two xdist workers may both get here: the loser's useradd fails, the user exists
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "custody-pg"],
            check=False,
            capture_output=True,
            timeout=30,
        )
        pw = pwd.getpwnam("custody-pg")
    prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]
    return prefix, pw.pw_uid, pw.pw_gid


def start_server(base: Path, *, durable: bool = False) -> Iterator[PgServer]:
    """Start a server under *base* (a fresh directory); yields it; stops it after.

    *durable* keeps PostgreSQL's defaults (``fsync=on``, ``synchronous_commit=on``), for
    benchmarks of commits; the tests run without them."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        if os.environ.get("CUSTODY_REQUIRE_PG"):
            pytest.fail("CUSTODY_REQUIRE_PG is set but initdb/pg_ctl are missing")
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    prefix, uid, gid = _as_user()
    base.mkdir(parents=True, exist_ok=True)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if uid is not None and gid is not None:
        for p in (base, sock, pwfile):
            os.chown(p, uid, gid)
        base.chmod(0o700)
        # the parents must be traversable by the server's user
        p = base.parent
        while p != p.parent:
            p.chmod(p.stat().st_mode | 0o111)
            p = p.parent
    subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(data),
            "-U",
            PG_USER,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pwfile.unlink()
    ca = _tls(base, data, uid, gid)
    port = _free_port()
    opts = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock} "
        "-c max_connections=200 -c shared_buffers=64MB"
    )
    opts += (
        f" -c ssl=on -c ssl_cert_file={data / 'server.crt'} -c ssl_key_file={data / 'server.key'}"
    )
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    log = base / "server.log"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
        check=True,
        capture_output=True,
        timeout=90,
    )
    stop = [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]
    # pg_ctl detaches the server: if this process dies without its teardown (a killed
    # pytest, a timeout), a watchdog of ours stops the server and removes its files
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(base), *stop],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield PgServer(datadir=data, socket_dir=sock, port=port, ca=ca)
    finally:
        subprocess.run(stop, capture_output=True, timeout=60, check=False)
        watchdog.kill()
        watchdog.wait(10)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (one per xdist worker)."""
    base = Path(tempfile.mkdtemp(prefix="custody-pg-"))
    try:
        yield from start_server(base / "pg")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server, as a password-less URL."""
    return pg_server.url(pg_server.new_database())


# -- one store fixture over both adapters ------------------------------------------------
RawStore = SqliteStore | PostgresStore
"""An adapter with its raw access (``query``, ``tx``) for tests, beside the port."""


@dataclass(frozen=True)
class Backend:
    """Where a test's store lives, and how to open it (again)."""

    kind: str  # "sqlite" | "postgresql"
    location: str  # a file path or a password-less URL
    home: Path

    def open(self, *, create: bool = False) -> RawStore:
        loc: str | Path = self.location if self.kind == "postgresql" else Path(self.location)
        s = open_store(loc, create=create, local=self.home / "custody.db")
        assert isinstance(s, SqliteStore | PostgresStore)
        return s


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The test's store on each adapter in turn: a SQLite file, then a fresh database on
    the session's PostgreSQL server (those cases carry the ``postgres`` marker)."""
    if request.param == "postgresql":
        return Backend("postgresql", request.getfixturevalue("pg_url"), tmp_path)
    return Backend("sqlite", str(tmp_path / "c.db"), tmp_path)
