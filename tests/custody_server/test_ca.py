"""``custody ca``: the client CA's key on the token; certificates it issues map to their
principal over mutual TLS; a certificate for nobody, for a CSR naming someone else, or from
another CA, is refused; the CA key is made on the token and signs there."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.rekey_fixtures import cli
from tests.server_fixtures import Pki, Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-ca")]
PEOPLE = {"ca-root": ("super-admin", ()), "ca-svc": ("service-admin", ("payments",))}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-ca")
    home, pins, tokens, env = server_home(root, PEOPLE)
    out = json.loads(cli(home, pins, "ca", "init", "--json").stdout)
    ca = home / "client-ca.crt"
    assert out["ca"] == str(ca)
    tls = make_pki(root / "pki")  # the server's own certificate, from another CA
    pki = Pki(ca=ca, server_cert=tls.server_cert, server_key=tls.server_key, dir=root / "pki")
    s = Server(home, pins, pki, env=env)
    s.tokens = tokens
    s.server_ca = tls.ca  # type: ignore[attr-defined]
    s.certs = root / "certs"  # type: ignore[attr-defined]
    s.certs.mkdir()  # type: ignore[attr-defined]
    yield s
    s.stop()


def _whoami(s, crt, key):
    ctx = ssl.create_default_context(cafile=str(s.server_ca))
    ctx.load_cert_chain(str(crt), str(key))
    with httpx.Client(base_url=s.url, verify=ctx, timeout=30) as c:
        return c.get("/api/v1/whoami")


def test_issued_certificates_map_to_their_principal(srv):
    out = json.loads(cli(srv.home, srv.pins, "ca", "issue", "ca-root", "--out-dir",
                         str(srv.certs), "--days", "2", "--json").stdout)  # fmt: skip
    crt, key = srv.certs / "ca-root.crt", srv.certs / "ca-root.key"
    assert out["cert"] == str(crt) and (key.stat().st_mode & 0o777) == 0o600
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    ca = x509.load_pem_x509_certificate((srv.home / "client-ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ca-root"
    me = _whoami(srv, crt, key)
    assert me.status_code == 200 and (me.json()["name"], me.json()["role"]) == (
        "ca-root", "super-admin"
    )  # fmt: skip
    assert any(e["op"] == "ca issue" and e["outcome"] == "ok" for e in audit_entries(srv.home))


def test_a_csr_keeps_the_key_with_its_owner(srv):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca-svc")]))
        .sign(key, hashes.SHA256())
    )
    (srv.certs / "ca-svc.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    cli(srv.home, srv.pins, "ca", "issue", "ca-svc", "--out-dir", str(srv.certs),
        "--csr", str(srv.certs / "ca-svc.csr"))  # fmt: skip
    assert not (srv.certs / "ca-svc.key").exists()
    kp = srv.certs / "mine.key"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                   serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    assert _whoami(srv, srv.certs / "ca-svc.crt", kp).json()["name"] == "ca-svc"


def test_the_insider_cannot_mint_or_forge_an_identity(srv):
    # no certificate for a principal that does not exist, nor for a CSR naming another one
    r = cli(srv.home, srv.pins, "ca", "issue", "nobody", "--out-dir", str(srv.certs), check=False)
    assert r.returncode == 7 and not (srv.certs / "nobody.crt").exists()
    other = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca-root")]))
        .sign(other, hashes.SHA256())
    )
    (srv.certs / "evil.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (srv.certs / "evil").mkdir()
    r = cli(srv.home, srv.pins, "ca", "issue", "ca-svc", "--out-dir", str(srv.certs / "evil"),
            "--csr", str(srv.certs / "evil.csr"), check=False)  # fmt: skip
    assert r.returncode == 2 and "not a valid CSR for CN=ca-svc" in r.stderr
    assert list((srv.certs / "evil").iterdir()) == []
    # a certificate from any other CA naming a real principal: the handshake refuses it
    forged = make_pki(srv.certs / "forged")
    crt, key = forged.client("ca-root")
    with pytest.raises(httpx.HTTPError):
        _whoami(srv, crt, key)


def test_a_revoked_principal_s_certificate_stops_working(srv):
    crt, key = srv.certs / "ca-svc.crt", srv.certs / "mine.key"
    assert _whoami(srv, crt, key).status_code == 200
    cli(srv.home, srv.pins, "principal", "revoke", "ca-svc")
    assert _whoami(srv, crt, key).status_code == 401  # the CN must name a live principal
