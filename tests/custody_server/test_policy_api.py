"""Every role and grant decision through the API matches the CLI's: the access policy
table (tests/custody/access/test_policy_table.py, ``expected``) replayed over HTTPS against
``custody serve``, for each role, class of secret, environment and each action the API
serves (read, metadata, write, rotate, delete, destroy). A denial must come from access
control (its title and its ``access decide`` entry); an allowed request may still fail on
the secret's state, which is not the policy's answer."""

from __future__ import annotations

import base64
import ssl
import time

import httpx
import pytest

from custody.access.mfa import Mfa, totp_code
from custody.audit.log import AuditLog
from custody.config import Home
from custody.deployment import open_deployment
from custody.secrets import Category, SecretPolicy, Vault
from tests.conftest import TEST_PIN
from tests.custody.access.grant_fixtures import add_approvers, add_signed_grant
from tests.custody.access.test_policy_table import GRANT_ENV, OTHER_ENV, SECRETS, expected
from tests.server_fixtures import Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-policy")]
NAMES = {
    "super-admin": "t-root",
    "service-admin": "t-pay-admin",
    "service-user": "t-pay-svc",
    "auditor": "t-audrey",
}
PEOPLE = {
    "t-root": ("super-admin", ()),
    "t-pay-admin": ("service-admin", ("payments",)),
    "t-pay-svc": ("service-user", ("payments",)),
    "t-audrey": ("auditor", ()),
    "t-mfa-admin": ("service-admin", ("payments",)),  # enrolled in TOTP
}
MFA_HIGH, MFA_MEDIUM = "payments/mfa/db-password", "payments/mfa/token"
# API actions in an order that keeps each secret readable for as long as possible
ACTIONS = ("read", "metadata", "write", "rotate", "destroy", "delete")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-policy")
    home, pins, tokens, env = server_home(root, PEOPLE)
    now = int(time.time())
    with open_deployment(Home(home), TEST_PIN) as dep:
        vault = Vault(dep.store, dep.hierarchy, rng=dep.token.random,
                      policy=SecretPolicy.for_home(Home(home).config_path))  # fmt: skip
        for e in (GRANT_ENV, OTHER_ENV):
            for path, cat, _cls in SECRETS.values():
                if cat == "configuration-secret":
                    vault.put(e, path, "flags=on", category=Category(cat), owner="payments")
                    continue
                vault.generate(e, path, category=Category(cat), owner="payments",
                               prefix="pay_live" if "api-key" in cat else None)  # fmt: skip
        for path, cat in (MFA_HIGH, "database-credential"), (MFA_MEDIUM, "service-token"):
            vault.generate(OTHER_ENV, path, category=Category(cat), owner="payments")
        add_approvers(dep.store, now)  # real grants, signed (a bare row is not honoured)
        for i, (path, _c, _k) in enumerate(SECRETS.values()):
            add_signed_grant(dep.store, f"g{i}", "t-pay-svc", GRANT_ENV, path,
                             actions=("read", "metadata", "list"), not_before=now - 3600,
                             not_after=now + 3600)  # fmt: skip
        audit = AuditLog.for_home(Home(home))
        try:
            mfa = Mfa(dep.store, dep.hierarchy, audit, rng=dep.token.random)
            key = base64.b32decode(mfa.enrol("t-mfa-admin").secret_b32)
            mfa.verify("t-mfa-admin", totp_code(key, now // 30 - 1))  # confirms the enrolment
        finally:
            audit.close()
    pki = make_pki(root / "pki")
    s = Server(home, pins, pki, "--rate", "100000/second", env=env)
    s.tokens = tokens
    s.mfa_key = key
    yield s
    s.stop()


def _client(s, role: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    name = NAMES[role]
    headers = {}
    if name in s.tokens:
        headers["Authorization"] = f"Bearer {s.tokens[name]}"
    else:
        ctx.load_cert_chain(*s.pki.client(name))
    return httpx.Client(base_url=s.url, verify=ctx, headers=headers, timeout=30)


def _request(c: httpx.Client, action: str, env: str, path: str) -> httpx.Response:
    if action == "read":
        return c.get(f"/api/v1/secrets/{env}/{path}")
    if action == "metadata":
        return c.get(f"/api/v1/metadata/{env}/{path}")
    if action == "write":
        return c.post(f"/v1/{env}/data/{path}", json={"data": {"value": "short"}})
    if action == "rotate":
        return c.post(f"/api/v1/rotate/{env}/{path}", json={"overlap_seconds": 60})
    if action == "destroy":
        return c.post(f"/v1/{env}/destroy/{path}", json={"versions": [1]})
    return c.delete(f"/v1/{env}/data/{path}")


def _denied_by_policy(r: httpx.Response) -> bool:
    if r.status_code != 403:
        return False
    body = r.json()
    title = body.get("error") or body["errors"][0]
    return " may not " in title


def test_api_decisions_match_the_policy_table(srv):
    mismatches = []
    seen = 0
    for action in ACTIONS:
        for role in NAMES:
            with _client(srv, role) as c:
                for cls, (path, _cat, _k) in SECRETS.items():
                    for env in (GRANT_ENV, OTHER_ENV):
                        r = _request(c, action, env, path)
                        seen += 1
                        want = expected(role, cls, action, env)
                        if _denied_by_policy(r) == want:
                            mismatches.append((role, cls, action, env, r.status_code, r.text[:120]))
    assert seen == len(ACTIONS) * 4 * 4 * 2
    assert mismatches == []
    log = audit_entries(srv.home)
    decided = [e for e in log if e["op"] == "access decide"]
    assert len(decided) >= seen  # every request was decided (and audited) by access control
    assert {e["outcome"] for e in decided} == {"ok", "denied"}
    grant_uses = [e for e in log if e["op"] == "access grant use"]
    assert {e["actor"] for e in grant_uses} == {"t-pay-svc"}


def test_mfa_where_the_policy_asks_for_it_one_code_once(srv):
    """A principal enrolled in TOTP reads a high-class secret only with a code in
    X-Custody-MFA; a medium one without; a replayed or wrong code is refused."""
    high, medium = MFA_HIGH, MFA_MEDIUM
    with httpx.Client(
        base_url=srv.url,
        verify=ssl.create_default_context(cafile=str(srv.pki.ca)),
        headers={"Authorization": f"Bearer {srv.tokens['t-mfa-admin']}"},
        timeout=30,
    ) as c:
        assert c.get(f"/api/v1/secrets/{OTHER_ENV}/{medium}").status_code == 200
        bare = c.get(f"/api/v1/secrets/{OTHER_ENV}/{high}")
        assert bare.status_code == 403 and "TOTP" in bare.json()["error"]
        code = totp_code(srv.mfa_key, int(time.time()) // 30)
        ok = c.get(f"/api/v1/secrets/{OTHER_ENV}/{high}", headers={"X-Custody-MFA": code})
        assert ok.status_code == 200 and ok.json()["path"] == high
        again = c.get(f"/api/v1/secrets/{OTHER_ENV}/{high}", headers={"X-Custody-MFA": code})
        assert again.status_code == 403  # single use, even inside its 30 seconds
        wrong = c.get(f"/api/v1/secrets/{OTHER_ENV}/{high}", headers={"X-Custody-MFA": "000000"})
        assert wrong.status_code == 403
    assert "X-Custody-MFA" not in srv.output() and code not in srv.output()
