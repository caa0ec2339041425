"""Crafted audit traffic for the monitor's tests, written into a real AuditLog.

Entries are shaped as the CLI writes them (custody_cli.audited / custody.audit.scope): an
``intent`` entry with env, path and the options given, then an outcome entry naming it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from custody.audit.log import AuditLog

T0 = 1767571200  # Monday 2026-01-05 00:00 UTC
DAY = 86400
HOUR = 3600
CLASSES = {"prod:billing/db": "high", "prod:payroll/db": "high", "prod:web/session": "medium"}
ALICE_PATHS = ("prod:web/session", "staging:web/session", "prod:web/api-key")


class Traffic:
    """Appends CLI-shaped entries to *log*, with explicit times."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def op(
        self,
        op: str,
        actor: str,
        target: str,
        t: int,
        *,
        outcome: str = "ok",
        notice: dict[str, Any] | None = None,
        **details: Any,
    ) -> list[int]:
        env, _, path = target.partition(":")
        intent = self.log.append(
            op,
            target,
            actor,
            outcome="intent",
            details={"env": env, "path": path, **details},
            now=t,
        )
        seqs = [intent["seq"]]
        if notice is not None:
            n = self.log.append("secret alert", target, actor, details=notice, now=t)
            seqs.append(n["seq"])
        extra: dict[str, Any] = {"exit": 0} if outcome == "ok" else {"error": "AccessDenied"}
        if outcome != "ok":
            extra["title"] = details.pop("title", "access denied")
            if "reason" in details:
                extra["reason"] = details["reason"]
        done = self.log.append(
            op, target, actor, outcome=outcome, details={"intent_seq": seqs[0], **extra}, now=t + 1
        )
        seqs.append(done["seq"])
        return seqs

    def read(self, actor: str, target: str, t: int, **kw: Any) -> list[int]:
        return self.op("secret get", actor, target, t, **kw)


def normal_weeks(tr: Traffic, days: int, start_day: int = 0) -> None:
    """A billing service reading two secrets every 30 minutes around the clock; alice
    reading her three paths each working hour on weekdays; bob reading one tool token and
    failing once a day (a typo, not a burst)."""
    for d in range(start_day, start_day + days):
        base = T0 + d * DAY
        weekday = (d % 7) < 5
        for slot in range(48):
            t = base + slot * 1800 + 7
            tr.read("billing-svc", "prod:billing/db", t)
            tr.read("billing-svc", "prod:billing/api-key", t + 3)
        if not weekday:
            continue
        for h in range(9, 17):
            tr.read("alice", ALICE_PATHS[h % 3], base + h * HOUR + 600)
        for h in range(10, 16):
            tr.read("bob", "dev:tools/token", base + h * HOUR + 1200)
        tr.read("bob", "dev:tools/other", base + 13 * HOUR, outcome="denied")


def baseline(path: Path, days: int = 28) -> Path:
    """Build (once) a log of *days* of normal traffic; return the database file."""
    log = AuditLog(path, durable=False)
    try:
        normal_weeks(Traffic(log), days)
    finally:
        log.close()
    return path


def copy_log(src: Path, dest_dir: Path) -> AuditLog:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if Path(str(src) + suffix).exists():
            shutil.copy(str(src) + suffix, str(dest_dir / "audit.db") + suffix)
    return AuditLog(dest_dir / "audit.db", durable=False)
