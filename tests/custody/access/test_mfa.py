"""TOTP second factors on a real deployment (SoftHSMv2 token, SQLite store, audit log).

RFC 6238 vectors checked against ``cryptography``; single use within a window; one step of
drift either way and no more; lockout and its audit entries; and the insiders: a replayed
code, a brute force, a store row pointed at another principal's secret, a thief with the
disk. Times come from a fixed clock, never a patched ``datetime``."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from PIL import Image

from custody.access import AccessControl, AccessDenied
from custody.access.mfa import (
    BRANCH,
    KIND,
    Mfa,
    MfaError,
    MfaPolicy,
    totp_code,
)
from custody.audit.log import AuditLog
from custody.audit.signers import Ed25519Signer
from custody.clock import from_seconds
from custody.deployment import Deployment, open_deployment
from custody.errors import AuditError, HsmError, IntegrityError, PolicyError, UsageError
from custody.keys.hierarchy import KeyHierarchy
from custody.monitor import parse_config, scan
from custody.shares.card import make_qr
from custody.store import open_store
from custody.store.rows import ParticipantRow, PrincipalRow
from tests.conftest import TEST_PIN
from tests.rekey_fixtures import cli, make_deployment

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("mfa")]

RFC_SEED = b"12345678901234567890"  # RFC 6238 appendix B, the SHA-1 seed
# (time, 8-digit TOTP) from RFC 6238 appendix B, SHA-1 column
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
T0 = 1_800_000_000  # a fixed "now" for the tests (2027-01-15)


class InsecureFixedRng:
    """Returns the same bytes every time: only for the RFC vector test."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __call__(self, n: int) -> bytes:
        assert n <= len(self.value)
        return self.value[:n]


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return from_seconds(self.t)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Deployment]]:
    home, pins = make_deployment(tmp_path_factory.mktemp("mfa") / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    dep = open_deployment(home, TEST_PIN)
    yield home, dep
    dep.close()


@pytest.fixture
def env(deployment):
    home, dep = deployment
    log = AuditLog.for_home(dep.home)
    clock = Clock(T0)
    yield home, dep, log, clock
    log.close()


def make(dep, log, clock, **kw) -> Mfa:
    return Mfa(dep.store, dep.hierarchy, log, clock, **kw)


def principal(dep, name: str) -> str:
    """Add service principal *name* through the store port (docs/access.md)."""
    if dep.store.principal(name) is None:
        dep.store.add_principal(
            PrincipalRow(name=name, kind="service", role="service-user", services=("svc",),
                         envs=(), created=T0, created_by="test")
        )  # fmt: skip
    return name


def key_of(enrolment) -> bytes:
    return base64.b32decode(enrolment.secret_b32)


def entries(log: AuditLog, target: str) -> list[dict]:
    return [e for e in map(json.loads, log.lines()) if e["target"] == target]


def objects_of(home: Path, label: str) -> list[tuple[str, str]]:
    con = sqlite3.connect(home / "custody.db")
    try:
        q = "SELECT kind, branch FROM objects WHERE label=?"
        return [tuple(r) for r in con.execute(q, (label,))]
    finally:
        con.close()


def code_at(key: bytes, t: int, offset_steps: int = 0) -> str:
    return totp_code(key, t // 30 + offset_steps)


def test_rfc6238_vectors_match_cryptography_and_verify_end_to_end(env):
    _, dep, log, clock = env
    for t, expected8 in RFC_VECTORS:
        ref = TOTP(RFC_SEED, 8, SHA1(), 30).generate(t).decode()
        assert ref == expected8
        assert totp_code(RFC_SEED, t // 30) == expected8[-6:]  # 6 digits: the low six
    # enrolment with the RFC seed as its "random" secret, then the RFC's own code at its time
    mfa = make(dep, log, clock, rng=InsecureFixedRng(RFC_SEED))
    e = mfa.enrol(principal(dep, "rfc"))
    assert key_of(e) == RFC_SEED
    assert e.uri.startswith("otpauth://totp/custody:rfc?")
    for part in (
        "digits=6",
        "algorithm=SHA1",
        "period=30",
        "issuer=custody",
        f"secret={e.secret_b32}",
    ):
        assert part in e.uri
    assert e.png.startswith(b"\x89PNG") and len(e.qr_text.splitlines()) > 10
    # the PNG is the QR code of exactly that URI, module for module (8 px each)
    img = Image.open(io.BytesIO(e.png)).convert("1")
    m = make_qr(e.uri.encode()).get_matrix()
    assert img.size == (len(m) * 8, len(m) * 8)
    got = [
        [img.getpixel((x * 8 + 4, y * 8 + 4)) == 0 for x in range(len(m))] for y in range(len(m))
    ]
    assert got == m
    mfa.verify("rfc", "081804", now=from_seconds(1111111109))
    assert mfa.enrolled("rfc")


def test_the_secret_is_random_wrapped_under_secrets_and_never_in_the_clear(env, tmp_path):
    home, dep, log, clock = env
    mfa = make(dep, log, clock)
    e1 = mfa.enrol(principal(dep, "disk-alice"))
    e2 = mfa.enrol(principal(dep, "disk-bob"))
    k1, k2 = key_of(e1), key_of(e2)
    assert len(k1) >= 20 and k1 != k2
    row = dep.store.mfa_enrolment("disk-alice")
    assert row is not None
    obj = dep.store.stored_object(row.object_uid)
    assert obj is not None and obj.branch == BRANCH
    assert objects_of(home, "mfa:disk-alice") == [(KIND, BRANCH)]
    assert dep.hierarchy.current_kek(BRANCH).version == obj.kek_version
    # nothing of the secret in repr, in the store's files or the audit log's
    assert e1.secret_b32 not in repr(e1) and e1.uri not in repr(e1)
    forms = [k1, k1.hex().encode(), e1.secret_b32.encode(), e1.secret_b32.lower().encode()]
    for f in sorted(home.iterdir()):
        if f.is_file():
            raw = f.read_bytes()
            assert not any(x in raw for x in forms), f.name
    for line in log.lines():
        assert not any(x in line for x in forms)
    # the thief with a copy of custody.db (no token): the row names an object whose
    # envelope only opens with the KEK, which only the root key on the token unseals
    stolen = tmp_path / "stolen.db"
    src = sqlite3.connect(home / "custody.db")
    dst = sqlite3.connect(stolen)
    src.backup(dst)
    src.close()
    dst.close()
    s = open_store(stolen)
    try:
        wrapped = s.stored_object(row.object_uid)
        assert wrapped is not None and k1 not in wrapped.wrapped
        with pytest.raises((UsageError, HsmError, PolicyError, IntegrityError)):
            KeyHierarchy(s, None).unwrap_object(row.object_uid)
    finally:
        s.close()


def test_a_code_is_used_once_and_earlier_codes_are_dead(env):
    _, dep, log, clock = env
    mfa = make(dep, log, clock)
    k = key_of(mfa.enrol(principal(dep, "replay")))
    code = code_at(k, T0)
    mfa.verify("replay", code)
    # the insider who saw the code over a shoulder replays it in the same window
    with pytest.raises(MfaError) as ei:
        mfa.verify("replay", code)
    assert ei.value.reason == "reused" and isinstance(ei.value, PolicyError)
    # once the next step's code is used, the previous step's (still within ±1) is dead too
    clock.t = T0 + 30
    mfa.verify("replay", code_at(k, clock.t))
    with pytest.raises(MfaError) as ei:
        mfa.verify("replay", code_at(k, T0))
    assert ei.value.reason == "reused"
    got = [(e["outcome"], e["details"].get("reason")) for e in entries(log, "replay")]
    assert got[-4:] == [("ok", None), ("denied", "reused"), ("ok", None), ("denied", "reused")]
    assert code not in json.dumps(entries(log, "replay"))


def test_two_uses_of_one_step_race_and_only_one_wins(env):
    _, dep, log, clock = env
    mfa = make(dep, log, clock)
    mfa.enrol(principal(dep, "race"))
    step = T0 // 30
    with dep.store.transaction():
        first = dep.store.use_mfa_step("race", step, now="2027-01-15T08:00:00+00:00")
    with dep.store.transaction():
        second = dep.store.use_mfa_step("race", step, now="2027-01-15T08:00:00+00:00")
    assert (first, second) == (True, False)


@pytest.mark.parametrize(
    ("offsets", "accepted"),
    [((-1, 1), True), ((0,), True), ((-2,), False), ((2,), False), ((-3, 3), False)],
)
def test_one_step_of_drift_either_way_and_no_more(env, offsets, accepted):
    _, dep, log, clock = env
    name = "drift" + "".join(f"{o:+d}" for o in offsets).replace("+", "p").replace("-", "m")
    mfa = make(dep, log, clock)
    k = key_of(mfa.enrol(principal(dep, name)))
    for off in offsets:  # earlier step first: a later step's use kills the earlier ones
        if accepted:
            mfa.verify(name, code_at(k, T0, off))
        else:
            with pytest.raises(MfaError) as ei:
                mfa.verify(name, code_at(k, T0, off))
            assert ei.value.reason == "wrong"
    assert mfa.enrolled(name) is accepted


def test_lockout_after_five_failures_is_audited_and_holds_against_the_right_code(env, tmp_path):
    _, dep, log, clock = env
    mfa = make(dep, log, clock)
    k = key_of(mfa.enrol(principal(dep, "brute")))
    right = code_at(k, T0)
    wrong = [
        c
        for c in (f"{i:06d}" for i in range(100))
        if c not in {code_at(k, T0, o) for o in (-1, 0, 1)}
    ]
    # guesses 3 s apart (custody.monitor's failed-burst takes denials of one target within
    # 2 s of each other as one attempt refused by two layers)
    for i in range(4):
        clock.t = T0 + 3 * i
        with pytest.raises(MfaError):
            mfa.verify("brute", wrong[i])
    assert not {s["principal"]: s for s in mfa.status()}["brute"]["locked"]
    clock.t = T0 + 12
    with pytest.raises(MfaError) as ei:
        mfa.verify("brute", wrong[4])
    assert ei.value.reason == "wrong"
    ent = entries(log, "brute")
    fails = [e for e in ent if e["op"] == "mfa verify" and e["outcome"] == "denied"]
    assert [e["details"]["failures"] for e in fails] == [1, 2, 3, 4, 5]
    lock = [e for e in ent if e["op"] == "mfa lockout"]
    assert len(lock) == 1 and lock[0]["outcome"] == "denied"
    assert lock[0]["details"]["locked_until"] == "2027-01-15T08:15:12+00:00"
    # the monitoring rules see the burst of denials too (custody.monitor's failed-burst)
    res = scan(log, tmp_path / "monitor.state", parse_config({}), actor="monitor", full=True)
    burst = [a for a in res.alerts if a.kind == "failed-burst" and a.actor == "brute"]
    assert len(burst) == 1 and set(burst[0].seqs) >= {e["seq"] for e in fails}
    # locked: even the right code is refused, audited, and the lockout is not extended
    with pytest.raises(MfaError) as ei:
        mfa.verify("brute", right)
    assert ei.value.reason == "locked"
    assert entries(log, "brute")[-1]["details"]["reason"] == "locked"
    st = {s["principal"]: s for s in mfa.status()}["brute"]
    assert st["locked"] and st["locked_until"] == "2027-01-15T08:15:12+00:00"
    # after the lockout period the right code works, and the count starts again
    clock.t = T0 + 911
    with pytest.raises(MfaError):
        mfa.verify("brute", code_at(k, clock.t))  # one second before the end
    clock.t = T0 + 912
    mfa.verify("brute", code_at(k, clock.t))
    st = {s["principal"]: s for s in mfa.status()}["brute"]
    assert (st["locked"], st["failures"]) == (False, 0)


def test_lockout_threshold_and_period_are_config(env, tmp_path):
    _, dep, log, clock = env
    conf = tmp_path / "custody.toml"
    conf.write_text("[mfa]\nmax_failures = 2\nlockout_seconds = 60\n")
    pol = MfaPolicy.for_home(conf)
    assert (pol.max_failures, pol.lockout_seconds) == (2, 60)
    mfa = make(dep, log, clock, policy=pol)
    k = key_of(mfa.enrol(principal(dep, "strict")))
    bad = "000000" if code_at(k, T0) != "000000" else "111111"
    for _ in range(2):
        with pytest.raises(MfaError):
            mfa.verify("strict", bad)
    with pytest.raises(MfaError) as ei:
        mfa.verify("strict", code_at(k, T0))
    assert ei.value.reason == "locked"
    conf.write_text("[mfa]\nmax_failures = 0\n")
    with pytest.raises(UsageError):
        MfaPolicy.for_home(conf)


def test_a_row_pointed_at_another_principals_secret_is_refused(env):
    home, dep, log, clock = env
    mfa = make(dep, log, clock)
    ka = key_of(mfa.enrol(principal(dep, "swap-alice")))
    mfa.enrol(principal(dep, "swap-mallory"))
    # the insider with write access to the store points mallory's row at alice's secret,
    # hoping alice's codes (or mallory's copy of them) pass as mallory's
    alice = dep.store.mfa_enrolment("swap-alice")
    assert alice is not None
    con = sqlite3.connect(home / "custody.db")
    con.execute(
        "UPDATE mfa_enrolments SET object_uid=? WHERE principal='swap-mallory'",
        (alice.object_uid,),
    )
    con.commit()
    con.close()
    with pytest.raises(IntegrityError):
        mfa.verify("swap-mallory", code_at(ka, T0))
    assert not mfa.enrolled("swap-mallory")
    last = entries(log, "swap-mallory")[-1]
    assert (last["op"], last["outcome"], last["details"]["error"]) == (
        "mfa verify", "failed", "IntegrityError"
    )  # fmt: skip


def test_enrolling_twice_needs_a_reset_and_both_are_audited(env):
    _, dep, log, clock = env
    mfa = make(dep, log, clock, actor="root-admin")
    e1 = mfa.enrol(principal(dep, "twice"))
    e2 = mfa.enrol(
        principal(dep, "twice")
    )  # not confirmed yet: replaced, the first secret is shredded
    assert e1.secret_b32 != e2.secret_b32
    assert objects_of(dep.home.root, "mfa:twice") == [(KIND, BRANCH)]
    with pytest.raises(MfaError):
        mfa.verify("twice", code_at(key_of(e1), T0))
    mfa.verify("twice", code_at(key_of(e2), T0))
    # confirmed: a stolen credential cannot enrol a second factor of its own
    with pytest.raises(MfaError) as ei:
        mfa.enrol(principal(dep, "twice"))
    assert ei.value.reason == "enrolled"

    def not_admin() -> None:
        raise PolicyError("mallory is a custodian, not a super-admin", "")

    with pytest.raises(PolicyError):
        mfa.reset("twice", reason="lost phone", authorize=not_admin)
    assert mfa.enrolled("twice")
    mfa.reset("twice", reason="lost phone", authorize=lambda: None)
    assert not mfa.enrolled("twice") and dep.store.mfa_enrolment("twice") is None
    got = [(e["op"], e["outcome"]) for e in entries(log, "twice") if e["op"] != "mfa verify"]
    assert got[-4:] == [
        ("mfa reset", "intent"),
        ("mfa reset", "denied"),
        ("mfa reset", "intent"),
        ("mfa reset", "ok"),
    ]
    assert ("mfa enrol", "denied") in got
    with pytest.raises(UsageError):
        mfa.reset("twice")


def test_an_unwritable_audit_log_refuses_the_code_and_records_nothing(env, tmp_path):
    home, dep, log, clock = env
    mfa = make(dep, log, clock)
    k = key_of(mfa.enrol(principal(dep, "noaudit")))
    blocker = sqlite3.connect(home / "audit.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    slow = AuditLog.for_home(dep.home, timeout=0.2)
    try:
        with pytest.raises(AuditError):
            make(dep, slow, clock).verify("noaudit", code_at(k, T0))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        slow.close()
    row = dep.store.mfa_enrolment("noaudit")
    assert row is not None and row.last_step is None and row.confirmed_at is None
    mfa.verify("noaudit", code_at(k, T0))  # the code was not spent by the refused attempt


def test_unknown_and_bad_names(env):
    _, dep, log, clock = env
    mfa = make(dep, log, clock)
    with pytest.raises(MfaError) as ei:
        mfa.verify("nobody", "123456")
    assert ei.value.reason == "not-enrolled"
    assert entries(log, "nobody")[-1]["details"]["reason"] == "not-enrolled"
    for bad in ("", "a b", "-x", "x" * 65, "a\nb"):
        with pytest.raises(UsageError):
            mfa.enrol(bad)
    with pytest.raises(UsageError, match="No principal"):
        mfa.enrol("ghost")  # no principal of that name: no enrolment waiting for one
    assert dep.store.mfa_enrolment("ghost") is None
    dep.store.revoke_principal(principal(dep, "gone"), now=T0)
    with pytest.raises(MfaError) as ei:
        mfa.enrol("gone")
    assert ei.value.reason == "revoked" and dep.store.mfa_enrolment("gone") is None


def test_revoking_a_principal_removes_its_enrolment_and_shreds_its_secret(env):
    """The leaver: revoked, their TOTP secret goes with them (audited), and neither they
    nor an admin can enrol them again; a token-only revocation keeps the enrolment."""
    _home, dep, log, clock = env
    mfa = make(dep, log, clock)
    ac = AccessControl(dep.store, log, clock=clock, mfa=mfa)
    ac.add_principal("rotated", kind="service", role="service-user", services=("svc",), by="r")
    for n in ("leaver", "rotated"):
        key = key_of(mfa.enrol(principal(dep, n)))
        clock.t += 30
        mfa.verify(n, code_at(key, clock.t))
    uid = dep.store.mfa_enrolment("leaver").object_uid
    assert dep.store.stored_object(uid) is not None
    assert ac.revoke("rotated", by="root", token_only=True)
    assert mfa.enrolled("rotated")  # a new token is not a new person
    assert ac.revoke("leaver", by="root")
    assert dep.store.mfa_enrolment("leaver") is None and not mfa.enrolled("leaver")
    assert dep.store.stored_object(uid) is None  # the wrapped secret is shredded
    got = [(e["op"], e["outcome"], e["details"].get("reason")) for e in entries(log, "leaver")]
    assert got[-4:] == [
        ("principal revoke", "intent", None),
        ("mfa reset", "intent", "principal revoked"),
        ("mfa reset", "ok", "principal revoked"),
        ("principal revoke", "ok", None),
    ]
    with pytest.raises(MfaError) as ei:
        mfa.enrol("leaver")
    assert ei.value.reason == "revoked" and dep.store.mfa_enrolment("leaver") is None
    with pytest.raises(MfaError):
        mfa.verify("leaver", "123456")


def test_access_control_asks_this_mfa_for_a_super_admin_action(env):
    """The shared interface end to end: AccessControl with this Mfa. An enrolled
    super-admin's key action is refused without a code and with a replayed one."""
    _, dep, log, clock = env
    mfa = make(dep, log, clock)
    key = Ed25519Signer.from_seed("mfa-root", b"m" * 32)
    with dep.store.transaction():
        dep.store.add_participant(
            ParticipantRow(
                name="mfa-root", role="super-admin", public=key.public, fingerprint="f" * 64,
                valid_from=T0 - 10, valid_until=T0 + 10**8, revoked_at=None, enrolled_by="test",
            )
        )  # fmt: skip
    ac = AccessControl(dep.store, log, clock=clock, mfa=mfa)
    ac.add_principal("mfa-root", kind="person", role="super-admin", public=key.public, by="test")
    k = key_of(mfa.enrol(principal(dep, "mfa-root")))
    mfa.verify("mfa-root", code_at(k, T0))  # confirms the enrolment
    clock.t = T0 + 30
    p = ac.principal("mfa-root")
    assert p.mfa
    with pytest.raises(AccessDenied, match="TOTP"):
        ac.authorize(p, "keys", "prod", "")
    code = code_at(k, clock.t)
    assert ac.authorize(p, "keys", "prod", "", mfa_code=code).allow
    with pytest.raises(PolicyError) as ei:  # the same code again: refused and audited
        ac.authorize(p, "keys", "prod", "", mfa_code=code)
    assert getattr(ei.value, "reason", None) == "reused"
    assert entries(log, "mfa-root")[-1]["outcome"] == "denied"


def test_one_code_stands_for_one_command_only_with_command_scope(env):
    """The CLI's AccessControl serves one command (command_scope): its code stands for the
    command's later decisions. A long-lived one (the server's worker) checks every code, so
    one verified code never unlocks a principal for the rest of the process."""
    _, dep, log, clock = env
    mfa = make(dep, log, clock)
    key = Ed25519Signer.from_seed("mfa-cli", b"c" * 32)
    with dep.store.transaction():
        dep.store.add_participant(
            ParticipantRow(
                name="mfa-cli", role="super-admin", public=key.public, fingerprint="e" * 64,
                valid_from=T0 - 10, valid_until=T0 + 10**8, revoked_at=None, enrolled_by="test",
            )
        )  # fmt: skip
    server = AccessControl(dep.store, log, clock=clock, mfa=mfa)
    server.add_principal("mfa-cli", kind="person", role="super-admin", public=key.public, by="t")
    k = key_of(mfa.enrol("mfa-cli"))
    mfa.verify("mfa-cli", code_at(k, T0))
    clock.t = T0 + 30
    p = server.principal("mfa-cli")
    assert server.authorize(p, "keys", "prod", "", mfa_code=code_at(k, clock.t)).allow
    with pytest.raises(AccessDenied, match="TOTP"):  # no code: the earlier one does not carry
        server.authorize(p, "keys", "prod", "")
    clock.t = T0 + 60
    cli = AccessControl(dep.store, log, clock=clock, mfa=mfa, command_scope=True)
    assert cli.authorize(p, "keys", "prod", "", mfa_code=code_at(k, clock.t)).allow
    assert cli.authorize(p, "keys", "prod", "").allow  # the same command's next decision
