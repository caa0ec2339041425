"""``custody schedule run|status``: the periodic jobs, on one replica at a time.

``run`` ticks :class:`custody.schedule.Scheduler` over the jobs of
:mod:`ceremonies.schedule_jobs`; only the replica holding the leader lease runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from custody.errors import UsageError
from custody.textsafe import printable
from custody_cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("schedule", help="periodic jobs, run by one replica under a leader lease")
    ss = s.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    p = ss.add_parser(
        "run",
        help="run the due jobs while this replica holds the scheduler lease",
        description="Each tick takes or renews the leader lease in the store; only the "
        "leader runs the jobs (key rotation, secret rotation, checkpoint export, expiry "
        "warnings), each once per --interval, each audited. Run one per replica: if the "
        "leader dies, another takes over within --lease-seconds.",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="one tick, then exit (for cron): exit 1 when a job it ran failed",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds between two runs of the same job (default 3600)",
    )
    p.add_argument(
        "--lease-seconds",
        type=int,
        default=15,
        metavar="N",
        help="the leader lease time; a dead leader is replaced within it (default 15)",
    )
    p.add_argument(
        "--job",
        action="append",
        metavar="NAME",
        help="run only this job (repeatable): key-rotation, secret-rotation, checkpoint, "
        "expiry-warnings",
    )
    p.add_argument(
        "--host-name",
        metavar="NAME",
        help="the host name this replica records in the lease (default: this machine's); "
        "give one per host where containers share a name",
    )
    p.add_argument("--export", metavar="DIR", help="the checkpoint job also writes to DIR")
    p.add_argument("--key", metavar="FILE", help="signs secret-rotation records")
    p.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key")
    p.add_argument("--overlap", default="24h", metavar="DURATION", help="e.g. 1h, 7d (24h)")
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_run)

    p = ss.add_parser("status", help="the leader, its lease expiry, each job's last run")
    common.add_standard(p)
    p.set_defaults(func=cmd_status)


def _print_run(r: Mapping[str, Any]) -> None:
    print(f"ran {r['job']}: {r['outcome']} ({printable(r['detail'])})", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from ceremonies.schedule_jobs import JOBS, jobs
    from ceremonies.secret_rotation import parse_duration
    from custody.audit.scope import run_audited
    from custody.clock import utcnow
    from custody.deployment import open_home_store
    from custody.schedule import Scheduler, TickReport

    if args.interval <= 0 or args.lease_seconds < 1:
        raise UsageError("--interval and --lease-seconds must be positive", "e.g. 60 and 15.")
    only = tuple(args.job or JOBS)
    bad = [j for j in only if j not in JOBS]
    if bad:
        raise UsageError(f"Unknown job {bad[0][:40]!r}", f"Jobs: {', '.join(JOBS)}.")
    overlap = parse_duration(args.overlap)
    signer = None
    if args.key:
        from custody_cli.ceremony_drive import signer_of

        signer = signer_of(args)
    home = common.home_of(args)
    config = home.load()
    pin: Any = lambda: common.user_pin(args)  # noqa: E731 -- re-read per run (a rotated file)
    if not args.pin_file and not os.environ.get("CUSTODY_PIN"):
        pin = common.user_pin(args)  # a prompt: asked once, not at every run
    todo = jobs(
        home,
        pin=pin,
        signer=signer,
        export=Path(args.export) if args.export else None,
        overlap_seconds=overlap,
        only=only,
    )
    store = open_home_store(home, config)

    def audited(op: str, target: str, details: Mapping[str, object], body: Any) -> int:
        return run_audited(home, op, target, details, body)

    sched = Scheduler(
        store,
        todo,
        audited=audited,
        clock=utcnow,
        period=args.interval,
        ttl=args.lease_seconds,
        host=args.host_name,
        reopen=lambda: open_home_store(home, config),  # the heartbeat's own connection
    )
    leading = [False]

    def report(rep: TickReport) -> None:
        changed = rep.leader != leading[0]
        leading[0] = rep.leader
        if args.json:  # one line per tick that ran a job or changed the leadership
            if changed or rep.ran or args.once:
                doc = {"leader": rep.leader, "ran": [r.to_json() for r in rep.ran]}
                print(json.dumps(doc, sort_keys=True), flush=True)
            return
        if changed:
            state = "leader: running the jobs" if rep.leader else "standby: another replica leads"
            print(f"{sched.replica}: {state}", flush=True)
        for r in rep.ran:
            _print_run(r.to_json())

    try:
        if args.once:
            rep = sched.tick()
            if not args.json and not rep.leader:
                print("another replica holds the scheduler lease; nothing run")
            else:
                report(rep)
                if not args.json and not rep.ran:
                    print(f"no job is due (each runs once per {args.interval:g} s)")
            sched.close()
            return 1 if any(r.outcome != "ok" for r in rep.ran) else 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        sched.run(stop, on_tick=report)
        return 0
    finally:
        store.close()


def cmd_status(args: argparse.Namespace) -> int:
    from ceremonies.schedule_jobs import JOBS
    from custody.clock import utcnow
    from custody.schedule import status

    with common.open_home(args, pin=False) as dep:
        st = status(dep.store, JOBS, utcnow())
    if args.json:
        common.emit_json(st)
        return 0
    ld = st["leader"]
    if ld is None:
        print("leader: none (no replica has taken the scheduler lease)")
    else:
        state = "expired" if ld["expired"] else "until"
        print(f"leader: {printable(ld['host'])} pid {ld['pid']}, lease {state} {ld['expires']}")
    for name, r in st["jobs"].items():
        if r is None:
            print(f"{name:<16} never run")
        else:
            print(
                f"{name:<16} {r['outcome']:<8} {r['started']} on {printable(r['replica'])}"
                f"  {printable(r['detail'])}"
            )
    return 0
