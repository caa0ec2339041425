"""``custody alerts [scan|ack|show|rules]``: monitoring rules over the audit log.

``alerts`` lists the alerts the audit log records (``--since``, ``--rule``, ``--open``);
``alerts scan`` runs the rules over the entries added since the last scan, records each
new alert in the audit log (``alert.raised``) and delivers it to the alert hook
(``[policy] alert_hook``) and to ``[monitor] alert_file``; ``alerts ack ID`` records an
acknowledgement (never by the principal the alert is about); ``alerts show ID`` prints one
alert with the audit entries behind it; ``alerts rules`` prints the rules in force. Every
string read from the log is escaped before it is printed. See docs/monitoring.md.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.errors import PolicyError, UsageError
from custody.textsafe import printable
from custody_cli import access_session, common

if TYPE_CHECKING:
    from custody.monitor import AlertRecord

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "alerts",
        help="monitoring alerts from the audit log: list, scan, acknowledge",
        description="List the alerts recorded in the audit log (all of them, or --open "
        "ones). 'alerts scan' runs the monitoring rules ([monitor] in custody.toml) over new "
        "audit entries and records and delivers what they find.",
    )
    _list_options(p)
    p.set_defaults(func=cmd_list)
    a = p.add_subparsers(dest="alerts_cmd", metavar="ACTION")

    s = a.add_parser(
        "scan",
        help="run the rules over new audit entries; record and deliver new alerts",
        description="Scan the audit entries added since the last scan (the state file "
        "HOME/monitor-state.json is checked against the log; a state file that does not "
        "match it is ignored and the whole log is scanned), record each new alert as an "
        "'alert.raised' entry, then run the alert hook and append to [monitor] alert_file.",
    )
    s.add_argument("--full", action="store_true", help="ignore the state file: scan from seq 0")
    common.add_standard(s)
    s.set_defaults(func=cmd_scan)

    k = a.add_parser("ack", help="acknowledge an alert (recorded in the audit log)")
    k.add_argument("id", metavar="ID", help="the alert id (or its first 6+ characters)")
    k.add_argument("--note", default="", metavar="TEXT", help="why it is closed")
    common.add_standard(k)
    access_session.add_principal_args(k)
    k.set_defaults(func=cmd_ack)

    w = a.add_parser("show", help="one alert and the audit entries behind it")
    w.add_argument("id", metavar="ID", help="the alert id (or its first 6+ characters)")
    common.add_standard(w)
    access_session.add_principal_args(w)
    w.set_defaults(func=cmd_show)

    r = a.add_parser("rules", help="the rules in force: kinds, thresholds, windows")
    common.add_standard(r)
    r.set_defaults(func=cmd_rules)


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="only alerts about entries since WHEN: an ISO time, or an age (90m, 24h, 7d)",
    )
    p.add_argument("--rule", metavar="NAME", help="only this rule (or kind)")
    p.add_argument("--open", action="store_true", help="only alerts not yet acknowledged")
    common.add_standard(p)
    access_session.add_principal_args(p)


def _since(text: str | None, now: float) -> int | None:
    if not text:
        return None
    t = text.strip().lower()
    if t[:-1].isdigit() and t[-1:] in _UNITS:
        return int(now) - int(t[:-1]) * _UNITS[t[-1]]
    try:
        from custody.clock import parse

        return int(parse(text.strip()).timestamp())
    except ValueError:
        raise UsageError(
            f"Not a time: {text[:40]!r}", "Give an ISO time (2026-01-31T08:00) or an age (24h)."
        ) from None


def _log(args: argparse.Namespace) -> Any:
    from custody.deployment import open_audit_log

    home = common.home_of(args)
    home.load()  # a missing home is a ConfigError before anything else
    return open_audit_log(home)


class _Scope:
    """What the acting principal may see (``--as NAME``, ``--token-file``, $CUSTODY_TOKEN):
    a super-admin or an auditor every alert; a service-admin the alerts about its services
    (a target under them, or a principal whose services all lie under them) and about
    itself; a service-user only the alerts about itself. Entries behind an alert are those
    the principal's audit view shows (``custody audit tail --as``)."""

    def __init__(self, name: str, role: str, services: tuple[str, ...], owners: Any, entry: Any):
        self.name, self.role, self.services = name, role, services
        self._owners = owners  # principal name -> its services (None: not a principal)
        self.entry = entry

    def _under(self, path: str) -> bool:
        return any(path == x or path.startswith(x.rstrip("/") + "/") for x in self.services)

    def alert(self, rec: Any) -> bool:
        if self.role in ("super-admin", "auditor") or rec.principal == self.name:
            return True
        if self.role != "service-admin":
            return False
        if rec.target and self._under(str(rec.target).partition(":")[2]):
            return True
        theirs = self._owners(rec.principal)
        return bool(theirs) and all(self._under(s) for s in theirs)


def _scope(args: argparse.Namespace) -> _Scope | None:
    """None: the local operator (super-admin), who sees every alert."""
    import os

    if not (args.as_principal or args.token_file or os.environ.get("CUSTODY_TOKEN")):
        return None
    with common.open_home(args, pin=False) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        entry = ac.audit_view(who, mfa_code=access_session.mfa_code(args))
        rows = {r.name: r.services for r in dep.store.principals()}
    return _Scope(who.name, who.role, who.services, rows.get, entry)


