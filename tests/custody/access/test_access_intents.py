"""Every intent entry the access library writes gets one outcome entry that names it
(``details.intent_seq``), as the rest of custody's audited operations do: on success, and
when the operation is refused or fails after its intent. The monitor's joiner then makes
one event of the two, not an ``unfinished`` intent beside a stray outcome. Real store,
real SoftHSMv2 token (the sealed world of test_access_seal), real audit log."""

from __future__ import annotations

import json
from typing import Any

import pytest

from custody.access.flow import GrantFlow
from custody.access.release import deliver, set_rule
from custody.errors import PolicyError
from custody.monitor.events import Joiner
from tests.custody.access import test_access_seal as base
from tests.custody.access.grant_fixtures import APPROVERS
from tests.custody.access.test_access_seal import PATH, RULED

pytestmark = pytest.mark.hsm
world = base.world


def _entries(log: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.lines()]


def _pairs(log: Any, op: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each intent of *op* with the outcome entries that name it."""
    es = _entries(log)
    return [
        (i, [e for e in es if e["details"].get("intent_seq") == i["seq"]])
        for i in es
        if i["op"] == op and i["outcome"] == "intent"
    ]


def _linked(log: Any, op: str, *, outcome: str = "ok") -> dict[str, Any]:
    """The last intent of *op*: exactly one outcome names it, of the same op and target."""
    intent, outs = _pairs(log, op)[-1]
    assert len(outs) >= 1, f"no outcome names the intent of {op!r}"
    assert all(o["op"] == op and o["target"] == intent["target"] for o in outs)
    assert all(o["seq"] > intent["seq"] for o in outs)
    assert outs[0]["outcome"] == outcome
    return outs[0]


def test_the_grant_flow_links_request_approve_and_revoke(world):
    ac, store, log, _token = world
    flow = GrantFlow(ac, "dep-1")
    r = flow.request(ac.principal("svc"), "prod", PATH, seconds=600, why="deploy 7")
    _linked(log, "access request")
    one = flow.approve(r.id, APPROVERS[0])  # a medium secret: one approver grants it
    out = _linked(log, "access approve")
    assert out["details"]["request"] == r.id and one["grant"]
    gid = one["grant"]
    assert store.grant(gid) is not None
    flow.revoke(gid, ac.principal("root"), reason="done")
    assert _linked(log, "access grant revoke")["details"]["grant"] == gid
    hit = flow.revoke_all_on("prod", PATH, by="root", reason="incident")
    assert hit  # g-live, from the fixture
    assert _linked(log, "access grant revoke")["details"]["principal"] == "svc"


def test_a_refused_approval_after_its_intent_is_a_linked_denial(world):
    ac, _store, log, _token = world
    flow = GrantFlow(ac, "dep-1")
    alice = ac.principal("alice")  # a release of the rule's path needs two approvers
    r = flow.request(alice, "prod", RULED, seconds=600, why="rotate", kind="release")
    flow.approve(r.id, APPROVERS[0])
    with pytest.raises(PolicyError):
        flow.approve(r.id, APPROVERS[0])  # the same approver again: refused in the write
    out = _linked(log, "access approve", outcome="denied")
    assert out["details"]["title"].endswith(f"already approved {r.id}")


def test_release_rule_and_release_are_linked(world):
    ac, _store, log, _token = world
    flow = GrantFlow(ac, "dep-1")
    set_rule(flow, ac.principal("root"), "prod", PATH, needed=2)
    assert _linked(log, "access release-rule")["details"]["needed"] == 2
    alice = ac.principal("alice")
    r = flow.request(alice, "prod", RULED, seconds=600, why="rotate tls", kind="release")
    for k in APPROVERS:
        flow.approve(r.id, k)
    _sealed, info = deliver(flow, r.id, alice, lambda env, path: (1, "value-not-logged"))
    out = _linked(log, "access release")
    assert out["details"]["request"] == r.id == info["request"]
    assert b"value-not-logged" not in b"\n".join(log.lines())


def test_principal_writes_are_linked(world):
    ac, _store, log, _token = world
    _p, _tok = ac.add_principal("svc2", kind="service", role="service-user",
                                services=("payments",), by="root")  # fmt: skip
    _linked(log, "principal add")
    ac.new_token("svc2", by="root")
    assert "token_id" in _linked(log, "principal token")["details"]
    ac.revoke("svc2", by="root", token_only=True)
    _linked(log, "principal revoke-token")
    ac.revoke("alice", by="root")  # alice has a TOTP enrolment: dropped with her
    _linked(log, "mfa reset")
    _linked(log, "principal revoke")


def test_the_monitor_joins_each_intent_with_its_outcome(world):
    """No access-library intent is left ``unfinished`` once its outcome is written."""
    ac, _store, log, _token = world
    flow = GrantFlow(ac, "dep-1")
    r = flow.request(ac.principal("svc"), "prod", PATH, seconds=600, why="deploy 9")
    flow.approve(r.id, APPROVERS[0])
    ac.add_principal("svc3", kind="service", role="service-user", services=("payments",),
                     by="root")  # fmt: skip
    j = Joiner({})
    events = [ev for e in _entries(log) for ev in j.feed(e)]
    ops = ("access request", "access approve", "principal add")
    mine = [ev for ev in events if ev.op in ops]
    assert mine and all(ev.outcome != "unfinished" for ev in mine)
    assert all(len(ev.seqs) >= 2 for ev in mine)  # the intent's seq and the outcome's
    assert not [s for s, p in j.pending.items() if p[2] in ops]
