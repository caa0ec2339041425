"""Access control with the real TOTP second factor (custody.access.mfa) on a real token: a
high-class read by an enrolled principal needs a code; a missing, wrong or reused code is
denied and audited with its reason; a medium read needs none."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from custody.access import AccessControl, AccessDenied
from custody.access.mfa import Mfa, MfaError, totp_code
from custody.audit.log import AuditLog
from custody.clock import from_seconds
from custody.deployment import Deployment, open_deployment
from custody.store.rows import SecretRow
from tests.conftest import TEST_PIN
from tests.custody.access.grant_fixtures import add_approvers, add_signed_grant
from tests.rekey_fixtures import cli, make_deployment

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("mfa-access")]
T0 = 1_800_000_000
HIGH, MEDIUM = "payments/db/password", "payments/stripe/api-key"


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return from_seconds(self.t)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Deployment]]:
    home, pins = make_deployment(tmp_path_factory.mktemp("mfa-access") / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    dep = open_deployment(home, TEST_PIN)
    yield home, dep
    dep.close()


def _secret(path: str, cat: str, cls: str) -> SecretRow:
    t = "2026-01-01T00:00:00+00:00"
    return SecretRow(env="prod", path=path, category=cat, security_class=cls, owner="payments",
                     state="active", current_version=1, pending_version=None,
                     previous_version=None, next_version=2, expires="2028-01-01T00:00:00+00:00",
                     created=t, updated=t)  # fmt: skip


def test_a_high_class_read_needs_a_fresh_code(deployment):
    home, dep = deployment
    log = AuditLog.for_home(dep.home)
    clock = Clock(T0)
    try:
        mfa = Mfa(dep.store, dep.hierarchy, log, clock)
        ac = AccessControl(dep.store, log, clock=clock, mfa=mfa)
        with dep.store.transaction():
            dep.store.add_secret(_secret(HIGH, "database-credential", "high"))
            dep.store.add_secret(_secret(MEDIUM, "external-api-key", "medium"))
        ac.add_principal("svc", kind="service", role="service-user", services=("payments",),
                         by="root")  # fmt: skip
        add_approvers(dep.store, T0)
        for i, path in enumerate((HIGH, MEDIUM)):  # real grants, signed by two super-admins
            add_signed_grant(dep.store, f"g{i}", "svc", "prod", path, actions=("read",),
                             not_before=T0 - 60, not_after=T0 + 3600)  # fmt: skip
        key = base64.b32decode(mfa.enrol("svc").secret_b32)
        assert not ac.principal("svc").mfa  # enrolment is confirmed by its first code
        clock.t = T0 - 90
        mfa.verify("svc", totp_code(key, clock.t // 30))
        clock.t = T0
        svc = ac.principal("svc")
        assert svc.mfa
        with pytest.raises(AccessDenied, match="TOTP"):
            ac.authorize(svc, "read", "prod", HIGH)
        assert ac.authorize(svc, "read", "prod", MEDIUM).allow  # medium: no code needed
        with pytest.raises(MfaError):
            ac.authorize(svc, "read", "prod", HIGH, mfa_code="000000" if totp_code(
                key, T0 // 30) != "000000" else "111111")  # fmt: skip
        code = totp_code(key, T0 // 30)
        assert ac.authorize(svc, "read", "prod", HIGH, mfa_code=code).allow
        # the same code again, in the next command: refused as reused
        again = AccessControl(dep.store, log, clock=clock, mfa=mfa)
        with pytest.raises(MfaError) as exc:
            again.authorize(again.principal("svc"), "read", "prod", HIGH, mfa_code=code)
        assert exc.value.reason == "reused"
        decides = [e for e in map(json.loads, log.lines())
                   if e["op"] == "access decide" and e["target"] == f"prod:{HIGH}"]  # fmt: skip
        assert [e["outcome"] for e in decides] == ["denied", "denied", "ok", "denied"]
        assert "TOTP" in decides[0]["details"]["reason"]
        assert all(e["details"]["reason"] for e in decides)
        assert key.hex() not in (home / "audit.db").read_bytes().hex()
    finally:
        log.close()


def test_an_enrolled_super_admin_approves_only_with_a_code(deployment):
    from custody.access.flow import GrantFlow
    from custody.audit.signers import Ed25519Signer
    from custody.store.rows import ParticipantRow

    _home, dep = deployment
    log = AuditLog.for_home(dep.home)
    clock = Clock(T0 + 600)
    try:
        mfa = Mfa(dep.store, dep.hierarchy, log, clock)
        ac = AccessControl(dep.store, log, clock=clock, mfa=mfa)
        key = Ed25519Signer.from_seed("boss", b"b" * 32)
        dep.store.add_participant(ParticipantRow(name="boss", role="super-admin",
                                  public=key.public, fingerprint="b" * 32, valid_from=T0 - 10,
                                  valid_until=T0 + 10**8, revoked_at=None,
                                  enrolled_by="x"))  # fmt: skip
        ac.add_principal("boss", kind="person", role="super-admin", public=key.public, by="x")
        totp = base64.b32decode(mfa.enrol("boss").secret_b32)
        clock.t -= 60
        mfa.verify("boss", totp_code(totp, clock.t // 30))  # confirms the enrolment
        clock.t += 60
        if dep.store.secret("prod", MEDIUM) is None:  # this test may run alone
            with dep.store.transaction():
                dep.store.add_secret(_secret(MEDIUM, "external-api-key", "medium"))
        if dep.store.principal("svc") is None:
            ac.add_principal("svc", kind="service", role="service-user",
                             services=("payments",), by="x")  # fmt: skip
        flow = GrantFlow(ac, "dep")
        r = flow.request(ac.principal("svc"), "prod", MEDIUM, seconds=600, why="deploy")
        with pytest.raises(AccessDenied, match="TOTP"):
            flow.approve(r.id, key)
        again = GrantFlow(AccessControl(dep.store, log, clock=clock, mfa=mfa), "dep")
        out = again.approve(r.id, key, mfa_code=totp_code(totp, clock.t // 30))
        assert out["grant"] and out["approvals"] == 1
    finally:
        log.close()
