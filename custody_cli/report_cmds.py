"""``custody report ...``: the compliance report and its evidence bundle (docs/compliance.md).

``report compliance`` computes the report from the home's store and audit log (no token,
no PIN), or offline from a bundle written by ``report export`` (``--bundle DIR``: no home
at all). Text by default, ``--json`` for scripts, ``--html`` for a page (every value
escaped). The report holds names, dates and counts, never a value.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from custody.errors import UsageError
from custody.privatefile import write_private
from custody_cli import common

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    t = text.strip().lower()
    mult = _UNITS.get(t[-1:], 0)
    num = t[:-1] if mult else t
    if not num.isdigit():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 36h, 7d)")
    return int(num) * (mult or 1)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "report",
        help="compliance report, and its evidence bundle for offline recomputation",
        description="Reports computed only from the store and the audit log.",
    )
    rs = r.add_subparsers(dest="report_command", metavar="ACTION", required=True)

    p = rs.add_parser(
        "compliance",
        help="overdue rotations, ownerless secrets, MFA, drills, alerts, checkpoints",
        description="Overdue and soon-due rotations (keys and secrets), secrets without an "
        "owner or an expiry, grants that outlived their need, principals without MFA, "
        "custodians without a drill on the active epoch, open alerts, and the audit log's "
        "last pinned checkpoint and its age. From the home, or offline from --bundle DIR "
        "(written by 'custody report export'). A section this deployment cannot answer is "
        "reported as not available, with the reason.",
    )
    common.add_home(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--html", action="store_true", help="print one HTML page")
    p.add_argument("--out", metavar="FILE", help="write the report here instead (mode 0600)")
    p.add_argument("--bundle", metavar="DIR", help="compute offline from an exported bundle")
    p.add_argument(
        "--within",
        type=int,
        default=30,
        metavar="DAYS",
        help="a secret expiring within DAYS is soon due (default 30)",
    )
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="FILE",
        help="pinned audit signing key (JSON or 64 hex); repeatable; then only checkpoints "
        "signed by a pinned key count",
    )
    p.add_argument(
        "--max-age",
        type=_duration,
        default=86400,
        metavar="AGE",
        help="a newest checkpoint older than this is a finding (default 24h; e.g. 90m, 7d)",
    )
    p.add_argument(
        "--at",
        metavar="TIME",
        help="compute as of this ISO-8601 time (default now), e.g. a bundle's collection time",
    )
    p.set_defaults(func=cmd_compliance)

    p = rs.add_parser(
        "export",
        help="write the report's evidence (store metadata, audit log) to a new directory",
        description="Write what the compliance report is computed from to DIR (new or "
        "empty; files 0600): the store's metadata (no value, ciphertext or key), every "
        "audit entry and checkpoint, and a manifest of their SHA-256 digests.",
    )
    p.add_argument("dir", metavar="DIR")
    common.add_standard(p)
    p.set_defaults(func=cmd_export)


def _gather(args: argparse.Namespace, now: datetime) -> Any:
    from custody.deployment import open_audit_log
    from custody.report import gather
    from custody.secrets import SecretPolicy

    home = common.home_of(args)
    with common.open_home(args, pin=False) as dep:
        log = open_audit_log(home)
        try:
            return gather(
                dep.store,
                log,
                dep.config,
                SecretPolicy.for_home(home.config_path),
                now=now,
                source=f"home {home.root}",
            )
        finally:
            log.close()


def _trust(paths: list[str]) -> Any:
    from custody.audit.signers import parse_trust_key

    out = []
    for path in paths:
        try:
            out.append(parse_trust_key(Path(path).read_bytes(), default_name=Path(path).stem))
        except OSError as exc:
            raise UsageError(f"Cannot read trust key {path}", "Check the --trust path.") from exc
    return out or None


def cmd_compliance(args: argparse.Namespace) -> int:
    from custody.clock import parse, utcnow
    from custody.report import compliance_report, load_bundle, to_html, to_text

    if args.within < 0:
        raise UsageError("--within must not be negative", "Give a number of days.")
    try:
        now = parse(args.at) if args.at else utcnow()
    except ValueError as exc:
        raise UsageError("--at is not an ISO-8601 time", "e.g. 2026-12-03T08:00:00Z") from exc
    trust = _trust(args.trust)
    ev = load_bundle(Path(args.bundle)) if args.bundle else _gather(args, utcnow())
    rep = compliance_report(ev, now=now, within_days=args.within, trust=trust, max_age=args.max_age)
    if args.json:
        import json

        text = json.dumps(rep, indent=2, sort_keys=True) + "\n"
    elif args.html:
        text = to_html(rep)
    else:
        text = to_text(rep)
    if args.out:
        write_private(args.out, text.encode("utf-8"))
        print(f"wrote the compliance report to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from custody.clock import utcnow
    from custody.report import write_bundle

    ev = _gather(args, utcnow())
    manifest = write_bundle(ev, Path(args.dir))
    if args.json:
        common.emit_json({"ok": True, "dir": args.dir, **manifest})
    else:
        print(
            f"wrote {manifest['entries']} audit entries and the store's metadata to {args.dir}; "
            f"recompute offline: custody report compliance --bundle {args.dir}"
        )
    return 0
