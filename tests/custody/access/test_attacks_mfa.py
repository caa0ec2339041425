"""Attacks on the second factor through access control, on a real deployment (SoftHSMv2
token, SQLite store, audit log): a principal object loaded before its enrolment, a code of
one principal standing for another, codes and secrets in what is logged or raised, and the
disk operator deleting an enrolment (refused by the access seal when the token is open)."""

from __future__ import annotations

import base64

import pytest

from custody.access import AccessControl, AccessDenied
from custody.access.mfa import MfaError
from custody.errors import IntegrityError
from tests.custody.access.grant_fixtures import add_approvers, add_signed_grant
from tests.custody.access.seal_fixtures import sealed_copy
from tests.custody.access.test_mfa import T0, Clock, code_at, deployment, make
from tests.custody.access.test_mfa_access import _secret

__all__ = ["deployment"]

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("attacks-mfa")]

HIGH = "attack/db/password"


@pytest.fixture(scope="module")
def world(deployment):
    from custody.audit.log import AuditLog

    home, dep = deployment
    log = AuditLog.for_home(dep.home)
    clock = Clock(T0)
    mfa = make(dep, log, clock)
    ac = AccessControl(dep.store, log, clock=clock, mfa=mfa)
    with dep.store.transaction():
        dep.store.add_secret(_secret(HIGH, "database-credential", "high"))
    add_approvers(dep.store, T0)
    for n in ("atk-a", "atk-b"):
        ac.add_principal(n, kind="service", role="service-user", services=("attack",),
                         by="root")  # fmt: skip
        add_signed_grant(dep.store, f"g-{n}", n, "prod", HIGH, actions=("read",),
                         not_before=T0 - 60, not_after=T0 + 10**6)  # fmt: skip
    yield home, dep, log, clock, mfa, ac
    log.close()


def _enrol(mfa, clock, name: str) -> bytes:
    key = base64.b32decode(mfa.enrol(name).secret_b32)
    mfa.verify(name, code_at(key, clock.t))  # confirms it
    clock.t += 30
    return key


def test_a_principal_loaded_before_its_enrolment_still_needs_a_code(world):
    _home, _dep, _log, clock, mfa, ac = world
    stale = ac.principal("atk-a")  # a long-lived caller's copy: mfa=False
    assert not stale.mfa
    key = _enrol(mfa, clock, "atk-a")
    with pytest.raises(AccessDenied, match="TOTP"):
        ac.authorize(stale, "read", "prod", HIGH)
    assert ac.authorize(stale, "read", "prod", HIGH, mfa_code=code_at(key, clock.t)).allow


def test_one_principals_code_never_stands_for_another(world):
    _home, dep, log, clock, mfa, _ac = world
    clock.t += 60
    kb = _enrol(mfa, clock, "atk-b")
    if mfa.store.mfa_enrolment("atk-a") is None:
        _enrol(mfa, clock, "atk-a")
    cli = AccessControl(dep.store, log, clock=clock, mfa=mfa, command_scope=True)
    a, b = cli.principal("atk-a"), cli.principal("atk-b")
    code = code_at(kb, clock.t)
    assert cli.authorize(b, "read", "prod", HIGH, mfa_code=code).allow
    with pytest.raises(AccessDenied, match="TOTP"):  # b's verified code does not carry to a
        cli.authorize(a, "read", "prod", HIGH)
    with pytest.raises(MfaError):  # nor does b's code verify as a's
        cli.authorize(a, "read", "prod", HIGH, mfa_code=code)


def test_no_code_or_secret_in_errors_entries_or_repr(world):
    home, _dep, _log, clock, mfa, ac = world
    clock.t += 90
    if mfa.store.mfa_enrolment("atk-a") is None:
        _enrol(mfa, clock, "atk-a")
    wrong = "123456"
    with pytest.raises(MfaError) as exc:
        ac.authorize(ac.principal("atk-a"), "read", "prod", HIGH, mfa_code=wrong)
    assert exc.value.reason == "wrong"
    assert wrong not in f"{exc.value.title} {exc.value.hint} {exc.value!r}"
    ac.add_principal("atk-c", kind="service", role="service-user", services=("attack",),
                     by="root")  # fmt: skip
    enrolment = mfa.enrol("atk-c")
    right = code_at(base64.b32decode(enrolment.secret_b32), clock.t)
    assert enrolment.secret_b32 not in repr(enrolment) and enrolment.secret_b32 not in repr(mfa)
    raw = (home / "audit.db").read_bytes() + (home / "custody.db").read_bytes()
    assert enrolment.secret_b32.encode() not in raw
    assert base64.b32decode(enrolment.secret_b32) not in raw
    assert f'"{right}"'.encode() not in raw and f'"{wrong}"'.encode() not in raw


def test_the_disk_operator_deleting_an_enrolment_does_not_waive_the_code(world):
    _home, dep, _log, clock, mfa, ac = world
    if mfa.store.mfa_enrolment("atk-a") is None:
        _enrol(mfa, clock, "atk-a")
    atk = ac.principal("atk-a")
    ac = sealed_copy(ac, dep.hsm, mfa=mfa)  # the deployment is open with the PIN
    with dep.store.tx() as c:  # raw SQL
        c.execute("DELETE FROM mfa_enrolments WHERE principal='atk-a'")
    with pytest.raises(IntegrityError, match="fail their seal"):
        ac.authorize(atk, "read", "prod", HIGH)
