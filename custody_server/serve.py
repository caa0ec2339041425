"""``python -m custody_server`` (``custody serve``): run the HTTPS API on uvicorn.

The PIN comes from ``--pin-file`` (its ``pin=`` line), ``$CUSTODY_PIN`` or a prompt, as in
the CLI; it logs the backend in to the token once and is not kept. uvicorn is given our own
:class:`ssl.SSLContext` (``ssl_context_factory``: TLS 1.3 only) and our protocol class
(:class:`custody_server.tls.PeerCertProtocol`: the verified client certificate in the
scope). Its access log is off; the server's own log lines carry method, route, status,
principal and time, never a header, a body or a value.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
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
from custody.hardening import harden_process
from custody.policy import emit_warnings
from custody.secretsource import read_secret
from custody.textsafe import printable_lines
from custody_server.api import ServerLimits
from custody_server.app import make_app
from custody_server.backend import Backend
from custody_server.guard import GuardLimits
from custody_server.tls import PeerCertProtocol, server_context

MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 512
_ALERT_FIELDS = ("kind", "days_left", "class", "stragglers", "revoked_version")


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
    p.add_argument("--workers", type=int, default=4, metavar="N", help="backend threads (4)")
    p.add_argument(
        "--bare-endpoint",
        action="store_true",
        help="also serve GET /api/v1/bare, a constant (the load test's baseline)",
    )
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


def serve(args: argparse.Namespace) -> int:
    home = Home(resolve_home(args.home))
    config = home.load()
    host, port = _bind(args.bind)
    ctx = server_context(
        Path(args.cert), Path(args.key), Path(args.client_ca) if args.client_ca else None
    )
    if args.lockout_after < 1 or args.max_body < 1:
        raise UsageError("--lockout-after and --max-body must be positive", "")
    audit = AuditLog.for_home(home)
    pin = read_secret(what="token user PIN", file=args.pin_file, file_key="pin", env="CUSTODY_PIN")
    if not 1 <= args.workers <= 32:
        raise UsageError("--workers must be 1..32", "")
    backend = Backend(
        home, pin, audit, alert=_alerts(home, audit, config.alert_hook), workers=args.workers
    )
    del pin
    limits = ServerLimits(
        max_body=args.max_body,
        guard=GuardLimits(
            rate=args.rate, lockout_after=args.lockout_after, lockout_seconds=args.lockout_seconds
        ),
    )
    app = make_app(backend, audit, limits=limits, bare_endpoint=args.bare_endpoint)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]

    def ssl_factory(_cfg: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return ctx

    cfg = uvicorn.Config(
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
    server = uvicorn.Server(cfg)
    print(f"custody serve: listening on https://{host}:{bound} (TLS 1.3 only)", file=sys.stderr)
    sys.stderr.flush()
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        backend.close()
        audit.close()
        sock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    harden_process()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    try:
        return serve(args)
    except CustodyError as err:
        print(f"error: {printable_lines(err.title)}", file=sys.stderr)
        if err.hint:
            print(f"hint: {printable_lines(err.hint)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
