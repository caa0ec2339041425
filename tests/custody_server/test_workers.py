"""``custody serve --workers 2``: two server processes on one port (SO_REUSEPORT), with a
real certificate, SoftHSMv2 token and store, sharing lockout and rate-limit state through
``HOME/guard.db``. The attacker sprays wrong tokens over fresh connections, which the
kernel spreads over both processes; the lockout still engages at the configured count, and
both processes refuse the client afterwards. Which process served a request is read from
its ``/proc/PID/io`` read counters, so the test knows that both took part."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.server_fixtures import Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-workers")]
AFTER = 8


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-workers")
    home, pins, tokens, env = server_home(root, {"svc-w": ("service-admin", ("payments",))})
    extra = ("--workers", "2", "--lockout-after", str(AFTER), "--lockout-seconds", "3",
             "--rate", "10/second")  # fmt: skip
    s = Server(home, pins, make_pki(root / "pki"), *extra, env=env)
    s.tokens = tokens
    yield s
    s.stop()


def children(s) -> list[int]:
    pid = s.proc.pid
    raw = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(x) for x in raw]


def reads(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except PermissionError:  # the server is not dumpable: only root may look
        pytest.skip("cannot tell which process served (/proc of the server unreadable)")
    for line in text.splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr")


def owner(s, client_port: int) -> int | None:
    """The server process holding the accepted socket of our connection from
    *client_port* (from /proc/net/tcp and each child's open descriptors)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == s.port and int(f[2].split(":")[1], 16) == client_port:
            inode = f[9]
    for k in children(s):
        try:
            fds = os.listdir(f"/proc/{k}/fd")
        except PermissionError:  # the server is not dumpable: only root may look
            pytest.skip("cannot tell which process served (/proc of the server unreadable)")
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{k}/fd/{fd}") == f"socket:[{inode}]":
                    return k
    return None


def once(s, headers: dict) -> tuple[int, set[int]]:
    """One request on a fresh connection: its status and the process that accepted it."""
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    with (
        socket.create_connection(("127.0.0.1", s.port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        who = None
        for _ in range(50):  # the handshake is done: some process has accepted it
            who = owner(s, tls.getsockname()[1])
            if who is not None:
                break
            time.sleep(0.01)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        tls.sendall(f"GET /api/v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                    "Connection: close\r\n\r\n".encode())  # fmt: skip
        status = tls.recv(64).split(b" ")[1]
    return int(status), {who} if who is not None else set()


def test_two_processes_serve_one_port(srv):
    assert len(children(srv)) == 2
    assert "2 processes" in srv.output()


def test_a_token_spray_over_both_processes_is_locked_out_at_the_configured_count(srv):
    wrong = {"Authorization": "Bearer " + "s" * 43}
    served: set[int] = set()
    codes = []
    for _ in range(AFTER):
        code, who = once(srv, wrong)
        codes.append(code)
        served |= who
    assert codes == [401] * AFTER
    assert served == set(children(srv)), "the failures did not reach both processes"
    refused_by: set[int] = set()
    right = {"Authorization": f"Bearer {srv.tokens['svc-w']}"}
    for _ in range(12):  # locked out, whichever process answers, even with the right token
        code, who = once(srv, right)
        assert code == 403
        refused_by |= who
    assert refused_by == set(children(srv)), refused_by
    entries = audit_entries(srv.home)
    locks = [e for e in entries if e["op"] == "api lockout"]
    assert len(locks) == 1 and locks[0]["details"]["failures"] == AFTER
    assert sum(e["op"] == "api authenticate" for e in entries) == AFTER
    time.sleep(3.2)  # the lockout ends for both
    assert once(srv, right)[0] == 200


def test_the_rate_limit_holds_across_processes(srv):
    right = {"Authorization": f"Bearer {srv.tokens['svc-w']}"}
    ctx = ssl.create_default_context(cafile=str(srv.pki.ca))
    clients = [httpx.Client(base_url=srv.url, verify=ctx, timeout=30) for _ in range(6)]
    try:
        for c in clients:  # six connections, spread over the two processes
            c.get("/api/v1/health")
        kids = children(srv)
        before = {k: reads(k) for k in kids}
        time.sleep(1.02 - time.time() % 1)  # just after a window starts
        start = time.time()

        def burst(c: httpx.Client) -> list[int]:  # the six connections at once
            got: list[int] = []
            while time.time() - start < 0.6 and len(got) < 10:
                got.append(c.get("/api/v1/whoami", headers=right).status_code)
            return got

        with ThreadPoolExecutor(6) as pool:
            codes = [code for got in pool.map(burst, clients) for code in got]
        end = time.time()
    finally:
        for c in clients:
            c.close()
    assert int(start) == int(end), "the burst crossed a window: too slow a machine"
    assert len(codes) >= 24 and 429 in codes
    # one shared budget of 10 a second: two processes with their own would admit ~20
    assert 1 <= codes.count(200) <= 10, codes
    assert all(reads(k) > before[k] for k in kids)  # both processes answered


def test_children_stop_with_the_parent_and_a_bad_pin_fails_the_start(tmp_path):
    home, pins, _tokens, env = server_home(tmp_path, {"svc-x": ("service-admin", ("payments",))})
    pki = make_pki(tmp_path / "pki")
    s = Server(home, pins, pki, "--workers", "2", env=env)
    kids = children(s)
    assert len(kids) == 2
    s.proc.kill()  # SIGKILL: the parent gets no chance to stop them
    s.proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() for k in kids):
        time.sleep(0.1)
    alive = [k for k in kids if Path(f"/proc/{k}").exists()
             and "Z" not in Path(f"/proc/{k}/stat").read_text().split()[2]]  # fmt: skip
    s.stop()
    assert alive == []
    bad = tmp_path / "bad.pins"
    bad.write_text("pin=wrong-pin-0000\n")
    bad.chmod(0o600)
    r = subprocess.run(
        [sys.executable, "-m", "custody_cli", "serve", "--home", str(home), "--pin-file",
         str(bad), "--cert", str(pki.server_cert), "--key", str(pki.server_key),
         "--bind", "127.0.0.1:0", "--workers", "2"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode != 0 and "error:" in r.stderr and "listening" not in r.stderr
    assert "wrong-pin-0000" not in r.stderr
