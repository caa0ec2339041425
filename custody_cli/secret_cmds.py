"""``custody secret ...``: typed, versioned secrets (docs/secrets.md).

put (a value from a 0600 file, stdin or a hidden prompt; never argv), generate (to the
category's standard, from the HSM's RNG), get (the value to stdout only, or to a 0600 file),
list, show, versions, delete (soft), restore, destroy (crypto-shred) and due. Every command
is audited (``custody_cli.audited``) with the environment and path, never a value; ``--json``
everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from custody.errors import UsageError
from custody.privatefile import write_private
from custody_cli import access_session, common


def _add_target(p: argparse.ArgumentParser, *, pin: bool) -> None:
    p.add_argument("path", metavar="PATH", help="the secret's path, e.g. payments/stripe/api-key")
    p.add_argument("--env", required=True, metavar="ENV", help="environment: dev, staging, prod...")
    common.add_standard(p, pin=pin)
    access_session.add_principal_args(p)


def _authorize(
    dep: Any, args: argparse.Namespace, action: str, env: str, path: str, **kw: Any
) -> Any:
    """Ask access control whether the acting principal (the local operator, super-admin,
    by default; ``--as`` or a service token otherwise) may *action* (env, path); the
    decision is audited. Returns the principal.

    Raises:
        AccessDenied: denied (exit 7), with the reason; AuthError: a refused token.
    """
    with access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        ac.authorize(who, action, env, path, mfa_code=access_session.mfa_code(args), **kw)
    return who


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "secret",
        help="typed, versioned secrets: put, generate, get, rotate-ready labels, soft delete",
        description="Secrets by environment and path. Each version is sealed under its own "
        "DEK, wrapped under the 'secrets' KEK branch. Values never come from or go to argv.",
    )
    ss = s.add_subparsers(dest="secret_command", metavar="ACTION", required=True)

    def writer(name: str, helptext: str) -> argparse.ArgumentParser:
        p = ss.add_parser(name, help=helptext)
        _add_target(p, pin=True)
        p.add_argument("--category", metavar="CATEGORY", help="required for a new secret")
        p.add_argument("--owner", metavar="WHO", help="required for a new secret")
        p.add_argument("--prefix", metavar="PREFIX", help="API key prefix, e.g. pay_live")
        p.add_argument(
            "--cas",
            type=int,
            metavar="N",
            help="check-and-set: the current version you saw (0: the secret must not exist)",
        )
        p.add_argument(
            "--label",
            choices=("current", "pending"),
            default="current",
            help="promote now (current, default) or stage for a rotation (pending)",
        )
        return p

    p = writer("put", "store a value you supply (from --value-file, --stdin or a prompt)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--value-file", metavar="FILE", help="a file holding the value (mode 0600)")
    g.add_argument("--stdin", action="store_true", help="read the value from standard input")
    p.set_defaults(func=cmd_put)
    p = writer("generate", "make a new value to the category's standard")
    p.set_defaults(func=cmd_generate)

    p = ss.add_parser("get", help="print a value (stdout only) or write it to a 0600 file")
    _add_target(p, pin=True)
    p.add_argument("--version", type=int, metavar="N")
    p.add_argument("--label", choices=("current", "pending", "previous"))
    p.add_argument("--out", metavar="FILE", help="write the value here (mode 0600)")
    p.set_defaults(func=cmd_get)

    p = ss.add_parser("list", help="secrets of an environment (metadata only)")
    common.add_standard(p)
    common.add_check_pin(p)
    p.add_argument("--env", metavar="ENV", help="one environment (default: all)")
    p.add_argument("--prefix", default="", metavar="PATH", help="paths starting with this")
    access_session.add_principal_args(p)
    p.set_defaults(func=cmd_list)

    for name, helptext, func in (
        ("show", "a secret's metadata: labels, class, owner, expiry, state", "show"),
        ("versions", "a secret's versions and their states", "versions"),
        ("delete", "soft-delete: reads refused and reported; restore works", "delete"),
        ("restore", "undo a soft delete within its recovery window", "restore"),
    ):
        p = ss.add_parser(name, help=helptext)
        _add_target(p, pin=False)
        p.set_defaults(func=cmd_meta, action=func)

    p = ss.add_parser(
        "destroy",
        help="crypto-shred a deleted secret after its window, or one unlabelled version",
    )
    p.add_argument("path", metavar="PATH", nargs="?")
    p.add_argument("--env", metavar="ENV")
    p.add_argument("--version", type=int, metavar="N", help="only this unlabelled version")
    p.add_argument(
        "--due", action="store_true", help="every deleted secret whose window has ended (cron)"
    )
    common.add_standard(p)
    access_session.add_principal_args(p)
    p.set_defaults(func=cmd_destroy)

    p = ss.add_parser(
        "rotate",
        help="rotate a secret: stage, update, verify, promote with an overlap; signed record",
        description="Rotate PATH: a new value (made to its standard, or --value-file/--stdin) "
        "goes into 'pending'; --update-cmd and --verify-cmd get it in $CUSTODY_SECRET_VALUE "
        "and in the 0600 file $CUSTODY_SECRET_FILE, never in argv; on success it becomes "
        "'current' and the old value stays 'previous' for --overlap. Each step is recorded "
        "in a transcript bundle signed with --key ('custody transcript verify'). With --due: "
        "rotate every secret at or past expiry (not paused) and revoke every 'previous' "
        "whose overlap has ended (for cron).",
    )
    p.add_argument("path", metavar="PATH", nargs="?")
    p.add_argument("--env", metavar="ENV")
    p.add_argument("--due", action="store_true", help="every due secret, and ended overlaps")
    p.add_argument("--verify-cmd", metavar="CMD", help="must exit 0 with the new value")
    p.add_argument("--update-cmd", metavar="CMD", help="updates the service with the new value")
    p.add_argument("--overlap", default="24h", metavar="DURATION", help="e.g. 1h, 7d (24h)")
    p.add_argument(
        "--emergency",
        action="store_true",
        help="no overlap: revoke the old value at once and record who read it",
    )
    p.add_argument("--reason", metavar="TEXT", help="why (required with --emergency)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--value-file", metavar="FILE", help="a supplied new value (mode 0600)")
    g.add_argument("--stdin", action="store_true", help="read a supplied new value from stdin")
    p.add_argument(
        "--key", required=True, metavar="FILE", help="an enrolled super-admin's key: signs"
    )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="passphrase of --key (else $CUSTODY_PASSPHRASE, else a prompt)",
    )
    common.add_standard(p, pin=True)
    access_session.add_principal_args(p)
    p.set_defaults(func=cmd_rotate)

    p = ss.add_parser(
        "export",
        help="write secrets to a file signed by you and encrypted to one recipient",
        description="Export the current values of PATHs in --env, encrypted to the "
        "recipient's X25519 key (their NAME.pub.json, endorsed by their signing key) and "
        "signed with --key. Only that recipient can open it; nothing is written in plain.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--env", required=True, metavar="ENV")
    p.add_argument("--to", required=True, metavar="PUBJSON", help="the recipient's NAME.pub.json")
    p.add_argument("--out", required=True, metavar="FILE", help="the export file (mode 0600)")
    p.add_argument("--key", required=True, metavar="FILE", help="your signing key")
    p.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key")
    common.add_standard(p, pin=True)
    access_session.add_principal_args(p)
    p.set_defaults(func=cmd_export)
    p = ss.add_parser(
        "import",
        help="verify and load an export made for you",
        description="Check FILE's signature against a pinned sender (--trust), check it is "
        "encrypted to your key (--key NAME.enc.pem), decrypt it in memory and store each "
        "secret (a new secret, or a new version of one with the same category).",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--key", required=True, metavar="FILE", help="your NAME.enc.pem")
    p.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key")
    p.add_argument(
        "--trust", required=True, action="append", metavar="PUBJSON", help="the sender (repeat)"
    )
    common.add_standard(p, pin=True)
    access_session.add_principal_args(p)
    p.set_defaults(func=cmd_import)

    sc = sub.add_parser(
        "scan",
        help="find leaked secrets in files, directories or a git history",
        description="Find custody-format API keys (by prefix and checksum, no store needed) "
        "and the values of the home's secrets (by keyed hash under a key made for this scan; "
        "needs the token PIN) in PATHs. --git scans every commit of the repository at PATH; "
        "--staged only its staged changes (a pre-commit hook). Exits 1 on a hit, with "
        "each hit's file, line and commit, an alert, and the emergency rotation to run.",
    )
    sc.add_argument("paths", nargs="+", metavar="PATH")
    mode = sc.add_mutually_exclusive_group()
    mode.add_argument("--git", action="store_true", help="scan the whole history of a git repo")
    mode.add_argument("--staged", action="store_true", help="scan a repo's staged changes")
    sc.add_argument(
        "--keys-only",
        action="store_true",
        help="look only for custody-format keys (no home, no PIN)",
    )
    common.add_standard(sc, pin=True)
    sc.set_defaults(func=cmd_scan)

    p = ss.add_parser("due", help="secrets that expire within --within days, or are overdue")
    common.add_standard(p)
    p.add_argument("--within", type=int, default=30, metavar="DAYS")
    access_session.add_principal_args(p)
    p.add_argument(
        "--notify",
        action="store_true",
        help="send expiry warnings (30, 14, 7, 1 days, on the day) to the audit log and hook",
    )
    p.set_defaults(func=cmd_due)

    p = ss.add_parser(
        "verify-acks",
        help="check an early-revocation record offline against the pinned audit key",
        description="FILE is the record custody serve writes (home/transcripts/"
        "early-revoke-*.json) when every registered consumer acknowledged current and "
        "previous was revoked before its window ended. --trust is the token's audit key "
        "('custody audit checkpoint --trust-out FILE'), obtained out of band.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--trust", required=True, metavar="PUBKEY", help="the pinned audit key")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_verify_acks)


def cmd_verify_acks(args: argparse.Namespace) -> int:
    from pathlib import Path

    from custody.audit.signers import parse_trust_key
    from custody.secrets.consumers import verify_early_revoke
    from custody.textsafe import printable

    try:
        raw = Path(args.file).read_bytes()
        key = parse_trust_key(Path(args.trust).read_bytes(), default_name="audit")
    except OSError as exc:
        raise UsageError("Cannot read the record or the trust key", "Check the paths.") from exc
    out = verify_early_revoke(raw, key.public, alg=key.alg)
    if args.json:
        common.emit_json({"ok": True, **out})
    else:
        print(
            f"VALID: {printable(out['env'])}:{printable(out['path'])} v{out['revoked_version']} "
            f"revoked early at {printable(out['at'])}; every consumer acknowledged "
            f"v{out['current']}: {printable(', '.join(out['acknowledged']))}"
        )
    return 0


def vault_of(dep: Any, args: argparse.Namespace) -> Any:
    """The vault of *dep*, with the CLI's alert sink (for other command groups)."""
    return _vault(dep, args)


