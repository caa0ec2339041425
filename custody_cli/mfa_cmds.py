"""``custody mfa ...``: TOTP second factors of principals (docs/mfa.md).

enrol (a new TOTP secret from the token's RNG, wrapped under the ``secrets`` KEK; shown
once as a terminal QR code and a 0600 PNG), verify (a code from a hidden prompt or stdin,
never argv), list (state only, no secret) and reset (an enrolled super-admin's key).
:class:`custody.access.mfa.Mfa` writes every audit entry itself (enrolment and reset before
they act, each verification's outcome, each lockout), so these commands are not also
wrapped by :mod:`custody_cli.audited`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from custody.errors import UsageError
from custody.privatefile import write_private
from custody_cli import access_session, common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser(
        "mfa",
        help="TOTP second factors: enrol, verify, list, reset",
        description="TOTP (RFC 6238: SHA-1, 6 digits, 30 s) second factors of principals. "
        "The secret is wrapped under the 'secrets' KEK branch; codes never come from argv.",
    )
    ms = m.add_subparsers(dest="mfa_command", metavar="ACTION", required=True)

    p = ms.add_parser(
        "enrol",
        help="make a TOTP secret for NAME: a QR code in the terminal and a 0600 PNG",
        description="Enrol NAME: a new 160-bit TOTP secret from the token's RNG, stored "
        "wrapped under the 'secrets' KEK. It is shown once, as a QR code (scan it with an "
        "authenticator app) and its base32 text, and written to --png (mode 0600; delete it "
        "once scanned). The first accepted code ('custody mfa verify NAME') confirms it.",
    )
    p.add_argument("principal", metavar="NAME", help="the principal")
    p.add_argument(
        "--png", metavar="FILE", help="write the QR code here, mode 0600 (default NAME-totp.png)"
    )
    access_session.add_mfa_code_arg(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_enrol)

    p = ms.add_parser(
        "verify",
        help="check a TOTP code for NAME (from a hidden prompt or --stdin)",
        description="Check one code for NAME. Each code works once; one step (30 s) of "
        "clock drift either way is accepted; repeated wrong codes lock NAME out for a while "
        "([mfa] in custody.toml). Every outcome is audited.",
    )
    p.add_argument("principal", metavar="NAME", help="the principal")
    p.add_argument("--stdin", action="store_true", help="read the code from standard input")
    access_session.add_mfa_code_arg(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_verify)

    p = ms.add_parser("list", help="enrolments: confirmed, last use, failures, lockouts")
    common.add_standard(p)
    common.add_check_pin(p)
    p.set_defaults(func=cmd_list)

    p = ms.add_parser(
        "reset",
        help="remove NAME's enrolment (an enrolled super-admin's --key); audited",
        description="Shred NAME's TOTP secret so that NAME can enrol again (a lost phone). "
        "Needs the key of an enrolled super-admin; a refused reset is audited too.",
    )
    p.add_argument("principal", metavar="NAME", help="the principal")
    p.add_argument("--key", required=True, metavar="FILE", help="an enrolled super-admin's key")
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="passphrase of --key (else $CUSTODY_PASSPHRASE, else a prompt)",
    )
    p.add_argument("--reason", default="", metavar="TEXT", help="why (recorded)")
    common.add_standard(p, pin=True)  # the access seal is on the token
    p.set_defaults(func=cmd_reset)


def _mfa(dep: Any, args: argparse.Namespace, *, actor: str | None = None) -> Any:
    from custody.access.local import access_seal
    from custody.access.mfa import Mfa, MfaPolicy
    from custody.deployment import open_audit_log

    home = common.home_of(args)
    log = open_audit_log(home)
    rng = dep.hsm.random if dep.hsm is not None else None
    return Mfa(
        dep.store,
        dep.hierarchy,
        log,
        policy=MfaPolicy.for_home(home.config_path),
        rng=rng,
        actor=actor,
        seal=access_seal(dep, log),
    )


def cmd_enrol(args: argparse.Namespace) -> int:
    from custody.access.mfa import check_name

    name = check_name(args.principal)
    png = Path(args.png or f"{name}-totp.png")
    if png.exists():
        raise UsageError(f"{png} already exists", "Give another --png FILE; nothing was changed.")
    with common.open_home(args, pin=True) as dep:
        with access_session.opened(dep, args) as ac:  # a bound local operator gives its code
            access_session.require_admin(ac, args, "mfa enrol", name)
        mfa = _mfa(dep, args)
        try:
            e = mfa.enrol(name)
        finally:
            mfa.audit.close()
    write_private(png, e.png, exclusive=True)
    if args.json:  # the enrolment output is the one place the secret is shown
        common.emit_json(
            {"ok": True, "principal": name, "secret_b32": e.secret_b32, "uri": e.uri,
             "png": str(png), "confirmed": False}
        )  # fmt: skip
        return 0
    print(e.qr_text)
    print(f"\nScan this with an authenticator app for {name}, or type in the key:")
    print(f"  {' '.join(e.secret_b32[i : i + 4] for i in range(0, len(e.secret_b32), 4))}")
    print(f"The QR code is also in {png} (mode 0600): delete it once scanned.")
    print(f"Confirm with a first code: custody mfa verify {name}")
    return 0


def _read_code(args: argparse.Namespace) -> str:
    from custody.secretsource import read_secret

    if args.stdin:
        return sys.stdin.readline().strip()
    return read_secret(what="MFA code", file=None, env=None, prompt=True)


def cmd_verify(args: argparse.Namespace) -> int:
    from custody.access.mfa import check_name

    name = check_name(args.principal)
    code = _read_code(args)
    with common.open_home(args, pin=True) as dep:
        row = dep.store.mfa_enrolment(name)
        if row is not None and row.confirmed_at is None:  # this code confirms an enrolment
            with access_session.opened(dep, args) as ac:
                access_session.require_admin(ac, args, "mfa confirm", name)
        mfa = _mfa(dep, args)
        try:
            mfa.verify(name, code)
        finally:
            mfa.audit.close()
    if args.json:
        common.emit_json({"ok": True, "principal": name})
    else:
        print(f"code accepted for {name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=common.pin_given(args)) as dep:
        mfa = _mfa(dep, args)
        try:
            items = mfa.status()
        finally:
            mfa.audit.close()
        access_session.seal_note(dep)
    if args.json:
        common.emit_json(items)
        return 0
    if not items:
        print("no MFA enrolments")
    for i in items:
        state = "confirmed" if i["confirmed"] else "not confirmed"
        if i["locked"]:
            state += f", locked until {i['locked_until']}"
        print(
            f"{i['principal']}\t{state}\tenrolled {i['enrolled_at']}\t"
            f"last used {i['last_used'] or 'never'}\tfailures {i['failures']}"
        )
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from ceremonies.roster import Roster
    from custody.access.mfa import check_name
    from custody_cli.ceremony_drive import signer_of

    name = check_name(args.principal)
    signer = signer_of(args)  # (the positional is dest 'principal': signer_of reads args.name)
    with common.open_home(args, pin=True) as dep:
        mfa = _mfa(dep, args, actor=signer.name)

        def authorize() -> None:
            Roster(dep.store).require(signer.public, now=int(time.time()), role="super-admin")

        try:
            mfa.reset(name, reason=args.reason, authorize=authorize)
        finally:
            mfa.audit.close()
    if args.json:
        common.emit_json({"ok": True, "principal": name, "reset_by": signer.name})
    else:
        print(f"MFA of {name} reset by {signer.name}; {name} can enrol again")
    return 0
