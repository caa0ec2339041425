"""The server's request memo (:meth:`custody.store.port.StoreCore.cached_reads`) against
writers in other processes: a live ``custody serve`` with four backend threads, each with
rows of a service and its secret in its memo, while the CLI (another process) writes a new
version, revokes the service's token, and revokes a second service. Each change must hold on
the very next request, on every thread. A real server over TLS on a real SoftHSMv2 home."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.conftest import run_cli
from tests.rekey_fixtures import cli
from tests.server_fixtures import Server, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-memo")]
PEOPLE = {"m-svc": ("service-admin", ("pay",)), "m-two": ("service-admin", ("pay",))}
PATH = "pay/db"
ROUNDS = 12  # requests per check: more than the backend's threads, so that each one answers


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-memo")
    home, pins, tokens, env = server_home(root, PEOPLE)
    s = Server(home, pins, make_pki(root / "pki"), "--rate", "100000/second", "--threads", "4",
               "--lockout-after", "1000",
               env=env)  # fmt: skip
    s.tokens = tokens
    yield s
    s.stop()


def _client(s, token: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    return httpx.Client(base_url=s.url, verify=ctx, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def _put(s, value: str) -> None:
    proc = run_cli(
        "secret", "put", PATH, "--env", "prod", "--stdin", "--category", "service-credential",
        "--owner", "pay", "--home", str(s.home), "--pin-file", str(s.pins), input=value,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_each_change_by_another_process_holds_on_the_next_request_on_every_thread(srv):
    _put(srv, "Memo-Value-1!aQ9#zL4@")
    with _client(srv, srv.tokens["m-svc"]) as c, _client(srv, srv.tokens["m-two"]) as two:
        for _ in range(ROUNDS):  # every thread reads (and keeps) the rows
            r = c.get(f"/api/v1/secrets/prod/{PATH}")
            assert r.status_code == 200 and r.json()["version"] == 1
            assert two.get(f"/api/v1/secrets/prod/{PATH}").status_code == 200

        _put(srv, "Memo-Value-2!bR8#yK5@")  # a new version, written by the CLI
        for _ in range(ROUNDS):
            r = c.get(f"/api/v1/secrets/prod/{PATH}")
            assert r.status_code == 200
            assert (r.json()["version"], r.json()["value"]) == (2, "Memo-Value-2!bR8#yK5@")

        cli(srv.home, srv.pins, "principal", "revoke", "m-svc", "--token-only")
        for _ in range(ROUNDS):
            assert c.get(f"/api/v1/secrets/prod/{PATH}").status_code == 401
            assert c.get("/api/v1/whoami").status_code == 401
            assert two.get(f"/api/v1/secrets/prod/{PATH}").status_code == 200

        cli(srv.home, srv.pins, "principal", "revoke", "m-two")
        for _ in range(ROUNDS):
            assert two.get(f"/api/v1/secrets/prod/{PATH}").status_code == 401
