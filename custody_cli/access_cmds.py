"""``custody access ...``: time-limited grants (docs/access.md).

request (a principal asks for read-only access to a path in one environment, for a
duration, saying why), approve (an approver signs the request's digest with their
participant key; the grant is active once enough distinct approvers have signed), requests,
grants, show, revoke (early), and verify (a grant's signed record, offline, against pinned
identity files: no home needed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from custody.errors import PolicyError, UsageError
from custody_cli import access_session, common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "access",
        help="time-limited grants: request, approve (signed), revoke, verify offline",
        description="Grants give read-only access to one path (or a prefix ending in '/') "
        "in one environment for a limited time, once enough distinct approvers have signed "
        "the request with their participant keys (high class: 2 by default, others: 1).",
    )
    s = a.add_subparsers(dest="access_command", metavar="ACTION", required=True)

    p = s.add_parser("request", help="ask for access to PATH in --env for --for, saying --why")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--env", required=True, metavar="ENV")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                   help="how long: 30m, 2h, 1d")  # fmt: skip
    p.add_argument("--why", required=True, metavar="TEXT", help="the justification (recorded)")
    p.add_argument("--action", action="append", choices=("read", "metadata", "list"),
                   help="what the grant gives (repeat; default: read and metadata)")  # fmt: skip
    p.add_argument("--release", action="store_true",
                   help="a quorum release (one sealed delivery)")  # fmt: skip
    access_session.add_principal_args(p)
    common.add_standard(p)
    p.set_defaults(func=cmd_request)

    p = s.add_parser(
        "seal",
        help="seal the access-control rows as they are now, under the token (super-admin)",
        description="Re-seal principals, MFA enrolments, release rules and grant "
        "revocations with the token's access-seal key (docs/access.md). Decisions with the "
        "token open refuse rows that fail their seal; run this only after checking 'custody "
        "principal list' and the audit log, e.g. once rows were restored.",
    )
    access_session.add_principal_args(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_seal)

    p = s.add_parser(
        "local-mfa",
        help="require a principal's TOTP code from the local PIN holder for super-admin actions",
        description="Bind the local operator (who holds the token PIN and is super-admin by "
        "default) to PRINCIPAL's confirmed TOTP enrolment: from then on every super-admin "
        "action needs PRINCIPAL's current code (--mfa-code-file or $CUSTODY_MFA_CODE), "
        "whatever $CUSTODY_ACTOR says. The binding is under the access seal. --off lifts it "
        "(with the bound principal's code). docs/access.md.",
    )
    p.add_argument("principal", nargs="?", metavar="PRINCIPAL")
    p.add_argument("--off", action="store_true", help="lift the binding")
    access_session.add_principal_args(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_local_mfa)

    p = s.add_parser(
        "release-rule",
        help="mark a secret for quorum release (m approvers per read), or back to normal",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--env", required=True, metavar="ENV")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quorum", type=int, metavar="M", help="approvers each release needs")
    g.add_argument("--normal", action="store_true", help="remove the mark")
    access_session.add_principal_args(p)
    common.add_standard(p, pin=True)  # the access seal is on the token
    p.set_defaults(func=cmd_release_rule)

    p = s.add_parser(
        "release",
        help="deliver an approved quorum release once, sealed to the requester's key",
    )
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--out", required=True, metavar="FILE", help="the sealed file (mode 0600)")
    access_session.add_principal_args(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_release)

    p = s.add_parser("open", help="open a sealed release with your NAME.enc.pem (offline)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--key", required=True, metavar="FILE", help="your NAME.enc.pem")
    p.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key")
    p.add_argument("--out", metavar="FILE", help="write the value here (mode 0600)")
    common.add_json(p)
    p.set_defaults(func=cmd_open)

    p = s.add_parser("approve", help="sign a request with your participant key")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--key", required=True, metavar="FILE", help="your NAME.key.pem")
    p.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key")
    p.add_argument("--mfa-code-file", metavar="FILE",
                   help="your TOTP code if enrolled; else $CUSTODY_MFA_CODE")  # fmt: skip
    common.add_standard(p, pin=True)  # the token checks a TOTP code (its secret is wrapped)
    p.set_defaults(func=cmd_approve)

    p = s.add_parser("requests", help="requests (pending by default)")
    p.add_argument("--state", default="pending", metavar="STATE",
                   help="pending, granted, approved, released, expired, or all")  # fmt: skip
    common.add_standard(p)
    common.add_check_pin(p)
    p.set_defaults(func=cmd_requests)

    p = s.add_parser("grants", help="grants and their state (live, lapsed, revoked)")
    p.add_argument("--principal", metavar="NAME")
    p.add_argument("--env", metavar="ENV")
    common.add_standard(p)
    common.add_check_pin(p)
    p.set_defaults(func=cmd_grants)

    p = s.add_parser("show", help="one request or grant, with its approvals")
    p.add_argument("id", metavar="ID", help="a request id (req-...) or a grant id (grant-...)")
    p.add_argument("--record-out", metavar="FILE", help="write a grant's signed record here")
    common.add_standard(p)
    common.add_check_pin(p)
    p.set_defaults(func=cmd_show)

    p = s.add_parser("revoke", help="end a grant early")
    p.add_argument("grant_id", metavar="GRANT_ID")
    p.add_argument("--reason", default="revoked early", metavar="TEXT")
    access_session.add_principal_args(p)
    common.add_standard(p, pin=True)  # only used with a TOTP code
    p.set_defaults(func=cmd_revoke)

    p = s.add_parser(
        "verify",
        help="verify a grant's signed record offline, against pinned identity files",
        description="Checks the record's digest and that enough distinct approvers, each "
        "pinned with --trust (their NAME.pub.json), none of them the requester, signed this "
        "very request. Needs no home and trusts nothing in the record itself.",
    )
    p.add_argument("record", metavar="RECORD")
    p.add_argument("--trust", action="append", required=True, metavar="PUBJSON")
    p.add_argument("--high-approvers", type=int, default=2, metavar="N",
                   help="the fewest approvers a high-class grant needs (2)")  # fmt: skip
    common.add_json(p)
    p.set_defaults(func=cmd_verify)


def _flow(dep: Any, ac: Any) -> Any:
    from custody.access.session import grant_flow

    return grant_flow(dep, ac)


def _req(r: Any) -> dict[str, Any]:
    from custody.access.session import request_doc

    return request_doc(r)


def _grant(g: Any, now: int) -> dict[str, Any]:
    from custody.access.session import grant_doc

    return grant_doc(g, now)


def _when(t: int) -> str:
    from custody.clock import from_seconds, iso

    return iso(from_seconds(t))


def cmd_request(args: argparse.Namespace) -> int:
    from ceremonies.secret_rotation import parse_duration

    seconds = parse_duration(args.duration)
    actions = tuple(args.action or ("read", "metadata"))
    with common.open_home(args, pin=False) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        r = _flow(dep, ac).request(
            who,
            args.env,
            args.path,
            seconds=seconds,
            why=args.why,
            actions=("read",) if args.release else actions,
            kind="release" if args.release else "grant",
        )
        note = access_session.seal_note(dep, ac)
    out = {"ok": True, **_req(r), **note}
    if args.json:
        common.emit_json(out)
    else:
        print(f"request {r.id}: {r.requester} asks {','.join(r.actions)} on {r.env}:{r.path}")
        print(f"needs {r.needed} approver(s): custody access approve {r.id} --key NAME.key.pem")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from custody_cli.ceremony_drive import signer_of

    signer = signer_of(args)
    code = access_session.mfa_code(args)
    # a TOTP code is checked against its secret, wrapped under the token's secrets KEK
    with (
        common.open_home(args, pin=code is not None) as dep,
        access_session.opened(dep, args) as ac,
    ):
        out = _flow(dep, ac).approve(args.request_id, signer, mfa_code=code)
        if out["record"] is not None:
            from custody.access.session import save_record

            out["record"] = str(save_record(dep.home, out["grant"], out["record"]))
        note = access_session.seal_note(dep, ac)
    if args.json:
        common.emit_json({"ok": True, **out, **note})
    elif out["grant"]:
        print(f"grant {out['grant']} is active ({out['approvals']} of {out['needed']} approvals)")
        print(f"record: {out['record']} (custody access verify RECORD --trust NAME.pub.json)")
    else:
        print(f"approved {out['request']}: {out['approvals']} of {out['needed']} approvals")
    return 0


def cmd_requests(args: argparse.Namespace) -> int:
    with (
        common.open_home(args, pin=common.pin_given(args)) as dep,
        access_session.opened(dep, args) as ac,
    ):
        # the rows first (a JSON list keeps its shape: the warning is on stderr): with the
        # PIN, nothing is expired, audited or shown from rows that fail their seal
        access_session.seal_note(dep, ac)
        _flow(dep, ac).expire_requests()
        rows = dep.store.access_requests(state=None if args.state == "all" else args.state)
    items = [_req(r) for r in rows]
    if args.json:
        common.emit_json(items)
        return 0
    if not items:
        print(f"no {'' if args.state == 'all' else args.state + ' '}requests")
    now = int(time.time())
    for i in items:
        left = max(0, i["not_after"] - now)
        print(f"{i['id']}\t{i['state']}\t{i['requester']}\t{i['env']}:{i['path']}\t"
              f"{','.join(i['actions'])}\tneeds {i['needed']}\t{left // 60} min left")  # fmt: skip
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    with (
        common.open_home(args, pin=common.pin_given(args)) as dep,
        access_session.opened(dep, args) as ac,
    ):
        access_session.seal_note(dep, ac)  # the rows first, as in cmd_requests
        ac.lapse()
        now = ac.now()
        items = [_grant(g, now) for g in dep.store.grants(principal=args.principal, env=args.env)]
    if args.json:
        common.emit_json(items)
        return 0
    if not items:
        print("no grants")
    for i in items:
        print(f"{i['id']}\t{i['state']}\t{i['principal']}\t{i['env']}:{i['path']}\t"
              f"{','.join(i['actions'])}\tuntil {_when(i['not_after'])}")  # fmt: skip
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=common.pin_given(args)) as dep:
        # the rows first: nothing is looked up, written (--record-out) or shown before
        note = access_session.seal_note(dep)
        now = int(time.time())
        g = dep.store.grant(args.id)
        if g is not None:
            out: dict[str, Any] = {"grant": _grant(g, now), "record": json.loads(g.record)}
            if args.record_out:
                Path(args.record_out).write_text(g.record + "\n", encoding="utf-8")
        else:
            r = dep.store.access_request(args.id)
            if r is None:
                raise UsageError(f"No request or grant {args.id[:40]!r}", "Check the id.")
            out = {
                "request": _req(r),
                "approvals": [
                    {"approver": a.approver, "approved_at": a.approved_at}
                    for a in dep.store.access_approvals(r.id)
                ],
            }
        out.update(note)
    common.emit_json(out)  # a request or grant is a small structured document, always JSON
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    code = access_session.mfa_code(args)
    with (
        common.open_home(args, pin=code is not None) as dep,
        access_session.opened(dep, args) as ac,
    ):
        who = access_session.acting(ac, args)
        g = _flow(dep, ac).revoke(args.grant_id, who, reason=args.reason, mfa_code=code)
        note = access_session.seal_note(dep, ac)
    if args.json:
        common.emit_json({"ok": True, "grant": g.id, "revoked_by": who.name, **note})
    else:
        print(f"revoked {g.id} ({g.principal} on {g.env}:{g.path})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ceremonies.participants import load_identity
    from custody.access.records import verify_record
    from custody.canonical import load_json

    pinned, algs = {}, {}
    for t in args.trust:
        ident = load_identity(Path(t))  # its algorithm is the one its file records
        pinned[ident.public] = ident.name
        algs[ident.public] = ident.alg
    try:
        doc = load_json(Path(args.record).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read the record {args.record}", "Check the path.") from exc
    summary = verify_record(doc, pinned, algs=algs, high_approvers=args.high_approvers)
    if args.json:
        common.emit_json({"ok": True, **summary})
    else:
        print(
            f"VALID grant {summary['grant']}: {summary['requester']} may "
            f"{','.join(summary['actions'])} {summary['env']}:{summary['path']} from "
            f"{_when(summary['window']['not_before'])} to {_when(summary['window']['not_after'])}; "
            f"approved by {', '.join(summary['approvers'])} ({summary['needed']} needed)"
        )
    return 0


def cmd_seal(args: argparse.Namespace) -> int:
    from custody.access.auditing import intended
    from custody.access.local import logged_binding
    from custody.access.seal import access_state

    home = common.home_of(args)
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        if ac.seal is None:
            raise PolicyError("Sealing access-control rows needs the token", "Give --pin-file.")
        # rows that fail their seal may have had the binding deleted or renamed: whom to
        # ask comes from the token's anchor, not from those rows
        who = ac.resealer(who, logged=lambda: logged_binding(home))
        # a super-admin, with its code once enrolled: re-sealing blesses the rows as they
        # are, so the PIN alone must not
        ac.require_admin(who, "access seal", "access", access_session.mfa_code(args), check=False)
        state = dict(access_state(dep.store))
        counts = {k: len(v) for k, v in state.items()}
        counts.update(participants=len(dep.store.participants()), secrets=len(dep.store.secrets()))
        with intended(ac.audit, "access seal", "access", who.name, counts) as ref:
            with dep.store.transaction():
                ac.seal.reseal(by=who.name, everything=True)
            ac.seal.advance()
        ac.audit.append("access seal", "access", who.name, details={**counts, **ref})
    if args.json:
        common.emit_json({"ok": True, "sealed": counts, "by": who.name})
    else:
        print("sealed " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


def cmd_local_mfa(args: argparse.Namespace) -> int:
    if bool(args.off) == bool(args.principal):
        raise UsageError("Give PRINCIPAL or --off", "One of the two.")
    code = access_session.mfa_code(args)
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        ac.bind_local_mfa(None if args.off else args.principal, by=who, mfa_code=code)
    out = {"ok": True, "local_operator_mfa": None if args.off else args.principal}
    if args.json:
        common.emit_json(out)
    elif args.off:
        print("the local operator no longer needs a TOTP code")
    else:
        print(f"the local operator now needs {args.principal}'s TOTP code for super-admin actions")
    return 0


def cmd_release_rule(args: argparse.Namespace) -> int:
    from custody.access.release import set_rule

    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        set_rule(_flow(dep, ac), who, args.env, args.path,
                 needed=0 if args.normal else args.quorum,
                 mfa_code=access_session.mfa_code(args))  # fmt: skip
    mode = "normal reads" if args.normal else f"quorum release by {args.quorum} approvers"
    if args.json:
        common.emit_json({"ok": True, "env": args.env, "path": args.path, "quorum": args.quorum})
    else:
        print(f"{args.env}:{args.path}: {mode}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from custody.access.release import deliver
    from custody.privatefile import write_private
    from custody_cli.secret_cmds import vault_of

    if Path(args.out).exists():
        raise UsageError(f"{args.out} already exists", "Nothing was changed.")
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        v = vault_of(dep, args)

        def reveal(env: str, path: str) -> tuple[int, str]:
            r = v.get(env, path)
            return r.version, r.value

        sealed, info = deliver(_flow(dep, ac), args.request_id, who, reveal,
                               mfa_code=access_session.mfa_code(args))  # fmt: skip
    write_private(Path(args.out), sealed, exclusive=True)
    if args.json:
        common.emit_json({"ok": True, **info, "out": args.out})
    else:
        print(f"released v{info['version']} of {info['env']}:{info['path']} once, sealed to "
              f"{who.name}: {args.out} (custody access open FILE --key NAME.enc.pem)")  # fmt: skip
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    import sys

    from ceremonies.participants import load_encryption_key
    from custody.access.release import open_release
    from custody.privatefile import write_private
    from custody.secretsource import read_secret

    pw = read_secret(what="key passphrase", file=args.passphrase_file, env="CUSTODY_PASSPHRASE")
    key = load_encryption_key(Path(args.key), pw)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {args.file}", "Check the path.") from exc
    header, value = open_release(raw, key)
    if args.out:
        write_private(Path(args.out), value.encode("utf-8"))
        if args.json:
            common.emit_json({"ok": True, **header, "out": args.out})
        return 0
    if args.json:
        common.emit_json({"env": header["env"], "path": header["path"],
                          "version": header["version"], "value": value})  # fmt: skip
    else:
        sys.stdout.write(value)
    return 0
