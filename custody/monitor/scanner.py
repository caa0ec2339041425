"""Incremental scans of the audit log, held honest by the log itself.

A scan streams the entries after the last scanned seq through the
:class:`~custody.monitor.detect.Detector`, records each new alert in the audit log
(``alert.raised``, before anything is delivered), then one ``monitor.scan`` entry that
names the range scanned and the digest of the detector state reached, and only then
writes that state to the state file (``HOME/monitor-state.json``, 0600), with the seq of
its ``monitor.scan`` entry.

The alerts are a function of the log and the rules: when the rules in ``custody.toml``
differ from those of the last scan, the scan starts again from seq 0 with the new rules,
and its ``monitor.scan`` entry names the rules that are off and whom each exempts.

The state file is a cache, not a record. On load it must match the log: the same log id,
and a ``monitor.scan`` entry at its ``scan_seq`` whose digest and range are the file's.
A file that is missing, unreadable or edited (an insider who moves ``next_seq`` past their
own reads, or wipes a baseline) does not match, and the scan starts again from seq 0. An
alert is identified by its evidence (:func:`custody.monitor.model.alert_id`), so a rescan
raises only what the log does not already hold, and whatever the log shows is raised.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.audit.log import AuditLog
from custody.canonical import canonical_bytes, domain_hash
from custody.errors import StorageError
from custody.monitor.detect import Detector
from custody.monitor.model import Alert
from custody.monitor.records import RAISED, SCAN, raised_details
from custody.monitor.rules import INTERNAL_OPS, MonitorConfig
from custody.policy import run_alert_hook
from custody.privatefile import write_private

STATE_FILE = "monitor-state.json"
STATE_FORMAT = "custody.monitor.state/v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    """What one scan did."""

    alerts: tuple[Alert, ...]  # new alerts, recorded in the log
    start: int  # first seq scanned
    end: int  # one past the last seq scanned
    rescan: str  # why the scan started again from seq 0 ("" when it resumed)
    scan_seq: int | None  # the monitor.scan entry (None when nothing was scanned)
    deliveries: tuple[str, ...] = ()  # problems delivering (hook, file); empty when fine
    rules_changed: bool = False  # the rules differ from the last scan's (recorded)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "alerts": [a.to_json() for a in self.alerts],
            "scanned": {"from": self.start, "to": self.end},
            "rescan": self.rescan,
            "scan_seq": self.scan_seq,
            "rules_changed": self.rules_changed,
            "delivery_problems": list(self.deliveries),
        }


def state_digest(core: Mapping[str, Any]) -> str:
    return domain_hash("custody/monitor/state/v1", canonical_bytes(dict(core))).hex()


def _load_state(path: Path, log: AuditLog) -> tuple[dict[str, Any] | None, str]:
    """The saved state when it matches the log, else (None, why not)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"the state file cannot be read ({type(exc).__name__})"
    try:
        doc = json.loads(raw)
        scan_seq = int(doc.pop("scan_seq"))
        if doc.get("format") != STATE_FORMAT or doc.get("log") != log.log_id:
            return None, "the state file belongs to another log"
        lines = log.lines(scan_seq, scan_seq + 1)
        entry = json.loads(lines[0]) if lines else {}
        d = entry.get("details") or {}
        if (
            entry.get("op") != SCAN
            or d.get("state") != state_digest(doc)
            or d.get("to") != doc.get("next_seq")
        ):
            return None, "the state file does not match the audit log"
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, "the state file is not valid"
    return doc, ""


def _rules_record(config: MonitorConfig, changed: bool) -> dict[str, Any]:
    """What a scan entry says about the rules: their digest, and, when they changed since
    the last scan, which rules are off, whom each exempts, and every setting that is not
    the default (so a principal who exempts themselves in custody.toml, or raises a
    threshold, shows in the audit log)."""
    out: dict[str, Any] = {"rules": config.digest()[:32]}
    if changed:
        out["rules_changed"] = True
        out["disabled"] = [r.name for r in config.rules if not r.enabled]
        out["exempt"] = {r.name: list(r.exempt) for r in config.rules if r.exempt}
        out["not_default"] = config.deviations()
    return out


