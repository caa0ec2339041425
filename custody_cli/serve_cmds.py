"""``custody serve``: hand over to the API server's own entry point (``python -m custody_server``).

The CLI and the server are front ends side by side; neither imports the other. This command
checks the home and the options, then replaces the process with the server (same
interpreter, same environment, so ``$CUSTODY_PIN`` reaches it; a ``--pin-file`` is passed
as an absolute path). See docs/api.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from custody_cli import common

_PATHS = ("pin_file", "cert", "key", "client_ca")
_VALUES = ("bind", "rate", "max_body", "lockout_after", "lockout_seconds", "workers", "threads")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the HTTPS API (TLS 1.3 only; native API and Vault KV v2 surface)",
        description="Serve --home's secrets over HTTPS, TLS 1.3 only: the native API under "
        "/api/v1 and a Vault KV v2-compatible surface under /v1 (hvac works unchanged). "
        "Callers authenticate with a bearer token or a client certificate (--client-ca); "
        "every request is authorised by custody's access control and audited. The token "
        "PIN comes from --pin-file or $CUSTODY_PIN. See docs/api.md.",
    )
    common.add_home(p)
    common.add_pin(p)
    p.add_argument("--cert", required=True, metavar="PEM", help="the server certificate chain")
    p.add_argument("--key", required=True, metavar="PEM", help="the server's private key")
    p.add_argument(
        "--client-ca",
        metavar="PEM",
        help="CA for client certificates (mutual TLS; the certificate's CN names the principal)",
    )
    p.add_argument(
        "--bind",
        default="127.0.0.1:8200",
        metavar="HOST:PORT",
        help="(127.0.0.1:8200; port 0: any)",
    )
    p.add_argument(
        "--rate", default="200/second", metavar="LIMIT", help="per principal (200/second)"
    )
    p.add_argument("--max-body", type=int, default=64 * 1024, metavar="BYTES", help="(65536)")
    p.add_argument(
        "--lockout-after", type=int, default=5, metavar="N", help="failed authentications (5)"
    )
    p.add_argument("--lockout-seconds", type=int, default=300, metavar="S", help="(300)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes on one socket, sharing lockout and rate state (1)",
    )
    p.add_argument(
        "--threads", type=int, default=4, metavar="N", help="backend threads per process (4)"
    )
    p.add_argument(
        "--bare-endpoint",
        action="store_true",
        help="also serve GET /api/v1/bare, a constant (the load test's baseline)",
    )
    _add_schedule(p)
    p.set_defaults(func=cmd_serve)


# the scheduler's options, mirrored from custody_server.scheduler (the CLI cannot import it)
_SCHEDULE_PATHS = ("schedule_export", "schedule_key", "schedule_passphrase_file")
_SCHEDULE_VALUES = ("schedule_interval", "schedule_lease_seconds", "schedule_overlap", "host_name")


def _add_schedule(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scheduler (one replica at a time, under the leader lease)")
    g.add_argument(
        "--schedule",
        action="store_true",
        help="also run the periodic jobs (key rotation, checkpoint, expiry warnings; secret "
        "rotation with --schedule-key) while this replica holds the scheduler lease",
    )
    g.add_argument("--schedule-interval", type=float, default=3600.0, metavar="S",
                   help="seconds between two runs of the same job (3600)")  # fmt: skip
    g.add_argument("--schedule-lease-seconds", type=int, default=15, metavar="N",
                   help="the leader lease; a dead leader is replaced within it (15)")  # fmt: skip
    g.add_argument("--schedule-job", action="append", metavar="NAME",
                   help="run only this job (repeatable)")  # fmt: skip
    g.add_argument("--schedule-export", metavar="DIR", help="the checkpoint job also writes to DIR")
    g.add_argument("--schedule-key", metavar="FILE", help="signs secret-rotation records")
    g.add_argument("--schedule-passphrase-file", metavar="FILE", help="passphrase of the key")
    g.add_argument("--schedule-overlap", default="24h", metavar="DURATION", help="(24h)")
    g.add_argument("--host-name", metavar="NAME", help="the host name recorded in the lease")


def _schedule_argv(args: argparse.Namespace) -> list[str]:
    if not args.schedule:
        return []
    argv = ["--schedule"]
    for name in _SCHEDULE_PATHS:
        v = getattr(args, name, None)
        if v:
            argv += ["--" + name.replace("_", "-"), str(Path(v).expanduser().resolve())]
    for name in _SCHEDULE_VALUES:
        v = getattr(args, name, None)
        if v is not None:
            argv += ["--" + name.replace("_", "-"), str(v)]
    for job in args.schedule_job or ():
        argv += ["--schedule-job", job]
    return argv


def server_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m custody_server`` argument list for parsed ``custody serve`` args."""
    home = common.home_of(args)
    argv = [sys.executable, "-m", "custody_server", "--home", str(home.root)]
    for name in _PATHS:
        v = getattr(args, name, None)
        if v:
            argv += ["--" + name.replace("_", "-"), str(Path(v).expanduser().resolve())]
    for name in _VALUES:
        argv += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    if args.bare_endpoint:
        argv.append("--bare-endpoint")
    return argv + _schedule_argv(args)


def cmd_serve(args: argparse.Namespace) -> int:
    home = common.home_of(args)
    home.load()  # fail here, before handing over, if there is no deployment
    argv = server_argv(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, an argument list
