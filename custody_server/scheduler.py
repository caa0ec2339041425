"""The scheduler inside ``custody serve``: the periodic jobs on exactly one replica at a time.

``custody serve --schedule`` starts :class:`custody.schedule.Scheduler` on a thread of its
own, with its own store connection (and one more for the lease heartbeat), over the jobs
of :mod:`ceremonies.schedule_jobs`: key rotation (``rekey run --due``), secret rotation
(``secret rotate --due``, with ``--schedule-key``), checkpoint export and expiry warnings.
Every replica started with ``--schedule`` competes for the one leader lease in the shared
store (modelled on OpenBao's HA lock). Only the holder runs the jobs; the others stand by
and take over within ``--schedule-lease-seconds`` when it dies. The serving threads are
not involved: a replica serves requests whether or not it leads.

The PIN: the jobs open the token per run. With ``--pin-file`` or ``$CUSTODY_PIN`` it is
read again at each run (a rotated file is picked up). A prompted PIN is kept for the
server's life, the same way as with ``custody schedule run``.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ceremonies.participants import load_signer
from ceremonies.schedule_jobs import JOBS, jobs
from ceremonies.secret_rotation import parse_duration
from custody.audit.scope import run_audited
from custody.clock import utcnow
from custody.config import Home
from custody.deployment import PinSource, open_home_store
from custody.errors import UsageError
from custody.schedule import Scheduler, TickReport
from custody.secretsource import read_secret
from custody.textsafe import printable

log = logging.getLogger("custody.scheduler")
DEFAULT_JOBS = ("key-rotation", "checkpoint", "expiry-warnings")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scheduler (one replica at a time, under the leader lease)")
    g.add_argument(
        "--schedule",
        action="store_true",
        help="also run the periodic jobs while this replica holds the scheduler lease",
    )
    g.add_argument(
        "--schedule-interval",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds between two runs of the same job (3600)",
    )
    g.add_argument(
        "--schedule-lease-seconds",
        type=int,
        default=15,
        metavar="N",
        help="the leader lease; a dead leader is replaced within it (15)",
    )
    g.add_argument(
        "--schedule-job",
        action="append",
        metavar="NAME",
        help=f"run only this job (repeatable; default: {', '.join(DEFAULT_JOBS)}; "
        "also: secret-rotation, with --schedule-key)",
    )
    g.add_argument("--schedule-export", metavar="DIR", help="the checkpoint job also writes to DIR")
    g.add_argument("--schedule-key", metavar="FILE", help="signs secret-rotation records")
    g.add_argument(
        "--schedule-passphrase-file", metavar="FILE", help="passphrase of --schedule-key"
    )
    g.add_argument("--schedule-overlap", default="24h", metavar="DURATION", help="(24h)")
    g.add_argument(
        "--host-name",
        metavar="NAME",
        help="the host name this replica records in the lease (default: this machine's)",
    )


class Running:
    """The scheduler thread of one ``custody serve``; :meth:`stop` releases the lease."""

    def __init__(self, sched: Scheduler, thread: threading.Thread, stop: threading.Event) -> None:
        self.scheduler, self._thread, self._stop = sched, thread, stop

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def start(home: Home, args: argparse.Namespace, pin: str) -> Running | None:
    """Start the scheduler thread when ``--schedule`` is given (else None). *pin* is the
    PIN ``custody serve`` read; it is kept only when it was prompted for (a file or
    ``$CUSTODY_PIN`` is read again at each run instead).

    Raises:
        UsageError: a bad job name or setting. ConfigError: a bad --schedule-key.
    """
    if not args.schedule:
        return None
    if args.schedule_interval <= 0 or args.schedule_lease_seconds < 1:
        raise UsageError(
            "--schedule-interval and --schedule-lease-seconds must be positive", "e.g. 60 and 15."
        )
    only = tuple(args.schedule_job or DEFAULT_JOBS)
    bad = [j for j in only if j not in JOBS]
    if bad:
        raise UsageError(f"Unknown job {bad[0][:40]!r}", f"Jobs: {', '.join(JOBS)}.")
    signer = None
    if args.schedule_key:
        pw = read_secret(
            what="key passphrase", file=args.schedule_passphrase_file, env="CUSTODY_PASSPHRASE"
        )
        signer = load_signer(Path(args.schedule_key), pw)
        del pw
    source: PinSource = pin
    if args.pin_file or os.environ.get("CUSTODY_PIN"):
        file = args.pin_file

        def source() -> str:
            return read_secret(what="token user PIN", file=file, file_key="pin", env="CUSTODY_PIN")

    config = home.load()
    todo = jobs(
        home,
        pin=source,
        signer=signer,
        export=Path(args.schedule_export) if args.schedule_export else None,
        overlap_seconds=parse_duration(args.schedule_overlap),
        only=only,
    )

    def reopen() -> Any:
        return open_home_store(home, config)

    def audited(op: str, target: str, details: Mapping[str, object], body: Any) -> int:
        return run_audited(home, op, target, details, body)

    stop = threading.Event()
    store = reopen()
    sched = Scheduler(
        store,
        todo,
        audited=audited,
        clock=utcnow,
        period=args.schedule_interval,
        ttl=args.schedule_lease_seconds,
        host=args.host_name,
        reopen=reopen,
    )
    leading: list[bool | None] = [None]  # logged at the first tick, then on each change

    def report(rep: TickReport) -> None:
        if rep.leader != leading[0]:
            leading[0] = rep.leader
            state = "leader: running the jobs" if rep.leader else "standby: another replica leads"
            log.warning("scheduler %s: %s", printable(sched.replica), state)
        for r in rep.ran:
            log.warning("scheduler ran %s: %s (%s)", r.job, r.outcome, printable(r.detail))

    def main() -> None:
        try:
            while not stop.is_set():
                try:
                    sched.run(stop, on_tick=report)
                except Exception as exc:  # noqa: BLE001 -- a store outage: stand by, retry
                    sched.held = None
                    log.warning("scheduler tick failed (%s); retrying", type(exc).__name__)
                    stop.wait(min(sched.ttl / 3, 5.0))
        finally:
            store.close()

    t = threading.Thread(target=main, name="custody-scheduler", daemon=True)
    t.start()
    return Running(sched, t, stop)


__all__ = ["DEFAULT_JOBS", "Running", "add_arguments", "start"]