def _deliver(
    alerts: tuple[Alert, ...],
    *,
    hook: str | None,
    alert_file: Path | None,
    deployment_id: str,
    runner: Callable[..., Any] | None,
) -> tuple[str, ...]:
    problems = []
    payloads = [
        {
            "type": "monitor-alert",
            "severity": "critical" if a.score >= 5 else "warning",
            "message": a.summary,
            "deployment_id": deployment_id,
            **a.to_json(),
        }
        for a in alerts
    ]
    if hook:
        for p in payloads:
            r = (
                run_alert_hook(hook, p)
                if runner is None
                else run_alert_hook(hook, p, runner=runner)
            )
            if not r.ok:
                problems.append(f"alert {p['id']}: {r.detail}")
    if alert_file is not None and payloads:
        data = b"".join(json.dumps(p, sort_keys=True).encode() + b"\n" for p in payloads)
        try:
            fd = os.open(alert_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            problems.append(f"alert file {alert_file}: {type(exc).__name__}")
    return tuple(problems)


def scan(
    log: AuditLog,
    state_path: Path,
    config: MonitorConfig,
    *,
    actor: str,
    classes: Mapping[str, str] | None = None,
    versions: Mapping[str, int] | None = None,
    full: bool = False,
    hook: str | None = None,
    alert_file: Path | None = None,
    deployment_id: str = "",
    runner: Callable[..., Any] | None = None,
) -> ScanResult:
    """Scan the entries added since the last scan (all of them with *full*), record new
    alerts in the log, save the state, and deliver the alerts to the hook and the file.

    Args:
        log: the home's audit log.
        state_path: the state file.
        config: the rules.
        actor: who runs the scan (the actor of the entries it writes).
        classes, versions: from the store (see :class:`~custody.monitor.detect.Detector`).
        full: ignore the state file and scan from seq 0.
        hook: the ``alert_hook`` command; alert_file: a file to append JSON lines to.
        runner: ``subprocess.run`` for the hook (tests).

    Returns:
        A :class:`ScanResult`; delivery problems are reported in it, not raised.

    Raises:
        AuditError: an alert or the scan record could not be written (nothing is
            delivered and the state file is not advanced: the next scan redoes it).
        StorageError: the audit log or the state file cannot be read or written.
    """
    lock_path = state_path.with_name(state_path.name + ".lock")
    try:
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise StorageError(
            f"Cannot lock {lock_path}", f"Check the home's permissions ({type(exc).__name__})."
        ) from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _scan_locked(
            log, state_path, config, actor, classes, versions, full, hook, alert_file,
            deployment_id, runner,
        )  # fmt: skip
    finally:
        os.close(lock)


def _scan_locked(
    log: AuditLog,
    state_path: Path,
    config: MonitorConfig,
    actor: str,
    classes: Mapping[str, str] | None,
    versions: Mapping[str, int] | None,
    full: bool,
    hook: str | None,
    alert_file: Path | None,
    deployment_id: str,
    runner: Callable[..., Any] | None,
) -> ScanResult:
    state, why = (None, "a full scan was asked for") if full else _load_state(state_path, log)
    changed = state is not None and state.get("config") != config.digest()
    if changed:  # the alerts are a function of the log and the rules: recompute them all
        state, why = None, "the rules changed since the last scan"
    start = int(state["next_seq"]) if state else 0
    det = Detector(
        config, classes=classes, versions=versions, state=state["detector"] if state else None
    )
    end = log.size()
    found: dict[str, Alert] = {}
    recorded: set[str] = set()
    raised_marker = b'"op":"' + RAISED.encode() + b'"'
    traffic = False
    for line in log.iter_lines(start, end):
        entry = json.loads(line)
        if raised_marker in line and entry.get("op") == RAISED:
            recorded.add(str((entry.get("details") or {}).get("id", "")))
        traffic = traffic or entry.get("op") not in INTERNAL_OPS
        for a in det.feed(entry):
            found.setdefault(a.id, a)
    new = tuple(a for aid, a in found.items() if aid not in recorded)
    if state is not None and not traffic and not new:
        # only the monitor's own entries since the last scan: record nothing more
        return ScanResult(alerts=(), start=start, end=end, rescan=why, scan_seq=None)
    for a in new:
        log.append(RAISED, a.target or a.actor, actor, details=raised_details(a))
    core = {
        "format": STATE_FORMAT,
        "log": log.log_id,
        "next_seq": end,
        "config": config.digest(),
        "detector": det.dump(),
    }
    core = json.loads(json.dumps(core))  # the digest is over what the file will hold
    rec = log.append(
        SCAN,
        "monitor",
        actor,
        details={
            "from": start,
            "to": end,
            "alerts": len(new),
            "state": state_digest(core),
            "rescan": why[:120],
            **_rules_record(config, changed),
        },
    )
    write_private(state_path, json.dumps({**core, "scan_seq": rec["seq"]}).encode())
    problems = _deliver(
        new, hook=hook, alert_file=alert_file, deployment_id=deployment_id, runner=runner
    )
    return ScanResult(
        alerts=new,
        start=start,
        end=end,
        rescan=why,
        scan_seq=rec["seq"],
        deliveries=problems,
        rules_changed=changed,
    )
