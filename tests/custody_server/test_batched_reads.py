"""Reads a backend worker takes together share one audit commit (``Backend._run_batch``):
a live ``custody serve`` with ONE backend thread, so that concurrent requests queue and are
taken as a batch. Every answer's entries are committed before the answer arrives; a commit
that fails fails every request of its batch, with no value in any body; the chain verifies
after. A real server over TLS on a real SoftHSMv2 home, clients on threads."""

from __future__ import annotations

import json
import sqlite3
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import run_cli
from tests.server_fixtures import Server, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-batch")]
PEOPLE = {"b-svc": ("service-admin", ("pay",))}
PATH = "pay/batch"
VALUE = "Batch-Value-3!kP7#wQ2@"
CLIENTS = 12


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-batch")
    home, pins, tokens, env = server_home(root, PEOPLE)
    s = Server(home, pins, make_pki(root / "pki"), "--rate", "100000/second", "--threads", "1",
               env=env)  # fmt: skip
    s.tokens = tokens
    proc = run_cli(
        "secret", "put", PATH, "--env", "prod", "--stdin", "--category", "service-credential",
        "--owner", "pay", "--home", str(home), "--pin-file", str(pins), input=VALUE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    yield s
    s.stop()


def _reads(con: sqlite3.Connection) -> int:
    q = """SELECT COUNT(*) FROM entries WHERE CAST(line AS TEXT) LIKE '%"op":"secret get"%'"""
    return int(con.execute(q).fetchone()[0])


def _burst(s, fn, n: int = CLIENTS, rounds: int = 6) -> list:
    """*rounds* of *n* clients, each on its own connection, released together."""
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    tok = s.tokens["b-svc"]
    auth = {"Authorization": f"Bearer {tok}"}
    clients = [httpx.Client(base_url=s.url, verify=ctx, timeout=30, headers=auth) for _ in range(n)]
    try:
        for c in clients:
            assert c.get("/api/v1/whoami").status_code == 200  # connected before the burst
        out = []
        with ThreadPoolExecutor(n) as pool:
            for _ in range(rounds):
                go = threading.Barrier(n)

                def one(c, go=go):
                    go.wait()
                    return fn(c)

                out += list(pool.map(one, clients))
        return out
    finally:
        for c in clients:
            c.close()


def test_each_answer_arrives_after_its_entries_are_committed(srv):
    con = sqlite3.connect(srv.home / "audit.db", timeout=30)
    try:
        base = _reads(con)
        seen = []
        lock = threading.Lock()

        def read(c):
            r = c.get(f"/api/v1/secrets/prod/{PATH}")
            with lock:  # the entries of every answer so far are in the committed log
                seen.append(r.status_code)
                mine = sqlite3.connect(srv.home / "audit.db", timeout=30)
                try:
                    assert _reads(mine) - base >= len(seen)
                finally:
                    mine.close()
            return r.status_code, r.json().get("value")

        got = _burst(srv, read)
        assert got == [(200, VALUE)] * len(got)
        assert _reads(con) - base == len(got)
    finally:
        con.close()


def test_a_failed_commit_fails_every_request_of_its_batch_and_shows_no_value(srv):
    con = sqlite3.connect(srv.home / "audit.db", timeout=30)
    try:
        con.execute(
            "CREATE TRIGGER no_more BEFORE INSERT ON entries BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
        con.commit()
        before = _reads(con)

        def read(c):
            r = c.get(f"/api/v1/secrets/prod/{PATH}")
            return r.status_code, VALUE in r.text

        got = _burst(srv, read)
        assert got == [(503, False)] * len(got)
        assert _reads(con) == before  # nothing of any batch was written
    finally:
        con.execute("DROP TRIGGER IF EXISTS no_more")
        con.commit()
        con.close()
    ok = _burst(srv, lambda c: c.get(f"/api/v1/secrets/prod/{PATH}").status_code, rounds=1)
    assert ok == [200] * CLIENTS
    v = run_cli("audit", "verify", "--home", str(srv.home))
    assert v.returncode == 0, v.stdout + v.stderr
    assert VALUE not in srv.output()


def test_a_change_taken_in_a_batch_is_logged_after_the_reads_decided_before_it(tmp_path):
    """The order of the log is the order the worker acted in: a job that may change the
    store (not a read) waits for the reads ahead of it in the batch to be committed. A
    real audit log and store on disk; the jobs stand for a read and a revocation, and
    their answers go to futures of a real event loop."""
    import asyncio

    from custody.audit.log import AuditLog
    from custody.store import open_store
    from custody_server.backend import Backend, Context

    log = AuditLog(tmp_path / "audit.db")
    store = open_store(tmp_path / "custody.db", create=True)
    dep = type("Dep", (), {"store": store})()
    ctx = Context(dep=dep, vault=None, access=None, audit=log, staging=None, consumers=None)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()

    def read(name):
        def job(c):
            c.commit_before_answer([{"op": "secret get", "target": "prod:x", "actor": name}])
            return name

        return job, (loop, loop.create_future()), True

    def revoke(c):
        c.audit.append("principal revoke", "r2", "admin")
        return "revoked"

    try:
        jobs = [read("r1"), (revoke, (loop, loop.create_future()), False), read("r2")]
        Backend._run_batch(ctx, jobs)
        ops = [(e["op"], e["actor"]) for e in map(json.loads, log.lines())]
        assert ops == [("secret get", "r1"), ("principal revoke", "admin"), ("secret get", "r2")]
        loop.run_until_complete(asyncio.sleep(0.01))  # the answers handed to the loop
        assert [j[1][1].result() for j in jobs] == ["r1", "revoked", "r2"]
    finally:
        loop.close()
        log.close()
        store.close()