def _vault(dep: Any, args: argparse.Namespace) -> Any:
    """The operator's vault (shared with the TUI: :mod:`custody.secrets.operator`)."""
    from custody.access.local import home_seal
    from custody.secrets.operator import operator_vault

    home = common.home_of(args)
    return operator_vault(dep, home, seal=home_seal(dep, home))


def _category(args: argparse.Namespace) -> Any:
    from custody.secrets import parse_category

    return parse_category(args.category) if args.category else None


def _written(args: argparse.Namespace, w: Any) -> int:
    info = {
        "ok": True,
        "env": w.env,
        "path": w.path,
        "version": w.version,
        "created": w.created,
        "source": w.source,
        "expires": w.expires,
        "label": args.label,
    }
    if args.json:
        common.emit_json(info)
    else:
        what = "created" if w.created else "new version"
        print(f"{w.env}:{w.path} {what} v{w.version} ({args.label}), expires {w.expires}")
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    from custody.secretsource import read_secret

    if args.stdin:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
    else:
        value = read_secret(
            what="secret value", file=args.value_file, env=None, prompt=True, confirm=True
        )
    with common.open_home(args, pin=True) as dep:
        _authorize(dep, args, "write", args.env, args.path, category=args.category)
        w = _vault(dep, args).put(
            args.env,
            args.path,
            value,
            category=_category(args),
            owner=args.owner,
            prefix=args.prefix,
            cas=args.cas,
            label=args.label,
        )
    return _written(args, w)


