"""``custody principal add|list|show|revoke|token``: who may act, in which role (docs/access.md).

A person principal is an enrolled participant (``--key NAME.pub.json``: their signing key
approves grants, their endorsed X25519 key receives sealed releases); a service principal
gets an API token of 256 bits, printed once (or written to a 0600 ``--token-out`` file) and
stored only as a salted hash. Adding, re-issuing and revoking need the token PIN: the local
operator who holds it is the super-admin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from custody.errors import UsageError
from custody_cli import access_session, common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p0 = sub.add_parser("principal", help="principals and their roles (access control)")
    ps = p0.add_subparsers(dest="principal_command", metavar="ACTION", required=True)
    p = ps.add_parser(
        "add",
        help="add a person (an enrolled participant) or a service (gets an API token)",
        description="Add NAME with --role. A person gives --key NAME.pub.json (an enrolled "
        "participant's identity); a service (--service-account) gets a 256-bit API token, "
        "shown once on stdout or written to --token-out (mode 0600).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--role",
        required=True,
        choices=("super-admin", "service-admin", "service-user", "auditor"),
    )
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--key", metavar="PUBJSON", help="a person: their NAME.pub.json")
    kind.add_argument(
        "--service-account", action="store_true", help="a service: issue an API token"
    )
    p.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a service path prefix it owns or belongs to (repeat)",
    )
    p.add_argument(
        "--env", action="append", default=[], metavar="ENV", help="only these environments"
    )
    p.add_argument("--token-out", metavar="FILE", help="write the token here (mode 0600)")
    access_session.add_mfa_code_arg(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_add)

    p = ps.add_parser("list", help="principals, roles, services, token state")
    common.add_standard(p)
    common.add_check_pin(p)
    p.set_defaults(func=cmd_list)
    p = ps.add_parser("show", help="one principal, with its live grants")
    p.add_argument("name", metavar="NAME")
    common.add_standard(p)
    common.add_check_pin(p)
    p.set_defaults(func=cmd_show)
    p = ps.add_parser("revoke", help="revoke a principal (its token and grants with it)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--token-only", action="store_true", help="revoke only its API token")
    access_session.add_mfa_code_arg(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_revoke)
    p = ps.add_parser("token", help="issue a new API token for a service (the old one stops)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--token-out", metavar="FILE", help="write the token here (mode 0600)")
    access_session.add_mfa_code_arg(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_token)


def _by() -> str:
    from custody.audit.scope import actor_name

    return actor_name()


def _info(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "kind": row.kind,
        "role": row.role,
        "services": list(row.services),
        "envs": list(row.envs),
        "fingerprint": None if row.public is None else _fp(row.public),
        "can_receive_sealed": row.x25519 is not None,
        "token": None
        if row.token_id is None
        else {
            "id": row.token_id,
            "created": row.token_created,
            "revoked_at": row.token_revoked_at,
        },
        "created": row.created,
        "created_by": row.created_by,
        "revoked_at": row.revoked_at,
    }


def _fp(public: bytes) -> str:
    from custody.signing import fingerprint

    return fingerprint(public)


def _emit_token(args: argparse.Namespace, token: str, info: dict[str, Any]) -> None:
    from custody.privatefile import write_private

    if args.token_out:
        write_private(Path(args.token_out), (token + "\n").encode(), exclusive=True)
        info["token_out"] = args.token_out
    elif args.json:
        info["token"] = token
    if args.json:
        common.emit_json(info)
        return
    print(f"{info['name']}: {info['role']}")
    if not args.token_out:
        print(token)
        print("this token is shown once; custody keeps only its salted hash", file=sys.stderr)
    else:
        print(f"token written to {args.token_out} (mode 0600); shown nowhere else")


def cmd_add(args: argparse.Namespace) -> int:
    public = x25519 = None
    if args.key:
        from ceremonies.participants import load_identity

        ident = load_identity(Path(args.key))  # Ed25519, or P-256 on a token (approvals)
        if ident.name != args.name:
            raise UsageError(
                f"{args.key} is {ident.name}'s identity, not {args.name}'s",
                "Give the principal the participant's own name.",
            )
        public, x25519 = ident.public, ident.encryption_key()
    elif args.token_out and Path(args.token_out).exists():
        raise UsageError(f"{args.token_out} already exists", "Nothing was changed.")
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        access_session.require_admin(ac, args, "principal add", args.name)
        p, token = ac.add_principal(
            args.name,
            kind="person" if args.key else "service",
            role=args.role,
            by=_by(),
            services=tuple(args.service),
            envs=tuple(args.env),
            public=public,
            x25519=x25519,
        )
        info = _info(dep.store.principal(p.name))
    if token is not None:
        _emit_token(args, token, {"ok": True, **info})
        return 0
    if args.json:
        common.emit_json({"ok": True, **info})
    else:
        print(f"{p.name}: {p.role} ({p.kind}), key {info['fingerprint']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=common.pin_given(args)) as dep:
        items = [_info(r) for r in dep.store.principals()]
        access_session.seal_note(dep)  # a JSON list keeps its shape: the warning is on stderr
    if args.json:
        common.emit_json(items)
        return 0
    if not items:
        print("no principals (the local operator is super-admin)")
    for i in items:
        state = "revoked" if i["revoked_at"] else "live"
        tok = ""
        if i["token"]:
            tok = " token " + ("revoked" if i["token"]["revoked_at"] else i["token"]["id"])
        svc = ",".join(i["services"]) or "-"
        print(f"{i['name']}\t{i['kind']}\t{i['role']}\t{svc}\t{state}{tok}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=common.pin_given(args)) as dep:
        # the rows first: a principal deleted on disk is the seal's refusal, not "no such"
        note = access_session.seal_note(dep)
        row = dep.store.principal(args.name)
        if row is None:
            raise UsageError(f"No principal {args.name[:64]!r}", "See 'custody principal list'.")
        info = _info(row)
        info["grants"] = [
            {"id": g.id, "env": g.env, "path": g.path, "actions": list(g.actions),
             "not_after": g.not_after, "revoked_at": g.revoked_at}
            for g in dep.store.grants(principal=args.name)
        ]  # fmt: skip
        info.update(note)
    if args.json:
        common.emit_json(info)
        return 0
    for k in ("name", "kind", "role", "services", "envs", "fingerprint", "revoked_at"):
        print(f"{k:12} {info[k]}")
    for g in info["grants"]:
        print(f"grant {g['id']} {g['env']}:{g['path']} {','.join(g['actions'])}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        op = "principal revoke-token" if args.token_only else "principal revoke"
        access_session.require_admin(ac, args, op, args.name)
        done = ac.revoke(args.name, by=_by(), token_only=args.token_only)
    if not done:
        raise UsageError(
            f"Nothing to revoke for {args.name[:64]!r}", "Unknown, or already revoked."
        )
    what = "token of " if args.token_only else ""
    if args.json:
        common.emit_json({"ok": True, "name": args.name, "token_only": args.token_only})
    else:
        print(f"revoked the {what}{args.name}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    if args.token_out and Path(args.token_out).exists():
        raise UsageError(f"{args.token_out} already exists", "Nothing was changed.")
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        access_session.require_admin(ac, args, "principal token", args.name)
        token = ac.new_token(args.name, by=_by())
        info = _info(dep.store.principal(args.name))
    _emit_token(args, token, {"ok": True, **info})
    return 0
