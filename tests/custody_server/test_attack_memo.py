"""Attacks on the server's request memo (:meth:`custody.store.port.StoreCore.cached_reads`,
commit 442c545) by one insider: a second factor used twice by two concurrent requests on
two backend threads, a TOTP lockout, a grant's window or revocation, a deleted secret, each
of which must hold on the very next request on every thread; and the MFA check's re-read
after a refused step, which must see a lockout committed by another thread since the
request's first read (the memo kept the row from before). A real ``custody serve`` over TLS
with four backend threads on a real SoftHSMv2 home."""

from __future__ import annotations

import base64
import concurrent.futures
import ssl
import threading
import time
from datetime import timedelta

import httpx
import pytest

from custody.access.mfa import Mfa, MfaError, totp_code
from custody.audit.log import AuditLog
from custody.clock import iso, utcnow
from custody.config import Home
from custody.deployment import open_deployment
from custody.secrets import Category, SecretPolicy, Vault
from custody.store import open_store
from tests.conftest import TEST_PIN
from tests.custody.access.grant_fixtures import add_approvers, add_signed_grant
from tests.rekey_fixtures import cli
from tests.server_fixtures import Server, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-attack-memo")]
PEOPLE = {
    "x-mfa": ("service-admin", ("pay",)),  # enrolled in TOTP
    "x-lock": ("service-admin", ("pay",)),  # enrolled in TOTP, locked out by the test
    "x-user": ("service-user", ("pay",)),  # reads only through grants
    "x-admin": ("service-admin", ("pay",)),
}
HIGH = "pay/db"  # database-credential: high class, a TOTP code for an enrolled principal
SHORT, REVOKED, DELETED = "pay/short", "pay/revoked", "pay/deleted"
GRANT_SECONDS = 10  # the short grant's window, from the server's start
ROUNDS = 12  # requests per check: more than the backend's threads, so that each one answers


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-attack-memo")
    home, pins, tokens, env = server_home(root, PEOPLE)
    now = int(time.time())
    keys: dict[str, bytes] = {}
    with open_deployment(Home(home), TEST_PIN) as dep:
        vault = Vault(dep.store, dep.hierarchy, rng=dep.token.random,
                      policy=SecretPolicy.for_home(Home(home).config_path))  # fmt: skip
        for path in (HIGH, SHORT, REVOKED, DELETED):
            vault.generate("prod", path, category=Category("database-credential"), owner="pay")
        add_approvers(dep.store, now)
        add_signed_grant(dep.store, "g-short", "x-user", "prod", SHORT, actions=("read",),
                         not_before=now - 60, not_after=now + GRANT_SECONDS)  # fmt: skip
        add_signed_grant(dep.store, "g-revoked", "x-user", "prod", REVOKED, actions=("read",),
                         not_before=now - 60, not_after=now + 3600)  # fmt: skip
        audit = AuditLog.for_home(Home(home))
        try:
            mfa = Mfa(dep.store, dep.hierarchy, audit, rng=dep.token.random)
            for name in ("x-mfa", "x-lock"):
                keys[name] = base64.b32decode(mfa.enrol(name).secret_b32)
                mfa.verify(name, totp_code(keys[name], now // 30 - 1))  # confirms it
        finally:
            audit.close()
    s = Server(home, pins, make_pki(root / "pki"), "--rate", "100000/second", "--threads", "4",
               "--lockout-after", "1000", env=env)  # fmt: skip
    s.tokens = tokens
    s.started = now  # type: ignore[attr-defined]
    s.keys = keys  # type: ignore[attr-defined]
    yield s
    s.stop()


def _client(s, name: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    return httpx.Client(base_url=s.url, verify=ctx, timeout=30,
                        headers={"Authorization": f"Bearer {s.tokens[name]}"})  # fmt: skip


def _read(c: httpx.Client, path: str, code: str | None = None) -> int:
    headers = {"X-Custody-MFA": code} if code is not None else {}
    return c.get(f"/api/v1/secrets/prod/{path}", headers=headers).status_code


def _step_with_room() -> int:
    """The current TOTP step, waited for if fewer than 6 seconds of it are left (the test's
    codes are for this step and the next: both stay inside the window of +-1)."""
    if time.time() % 30 > 24:
        time.sleep(30 - time.time() % 30 + 0.2)
    return int(time.time()) // 30


def test_one_totp_code_is_accepted_once_by_concurrent_requests_on_two_threads(srv):
    """Two requests with the same code at the same moment, each on its own backend thread
    (each with its own connection and memo, which may hold the enrolment from the previous
    request): exactly one is answered."""
    key = srv.keys["x-mfa"]
    clients = [_client(srv, "x-mfa") for _ in range(2)]
    try:
        for c in clients:  # both threads' memos hold the enrolment row
            assert _read(c, HIGH) == 403
        step = _step_with_room()
        for s in (step, step + 1):
            code = totp_code(key, s)
            gate = threading.Barrier(2)

            def go(c: httpx.Client, code: str = code, gate: threading.Barrier = gate) -> int:
                gate.wait()
                return _read(c, HIGH, code)

            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                got = sorted(pool.map(go, clients))
            assert got == [200, 403], (s, got)
            assert [_read(c, HIGH, code) for c in clients] == [403, 403]  # and never again
    finally:
        for c in clients:
            c.close()


def test_a_totp_lockout_holds_on_the_next_request_on_every_thread(srv):
    key = srv.keys["x-lock"]
    with _client(srv, "x-lock") as c:
        for _ in range(ROUNDS):
            assert _read(c, HIGH) == 403  # every thread keeps the unlocked enrolment row
        step = _step_with_room()
        wrong = f"{(int(totp_code(key, step)) + 1) % 10**6:06d}"
        for _ in range(5):  # MfaPolicy.max_failures
            assert _read(c, HIGH, wrong) == 403
        right = totp_code(key, step)
        for _ in range(ROUNDS):
            r = c.get(f"/api/v1/secrets/prod/{HIGH}", headers={"X-Custody-MFA": right})
            assert r.status_code == 403 and "locked out" in r.json()["error"], r.text


def test_a_grant_window_ends_on_the_next_request_on_every_thread(srv):
    with _client(srv, "x-user") as c:
        ends = srv.started + GRANT_SECONDS
        if time.time() < ends - 1:
            for _ in range(ROUNDS):
                assert _read(c, SHORT) == 200  # every thread keeps the grant's rows
        time.sleep(max(0.0, ends - time.time() + 1.1))
        for _ in range(ROUNDS):
            assert _read(c, SHORT) == 403


def test_a_grant_revocation_by_the_cli_holds_on_the_next_request_on_every_thread(srv):
    with _client(srv, "x-user") as c:
        for _ in range(ROUNDS):
            assert _read(c, REVOKED) == 200
        cli(srv.home, srv.pins, "access", "revoke", "g-revoked")
        for _ in range(ROUNDS):
            assert _read(c, REVOKED) == 403


def test_a_secret_deleted_by_the_cli_is_not_served_on_any_thread(srv):
    with _client(srv, "x-admin") as c:
        for _ in range(ROUNDS):
            assert _read(c, DELETED) == 200
        cli(srv.home, None, "secret", "delete", DELETED, "--env", "prod")
        for _ in range(ROUNDS):
            assert _read(c, DELETED) == 404


def test_the_mfa_re_read_after_a_refused_step_sees_a_concurrent_lockout(tmp_path):
    """In one request's scope, authentication has read the enrolment (``enrolled``, for
    the principal's flag) and the memo keeps it; another thread then locks the principal
    out; this request's valid code is refused by the store's conditional UPDATE, and the
    check reads the row again to tell why. That re-read must see the lockout (refused as
    ``locked``, no failure counted during the lockout), not the kept row (``reused``)."""
    home, _pins, _tokens, _env = server_home(tmp_path, {"x-race": ("service-admin", ("pay",))})
    with open_deployment(Home(home), TEST_PIN) as dep:
        audit = AuditLog.for_home(Home(home))
        other = open_store(home / "custody.db")  # another backend thread's connection
        try:
            mfa = Mfa(dep.store, dep.hierarchy, audit, rng=dep.token.random)
            key = base64.b32decode(mfa.enrol("x-race").secret_b32)
            step = _step_with_room()
            mfa.verify("x-race", totp_code(key, step - 1))  # confirms it
            with dep.store.cached_reads():
                assert mfa.enrolled("x-race")  # what authentication reads: kept
                with other.transaction():  # the other thread's fifth wrong code
                    until = iso(utcnow() + timedelta(seconds=900))
                    assert other.fail_mfa("x-race", limit=1, locked_until=until)[1]
                with pytest.raises(MfaError) as err:
                    mfa.verify("x-race", totp_code(key, step))
            assert err.value.reason == "locked"
            row = other.mfa_enrolment("x-race")
            assert row is not None and row.failures == 0 and row.locked_until == until
        finally:
            other.close()
            audit.close()


def test_a_client_lockout_holds_on_every_thread_though_each_keeps_the_token_row(tmp_path):
    """Every thread's memo holds the service's token row; wrong tokens from the same
    address, answered by whichever thread is free, lock the address out; the right token
    is then refused on every thread (the lockout is the guard's, not a store row)."""
    home, pins, tokens, env = server_home(tmp_path, {"x-svc": ("service-admin", ("pay",))})
    s = Server(home, pins, make_pki(tmp_path / "pki"), "--rate", "100000/second",
               "--threads", "4", "--lockout-after", "3", env=env)  # fmt: skip
    s.tokens = tokens
    try:
        with _client(s, "x-svc") as c:
            for _ in range(ROUNDS):
                assert c.get("/api/v1/whoami").status_code == 200
            bad = {"Authorization": "Bearer " + tokens["x-svc"][:-4] + "AAAA"}
            for _ in range(3):
                assert c.get("/api/v1/whoami", headers=bad).status_code == 401
            for _ in range(ROUNDS):
                assert c.get("/api/v1/whoami").status_code == 403
    finally:
        s.stop()
