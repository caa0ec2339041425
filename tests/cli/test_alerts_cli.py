"""``custody alerts`` end to end, as subprocesses on a real deployment (SoftHSMv2, SQLite).

A secret is soft-deleted and then read by another principal; ``alerts scan`` records the
alert in the audit log with the seqs of that read, runs the alert hook and appends to the
alert file; ``alerts`` lists it; the principal it is about cannot acknowledge it, an
auditor can. The secret's value never shows in any of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custody.audit.log import AuditLog
from tests.conftest import cli_env, run_cli
from tests.rekey_fixtures import make_deployment

pytestmark = pytest.mark.hsm
CANARY = "Canary-Value-7f3a!Qx9#Lm2@Zr8$Wt"


def custody(home: Path, *args: str, actor: str = "admin", pins: Path | None = None, **kw):
    extra = ("--pin-file", str(pins)) if pins is not None else ()
    return run_cli(*args, "--home", str(home), *extra, env=cli_env(CUSTODY_ACTOR=actor), **kw)


def objects(text: str) -> list[dict]:
    """JSON objects one after another (the hook's stdin is one object, no newline)."""
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


def ok(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout


def test_scan_records_delivers_lists_and_acknowledges(tmp_path):
    home, pins = make_deployment(tmp_path / "d")
    ok(custody(home, "kek", "rotate", "--branch", "secrets", pins=pins))
    hook = tmp_path / "hook.jsonl"
    conf = home / "custody.toml"
    conf.write_text(
        conf.read_text().replace("[policy]", f'[policy]\nalert_hook = "tee -a {hook}"', 1)
        + '\n[monitor]\nalert_file = "alerts.jsonl"\n'
    )
    p = "ops/vpn/psk"
    put = ("secret", "put", p, "--env", "prod", "--stdin", "--category", "vpn-credential")
    ok(custody(home, *put, "--owner", "ops", "--json", pins=pins, input=CANARY))
    first = ok(custody(home, "alerts", "scan", "--json"))
    assert first["alerts"] == [] and first["scanned"]["from"] == 0
    ok(custody(home, "secret", "delete", p, "--env", "prod", "--json"))
    r = custody(home, "secret", "get", p, "--env", "prod", actor="mallory", pins=pins)
    assert r.returncode != 0
    res = ok(custody(home, "alerts", "scan", "--json"))
    [a] = res["alerts"]
    assert a["kind"] == "soft-delete-read" and a["principal"] == "mallory"
    assert res["delivery_problems"] == []
    with AuditLog(home / "audit.db") as log:
        behind = [json.loads(log.lines(s, s + 1)[0]) for s in a["seqs"]]
        raised = [json.loads(x) for x in log.lines() if b'"op":"alert.raised"' in x]
    assert [(e["op"], e["outcome"]) for e in behind] == [
        ("secret get", "intent"),
        ("access decide", "ok"),  # the decision the command asked for (details.attempt)
        ("secret alert", "ok"),
        ("secret get", "denied"),
    ]
    assert {e["actor"] for e in behind} == {"mallory"}
    assert [e["details"]["id"] for e in raised] == [a["id"]]
    for f in (hook, home / "alerts.jsonl"):
        got = objects(f.read_text())
        assert [g["id"] for g in got if g.get("type") == "monitor-alert"] == [a["id"]]
    listed = ok(custody(home, "alerts", "--json", "--open"))["alerts"]
    assert [x["id"] for x in listed] == [a["id"]] and listed[0]["seqs"] == a["seqs"]
    assert a["id"][:12] in ok(custody(home, "alerts", "--rule", "soft-delete-read"))
    shown = ok(custody(home, "alerts", "show", a["id"][:8], "--json"))
    assert [e["seq"] for e in shown["entries"]] == a["seqs"] and shown["entries"] == behind
    # the principal the alert is about cannot close it; an auditor can
    r = custody(home, "alerts", "ack", a["id"], actor="mallory")
    assert r.returncode == 7 and "cannot acknowledge" in r.stderr
    done = ok(
        custody(home, "alerts", "ack", a["id"][:10], "--note", "reviewed", "--json", actor="aud")
    )
    assert done["state"] == "acknowledged" and done["ack"]["by"] == "aud"
    assert ok(custody(home, "alerts", "--open", "--json"))["alerts"] == []
    rules = ok(custody(home, "alerts", "rules", "--json"))
    assert {r["kind"] for r in rules["rules"]} >= {"soft-delete-read", "off-hours"}
    everything = hook.read_text() + (home / "alerts.jsonl").read_text()
    everything += (home / "monitor-state.json").read_text()
    for args in ((), ("show", a["id"]), ("show", a["id"], "--json"), ("rules",), ("--json",)):
        out = custody(home, "alerts", *args)
        assert out.returncode == 0
        everything += out.stdout + out.stderr
    assert CANARY not in everything and a["id"][:12] in everything
    # a bad rule table is a config error, and nothing is scanned
    conf.write_text(conf.read_text() + '[monitor.rules.volume]\nratio = "lots"\n')
    r = custody(home, "alerts", "scan")
    assert r.returncode == 3 and "[monitor]" in r.stderr
