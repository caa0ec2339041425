"""Attacks on custody serve by the operator with the disk and a network client: a grant row
written straight into the store (read, metadata and listing must not honour it), and a
stolen token altered or guessed (one answer for every refusal, no echo). A real server over
TLS on a real SoftHSMv2 home."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from custody.config import Home
from custody.deployment import open_deployment
from custody.secrets import Category, SecretPolicy, Vault
from custody.store.rows import GrantRow
from tests.conftest import TEST_PIN
from tests.server_fixtures import Server, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-attacks")]
PEOPLE = {"t-svc": ("service-user", ("billing",))}
PATH = "billing/api/key"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-attacks")
    home, pins, tokens, env = server_home(root, PEOPLE)
    now = int(time.time())
    with open_deployment(Home(home), TEST_PIN) as dep:
        vault = Vault(dep.store, dep.hierarchy, rng=dep.token.random,
                      policy=SecretPolicy.for_home(Home(home).config_path))  # fmt: skip
        vault.generate("prod", PATH, category=Category("external-api-key"), owner="billing",
                       prefix="bill_live")  # fmt: skip
        # the disk operator's grant: a row, with no approvals behind it
        dep.store.add_grant(GrantRow(id="grant-forged", request_id="req-forged",
                                     principal="t-svc", env="prod", path="billing/",
                                     actions=("read", "metadata", "list"), not_before=now - 60,
                                     not_after=now + 3600, created=now - 60,
                                     record="{}"))  # fmt: skip
    s = Server(home, pins, make_pki(root / "pki"), "--rate", "100000/second", env=env)
    s.tokens = tokens
    yield s
    s.stop()


def _client(s, token: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    return httpx.Client(base_url=s.url, verify=ctx, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def test_a_grant_row_written_into_the_store_opens_nothing_through_the_server(srv):
    with _client(srv, srv.tokens["t-svc"]) as c:
        assert c.get("/api/v1/whoami").status_code == 200
        assert c.get(f"/api/v1/secrets/prod/{PATH}").status_code == 403
        assert c.get(f"/api/v1/metadata/prod/{PATH}").status_code == 403
        r = c.get("/api/v1/secrets/prod")
        assert r.status_code == 200 and r.json()["secrets"] == []


def test_an_altered_or_guessed_token_gets_one_answer_and_no_echo(srv):
    token = srv.tokens["t-svc"]
    k = len(token) - 20
    altered = token[:k] + ("B" if token[k] == "A" else "A") + token[k + 1 :]
    guessed = "cst_" + "0" * 16 + "_" + "A" * 43
    answers = set()
    for t in (altered, guessed, token + "x"):
        with _client(srv, t) as c:
            r = c.get(f"/api/v1/secrets/prod/{PATH}")
        # the secret part (cst_ID_SECRET; base64url may itself hold '_'): never echoed
        assert r.status_code == 401 and t.split("_", 2)[2] not in r.text
        answers.add(r.text)
    assert len(answers) == 1
