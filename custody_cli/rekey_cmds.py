"""``custody rotate due`` and ``custody rekey plan|run|verify|status|cancel-destroy``."""

from __future__ import annotations

import argparse
import sys

from custody.audit.scope import warning_sink
from custody_cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rot = sub.add_parser("rotate", help="rotation policy: which keys are due")
    rs = rot.add_subparsers(dest="rotate_command", metavar="ACTION", required=True)
    p = rs.add_parser(
        "due",
        help="list keys that are due, overdue and upcoming, with days left",
        description="Evaluate the rotation policy (custody.toml [policy.branches]). "
        "Warnings go to the audit log and the alert hook. Exit 0 even when keys "
        "are due; scripts read --json.",
    )
    p.add_argument("--no-alert", action="store_true", help="do not run the alert hook")
    common.add_standard(p)
    p.set_defaults(func=cmd_rotate_due)

    rk = sub.add_parser("rekey", help="move wrapped objects to the current KEK versions")
    ks = rk.add_subparsers(dest="rekey_command", metavar="ACTION", required=True)
    p = ks.add_parser("plan", help="show what a run would move and how long it should take")
    p.add_argument("--branch", choices=("data", "backup", "secrets"))
    p.add_argument("--due", action="store_true", help="include branches the policy says are due")
    common.add_standard(p)
    p.set_defaults(func=cmd_plan)

    p = ks.add_parser(
        "run",
        help="run or resume re-key jobs, then advance retirement",
        description="Move every object under an old KEK version to the current "
        "one, in durable batches; resumes an interrupted job. With --due, first "
        "rotate the KEKs the policy says are due. Idempotent: safe from cron.",
    )
    p.add_argument("--branch", choices=("data", "backup", "secrets"))
    p.add_argument("--due", action="store_true", help="rotate due KEKs first (for cron/systemd)")
    p.add_argument(
        "--batch",
        type=int,
        default=10_000,
        metavar="N",
        help="objects per transaction (default 10000)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another running job's lease (default: exit at once)",
    )
    p.add_argument(
        "--verify",
        choices=("sample", "all", "none"),
        default="sample",
        help="check rewrapped objects against their digests afterwards",
    )
    p.add_argument("--sample", type=int, default=1000, metavar="N")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes that claim batches side by side (PostgreSQL: SELECT ... FOR "
        "UPDATE SKIP LOCKED; SQLite: one writer at a time); a killed worker loses nothing",
    )
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_run)

    p = ks.add_parser("verify", help="decrypt objects and check their recorded digests")
    p.add_argument("--all", action="store_true", help="check every object (default: a sample)")
    p.add_argument("--sample", type=int, default=1000, metavar="N")
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_verify)

    p = ks.add_parser("status", help="versions and retirement stages, jobs, lease, policy")
    common.add_standard(p)
    p.set_defaults(func=cmd_status)

    p = ks.add_parser(
        "cancel-destroy", help="cancel a scheduled KEK or root destruction (adds a hold)"
    )
    p.add_argument("--branch", required=True, choices=("data", "backup", "secrets", "root"))
    p.add_argument("--version", required=True, type=int)
    common.add_standard(p)
    p.set_defaults(func=cmd_cancel_destroy)


