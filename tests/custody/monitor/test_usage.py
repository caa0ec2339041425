"""custody.monitor.usage: each principal's last access, reads, refusals and the versions it
read, folded from audit entries (the services screen's source)."""

from __future__ import annotations

import json

from custody.monitor.usage import usage_of


def _e(seq, actor, op, target, outcome="ok", **details):
    return {"seq": seq, "time": 1000 + seq, "actor": actor, "op": op, "target": target,
            "outcome": outcome, "details": details}  # fmt: skip


def test_reads_refusals_versions_and_the_last_access():
    entries = [
        _e(0, "svc", "secret.read", "prod:a", "intent"),  # an intent is not an access
        _e(1, "svc", "secret.read", "prod:a", version=2),
        _e(2, "svc", "secret.read", "prod:a", version=3),
        _e(3, "svc", "access decide", "prod:b", action="read"),  # the CLI's read as svc
        _e(4, "svc", "access decide", "prod:c", "denied", action="read", reason="expired"),
        _e(5, "svc", "access decide", "prod:d", action="list"),  # not a read
        _e(6, "other", "secret.read", "prod:a", version=1),
        _e(7, "svc", "alert.ack", "prod:a"),  # the monitor's own ops are no traffic
        {
            "seq": 8,
            "time": 1008,
            "actor": "svc",
            "op": "secret.read",
            "target": "prod:e",
            "outcome": "ok",
            "details": "not a mapping",
        },
    ]
    u = usage_of(entries, {"svc", "idle"})
    svc = u["svc"]
    assert (svc.reads, svc.refused) == (4, 1)
    assert svc.versions == {"prod:a": {2, 3}, "prod:b": set(), "prod:e": set()}
    assert svc.last_read["prod:a"] == 1002 and svc.last_read["prod:b"] == 1003
    assert (svc.last_seq, svc.last_op, svc.last_target) == (8, "secret.read", "prod:e")
    assert "other" not in u  # only the names asked for
    idle = u["idle"]
    assert (idle.last_seq, idle.reads, idle.refused, idle.versions) == (None, 0, 0, {})


def test_entries_as_log_lines():
    lines = [json.dumps(_e(0, "svc", "secret get", "dev:x", version=7)).encode()]
    assert usage_of(lines, ["svc"])["svc"].versions == {"dev:x": {7}}
