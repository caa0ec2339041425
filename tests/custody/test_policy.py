"""Rotation policy as data: a table of key classes and dates with an injected clock."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custody import policy
from custody.config import BranchPolicy
from tests.rekey_fixtures import cli, cli_json, db, make_deployment

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    description: str
    key_class: str
    age_days: float
    warn_days: int
    status: str
    days_left: int


ROWS = (
    Row("high fresh", "high", 0, 14, "ok", 90),
    Row("high just outside warning", "high", 75, 14, "ok", 15),
    Row("high warning starts", "high", 76, 14, "upcoming", 14),
    Row("high one day left", "high", 89, 14, "upcoming", 1),
    Row("high due today", "high", 90, 14, "due", 0),
    Row("high due later today", "high", 89.9, 14, "due", 0),
    Row("high overdue by a day", "high", 91, 14, "overdue", -1),
    Row("medium upcoming", "medium", 170, 14, "upcoming", 10),
    Row("medium due", "medium", 180, 14, "due", 0),
    Row("medium overdue", "medium", 200, 14, "overdue", -20),
    Row("low ok at 300 days", "low", 300, 14, "ok", 65),
    Row("low upcoming with long lead", "low", 300, 90, "upcoming", 65),
    Row("low overdue", "low", 366, 14, "overdue", -1),
    Row("zero lead time never warns", "medium", 179, 0, "ok", 1),
)


@pytest.mark.parametrize("row", ROWS, ids=[r.description for r in ROWS])
def test_policy_table(row: Row) -> None:
    created = T0
    now = T0 + timedelta(days=row.age_days)
    item = policy.evaluate_one(
        policy.KeyAge(key="data", version=3, created=created),
        BranchPolicy(key_class=row.key_class, warn_days=row.warn_days),
        now,
    )
    assert (item.status, item.days_left) == (row.status, row.days_left)
    days = {"high": 90, "medium": 180, "low": 365}[row.key_class]
    assert item.due_at == created + timedelta(days=days)
    assert item.action_needed == (row.status in ("due", "overdue"))


def test_missing_key_and_ordering_and_root_default() -> None:
    now = T0 + timedelta(days=100)
    items = policy.evaluate(
        [
            policy.KeyAge(key="data", version=1, created=T0),
            policy.KeyAge(key="backup", version=None, created=None),
            policy.KeyAge(key="secrets", version=2, created=T0 + timedelta(days=95)),
            policy.KeyAge(key="root", version=1, created=T0),
        ],
        {"data": BranchPolicy(key_class="medium"), "secrets": BranchPolicy(key_class="high")},
        now,
    )
    assert [i.key for i in items] == ["backup", "data", "secrets", "root"]
    assert items[0].status == "missing"
    assert [i.days_left for i in items[1:]] == [80, 85, 265]
    assert items[3].key_class == "low"


def test_warnings_only_for_attention_and_hold_no_secret_fields() -> None:
    items = policy.evaluate(
        [
            policy.KeyAge(key="data", version=1, created=T0),
            policy.KeyAge(key="secrets", version=4, created=T0),
        ],
        {"data": BranchPolicy(key_class="low"), "secrets": BranchPolicy(key_class="high")},
        T0 + timedelta(days=100),
    )
    warns = policy.warnings(items, deployment_id="dep1", now=T0)
    assert [w["key"] for w in warns] == ["secrets"]
    assert warns[0]["severity"] == "critical"
    assert "overdue for rotation by 10 day" in warns[0]["message"]
    assert set(warns[0]) >= {"type", "due_at", "days_left", "status", "deployment_id", "at"}


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        policy.evaluate_one(
            policy.KeyAge(key="data", version=1, created=T0),
            BranchPolicy(key_class="high"),
            datetime(2025, 1, 1),
        )


def _hook(tmp_path: Path, rc: int) -> str:
    script = tmp_path / "hook.py"
    out = tmp_path / "alerts.jsonl"
    script.write_text(
        f"import sys\nopen({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')\nsys.exit({rc})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{sys.executable} {script}"


def test_alert_hook_gets_json_on_stdin(tmp_path: Path) -> None:
    w = {"type": "rotation-warning", "key": "data", "status": "due"}
    res = policy.emit_warnings([w], alert_hook=_hook(tmp_path, 0))
    assert res == [policy.HookResult(ok=True, detail="delivered")]
    assert json.loads((tmp_path / "alerts.jsonl").read_text().strip()) == w


def test_alert_hook_failure_is_reported_not_raised(tmp_path: Path) -> None:
    recorded: list[Mapping[str, Any]] = []
    res = policy.emit_warnings(
        [{"key": "data"}], alert_hook=_hook(tmp_path, 3), audit=recorded.append
    )
    assert res[0].ok is False and "exited 3" in res[0].detail
    assert recorded == [{"key": "data"}]
    missing = policy.run_alert_hook("/nonexistent/hook", {"key": "x"})
    assert missing.ok is False


def test_rotate_due_cli_reports_and_alerts(tmp_path: Path) -> None:
    home, _pins = make_deployment(tmp_path / "d")
    hook = _hook(tmp_path, 0)
    cfg = (home / "custody.toml").read_text()
    cfg = cfg.replace("[policy]", f"[policy]\nalert_hook = {json.dumps(hook)}", 1)
    (home / "custody.toml").write_text(cfg)
    old = (datetime.now(UTC) - timedelta(days=200)).isoformat(timespec="seconds")
    with db(home) as c:
        c.execute("UPDATE kek_versions SET created=? WHERE branch='data'", (old,))
    out = cli_json(home, None, "rotate", "due")
    by = {i["key"]: i for i in out["items"]}
    assert by["data"]["status"] == "overdue" and by["data"]["days_left"] == -20
    assert by["backup"]["status"] == "missing"
    assert by["root"]["status"] == "ok"
    sent = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert {s["key"] for s in sent} == {"data", "backup", "secrets"}
    assert all(a["ok"] for a in out["alerts"])
    text = cli(home, None, "rotate", "due", "--no-alert").stdout
    assert "overdue" in text
