"""``custody ca``: the client-certificate CA of ``custody serve``, its key on the token.

``custody ca init`` creates the CA key pair on the token (ECDSA P-256, never extractable)
and writes its certificate to ``HOME/client-ca.crt``: give it to ``custody serve
--client-ca``. ``custody ca issue NAME`` signs a client certificate whose CN is the
principal NAME (which must exist and be live): for a key made here (written 0600 beside the
certificate) or, with ``--csr``, for the key of the principal's own request. See
docs/api.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from custody.errors import UsageError
from custody.privatefile import PUBLIC, write_private
from custody_cli import access_session, common

CA_FILE = "client-ca.crt"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p0 = sub.add_parser("ca", help="the API's client-certificate CA (its key on the token)")
    ps = p0.add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    p = ps.add_parser("init", help="create the CA key on the token and HOME/client-ca.crt")
    p.add_argument("--name", default="custody client CA", metavar="TEXT", help="the CA's CN")
    p.add_argument("--days", type=int, default=3650, metavar="N", help="validity (3650)")
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_init)
    p = ps.add_parser("issue", help="sign a client certificate for a principal (CN = NAME)")
    p.add_argument("name", metavar="NAME", help="the principal")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes NAME.crt (and .key)")
    p.add_argument("--csr", metavar="FILE", help="sign this request's key instead of making one")
    p.add_argument("--days", type=int, default=90, metavar="N", help="validity (90)")
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_issue)


def _days(n: int) -> int:
    if not 1 <= n <= 3650:
        raise UsageError("--days must be 1..3650", "")
    return n


def cmd_init(args: argparse.Namespace) -> int:
    from custody.clock import utcnow
    from custody.pki import init_ca

    days = _days(args.days)
    home = common.home_of(args)
    out = home.root / CA_FILE
    if out.exists():
        raise UsageError(f"{out} already exists", "The CA is set up; nothing was changed.")
    with common.open_home(args, pin=True) as dep:
        pem = init_ca(dep.token, name=args.name, days=days, now=utcnow)
    write_private(out, pem, mode=PUBLIC, exclusive=True)
    if args.json:
        common.emit_json({"ok": True, "ca": str(out)})
    else:
        print(f"client CA certificate: {out} (give it to 'custody serve --client-ca')")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    from custody.clock import utcnow
    from custody.pki import issue

    days = _days(args.days)
    home = common.home_of(args)
    ca = home.root / CA_FILE
    if not ca.exists():
        raise UsageError(f"No client CA in {home.root}", "Run 'custody ca init' first.")
    out = Path(args.out_dir)
    crt, key = out / f"{args.name}.crt", out / f"{args.name}.key"
    if not out.is_dir() or crt.exists() or (not args.csr and key.exists()):
        raise UsageError(
            f"{out} is not a directory, or {args.name}.crt/.key exist", "Nothing was changed."
        )
    csr = None
    if args.csr:
        try:
            csr = Path(args.csr).read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read {args.csr}", "Check the path.") from exc
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        ac.principal(args.name)  # a live principal, or AuthError
        got = issue(dep.token, ca.read_bytes(), args.name, days=days, csr_pem=csr, now=utcnow)
    if got.key_pem is not None:
        write_private(key, got.key_pem, exclusive=True)
    write_private(crt, got.cert_pem, mode=PUBLIC, exclusive=True)
    info = {"ok": True, "name": got.name, "serial": f"{got.serial:x}", "not_after": got.not_after,
            "cert": str(crt), "key": str(key) if got.key_pem is not None else None}  # fmt: skip
    if args.json:
        common.emit_json(info)
    else:
        print(f"{got.name}: {crt} (serial {got.serial:x}, until {got.not_after})")
    return 0