def cmd_rotate_due(args: argparse.Namespace) -> int:
    from custody import policy
    from custody.clock import utcnow
    from custody.rekey.retire import key_ages

    now = utcnow()
    with common.open_home(args, pin=False) as dep:
        items = policy.evaluate(key_ages(dep.hierarchy, dep.config), dep.config.branches, now)
        warns = policy.warnings(items, deployment_id=dep.config.deployment_id, now=now)
        hooks = policy.emit_warnings(
            warns,
            alert_hook=None if args.no_alert else dep.config.alert_hook,
            audit=warning_sink(dep.home),
        )
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "now": now.isoformat(),
                "items": [i.to_json() for i in items],
                "warnings": list(warns),
                "alerts": [{"ok": h.ok, "detail": h.detail} for h in hooks],
            }
        )
        return 0
    for i in items:
        left = "-" if i.days_left is None else f"{i.days_left:>4}d"
        ver = f"v{i.version}" if i.version else "-"
        due = i.due_at.date().isoformat() if i.due_at else "-"
        print(f"{i.key:<8} {ver:<5} {i.key_class:<6} due {due}  {left}  {i.status}")
    for h in hooks:
        if not h.ok:
            print(f"warning: {h.detail}", file=sys.stderr)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from custody.clock import utcnow
    from custody.rekey import jobs as rekey

    with common.open_home(args, pin=False) as dep:
        p = rekey.plan(dep.hierarchy, dep.config, now=utcnow(), branch=args.branch, due=args.due)
    if args.json:
        common.emit_json({"ok": True, **p.to_json()})
        return 0
    for b in p.rotate:
        print(f"rotate {b} (policy: due)")
    if not p.items:
        print("nothing to move")
    for i in p.items:
        print(f"{i.branch}/v{i.from_version} -> v{i.to_version}: {i.objects} objects")
    print(
        f"total {p.total} objects; measured {p.rate:,.0f} objects/s; "
        f"estimated {p.eta_seconds:.1f} s"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from functools import partial

    from custody.deployment import open_home_store
    from custody.rekey import jobs as rekey
    from custody_cli.progress import progress_bar

    with common.open_home(args, pin=True) as dep:
        h = dep.hierarchy
        total = sum(n for _b, _v, n in rekey.pending(dep.store, args.branch))
        with progress_bar("re-keying", max(total, 1), enabled=not args.json) as advance:
            rep = rekey.run(
                h,
                dep.config,
                branch=args.branch,
                due=args.due,
                batch=args.batch,
                wait=args.wait,
                verify=args.verify,
                sample=args.sample,
                progress=advance,
                audit=warning_sink(dep.home),
                workers=args.workers,
                reopen=partial(open_home_store, dep.home, dep.config),
            )
    if args.json:
        common.emit_json(rep.to_json())
        return 0
    if rep.status == "busy" and rep.holder:
        print(
            f"another re-key job (pid {rep.holder.pid} on {rep.holder.host}) holds the lease "
            f"until {rep.holder.expires}; nothing done"
        )
        return 0
    for r in rep.rotated:
        print(f"rotated: {r} is now current")
    for j in rep.jobs:
        print(
            f"{j.branch}: moved {j.moved} objects to v{j.to_version} in {j.seconds:.1f} s "
            f"({j.rate:,.0f}/s); verified {j.verified}"
        )
    for s in rep.retired:
        print(f"retirement: {s}")
    for w in rep.warnings:
        print(f"warning: {w['message']}", file=sys.stderr)
    if rep.status == "nothing-to-do":
        print("nothing to do")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from custody_cli.progress import progress_bar

    with common.open_home(args, pin=True) as dep:
        h = dep.hierarchy
        total = sum(h.object_counts().values())
        n = total if args.all else min(args.sample, total)
        with progress_bar("verifying", max(n, 1), enabled=not args.json) as advance:
            rep = h.verify_objects(None if args.all else args.sample, progress=advance)
        h.forget_keys()
    if args.json:
        common.emit_json({"ok": rep.ok, "checked": rep.checked, "failed": list(rep.failed)})
    else:
        print(
            f"checked {rep.checked} objects: {rep.checked - len(rep.failed)} ok, "
            f"{len(rep.failed)} failed"
        )
        for uid in rep.failed[:20]:
            print(f"  FAILED {uid}")
    return 0 if rep.ok else 6


def cmd_status(args: argparse.Namespace) -> int:
    from custody.clock import utcnow
    from custody.rekey.status import status

    with common.open_home(args, pin=False) as dep:
        st = status(dep.hierarchy, dep.config, now=utcnow())
    if args.json:
        common.emit_json({"ok": True, **st})
        return 0
    print("versions:")
    for v in st["versions"]:
        extra = f" destroy after {v['destroy_after']}" if v["destroy_after"] else ""
        hold = " (hold)" if v["hold"] else ""
        print(f"  {v['branch']}/v{v['version']}\t{v['state']}{extra}{hold}\t{v['objects']} objects")
    print("jobs:")
    for j in st["jobs"][:5]:
        print(
            f"  #{j['id']} {j['branch']} -> v{j['to_version']} {j['state']} "
            f"{j['done']}/{j['total']}"
        )
    if st["lease"]:
        print(f"running: pid {st['lease']['pid']} until {st['lease']['expires']}")
    return 0


def cmd_cancel_destroy(args: argparse.Namespace) -> int:
    from custody.clock import utcnow
    from custody.rekey.retire import cancel_destroy

    with common.open_home(args, pin=False) as dep:
        k = cancel_destroy(dep.hierarchy, args.branch, args.version, now=utcnow())
    if args.json:
        common.emit_json(
            {"ok": True, "branch": args.branch, "version": k.version, "state": k.state.value}
        )
    else:
        print(
            f"{args.branch}/v{k.version} is {k.state.value}; its destruction was cancelled (hold)"
        )
    return 0