def cmd_generate(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=True) as dep:
        _authorize(dep, args, "write", args.env, args.path, category=args.category)
        w = _vault(dep, args).generate(
            args.env,
            args.path,
            category=_category(args),
            owner=args.owner,
            prefix=args.prefix,
            cas=args.cas,
            label=args.label,
        )
    return _written(args, w)


def cmd_get(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=True) as dep:
        _authorize(dep, args, "read", args.env, args.path)
        r = _vault(dep, args).get(args.env, args.path, version=args.version, label=args.label)
    if args.out:
        write_private(args.out, r.value.encode("utf-8"))
        if args.json:
            common.emit_json({"ok": True, "env": r.env, "path": r.path, "version": r.version})
        else:
            print(f"wrote v{r.version} of {r.env}:{r.path} to {args.out}", file=sys.stderr)
        return 0
    if args.json:  # the value is the point of 'get': in --json it is the one field with it
        common.emit_json({"env": r.env, "path": r.path, "version": r.version, "value": r.value})
    else:
        sys.stdout.write(r.value)
        if sys.stdout.isatty():
            sys.stdout.write("\n")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=common.pin_given(args)) as dep:
        items = _vault(dep, args).list_secrets(args.env, args.prefix)
        with access_session.opened(dep, args) as ac:
            who = access_session.acting(ac, args)
            rows = dep.store.secrets(args.env, args.prefix)
            seen = ac.visible(who, "list", rows, scope=f"{args.env or '*'}:{args.prefix}",
                              mfa_code=access_session.mfa_code(args))  # fmt: skip
        keep = {(r.env, r.path) for r in seen}
        items = [i for i in items if (i["env"], i["path"]) in keep]
        access_session.seal_note(dep)  # a JSON list keeps its shape: the warning is on stderr
    if args.json:
        common.emit_json(items)
        return 0
    if not items:
        print("no secrets")
    for i in items:
        lab = i["labels"]
        print(
            f"{i['env']}:{i['path']}\t{i['category']}\t{i['class']}\t{i['state']}\t"
            f"v{lab['current']}\texpires in {i['days_left']} d\towner {i['owner']}"
        )
    return 0


