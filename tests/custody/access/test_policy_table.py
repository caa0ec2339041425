"""The policy, as a table: every role x category class x action x environment, with its
expected allow or deny, through :class:`AccessControl` on a real store and audit log (each
denial must be in the log with its reason). Then the edges: expired, revoked, not-yet-valid
and other-environment grants, a missing TOTP code, environment-bound principals, and a
revoked, wrong or malformed token."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from custody.access import ACTIONS, AccessControl, AccessDenied, AuthError, Principal, decide
from custody.access.roles import Grant
from custody.audit.log import AuditLog
from custody.store.rows import GrantRow, ParticipantRow, SecretRow
from custody.store.sqlite import SqliteStore
from tests.custody.access.grant_fixtures import add_approvers, add_signed_grant

NOW = 1_800_000_000
CLOCK = datetime.fromtimestamp(NOW, UTC)
HOUR = 3600

# one secret per class, plus an encryption key (high class too), under the payments service
SECRETS = {
    "high": ("payments/db/password", "database-credential", "high"),
    "medium": ("payments/stripe/api-key", "external-api-key", "medium"),
    "low": ("payments/config/flags", "configuration-secret", "low"),
    "enc-key": ("payments/keys/dek", "data-encryption-key", "high"),
}
GRANT_ENV, OTHER_ENV = "prod", "dev"

ADMIN = Principal(name="root", kind="person", role="super-admin")
SVC_ADMIN = Principal(name="pay-admin", kind="person", role="service-admin", services=("payments",))
SVC_USER = Principal(name="pay-svc", kind="service", role="service-user", services=("payments",))
AUDITOR = Principal(name="audrey", kind="person", role="auditor")
PRINCIPALS = {p.role: p for p in (ADMIN, SVC_ADMIN, SVC_USER, AUDITOR)}

# What each role may do, written out independently of the engine's table.
SERVICE_ADMIN_OWN = {"read", "write", "list", "metadata", "rotate", "delete", "audit", "approve",
                     "grant"}  # fmt: skip
GRANTED = {"read", "metadata", "list"}  # the service-user's grant (prod only) gives these


def expected(role: str, cls: str, action: str, env: str) -> bool:
    if role == "super-admin":
        return True
    if role == "auditor":
        return action in {"audit", "list", "metadata"}
    if role == "service-admin":
        return cls != "enc-key" and action in SERVICE_ADMIN_OWN
    # service-user: only what its live grant gives, only in the grant's environment
    return env == GRANT_ENV and action in GRANTED


@dataclass(frozen=True)
class Row:
    role: str
    cls: str
    action: str
    env: str
    allow: bool

    def __str__(self) -> str:
        return (
            f"{self.role}-{self.cls}-{self.action}-{self.env}-{'allow' if self.allow else 'deny'}"
        )


TABLE = [
    Row(role, cls, action, env, expected(role, cls, action, env))
    for role in PRINCIPALS
    for cls in SECRETS
    for action in ACTIONS
    for env in (GRANT_ENV, OTHER_ENV)
]


def _secret(env: str, path: str, category: str, cls: str) -> SecretRow:
    t = "2026-01-01T00:00:00+00:00"
    return SecretRow(env=env, path=path, category=category, security_class=cls, owner="payments",
                     state="active", current_version=1, pending_version=None,
                     previous_version=None, next_version=2, expires="2027-01-01T00:00:00+00:00",
                     created=t, updated=t)  # fmt: skip


def _grant(store: SqliteStore, gid: str, principal: str, env: str, path: str) -> GrantRow:
    # a real grant: approved by two super-admins' signatures (a bare row is not honoured)
    return add_signed_grant(store, gid, principal, env, path,
                            actions=("read", "metadata", "list"), not_before=NOW - HOUR,
                            not_after=NOW + HOUR)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("access")
    store = SqliteStore.open(root / "custody.db", create=True)
    log = AuditLog(root / "audit.db", durable=False)
    with store.transaction():
        for env in (GRANT_ENV, OTHER_ENV):
            for path, cat, cls in SECRETS.values():
                store.add_secret(_secret(env, path, cat, cls))
    add_approvers(store, NOW)
    for i, (path, _c, _k) in enumerate(SECRETS.values()):
        _grant(store, f"g{i}", SVC_USER.name, GRANT_ENV, path)
    ac = AccessControl(store, log, clock=lambda: CLOCK)
    yield ac, store, log
    log.close()
    store.close()


def _entries(log: AuditLog) -> list[dict]:
    return [json.loads(x) for x in log.lines()]


@pytest.mark.parametrize("row", TABLE, ids=str)
def test_role_class_action_environment(world, row: Row):
    ac, _store, log = world
    p = PRINCIPALS[row.role]
    path = SECRETS[row.cls][0]
    before = log.size()
    if row.allow:
        d = ac.authorize(p, row.action, row.env, path, now=NOW)
        assert d.allow and d.reason
        last = _entries(log)[before:]
        assert last[0]["op"] == "access decide" and last[0]["outcome"] == "ok"
        if d.grant:  # a grant's use is audited as such
            assert last[-1]["op"] == "access grant use" and last[-1]["details"]["grant"] == d.grant
    else:
        with pytest.raises(AccessDenied) as exc:
            ac.authorize(p, row.action, row.env, path, now=NOW)
        assert exc.value.exit_code == 7
        new = _entries(log)[before:]
        assert len(new) == 1
        e = new[0]
        assert (e["op"], e["outcome"], e["actor"]) == ("access decide", "denied", p.name)
        assert e["target"] == f"{row.env}:{path}"
        assert e["details"]["reason"] and e["details"]["reason"] in exc.value.title
        assert e["details"]["action"] == row.action


def test_the_table_has_every_combination_and_both_answers():
    assert len(TABLE) == 4 * 4 * len(ACTIONS) * 2
    assert {r.allow for r in TABLE if r.role == "service-user"} == {True, False}
    assert sum(r.allow for r in TABLE) not in (0, len(TABLE))


def _d(p: Principal, action: str, env: str, path: str, grants: list[Grant], **kw):
    args = {"security_class": "medium", "now": NOW, "mfa_ok": True, **kw}
    return decide(p, action, env, path, grants=grants, **args)


def _g(**kw) -> Grant:
    base = dict(id="g", principal="pay-svc", env="prod", path="payments/stripe/api-key",
                actions=("read",), not_before=NOW - HOUR, not_after=NOW + HOUR)  # fmt: skip
    return Grant(**{**base, **kw})


@dataclass(frozen=True)
class Edge:
    name: str
    grants: tuple[Grant, ...]
    env: str = "prod"
    path: str = "payments/stripe/api-key"
    action: str = "read"
    allow: bool = False
    reason: str = ""

    def __str__(self) -> str:
        return self.name


EDGES = [
    Edge("live grant", (_g(),), allow=True, reason="grant g allows read"),
    Edge("expired grant", (_g(not_after=NOW),), reason="has expired"),
    Edge("revoked grant", (_g(revoked_at=NOW - 1),), reason="was revoked"),
    Edge("not yet valid", (_g(not_before=NOW + 1),), reason="not valid yet"),
    Edge("grant in another environment", (_g(env="dev"),), reason="the grant is for dev"),
    Edge(
        "dev grant never reaches prod by prefix",
        (_g(env="dev", path="payments/"),),
        reason="the grant is for dev",
    ),
    Edge("prefix grant", (_g(path="payments/"),), allow=True),
    Edge("prefix is not a string prefix", (_g(path="pay"),), reason="no live grant"),
    Edge("another principal's grant", (_g(principal="someone"),), reason="no live grant"),
    Edge("grant does not give write", (_g(),), action="write", reason="may never write"),
    Edge(
        "grant does not give rotate",
        (_g(actions=("read", "rotate")),),
        action="rotate",
        reason="may never rotate",
    ),
    Edge("grant without metadata", (_g(),), action="metadata", reason="does not give metadata"),
    Edge("no grant at all", (), reason="no live grant"),
]


@pytest.mark.parametrize("edge", EDGES, ids=str)
def test_grant_edges(edge: Edge):
    d = _d(SVC_USER, edge.action, edge.env, edge.path, list(edge.grants))
    assert d.allow is edge.allow, d.reason
    assert edge.reason in d.reason


def test_an_encryption_key_needs_a_grant_on_its_exact_path():
    dek = "payments/keys/dek"
    d = _d(SVC_USER, "read", "prod", dek, [_g(path="payments/")], category="data-encryption-key")
    assert not d.allow and "prefix grant never covers an encryption key" in d.reason
    d = _d(SVC_USER, "read", "prod", dek, [_g(path=dek)], category="data-encryption-key")
    assert d.allow


def test_an_auditor_never_gets_a_value_even_with_a_grant():
    d = _d(AUDITOR, "read", "prod", "payments/stripe/api-key", [_g(principal="audrey")])
    assert not d.allow and "may never read" in d.reason


def test_a_service_admin_grant_does_not_open_encryption_keys():
    g = _g(principal="pay-admin", path="payments/keys/dek")
    d = _d(SVC_ADMIN, "read", "prod", "payments/keys/dek", [g], category="signing-key")
    assert not d.allow and "no access to encryption keys" in d.reason


def test_a_service_admin_outside_its_services_needs_a_grant():
    d = _d(SVC_ADMIN, "read", "prod", "billing/db", [])
    assert not d.allow and "outside pay-admin's services" in d.reason
    d = _d(SVC_ADMIN, "read", "prod", "billing/db", [_g(principal="pay-admin", path="billing/db")])
    assert d.allow and d.grant == "g"
    # a look-alike prefix is not its service
    assert not _d(SVC_ADMIN, "write", "prod", "payments-evil/x", []).allow


def test_audit_scopes():
    assert _d(SVC_USER, "audit", "prod", "@pay-svc", []).allow
    assert not _d(SVC_USER, "audit", "prod", "@pay-admin", []).allow
    assert not _d(SVC_USER, "audit", "prod", "", []).allow
    assert _d(SVC_ADMIN, "audit", "prod", "payments", []).allow
    assert not _d(SVC_ADMIN, "audit", "prod", "", []).allow
    assert _d(AUDITOR, "audit", "prod", "", []).allow


def test_mfa_missing_code_denies_where_the_policy_asks_for_one():
    enrolled_admin = Principal(name="root", kind="person", role="super-admin", mfa=True)
    d = _d(enrolled_admin, "keys", "prod", "", [], mfa_ok=False)
    assert not d.allow and d.needs_mfa and "TOTP" in d.reason
    assert _d(enrolled_admin, "keys", "prod", "", [], mfa_ok=True).allow
    # a high-class read needs it of anyone; a medium one does not
    d = _d(SVC_USER, "read", "prod", "payments/stripe/api-key", [_g()], security_class="high",
           mfa_ok=False)  # fmt: skip
    assert not d.allow and d.needs_mfa
    d = _d(SVC_USER, "read", "prod", "payments/stripe/api-key", [_g()], mfa_ok=False)
    assert d.allow and not d.needs_mfa


def test_an_environment_bound_principal_acts_nowhere_else():
    dev_admin = Principal(name="dev-admin", kind="person", role="service-admin",
                          services=("payments",), envs=("dev",))  # fmt: skip
    assert _d(dev_admin, "write", "dev", "payments/x", []).allow
    d = _d(dev_admin, "write", "prod", "payments/x", [])
    assert not d.allow and "only in dev" in d.reason


def test_an_unknown_action_is_a_callers_bug():
    with pytest.raises(ValueError):
        _d(ADMIN, "frobnicate", "prod", "x", [])


def test_tokens_revoked_wrong_malformed_are_refused_and_audited(tmp_path: Path):
    store = SqliteStore.open(tmp_path / "custody.db", create=True)
    log = AuditLog(tmp_path / "audit.db", durable=False)
    try:
        ac = AccessControl(store, log, clock=lambda: CLOCK)
        p, token = ac.add_principal("pay-svc", kind="service", role="service-user",
                                    services=("payments",), by="root")  # fmt: skip
        assert token is not None and p.role == "service-user"
        assert ac.authenticate_token(token) == p
        # 256 bits of secret; the store holds neither the token nor its secret part
        secret = token.split("_", 2)[2]
        assert len(secret) == 43
        raw = (tmp_path / "custody.db").read_bytes()
        assert secret.encode() not in raw and token.encode() not in raw
        wrong = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        for bad in (wrong, "cst_nothex_x", "not-a-token", token.split("_")[0]):
            with pytest.raises(AuthError):
                ac.authenticate_token(bad)
        newer = ac.new_token("pay-svc", by="root")
        with pytest.raises(AuthError):  # the old token stops when a new one is issued
            ac.authenticate_token(token)
        assert ac.authenticate_token(newer).name == "pay-svc"
        assert ac.revoke("pay-svc", by="root", token_only=True)
        with pytest.raises(AuthError):
            ac.authenticate_token(newer)
        reasons = [json.loads(x)["details"].get("reason") for x in log.lines()
                   if json.loads(x)["op"] == "access authenticate"]  # fmt: skip
        assert reasons == ["wrong token", "malformed token", "malformed token",
                           "malformed token", "unknown token", "revoked token"]  # fmt: skip
        assert token.encode() not in (tmp_path / "audit.db").read_bytes()
    finally:
        log.close()
        store.close()


def test_a_person_principal_must_be_an_enrolled_participant(tmp_path: Path):
    from custody.audit.signers import Ed25519Signer
    from custody.errors import UsageError

    store = SqliteStore.open(tmp_path / "custody.db", create=True)
    log = AuditLog(tmp_path / "audit.db", durable=False)
    try:
        ac = AccessControl(store, log, clock=lambda: CLOCK)
        alice = Ed25519Signer.from_seed("alice", b"a" * 32)
        mallory = Ed25519Signer.from_seed("mallory", b"m" * 32)
        with pytest.raises(UsageError, match="not an enrolled participant"):
            ac.add_principal("alice", kind="person", role="service-admin", services=("p",),
                             public=alice.public, by="root")  # fmt: skip
        store.add_participant(ParticipantRow(name="alice", role="custodian", public=alice.public,
                              fingerprint="f" * 32, valid_from=NOW - 10, valid_until=NOW + 10**8,
                              revoked_at=None, enrolled_by="root"))  # fmt: skip
        with pytest.raises(UsageError, match="not an enrolled participant"):  # someone else's key
            ac.add_principal("alice", kind="person", role="service-admin", services=("p",),
                             public=mallory.public, by="root")  # fmt: skip
        p, tok = ac.add_principal("alice", kind="person", role="service-admin", services=("p",),
                                  public=alice.public, by="root")  # fmt: skip
        assert tok is None and p.kind == "person"
        assert ac.revoke("alice", by="root")
        with pytest.raises(AuthError):
            ac.principal("alice")
    finally:
        log.close()
        store.close()


def test_a_token_whose_secret_holds_underscores_parses():
    from custody.access import tokens

    m = tokens.mint(lambda n: b"\xff" * n)  # base64url of 0xff bytes is all '_'
    assert "__" in m.token.split("_", 2)[2]
    parsed = tokens.parse(m.token)
    assert parsed is not None and tokens.matches(parsed[1], m.salt, m.digest)
    assert not tokens.matches(b"\x00" * 32, m.salt, m.digest)


def test_self_approval_is_denied_and_audited(tmp_path: Path):
    from custody.access.flow import GrantFlow
    from custody.audit.signers import Ed25519Signer
    from custody.errors import PolicyError

    store = SqliteStore.open(tmp_path / "custody.db", create=True)
    log = AuditLog(tmp_path / "audit.db", durable=False)
    try:
        ac = AccessControl(store, log, clock=lambda: CLOCK)
        path, cat, cls = SECRETS["medium"]
        with store.transaction():
            store.add_secret(_secret("prod", path, cat, cls))
        key = Ed25519Signer.from_seed("pat", b"p" * 32)
        store.add_participant(ParticipantRow(name="pat", role="custodian", public=key.public,
                              fingerprint="p" * 32, valid_from=NOW - 10, valid_until=NOW + 10**8,
                              revoked_at=None, enrolled_by="root"))  # fmt: skip
        ac.add_principal("pat", kind="person", role="service-admin", services=("payments",),
                         public=key.public, by="root")  # fmt: skip
        flow = GrantFlow(ac, "dep")
        r = flow.request(ac.principal("pat"), "prod", path, seconds=600, why="self")
        with pytest.raises(PolicyError, match="cannot approve their own request"):
            flow.approve(r.id, key)
        e = [json.loads(x) for x in log.lines()][-1]
        assert (e["op"], e["outcome"], e["actor"]) == ("access approve", "denied", "pat")
        assert "cannot approve their own request" in e["details"]["reason"]
        assert store.access_approvals(r.id) == [] and store.grants() == []
    finally:
        log.close()
        store.close()


def test_audit_views_by_role(tmp_path: Path):
    store = SqliteStore.open(tmp_path / "custody.db", create=True)
    log = AuditLog(tmp_path / "audit.db", durable=False)
    try:
        ac = AccessControl(store, log, clock=lambda: CLOCK)
        entries = [
            {"actor": "pay-svc", "target": "prod:billing/x"},
            {"actor": "bob", "target": "prod:payments/db"},
            {"actor": "bob", "target": "prod:payments-evil/db"},
            {"actor": "bob", "target": "prod:other/z"},
        ]
        views = {p.role: ac.audit_view(p) for p in PRINCIPALS.values()}
        seen = {role: [e for e in entries if v(e)] for role, v in views.items()}
        assert seen["super-admin"] == entries and seen["auditor"] == entries
        assert seen["service-admin"] == [entries[1]]  # its services' entries
        assert seen["service-user"] == [entries[0]]  # its own entries
        logged = [json.loads(x) for x in log.lines()]
        assert [e["details"]["action"] for e in logged] == ["audit"] * 4
    finally:
        log.close()
        store.close()
