"""``custody serve`` end to end: a subprocess on 127.0.0.1 with real certificates from a
test CA, a real SoftHSMv2 token and store. TLS 1.3 only, bearer and mTLS identities, access
control and audit on every request, size limits, and a canary value that never reaches the
server's output, an error body or the audit log."""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl

import httpx
import pytest

from tests.server_fixtures import Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve")]
CANARY = "Canary-Value-7f3a!Qx9#Lm2@Zr8$Wt"
PEOPLE = {
    "root-admin": ("super-admin", ()),
    "pay-svc": ("service-user", ("payments",)),
    "pay-admin": ("service-admin", ("payments",)),
    "ops-auditor": ("auditor", ()),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    home, pins, tokens, env = server_home(root, PEOPLE)
    pki = make_pki(root / "pki")
    s = Server(home, pins, pki, env=env)
    s.tokens = tokens
    yield s
    s.stop()


def client(s, who: str | None = None, *, cert: tuple[str, str] | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {s.tokens[who]}"} if who else {}
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return httpx.Client(base_url=s.url, verify=ctx, headers=headers, timeout=30)


def test_tls_12_client_is_refused_and_13_accepted(srv):
    old = ssl.create_default_context(cafile=str(srv.pki.ca))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    new = ssl.create_default_context(cafile=str(srv.pki.ca))
    with (
        socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw,
        new.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.3"


def test_health_reveals_nothing_and_openapi_describes_the_api(srv):
    with client(srv) as c:
        r = c.get("/api/v1/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert "server" not in r.headers
        doc = c.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/secrets/{env}/{path}" in doc["paths"]
    assert "/api/v1/rotate/{env}/{path}" in doc["paths"]


def test_bearer_token_works_and_a_wrong_or_missing_token_is_refused(srv):
    with client(srv, "pay-svc") as c:
        me = c.get("/api/v1/whoami").json()
    assert (me["name"], me["role"], me["services"]) == ("pay-svc", "service-user", ["payments"])
    with client(srv) as c:
        assert c.get("/api/v1/whoami").status_code == 401
        bad = c.get("/api/v1/whoami", headers={"Authorization": "Bearer " + "x" * 43})
        assert bad.status_code == 401 and bad.json()["error"] == "Authentication failed"
        kv = c.get("/v1/prod/data/payments/db", headers={"X-Vault-Token": "y" * 43})
        assert kv.status_code == 403 and kv.json() == {"errors": ["Authentication failed"]}
    denied = [e for e in audit_entries(srv.home) if e["op"] == "api authenticate"]
    assert denied and all(e["outcome"] == "denied" for e in denied)
    assert not any("x" * 43 in json.dumps(e) for e in audit_entries(srv.home))


def test_mtls_maps_a_client_certificate_to_its_principal(srv):
    cert = srv.pki.client("pay-admin")
    with client(srv, cert=cert) as c:
        me = c.get("/api/v1/whoami").json()
    assert (me["name"], me["role"]) == ("pay-admin", "service-admin")
    # a certificate of the right CA for nobody the access control knows: refused
    with client(srv, cert=srv.pki.client("mallory")) as c:
        assert c.get("/api/v1/whoami").status_code == 401
    # a certificate from another CA naming a real principal fails the handshake
    from cryptography.hazmat.primitives.asymmetric import ec

    forged = srv.pki.client("root-admin", ca_key=ec.generate_private_key(ec.SECP256R1()))
    with client(srv, cert=forged) as c, pytest.raises(httpx.HTTPError):
        c.get("/api/v1/whoami")


def test_reads_and_rotation_are_authorised_and_audited(srv):
    with client(srv, "pay-admin") as admin:
        w = admin.post(
            "/v1/prod/data/payments/db",
            json={"data": {"value": CANARY}, "options": {"category": "database-credential"}},
        )
        assert w.status_code == 200, w.text
        r = admin.get("/api/v1/secrets/prod/payments/db")
        assert r.status_code == 200 and r.json() == {
            "env": "prod", "path": "payments/db", "version": 1, "value": CANARY
        }  # fmt: skip
        # outside its services, and an encryption key inside them: denied
        assert admin.get("/api/v1/secrets/prod/billing/key").status_code == 403
        dek = admin.post(
            "/v1/prod/data/payments/dek",
            json={"data": {"value": "ab" * 32}, "options": {"category": "data-encryption-key"}},
        )
        assert dek.status_code == 403
    with client(srv, cert=srv.pki.client("root-admin")) as root:
        assert root.post("/v1/prod/data/billing/key", json={"data": {"value": "b" * 40}}).is_success
        assert {i["path"] for i in root.get("/api/v1/secrets/prod").json()["secrets"]} >= {
            "payments/db", "billing/key"
        }  # fmt: skip
    with client(srv, "pay-svc") as svc:
        # a service user reads only with a grant; it may never rotate
        assert svc.get("/api/v1/secrets/prod/payments/db").status_code == 403
        assert svc.post("/api/v1/rotate/prod/payments/db", json={}).status_code == 403
        assert svc.get("/api/v1/secrets/prod").json()["secrets"] == []
    with client(srv, "pay-admin") as admin:
        assert [i["path"] for i in admin.get("/api/v1/secrets/prod").json()["secrets"]] == [
            "payments/db"
        ]
        rot = admin.post("/api/v1/rotate/prod/payments/db", json={"overlap_seconds": 60})
        assert rot.status_code == 200, rot.text
        assert (rot.json()["current"], rot.json()["previous"]) == (2, 1)
        prev = admin.get("/api/v1/secrets/prod/payments/db", params={"label": "previous"})
        assert prev.json()["value"] == CANARY
        assert admin.get("/api/v1/secrets/prod/payments/db").json()["version"] == 2
    log = audit_entries(srv.home)
    reads = [e for e in log if e["op"] == "secret get" and e["target"] == "prod:payments/db"]
    assert {e["actor"] for e in reads} == {"pay-admin"}
    assert all(e["details"]["via"] == "native" for e in reads)
    decided = [e for e in log if e["op"] == "access decide" and e["actor"] == "pay-svc"]
    assert decided and all(e["outcome"] == "denied" for e in decided)
    assert [e["outcome"] for e in log if e["op"] == "secret rotate"] == ["intent", "ok"]


def test_oversized_bodies_are_refused(srv):
    with client(srv, "pay-admin") as c:
        big = {"data": {"value": "a" * (70 * 1024)}}
        r = c.post("/v1/prod/data/payments/big", json=big)
        assert r.status_code == 413

        def chunks():
            for _ in range(80):
                yield b"x" * 1024

        r = c.post("/v1/prod/data/payments/big", content=chunks())
        assert r.status_code == 413
        r = c.get("/api/v1/whoami", headers={"X-Pad": "p" * 20000})
        assert r.status_code in (400, 431)
        r = c.get("/v1/prod/data/payments/big")
        assert r.status_code == 404  # nothing was written


def test_an_unwritable_audit_log_refuses_reads(srv):
    with client(srv, "pay-admin") as c:
        assert (
            c.post("/v1/prod/data/payments/flag", json={"data": {"value": "on"}}).status_code == 200
        )
        con = sqlite3.connect(srv.home / "audit.db", timeout=30)
        try:
            con.execute(
                "CREATE TRIGGER no_more BEFORE INSERT ON entries "
                "BEGIN SELECT RAISE(ABORT, 'full'); END"
            )
            con.commit()
            r = c.get("/api/v1/secrets/prod/payments/flag")
            assert r.status_code == 503 and "value" not in r.json()
        finally:
            con.execute("DROP TRIGGER no_more")
            con.commit()
            con.close()
        assert c.get("/api/v1/secrets/prod/payments/flag").json()["value"] == "on"


def test_the_canary_never_reaches_logs_error_bodies_or_the_audit_log(srv):
    bodies = []
    with client(srv, "pay-admin") as c:
        c.post(
            "/v1/prod/data/payments/canary",
            json={"data": {"value": CANARY}, "options": {"category": "database-credential"}},
        )
        # a stale CAS, a weak value, a bad document and a denied read, all carrying the canary
        bodies.append(
            c.post(
                "/v1/prod/data/payments/canary",
                json={"data": {"value": CANARY + "1"}, "options": {"cas": 0}},
            )
        )
        bodies.append(c.post("/v1/prod/data/payments/canary", json={"data": {"value": CANARY[:6]}}))
        bodies.append(c.post("/v1/prod/data/payments/canary", json={"data": {"x": CANARY, "y": 1}}))
        bodies.append(
            c.post(
                "/api/v1/rotate/prod/payments/canary",
                json={"value": CANARY, "overlap_seconds": "x"},
            )
        )
    with client(srv, "ops-auditor") as c:
        bodies.append(c.get("/api/v1/secrets/prod/payments/canary"))
    assert [b.status_code for b in bodies] == [400, 400, 400, 400, 403]
    for b in bodies:
        assert CANARY not in b.text and CANARY[:6] not in b.text
    assert CANARY not in srv.output() and CANARY[:6] not in srv.output()
    assert CANARY.encode() not in (srv.home / "audit.db").read_bytes()