def cmd_meta(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=False) as dep:
        action = "metadata" if args.action in ("show", "versions") else "delete"
        _authorize(dep, args, action, args.env, args.path)
        v = _vault(dep, args)
        if args.action in ("show", "versions"):
            out = v.show(args.env, args.path)
            if args.action == "versions":
                out = {"env": out["env"], "path": out["path"], "versions": out["versions"]}
        elif args.action == "delete":
            out = v.delete(args.env, args.path)
        else:
            out = v.restore(args.env, args.path)
    if args.json:
        common.emit_json(out)
    elif args.action == "versions":
        for x in out["versions"]:
            print(f"v{x['version']}\t{x['state']}\t{x['source']}\t{x['created']}")
    elif args.action == "show":
        for k in ("env", "path", "category", "class", "owner", "state", "expires", "days_left"):
            print(f"{k:10} {out[k]}")
        print(f"{'labels':10} " + ", ".join(f"{k}=v{n}" for k, n in out["labels"].items() if n))
        if out["destroy_after"]:
            print(f"{'deleted':10} recoverable until {out['destroy_after']}")
    elif args.action == "delete":
        print(
            f"{out['env']}:{out['path']} deleted; reads are refused and reported; "
            f"'custody secret restore' works until {out['destroy_after']}"
        )
    else:
        print(f"{out['env']}:{out['path']} restored")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    if args.due == bool(args.path):
        raise UsageError("Give PATH --env ENV, or --due", "See 'custody secret destroy --help'.")
    if args.path and not args.env:
        raise UsageError("Give --env with PATH", "Environments never share secrets.")
    with common.open_home(args, pin=False) as dep:
        _authorize(dep, args, "destroy", args.env or "*", args.path or "")
        v = _vault(dep, args)
        out = (
            {"destroyed": v.destroy_due()}
            if args.due
            else v.destroy(args.env, args.path, version=args.version)
        )
    if args.json:
        common.emit_json(out)
    elif args.due:
        print(f"destroyed {len(out['destroyed'])} secrets whose recovery window had ended")
    else:
        print(f"{out['env']}:{out['path']}: destroyed versions {out['destroyed']}")
    return 0


