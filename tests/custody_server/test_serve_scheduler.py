"""The scheduler inside ``custody serve`` (``--schedule``): two server processes over one
PostgreSQL store. Only the lease holder runs the jobs while both serve; SIGKILL it and
the other takes over within the lease time and keeps serving; no job runs twice in one
period across the failover; a clean stop releases the lease."""

from __future__ import annotations

import itertools
import json
import os
import signal
import ssl
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from ceremonies.schedule_jobs import JOBS
from custody.schedule import last_run
from custody.store import open_store
from tests.conftest import run_cli
from tests.rekey_fixtures import cli, write_pins
from tests.server_fixtures import Server, make_pki

pytestmark = [pytest.mark.postgres, pytest.mark.hsm]
LEASE, PERIOD = 3, 1.0
WATCHED = ("checkpoint", "expiry-warnings")


def wait_for(pred, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _listeners(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND query LIKE 'LISTEN custody_access%'").fetchone()  # fmt: skip
    return int(row[0]) if row else 0


class Watch:
    """Polls the shared store for the jobs' run records: every (job, start, replica) seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: set[tuple[str, float, str]] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        store = open_store(self.url)
        try:
            while not self._stop.wait(0.1):
                for job in WATCHED:
                    r = last_run(store, job)
                    if r is not None:
                        t = datetime.fromisoformat(r.started).timestamp()
                        self.seen.add((job, t, r.replica.split(":")[0]))
        finally:
            store.close()

    def by(self, host: str) -> list[tuple[str, float]]:
        return sorted((j, t) for j, t, h in set(self.seen) if h == host)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)


def test_two_servers_one_leader_and_a_takeover_after_sigkill(tmp_path: Path, pg_url: str) -> None:
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store",
                pg_url)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    pki = make_pki(tmp_path / "pki")
    flags = ["--schedule", "--schedule-interval", str(PERIOD), "--schedule-lease-seconds",
             str(LEASE), *itertools.chain(*(("--schedule-job", j) for j in WATCHED))]  # fmt: skip
    watch = Watch(pg_url)
    servers: dict[str, Server] = {}
    try:
        servers["replica-1"] = Server(home, pins, pki, *flags, "--host-name", "replica-1")
        assert wait_for(lambda: watch.by("replica-1") != [], 30), servers["replica-1"].output()
        servers["replica-2"] = Server(home, pins, pki, *flags, "--host-name", "replica-2")
        time.sleep(3.0)
        assert watch.by("replica-1") and watch.by("replica-2") == []  # one leader only
        survivor = httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca)), timeout=5)
        for s in servers.values():  # both serve, leader or not
            assert survivor.get(f"{s.url}/api/v1/health").json() == {"status": "ok"}
        os.kill(servers["replica-1"].proc.pid, signal.SIGKILL)
        killed = time.time()
        assert wait_for(lambda: watch.by("replica-2") != [], 20), servers["replica-2"].output()
        took_over = min(t for _j, t in watch.by("replica-2"))
        assert took_over - killed <= LEASE + 1.5, took_over - killed  # within the lease
        time.sleep(2.5)
        url2 = servers["replica-2"].url
        assert survivor.get(f"{url2}/api/v1/health").status_code == 200
        survivor.close()
        everything = watch.by("replica-1") + watch.by("replica-2")
        for job in WATCHED:
            starts = sorted(t for j, t in everything if j == job)
            assert len(starts) >= 3, (job, starts)
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert min(gaps) >= PERIOD - 1e-3, (job, gaps)  # never twice in one period
        st = run_cli("schedule", "status", "--home", str(home), "--json")
        doc = json.loads(st.stdout)
        assert doc["leader"]["host"] == "replica-2" and not doc["leader"]["expired"]
        assert set(doc["jobs"]) == set(JOBS)
        log2 = servers["replica-2"].output()
        assert "standby: another replica leads" in log2 and "leader: running the jobs" in log2
        assert log2.index("standby") < log2.index("leader: running")
        servers.pop("replica-2").stop()  # SIGTERM: a clean stop releases the lease
        st = run_cli("schedule", "status", "--home", str(home), "--json")
        assert json.loads(st.stdout)["leader"] is None
    finally:
        watch.stop()
        for s in servers.values():
            s.stop()


def test_serve_without_schedule_never_takes_the_lease(tmp_path: Path, pg_url: str) -> None:
    """The scheduler is opt-in: a plain ``custody serve`` runs no job and takes no lease."""
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store",
                pg_url)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    s = Server(home, pins, make_pki(tmp_path / "pki"))
    try:
        time.sleep(1.5)
        st = run_cli("schedule", "status", "--home", str(home), "--json")
        doc = json.loads(st.stdout)
        assert doc["leader"] is None and all(v is None for v in doc["jobs"].values())
    finally:
        s.stop()


def test_a_bad_schedule_setting_is_refused_before_serving(tmp_path: Path, pg_url: str) -> None:
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store",
                pg_url)  # fmt: skip
    assert r.returncode == 0, r.stderr
    pki = make_pki(tmp_path / "pki")
    r = run_cli("serve", "--home", str(home), "--pin-file", str(pins), "--cert",
                str(pki.server_cert), "--key", str(pki.server_key), "--bind", "127.0.0.1:0",
                "--schedule", "--schedule-job", "reboot-the-world")  # fmt: skip
    assert r.returncode == 2 and "Unknown job 'reboot-the-world'" in r.stderr
    assert "listening" not in r.stderr


def test_a_revocation_is_refused_by_every_server_at_its_next_request(
    tmp_path: Path, pg_url: str
) -> None:
    """Two servers and a revoking CLI, three processes over one PostgreSQL store: both
    servers answer the service's token (each has checked the seal and cached its pair);
    ``custody principal revoke --token-only`` commits; the very next request on each
    server is refused."""
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store",
                pg_url)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    tok = tmp_path / "svc.token"
    cli(home, pins, "principal", "add", "pay-svc", "--role", "service-user",
        "--service-account", "--service", "payments", "--env", "prod",
        "--token-out", str(tok))  # fmt: skip
    token = tok.read_text().strip()
    pki = make_pki(tmp_path / "pki")
    servers = [Server(home, pins, pki), Server(home, pins, pki)]
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    try:
        with httpx.Client(
            verify=ctx, timeout=10, headers={"Authorization": f"Bearer {token}"}
        ) as c:
            for s in servers:
                for _ in range(3):
                    w = c.get(f"{s.url}/api/v1/whoami")
                    assert w.status_code == 200 and w.json()["name"] == "pay-svc", w.text
            assert wait_for(lambda: _listeners(pg_url) == 2, 10)  # one LISTEN per server
            cli(home, pins, "principal", "revoke", "pay-svc", "--token-only")
            for s in servers:
                assert c.get(f"{s.url}/api/v1/whoami").status_code == 401
    finally:
        for s in servers:
            s.stop()
