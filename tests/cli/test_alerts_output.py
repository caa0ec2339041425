"""``custody alerts`` and ``alerts show`` print what a log entry says, escaped: an actor or
target name with terminal escape sequences cannot drive the terminal (in process)."""

from __future__ import annotations

import json

from custody.audit.log import AuditLog
from custody.config import Config, Home, HsmConfig
from custody.monitor import MonitorConfig, scan
from custody_cli import main

T = 1767571200 + 28 * 86400  # a Monday, four weeks after 2026-01-05


def test_alert_listing_escapes_what_the_log_says(tmp_path, capsys):
    home = Home(tmp_path / "home")
    home.root.mkdir()
    home.write_config(
        Config(deployment_id="d1", created="2026-01-01T00:00:00+00:00", hsm=HsmConfig())
    )
    evil = "mallory\x1b[2J\x1b]0;owned\x07"
    with AuditLog(home.root / "audit.db", durable=False) as log:
        log.append("secret delete", "prod:ops/db", "admin", now=T)
        first = log.append("secret get", "prod:ops/db", evil, outcome="intent", now=T + 60)
        log.append(
            "secret get", "prod:ops/db", evil, outcome="denied",
            details={"intent_seq": first["seq"]}, now=T + 61,
        )  # fmt: skip
        [a] = scan(log, home.root / "state.json", MonitorConfig(), actor="m").alerts
    assert main(["alerts", "--home", str(home.root)]) == 0
    assert main(["alerts", "show", a.id[:8], "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "soft-delete-read" in out
    assert out.count("mallory") >= 3  # listed, shown as principal, and in its entries
    assert main(["alerts", "show", a.id, "--home", str(home.root), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["principal"] == evil and [e["seq"] for e in shown["entries"]] == [1, 2]
    assert main(["alerts", "show", "ffffff", "--home", str(home.root)]) == 2
