"""The server's intent and outcome entries are linked as the CLI's are: each outcome names
its intent's seq (``details.intent_seq``), including an intent written while a request's
entries are held back for one commit (:class:`custody_server.backend.Staging`). On a real
audit log on disk, then through ``custody serve`` on 127.0.0.1."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from custody.access.auditing import intended
from custody.audit.log import AuditLog
from custody.errors import PolicyError
from custody_server.backend import Staging
from tests.server_fixtures import Server, audit_entries, make_pki, server_home


def _lines(log: AuditLog) -> list[dict]:
    import json

    return [json.loads(x) for x in log.iter_lines()]


def test_an_intent_staged_for_a_request_is_numbered_and_its_outcome_names_it(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.db")
    try:
        staging = Staging(log)
        with staging.held() as staged:
            staging.append("access decide", "prod:a", "svc", details={"reason": "before"})
            with intended(staging, "access request", "prod:a", "svc", {"n": 1}) as ref:
                staging.append("access decide", "prod:a", "svc", details={"reason": "inside"})
            staging.append("access request", "prod:a", "svc", details={"n": 1, **ref})
            with pytest.raises(PolicyError), intended(staging, "access request", "prod:b", "svc"):
                raise PolicyError("refused", "")
            assert all(e["outcome"] != "intent" for e in staged)  # intents were not held
            log.append_all(staged)  # the request's commit, as read_once makes it
        got = _lines(log)
    finally:
        log.close()
    assert [(e["op"], e["outcome"], e["details"].get("reason")) for e in got] == [
        ("access decide", "ok", "before"),  # what was held before the intent stays first
        ("access request", "intent", None),
        ("access decide", "ok", "inside"),
        ("access request", "ok", None),
        ("access request", "intent", None),
        ("access request", "denied", None),
    ]
    assert ref == {"intent_seq": got[1]["seq"]}
    assert got[3]["details"]["intent_seq"] == got[1]["seq"]
    assert got[5]["details"]["intent_seq"] == got[4]["seq"]
    assert [e["seq"] for e in got] == list(range(got[0]["seq"], got[0]["seq"] + 6))


@pytest.mark.hsm
@pytest.mark.xdist_group("custody-serve-intents")
def test_every_outcome_of_the_server_names_its_intent(tmp_path: Path):
    people = {"pay-admin": ("service-admin", ("payments",)),
              "pay-svc": ("service-user", ("payments",))}  # fmt: skip
    home, pins, tokens, env = server_home(tmp_path, people)
    s = Server(home, pins, make_pki(tmp_path / "pki"), env=env)
    try:
        ctx = ssl.create_default_context(cafile=str(s.pki.ca))

        def client(who: str) -> httpx.Client:
            return httpx.Client(base_url=s.url, verify=ctx, timeout=30,
                                headers={"Authorization": f"Bearer {tokens[who]}"})  # fmt: skip

        with client("pay-admin") as c:
            r = c.post("/v1/prod/data/payments/db", json={"data": {"value": "Ab1!intent-links"}})
            assert r.status_code == 200, r.text
            assert c.get("/api/v1/secrets/prod/payments/db").status_code == 200
        with client("pay-svc") as c:
            assert c.get("/api/v1/secrets/prod/payments/db").status_code == 403
            body = {"env": "prod", "path": "payments/db", "why": "incident 9", "seconds": 600}
            r = c.post("/api/v1/access/requests", json=body)
            assert r.status_code == 200, r.text
    finally:
        s.stop()
    log = audit_entries(home)
    start = max(e["seq"] for e in log if e["actor"] == "test")  # after server_home's own
    mine = [e for e in log if e["seq"] > start]
    intents = {e["seq"]: e for e in mine if e["outcome"] == "intent"}
    assert {e["op"] for e in intents.values()} >= {"access request"}
    for seq, i in intents.items():
        outs = [e for e in mine if e["outcome"] != "intent"
                and e["details"].get("intent_seq") == seq]  # fmt: skip
        assert len(outs) == 1, i
        assert (outs[0]["op"], outs[0]["target"]) == (i["op"], i["target"])
    ops_with_intents = {e["op"] for e in intents.values()}
    for e in mine:
        if e["outcome"] != "intent" and e["op"] in ops_with_intents:
            assert e["details"].get("intent_seq") in intents, e
