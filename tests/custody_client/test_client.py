"""The client library against a real ``custody serve``: reads, lists, rotation, a typed
error for each refusal, retries for idempotent calls only, and the cache."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import pytest

from custody_client import (
    AuditUnavailable,
    AuthenticationFailed,
    CustodyClient,
    Forbidden,
    NotFound,
    Unreachable,
)
from tests.server_fixtures import Server, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-client")]
PEOPLE = {"cl-admin": ("service-admin", ("payments",)), "cl-svc": ("service-user", ("payments",))}
VALUE = "Client-Canary-2b!Rq7#Vn4@Kp9$Hs"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    home, pins, tokens, env = server_home(root, PEOPLE)
    pki = make_pki(root / "pki")
    s = Server(home, pins, pki, env=env)
    s.tokens = tokens
    with CustodyClient(s.url, token=tokens["cl-admin"], ca=str(pki.ca)) as c:
        c._once(
            "POST",
            "/v1/prod/data/payments/db",
            json={"data": {"value": VALUE}, "options": {"category": "database-credential"}},
        )
    yield s
    s.stop()


def connect(s, who="cl-admin", **kw) -> CustodyClient:
    return CustodyClient(s.url, token=s.tokens[who], ca=str(s.pki.ca), backoff=0.05, **kw)


class _AuditBlocked:
    """The server's audit log refuses writes until the block is lifted (after *for_s*)."""

    def __init__(self, home, for_s: float | None = None):
        self.con = sqlite3.connect(home / "audit.db", timeout=30, check_same_thread=False)
        self.con.execute(
            "CREATE TRIGGER blocked BEFORE INSERT ON entries BEGIN SELECT RAISE(ABORT, 'x'); END"
        )
        self.con.commit()
        self.timer = threading.Timer(for_s, self.lift) if for_s else None
        if self.timer:
            self.timer.start()

    def lift(self):
        self.con.execute("DROP TRIGGER IF EXISTS blocked")
        self.con.commit()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.timer:
            self.timer.cancel()
        self.lift()
        self.con.close()


def test_get_list_metadata_and_a_value_never_in_repr(srv):
    with connect(srv) as c:
        s = c.get("prod", "payments/db")
        assert (s.version, s.value) == (1, VALUE)
        assert VALUE not in repr(s) and VALUE not in repr(c)
        assert [i["path"] for i in c.list("prod", "payments/")] == ["payments/db"]
        assert c.metadata("prod", "payments/db")["labels"]["current"] == 1
        assert c.health() == {"status": "ok"}


def test_each_refusal_is_a_typed_error(srv):
    with connect(srv) as c:
        with pytest.raises(NotFound):
            c.get("prod", "payments/nothing-here")
        with pytest.raises(Forbidden):  # outside its services
            c.get("prod", "billing/key")
    with connect(srv, "cl-svc") as c:
        with pytest.raises(Forbidden):  # a service user may not rotate
            c.rotate("prod", "payments/db")
        with pytest.raises(Forbidden):  # nor read without a grant
            c.get("prod", "payments/db")
    bad = CustodyClient(srv.url, token="z" * 43, ca=str(srv.pki.ca), retries=1)
    with bad, pytest.raises(AuthenticationFailed) as err:
        bad.whoami()
    assert err.value.status == 401


def test_idempotent_reads_are_retried_and_rotation_is_not(srv):
    with connect(srv, retries=6) as c, _AuditBlocked(srv.home, for_s=0.4):
        t0 = time.monotonic()
        assert c.get("prod", "payments/db").value == VALUE  # 503s, then served
        assert time.monotonic() - t0 >= 0.3
    with (
        connect(srv, "cl-admin", retries=6) as admin,
        _AuditBlocked(srv.home, for_s=0.4),
        pytest.raises(AuditUnavailable),
    ):
        admin.rotate("prod", "payments/db", overlap_seconds=60)
    with connect(srv, "cl-admin") as admin:
        assert admin.get("prod", "payments/db").version == 1  # the refused rotation did nothing


def test_unreachable_server_is_a_typed_error_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = CustodyClient(f"https://127.0.0.1:{port}", token="t", retries=3, backoff=0.01)
    with c, pytest.raises(Unreachable):
        c.health()


def test_cache_honours_ttl_versions_and_max_stale(srv):
    with connect(srv, retries=1) as c:
        first = c.cached("prod", "payments/db", ttl=60)
        pinned = c.cached("prod", "payments/db", version=1)
        with _AuditBlocked(srv.home):
            assert c.cached("prod", "payments/db", ttl=60) is first  # within ttl: no request
            assert c.cached("prod", "payments/db", version=1) is pinned  # immutable
            stale = c.cached("prod", "payments/db", ttl=0, max_stale=60)
            assert stale.value == VALUE  # the server refuses; a fresh-enough copy is served
            with pytest.raises(AuditUnavailable):
                c.cached("prod", "payments/db", ttl=0, max_stale=0)
    with connect(srv, "cl-admin") as admin:
        admin.rotate("prod", "payments/db", overlap_seconds=60)
    with connect(srv) as c:
        c.cached("prod", "payments/db", ttl=60)
        c.forget()
        assert c.cached("prod", "payments/db", ttl=0).version == 2
