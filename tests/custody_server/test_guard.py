"""Lockout after repeated failed authentication (audited), and per-principal rate limits,
on a ``custody serve`` of their own (a lockout shuts out the whole client address)."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from tests.server_fixtures import Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-guard")]
PEOPLE = {"svc-a": ("service-user", ("payments",)), "svc-b": ("service-user", ("billing",))}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-guard")
    home, pins, tokens, env = server_home(root, PEOPLE)
    pki = make_pki(root / "pki")
    extra = ("--lockout-after", "3", "--lockout-seconds", "2", "--rate", "10/second")
    s = Server(home, pins, pki, *extra, env=env)
    s.tokens = tokens
    yield s
    s.stop()


def _client(s) -> httpx.Client:
    return httpx.Client(
        base_url=s.url, verify=ssl.create_default_context(cafile=str(s.pki.ca)), timeout=30
    )


def _as(s, who):
    return {"Authorization": f"Bearer {s.tokens[who]}"}


def test_rate_limit_is_per_principal(srv):
    with _client(srv) as c:
        codes = [c.get("/api/v1/whoami", headers=_as(srv, "svc-a")).status_code for _ in range(30)]
        assert codes[:5] == [200] * 5 and 429 in codes
        limited = c.get("/api/v1/whoami", headers=_as(srv, "svc-a"))
        if limited.status_code == 429:
            assert int(limited.headers["retry-after"]) >= 1
        # another principal is not slowed by svc-a's burst
        assert c.get("/api/v1/whoami", headers=_as(srv, "svc-b")).status_code == 200
        time.sleep(1.1)
        assert c.get("/api/v1/whoami", headers=_as(srv, "svc-a")).status_code == 200


def test_lockout_after_n_failures_is_audited_and_ends(srv):
    time.sleep(1.1)  # a fresh rate window for svc-a
    with _client(srv) as c:
        wrong = {"Authorization": "Bearer " + "w" * 43}
        assert [c.get("/api/v1/whoami", headers=wrong).status_code for _ in range(3)] == [401] * 3
        # locked: even the right token is refused, and not looked at
        locked = c.get("/api/v1/whoami", headers=_as(srv, "svc-a"))
        assert locked.status_code == 403 and "locked out" in locked.json()["error"]
        assert int(locked.headers["retry-after"]) >= 1
        log = audit_entries(srv.home)
        lockouts = [e for e in log if e["op"] == "api lockout"]
        assert len(lockouts) == 1 and lockouts[0]["target"] == "127.0.0.1"
        assert lockouts[0]["outcome"] == "denied" and lockouts[0]["details"]["failures"] == 3
        assert len([e for e in log if e["op"] == "api authenticate"]) >= 3
        time.sleep(2.2)
        assert c.get("/api/v1/whoami", headers=_as(srv, "svc-a")).status_code == 200