def cmd_due(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=False) as dep:
        items = _vault(dep, args).due(within_days=args.within, notify=args.notify)
        with access_session.opened(dep, args) as ac:
            who = access_session.acting(ac, args)
            rows = dep.store.secrets()
            seen = ac.visible(who, "metadata", rows, scope="*:",
                              mfa_code=access_session.mfa_code(args))  # fmt: skip
        keep = {(r.env, r.path) for r in seen}
        items = [i for i in items if (i["env"], i["path"]) in keep]
    if args.json:
        common.emit_json(items)
        return 0
    if not items:
        print(f"nothing expires within {args.within} days")
    for i in items:
        when = f"overdue by {-i['days_left']} d" if i["overdue"] else f"in {i['days_left']} d"
        print(f"{i['env']}:{i['path']}\t{i['class']}\texpires {when}\towner {i['owner']}")
    return 0


def _outcome(o: Any) -> dict[str, Any]:
    return {
        "env": o.env,
        "path": o.path,
        "ok": o.ok,
        "bundle": o.bundle,
        "new_version": o.new_version,
        "old_version": o.old_version,
        "failures": o.failures,
        "paused": o.paused,
        "detail": o.detail,
    }


def cmd_rotate(args: argparse.Namespace) -> int:
    from ceremonies.secret_rotation import parse_duration, revoke_ended, rotate
    from custody.audit.log import AuditLog
    from custody.secretsource import read_secret
    from custody_cli.ceremony_drive import signer_of

    if args.due == bool(args.path) or (args.path and not args.env):
        raise UsageError("Give PATH --env ENV, or --due", "See 'custody secret rotate --help'.")
    if args.due and (args.stdin or args.value_file or args.emergency):
        raise UsageError("--due makes new values itself", "Drop --stdin/--value-file/--emergency.")
    overlap = parse_duration(args.overlap)
    value = None
    if args.stdin:
        value = sys.stdin.read().removesuffix("\n")
    elif args.value_file:
        value = read_secret(what="secret value", file=args.value_file, prompt=False)
    signer = signer_of(args)
    home = common.home_of(args)

    def entries() -> list[dict[str, Any]]:
        log = AuditLog.for_home(home)
        try:
            return [json.loads(line) for line in log.lines()]
        finally:
            log.close()

    with common.open_home(args, pin=True) as dep:
        who = _authorize(dep, args, "rotate", args.env or "*", args.path or "")
        if args.emergency and who.role != "super-admin":
            with access_session.opened(dep, args) as ac:
                ac.refuse(who, "rotate", args.env, args.path,
                          "an emergency rotation is a super-admin's")  # fmt: skip
        v = _vault(dep, args)
        if args.due:
            results = []
            for row in v.rotations_due():
                o = rotate(
                    dep,
                    v,
                    row.env,
                    row.path,
                    signer,
                    verify_cmd=args.verify_cmd,
                    update_cmd=args.update_cmd,
                    overlap_seconds=overlap,
                )
                results.append(_outcome(o))
            revoked = revoke_ended(dep, v, signer)
            out: dict[str, Any] = {"rotated": results, "revoked": revoked}
            failed = any(not r["ok"] for r in results)
        else:
            ended: list[Any] = []
            if args.emergency:  # every grant on it ends before the new value exists
                ended = _emergency_revoke(dep, args, who)
            o = rotate(
                dep,
                v,
                args.env,
                args.path,
                signer,
                verify_cmd=args.verify_cmd,
                update_cmd=args.update_cmd,
                overlap_seconds=overlap,
                value=value,
                emergency=args.emergency,
                reason=args.reason or "",
                audit_entries=entries,
            )
            out = _outcome(o)
            failed = not o.ok
            if args.emergency:
                out["incident"] = _incident(dep, args, v, who, ended, entries(), o)
    if args.json:
        common.emit_json(out)
    elif args.due:
        print(
            f"rotated {sum(r['ok'] for r in out['rotated'])} of {len(out['rotated'])} due; "
            f"revoked {len(out['revoked'])} previous versions"
        )
    else:
        print(("rotated: " if out["ok"] else "NOT rotated: ") + out["detail"])
        print(f"record: {out['bundle']} (custody transcript verify)")
        if "incident" in out:
            inc = out["incident"]
            print(f"incident: {inc['file']}: {len(inc['revoked_grants'])} grants revoked, "
                  f"{len(inc['readers'])} readers")  # fmt: skip
    return 1 if failed else 0


