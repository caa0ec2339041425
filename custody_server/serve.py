"""``python -m custody_server`` (``custody serve``): run the HTTPS API on uvicorn.

The PIN comes from ``--pin-file`` (its ``pin=`` line), ``$CUSTODY_PIN`` or a prompt, as in
the CLI; it logs the backend in to the token once and is not kept. uvicorn is given our own
:class:`ssl.SSLContext` (``ssl_context_factory``: TLS 1.3 only) and our protocol class
(:class:`custody_server.tls.PeerCertProtocol`: the verified client certificate in the
scope). Its access log is off; the server's own log lines carry method, route, status,
principal and time, never a header, a body or a value.

``--workers N`` runs N server processes on one port (pre-fork: the port is bound and the PIN
read once, then N children are forked one after the other, each binding its own socket to
the port with ``SO_REUSEPORT`` and opening the deployment with its own token session, store
connections and ``--threads`` backend threads; the kernel spreads the connections over
them). They share lockout and rate-limit state through
``HOME/guard.db`` (:class:`custody.store.sqlite_guard.GuardDb`) and the audit log's chain
through the store. With a PostgreSQL store the lockout state is in the store instead
(:class:`custody.store.postgres_guard.PostgresLockout`), so replicas on several hosts count
failed authentications together; the rate windows stay per host (docs/scaling.md). The
parent only supervises: SIGTERM or SIGINT stops every child; a child that dies stops the
others and the server exits non-zero (run it under a supervisor).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from custody.audit.log import AuditLog
from custody.config import Home, resolve_home
from custody.errors import CustodyError, UsageError
from custody.hardening import die_with_parent, harden_process
from custody.policy import emit_warnings
from custody.secretsource import read_secret
from custody.textsafe import printable_lines
from custody_server import scheduler
from custody_server.api import ServerLimits
from custody_server.app import make_app
from custody_server.backend import Backend
from custody_server.guard import GuardLimits
from custody_server.tls import PeerCertProtocol, server_context

MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 512
GUARD_DB = "guard.db"
_ALERT_FIELDS = (
    "kind",
    "days_left",
    "class",
    "stragglers",
    "revoked_version",
    "reason",
    "distrusted",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="custody serve",
        allow_abbrev=False,
        description="Serve the custody HTTPS API (TLS 1.3 only): the native API under "
        "/api/v1 and a Vault KV v2-compatible surface under /v1. See docs/api.md.",
    )
    p.add_argument("--home", metavar="DIR", help="custody home (default: $CUSTODY_HOME)")
    p.add_argument(
        "--pin-file", metavar="FILE", help="the token PIN ('pin=' line); else $CUSTODY_PIN"
    )
    p.add_argument("--cert", required=True, metavar="PEM", help="the server certificate chain")
    p.add_argument("--key", required=True, metavar="PEM", help="the server's private key")
    p.add_argument(
        "--client-ca",
        metavar="PEM",
        help="CA for client certificates (mutual TLS; the certificate's CN names the principal)",
    )
    p.add_argument("--bind", default="127.0.0.1:8200", metavar="HOST:PORT", help="(127.0.0.1:8200)")
    p.add_argument("--rate", default="200/second", metavar="LIMIT", help="per principal")
    p.add_argument("--max-body", type=int, default=64 * 1024, metavar="BYTES")
    p.add_argument("--lockout-after", type=int, default=5, metavar="N")
    p.add_argument("--lockout-seconds", type=int, default=300, metavar="S")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes (1)")
    p.add_argument(
        "--threads", type=int, default=4, metavar="N", help="backend threads per process (4)"
    )
    p.add_argument(
        "--bare-endpoint",
        action="store_true",
        help="also serve GET /api/v1/bare, a constant (the load test's baseline)",
    )
    scheduler.add_arguments(p)
    return p


def _bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"Not HOST:PORT: {text[:60]!r}", "e.g. --bind 127.0.0.1:8200")
    return host.strip("[]"), int(port)


def _alerts(home: Home, audit: AuditLog, hook: str | None) -> Callable[[Mapping[str, Any]], None]:
    def alert(w: Mapping[str, Any]) -> None:
        def record(x: Mapping[str, Any]) -> None:
            det = {k: v for k, v in x.items() if k in _ALERT_FIELDS}
            audit.append("secret alert", f"{x['env']}:{x['path']}", "custody-server", details=det)

        emit_warnings([w], alert_hook=hook, audit=record)

    return alert


def _exit_on_term(_sig: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> int:
    home = Home(resolve_home(args.home))
    config = home.load()
    host, port = _bind(args.bind)
    ctx = server_context(
        Path(args.cert), Path(args.key), Path(args.client_ca) if args.client_ca else None
    )
    if args.lockout_after < 1 or args.max_body < 1:
        raise UsageError("--lockout-after and --max-body must be positive", "")
    if not 1 <= args.threads <= 32 or not 1 <= args.workers <= 64:
        raise UsageError("--threads must be 1..32 and --workers 1..64", "")
    held = {"pin": read_secret(what="token user PIN", file=args.pin_file, file_key="pin",
                               env="CUSTODY_PIN")}  # fmt: skip
    sock = _socket(host, port, reuse_port=args.workers > 1)
    bound = sock.getsockname()[1]
    limits = ServerLimits(
        max_body=args.max_body,
        guard=GuardLimits(
            rate=args.rate, lockout_after=args.lockout_after, lockout_seconds=args.lockout_seconds
        ),
        guard_db=home.root / GUARD_DB,
        processes=args.workers,
        lockout_store=home.store_location(config),  # PostgreSQL: shared by every replica
        lockout_password_file=home.store_password_file(config),
    )

    def run(ready: Callable[[], None], sock: socket.socket) -> None:
        audit = AuditLog.for_home(home)
        try:
            backend = Backend(
                home, held["pin"], audit, alert=_alerts(home, audit, config.alert_hook),
                workers=args.threads,
            )  # fmt: skip
        except BaseException:
            audit.close()
            raise
        try:
            # --schedule: the jobs, under the lease in the store (with several processes,
            # each contends for it and one runs them)
            sched = scheduler.start(home, args, held["pin"])
        except BaseException:
            backend.close()
            audit.close()
            raise
        held.clear()  # logged in: the PIN is not kept
        app = make_app(backend, audit, limits=limits, bare_endpoint=args.bare_endpoint)
        server = uvicorn.Server(_uvicorn_config(app, ctx))
        sock.listen(2048)  # connections queue from now on: "listening" is true when printed
        ready()
        # uvicorn re-raises the SIGTERM it caught once it has shut down: exit through the
        # finally below then (the scheduler's lease released, the backend closed), not by
        # the signal
        signal.signal(signal.SIGTERM, _exit_on_term)
        try:
            asyncio.run(server.serve(sockets=[sock]))
        finally:
            if sched is not None:
                sched.stop()
            backend.close()
            audit.close()

    try:
        if args.workers == 1:

            def say() -> None:
                print(f"custody serve: listening on https://{host}:{bound} (TLS 1.3 only)",
                      file=sys.stderr)  # fmt: skip
                sys.stderr.flush()

            run(say, sock)
            return 0

        def child(ready: Callable[[], None]) -> None:
            own = _socket(host, bound, reuse_port=True)  # this process's accept queue
            try:
                run(ready, own)
            finally:
                own.close()

        return _prefork(args.workers, child, held.clear, f"https://{host}:{bound}")
    finally:
        held.clear()  # the PIN is not kept (the children logged in with it)
        sock.close()


def _socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A socket bound to (host, port). With *reuse_port*, every process binds its own to
    the same port (SO_REUSEPORT: the kernel spreads connections over their accept queues;
    only processes of the same user may join)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _uvicorn_config(app: Any, ctx: ssl.SSLContext) -> uvicorn.Config:
    def ssl_factory(_cfg: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return ctx

    return uvicorn.Config(
        app,
        http=PeerCertProtocol,
        ssl_context_factory=ssl_factory,
        access_log=False,
        # no X-Forwarded-For: uvicorn trusts it from 127.0.0.1 by default, which would let a
        # local client pick its own address and walk out of a lockout
        proxy_headers=False,
        ws="none",  # no WebSocket upgrades
        log_config=None,
        lifespan="off",
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        server_header=False,
        timeout_keep_alive=30,
        limit_concurrency=MAX_CONNECTIONS,  # beyond it: 503, so a flood cannot exhaust the host
    )


def _prefork(
    n: int, run: Callable[[Callable[[], None]], None], forget: Callable[[], None], url: str
) -> int:
    """Fork *n* children that each call ``run(ready)`` (each on a socket of its own), one
    after the other: the next is forked once the last is ready, so that first-use keys on
    the token are made once. A child that fails to start stops the rest (exit with its
    status); then supervise. Nothing touches the token or the store before the fork."""
    children: list[int] = []
    stopping = False
    parent = os.getpid()

    def stop(_sig: int = 0, _frame: Any = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = True
    for _ in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: serve until told to stop, or until the parent is gone
            os.close(r)
            die_with_parent(signal.SIGTERM)
            if os.getppid() != parent:
                os._exit(1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)

            os._exit(_child_main(run, functools.partial(_ready, w)))
        children.append(pid)
        os.close(w)
        try:
            ok = os.read(r, 1) == b"."  # b"": it exited before it was ready
        except InterruptedError:
            ok = False
        os.close(r)
        if not ok or stopping:
            started = False
            break
    forget()  # the parent drops the PIN once every child has its copy
    if started:
        print(f"custody serve: listening on {url} (TLS 1.3 only, {n} processes)",
              file=sys.stderr)  # fmt: skip
        sys.stderr.flush()
    else:
        stop()
    status = 0 if started else 1
    left = set(children)
    while left:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        left.discard(pid)
        code = os.waitstatus_to_exitcode(st)
        if code > 0 and status in (0, 1) and not (stopping and started):
            status = code  # the failed child's own exit status
        if not stopping:  # one died: the server stops as a whole
            status = status or 1
            stop()
    return status


def _ready(w: int) -> None:
    os.write(w, b".")
    os.close(w)


def _child_main(run: Callable[[Callable[[], None]], None], ready: Callable[[], None]) -> int:
    try:
        run(ready)
    except CustodyError as err:
        _report(err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as done:  # SIGTERM after uvicorn's shutdown (_exit_on_term)
        return done.code if isinstance(done.code, int) else 0
    except BaseException:  # a child never returns into the parent's code
        logging.getLogger("custody_server").exception("server process failed")
        return 1
    return 0


def _report(err: CustodyError) -> None:
    print(f"error: {printable_lines(err.title)}", file=sys.stderr)
    if err.hint:
        print(f"hint: {printable_lines(err.hint)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    harden_process()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    try:
        return serve(args)
    except CustodyError as err:
        _report(err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