def _when(t: int) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M")


def cmd_list(args: argparse.Namespace) -> int:
    from custody.monitor import list_alerts

    since = _since(args.since, time.time())
    scope = _scope(args)
    log = _log(args)
    try:
        recs = list_alerts(log, since=since, rule=args.rule)
    finally:
        log.close()
    if scope is not None:
        recs = [r for r in recs if scope.alert(r)]
    if args.open:
        recs = [r for r in recs if r.open]
    if args.json:
        common.emit_json({"alerts": [r.to_json() for r in recs]})
        return 0
    if not recs:
        print("no alerts")
    for r in recs:
        state = "open" if r.open else f"acked by {printable(str(r.ack and r.ack.get('by')))}"
        seqs = ",".join(str(s) for s in r.seqs[:8]) + ("..." if len(r.seqs) > 8 else "")
        print(
            f"{r.id[:12]}\t{_when(r.time)}\t{printable(r.rule)}\t{printable(r.principal)}\t"
            f"{state}\t{printable(r.summary)}\tentries {seqs}"
        )
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from custody.audit.scope import actor_name
    from custody.monitor import STATE_FILE, load_config, scan

    home = common.home_of(args)
    with common.open_home(args, pin=False) as dep:
        rows = dep.store.secrets()
        config = load_config(home.config_path)
        hook = dep.config.alert_hook
        deployment_id = dep.config.deployment_id
    classes = {f"{r.env}:{r.path}": r.security_class for r in rows}
    versions = {f"{r.env}:{r.path}": r.current_version for r in rows if r.current_version}
    alert_file = home.resolve(config.alert_file) if config.alert_file else None
    log = _log(args)
    try:
        res = scan(
            log,
            home.root / STATE_FILE,
            config,
            actor=actor_name(),
            classes=classes,
            versions=versions,
            full=args.full,
            hook=hook,
            alert_file=Path(alert_file) if alert_file else None,
            deployment_id=deployment_id,
        )
    finally:
        log.close()
    if args.json:
        common.emit_json(res.to_json())
        return 0
    if res.rescan:
        print(f"scanned the whole log: {res.rescan}")
    print(f"scanned entries {res.start}..{res.end - 1}: {len(res.alerts)} new alert(s)")
    for a in res.alerts:
        print(f"  {a.id[:12]}\t{printable(a.rule)}\t{printable(a.actor)}\t{printable(a.summary)}")
    for p in res.deliveries:
        print(f"warning: {printable(p)}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from custody.audit.scope import actor_name
    from custody.monitor import ack

    scope = _scope(args)
    log = _log(args)
    try:
        if scope is not None:
            _visible_one(log, args.id, scope)
            if scope.role == "service-user":
                raise PolicyError(
                    f"{scope.name} (service-user) cannot acknowledge alerts",
                    "An auditor, a super-admin or the service's admin can.",
                )
        who = scope.name if scope is not None else actor_name()
        rec = ack(log, args.id.strip(), who, note=args.note[:300])
    finally:
        log.close()
    if args.json:
        common.emit_json({"ok": True, **rec.to_json()})
    else:
        print(f"acknowledged {rec.id} ({printable(rec.rule)}, {printable(rec.principal)})")
    return 0


def _visible_one(log: Any, ident: str, scope: _Scope) -> AlertRecord:
    """The alert *ident* if *scope* may see it; an alert it may not see is "no such
    alert", as if it did not exist (its existence says something too).

    Raises:
        UsageError: no such alert visible to the principal.
    """
    from custody.monitor import find, list_alerts

    return find([r for r in list_alerts(log) if scope.alert(r)], ident.strip())


def cmd_show(args: argparse.Namespace) -> int:
    from custody.monitor import evidence, find, list_alerts

    scope = _scope(args)
    log = _log(args)
    try:
        if scope is None:
            rec = find(list_alerts(log), args.id.strip())
        else:
            rec = _visible_one(log, args.id, scope)
        entries = evidence(log, rec)
    finally:
        log.close()
    if scope is not None:
        entries = [e for e in entries if scope.entry(e)]
    if args.json:
        common.emit_json({**rec.to_json(), "entries": entries})
        return 0
    j = rec.to_json()
    for k in ("id", "rule", "kind", "principal", "target", "summary", "state", "score"):
        print(f"{k:10} {printable(str(j[k]))}")
    print(f"{'time':10} {_when(rec.time)}")
    if rec.ack:
        print(
            f"{'ack':10} {printable(str(rec.ack.get('by')))}: {printable(str(rec.ack.get('note')))}"
        )
    print("entries:")
    for e in entries:
        det = json.dumps(e.get("details", {}), sort_keys=True)[:160]
        print(
            f"  {e['seq']}\t{_when(int(e['time']))}\t{printable(str(e['actor']))}\t"
            f"{printable(str(e['op']))}\t{printable(str(e['target']))}\t"
            f"{printable(str(e['outcome']))}\t{printable(det)}"
        )
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from custody.monitor import load_config

    config = load_config(common.home_of(args).config_path)
    if args.json:
        common.emit_json(config.to_json())
        return 0
    for r in config.rules:
        params = ", ".join(
            f"{k}={v}" for k, v in r.to_json().items() if k not in ("name", "kind", "enabled")
        )
        print(f"{r.name}\t{r.kind}\t{'on' if r.enabled else 'off'}\t{params}")
    return 0