def _emergency_revoke(dep: Any, args: argparse.Namespace, who: Any) -> list[Any]:
    from custody.access.emergency import revoke_grants
    from custody.access.flow import GrantFlow

    with access_session.opened(dep, args) as ac:
        flow = GrantFlow(ac, dep.config.deployment_id)
        return revoke_grants(flow, args.env, args.path, by=who.name, reason=args.reason or "")


def _incident(
    dep: Any, args: argparse.Namespace, v: Any, who: Any, revoked: list[Any], log: Any, o: Any
) -> dict[str, Any]:
    """The incident record of an emergency rotation: written to HOME/incidents/, kept in
    the store, and sent through the alert hook to the secret's owner and consumers."""
    import time
    from pathlib import Path

    from custody.access.emergency import incident
    from custody.access.flow import GrantFlow
    from custody.canonical import canonical_bytes
    from custody.store.rows import IncidentRow

    with access_session.opened(dep, args) as ac:
        flow = GrantFlow(ac, dep.config.deployment_id)
        rec = incident(flow, args.env, args.path, by=who.name, reason=args.reason or "",
                       revoked=revoked, entries=log, bundle=Path(o.bundle).name)  # fmt: skip
    now = int(time.time())
    iid = f"secret-{now}-{args.env}-{args.path.replace('/', '_')}"
    d = Path(dep.home.root) / "incidents"
    d.mkdir(exist_ok=True)
    f = d / f"{iid}.json"
    f.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    dep.store.put_incident(IncidentRow(id=iid, ceremony_id=Path(o.bundle).name,
                                       reason=(args.reason or "")[:200], created=now,
                                       report=canonical_bytes(rec).decode()))  # fmt: skip
    row = dep.store.secret(args.env, args.path)
    if row is not None:
        holders = sorted(set(rec["held_access"]["by_grant"]) | set(rec["held_access"]["by_role"]))
        v.alert("access-incident", row, incident=str(f), revoked_grants=len(revoked),
                readers=rec["readers"], consumers=holders)  # fmt: skip
    return {**rec, "file": str(f)}


def cmd_scan(args: argparse.Namespace) -> int:
    from custody.secrets import scan

    known = None
    home = common.home_of(args)
    alert: Any = None
    if not args.keys_only and home.exists():
        with common.open_home(args, pin=True) as dep:
            v = _vault(dep, args)
            known = v.known_values()
            alert = v._alert
    hits: list[Any] = []
    for p in args.paths:
        if args.git:
            hits += scan.scan_git_history(p, known)
        elif args.staged:
            hits += scan.scan_staged(p, known)
        else:
            hits += scan.scan_paths([p], known)
    if alert is not None:
        for h in hits:
            env, _, path = (h.secret or "::").partition(":")
            alert({"kind": "leak-found", "env": env, "path": path, "owner": "", "class": "",
                   "file": h.file, "line": h.line, "commit": h.commit})  # fmt: skip
    if args.json:
        common.emit_json({"hits": [h.to_json() for h in hits], "known_values": len(known or ())})
    else:
        for h in hits:
            where = f"{h.file}:{h.line}" + (f" (commit {h.commit[:12]})" if h.commit else "")
            if h.kind == "known-value":
                env, _, path = (h.secret or "").partition(":")
                print(f"LEAK {where}: the value of {h.secret}")
                print(
                    f"  rotate it now: custody secret rotate {path} --env {env} --emergency "
                    "--reason 'found in a repository' --key ADMIN.key.pem"
                )
            else:
                print(f"LEAK {where}: a custody API key ({h.prefix}_...)")
                print("  find its secret by prefix and rotate it with --emergency")
        if not hits:
            print(f"no leaks found ({len(known or ())} known values, custody key format)")
    return 1 if hits else 0


def cmd_export(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from ceremonies.participants import load_identity
    from custody.secrets.transfer import ExportItem, seal_export
    from custody_cli.ceremony_drive import signer_of

    ident = load_identity(Path(args.to))
    recipient = ident.encryption_key()  # endorsed by the recipient's key, of its algorithm
    if recipient is None:
        raise UsageError(f"{ident.name} has no encryption key", "Ask for a newer NAME.pub.json.")
    signer = signer_of(args)  # Ed25519, or P-256 on a token (named in the header)
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        code = access_session.mfa_code(args)
        v = _vault(dep, args)
        items = []
        for path in args.paths:  # one access control for the command: one TOTP code
            ac.authorize(who, "read", args.env, path, mfa_code=code)
            meta = v.show(args.env, path)
            r = v.get(args.env, path)
            items.append(
                ExportItem(env=args.env, path=path, category=meta["category"],
                           owner=meta["owner"], value=r.value,
                           prefix=dep.store.secret(args.env, path).prefix)  # type: ignore[union-attr]
            )  # fmt: skip
        blob = seal_export(items, recipient, sender_public=signer.public, sign=signer.sign,
                           now=int(time.time()), sender_alg=signer.alg)  # fmt: skip
    write_private(args.out, blob)
    info = {"ok": True, "count": len(items), "to": ident.name, "out": args.out}
    if args.json:
        common.emit_json(info)
    else:
        print(f"exported {len(items)} secrets for {ident.name} to {args.out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ceremonies.participants import load_encryption_key, load_identity
    from custody.secrets import parse_category
    from custody.secrets.transfer import open_export
    from custody.secretsource import read_secret

    idents = [load_identity(Path(t)) for t in args.trust]
    trusted = [i.public for i in idents]
    algs = {i.public: i.alg for i in idents}  # each pin's algorithm, as its file records
    pw = read_secret(what="key passphrase", file=args.passphrase_file, env="CUSTODY_PASSPHRASE")
    key = load_encryption_key(Path(args.key), pw)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {args.file}", "Check the path.") from exc
    header, items = open_export(raw, key, trusted_senders=trusted, sender_algs=algs)
    done = []
    with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        code = access_session.mfa_code(args)
        v = _vault(dep, args)
        for it in items:
            ac.authorize(who, "write", it.env, it.path, category=it.category, mfa_code=code)
            w = v.put(
                it.env,
                it.path,
                it.value,
                category=parse_category(it.category),
                owner=it.owner,
                prefix=it.prefix,
                source=f"import:{header['sender'][:16]}",
            )
            done.append({"env": it.env, "path": it.path, "version": w.version})
    if args.json:
        common.emit_json({"ok": True, "imported": done})
    else:
        print(f"imported {len(done)} secrets")
    return 0
