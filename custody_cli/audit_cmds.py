"""``custody audit verify|proof|check-proof|checkpoint|tail``: the operational audit log.

``verify --trust`` fails unless a checkpoint signed by a pinned key exists; ``--witness DIR``
and ``--known-checkpoint FILE`` hold the log to checkpoints kept off the database (written
by ``checkpoint --export DIR``), so deleting checkpoints, truncating the tail or rewriting
and re-chaining entries is seen.

``check-proof`` is offline and needs nothing but the proof file and a pinned key. Every
string read from the log (actor, op, target, details, problems) is escaped before it is
printed (:func:`custody.textsafe.printable`), so a log entry cannot drive the terminal. The
checkpoint signer is the HSM's audit signing key (label ``audit``) by default, or an
Ed25519 PKCS#8 key with ``--key-file`` (its passphrase from ``--passphrase-file``,
``$CUSTODY_PASSPHRASE`` or a prompt).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.errors import AuditError, UsageError
from custody.textsafe import printable
from custody_cli import access_session
from custody_cli.common import add_home, add_json, add_pin, emit_json, home_of

if TYPE_CHECKING:
    from custody.audit.log import AuditLog
    from custody.audit.records import AuditReport
    from custody.audit.signers import Sealer, Signer, TrustKey
    from custody.hsm import Hsm

HSM_AUDIT_LABEL = "audit"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="verify, prove and checkpoint the operational audit log")
    a = p.add_subparsers(dest="audit_cmd", metavar="ACTION", required=True)

    v = a.add_parser("verify", help="verify the chain, checkpoints and their signatures")
    add_home(v)
    v.add_argument(
        "--trust",
        metavar="PUBKEY",
        action="append",
        default=None,
        help="pinned audit signing key (JSON or 64 hex); repeatable; then at least one "
        "checkpoint signed by a pinned key must exist",
    )
    v.add_argument(
        "--witness",
        metavar="DIR",
        action="append",
        default=[],
        help="hold the log to every checkpoint in DIR (from 'audit checkpoint --export')",
    )
    v.add_argument(
        "--known-checkpoint",
        metavar="FILE",
        help="the last checkpoint you hold: the log must be an append-only extension of it",
    )
    v.add_argument(
        "--max-age",
        metavar="AGE",
        type=_duration,
        help="warn when the newest pinned checkpoint is older (e.g. 3600, 90m, 36h, 7d)",
    )
    v.add_argument(
        "--max-behind",
        metavar="N",
        type=int,
        help="warn when more than N entries follow the newest pinned checkpoint",
    )
    v.add_argument(
        "--seal",
        action="store_true",
        help="also check the newest seal with the token's MAC key (logs in to the token)",
    )
    add_pin(v)
    add_json(v)
    v.set_defaults(func=cmd_verify)

    pr = a.add_parser("proof", help="export a self-contained inclusion proof of one entry")
    add_home(pr)
    pr.add_argument("--entry", type=int, required=True, metavar="N")
    pr.add_argument("--out", metavar="FILE", help="write the proof here (default: stdout)")
    pr.set_defaults(func=cmd_proof)

    c = a.add_parser("check-proof", help="check a proof file offline against a pinned key")
    c.add_argument("proof", metavar="FILE")
    c.add_argument("--trust", metavar="PUBKEY", action="append", required=True)
    add_json(c)
    c.set_defaults(func=cmd_check_proof)

    k = a.add_parser("checkpoint", help="sign a checkpoint over every entry so far")
    add_home(k)
    add_pin(k)
    k.add_argument(
        "--key-file", metavar="PEM", help="sign with this Ed25519 key instead of the HSM"
    )
    k.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key-file")
    k.add_argument("--trust-out", metavar="FILE", help="also write the signer's public key here")
    k.add_argument(
        "--export",
        metavar="DIR",
        help="also write each signed checkpoint (this one and any stored one missing there) "
        "to DIR, a witness directory or WORM path, one file each, never overwritten",
    )
    k.add_argument(
        "--seal",
        action="store_true",
        help="also seal the chain head with the token's MAC key (created if absent)",
    )
    add_json(k)
    k.set_defaults(func=cmd_checkpoint)

    t = a.add_parser("tail", help="print the last entries")
    add_home(t)
    t.add_argument("-n", type=int, default=20, metavar="N")
    add_json(t)
    access_session.add_principal_args(t)
    t.set_defaults(func=cmd_tail)


def _log(args: argparse.Namespace) -> AuditLog:
    from custody.deployment import open_audit_log

    return open_audit_log(home_of(args), hint="Point --home at a custody deployment.")


def _trust(paths: list[str]) -> list[TrustKey]:
    from custody.audit.signers import parse_trust_key

    out = []
    for path in paths:
        try:
            out.append(parse_trust_key(Path(path).read_bytes(), default_name=Path(path).stem))
        except OSError as exc:
            raise UsageError(f"Cannot read trust key {path}", "Check the --trust path.") from exc
    return out


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    t = text.strip().lower()
    mult = _UNITS.get(t[-1:], 0)
    num = t[:-1] if mult else t
    if not num.isdigit():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 36h, 7d)")
    return int(num) * (mult or 1)


def _read_json(path: Path, what: str) -> dict[str, object]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read {what} {path}", "Give a checkpoint file.") from exc
    if isinstance(doc, dict) and isinstance(doc.get("checkpoint"), dict):
        doc = doc["checkpoint"]  # the --json output of 'custody audit checkpoint'
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a checkpoint", "Give a checkpoint file.")
    return doc


def _witnesses(dirs: list[str]) -> list[tuple[str, dict[str, object]]]:
    out = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise UsageError(f"No witness directory {d}", "Give the --export directory.")
        for f in sorted(p.glob("*.json")):
            out.append((f.name, _read_json(f, "witness checkpoint")))
    return out


def _verify(
    args: argparse.Namespace,
    log: AuditLog,
    trust: list[TrustKey] | None,
    witnesses: list[tuple[str, dict[str, object]]],
    known: dict[str, object] | None,
    sealer: Sealer | None,
) -> AuditReport:
    from custody_cli.progress import progress_bar

    total = log.size()
    with progress_bar("verifying", total, enabled=total >= 200_000) as advance:
        done = [0]

        def tick(n: int) -> None:
            advance(n - done[0])
            done[0] = n

        return log.verify(
            trust,
            witnesses=witnesses,
            known=known,
            max_age=args.max_age,
            max_behind=args.max_behind,
            progress=tick,
            sealer=sealer,
        )


def cmd_verify(args: argparse.Namespace) -> int:
    from custody.audit.signers import HsmSealer
    from custody_cli.common import open_home_token

    trust = _trust(args.trust) if args.trust is not None else None
    witnesses = _witnesses(args.witness)
    known = (
        _read_json(Path(args.known_checkpoint), "known checkpoint")
        if args.known_checkpoint
        else None
    )
    hsm = open_home_token(args) if args.seal else None
    try:
        sealer = HsmSealer(hsm) if hsm is not None else None
        with _log(args) as log:
            rep = _verify(args, log, trust, witnesses, known, sealer)
    finally:
        if hsm is not None:
            hsm.close()
    if args.json:
        emit_json(rep.to_json())
    else:
        for x in rep.problems:
            print(f"  FAIL {printable(x)}")
        for x in rep.warnings:
            print(f"  WARN {printable(x)}")
        for x in rep.notes:
            print(f"  note {printable(x)}")
        print(  # the verdict last, below everything the log supplied
            ("VALID" if rep.ok else "INVALID")
            + f": {rep.entries} entries, {rep.checkpoints} checkpoints"
        )
    return 0 if rep.ok else AuditError.exit_code


def cmd_proof(args: argparse.Namespace) -> int:
    with _log(args) as log:
        doc = log.proof(args.entry)
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            raise UsageError(f"Cannot write {args.out}", "Check the --out path.") from exc
        print(
            f"wrote proof of entry {args.entry} "
            f"(tree size {doc['checkpoint']['tree_size']}) to {args.out}"
        )
    else:
        print(text, end="")
    return 0


def cmd_check_proof(args: argparse.Namespace) -> int:
    from custody.audit.records import check_proof

    try:
        doc = json.loads(Path(args.proof).read_text())
    except (OSError, ValueError) as exc:
        raise AuditError(
            f"Cannot read proof {args.proof}", "Give a file from 'custody audit proof'."
        ) from exc
    summary = check_proof(doc, _trust(args.trust))
    if args.json:
        emit_json({"ok": True, "summary": summary})
    else:
        print(f"VALID: {printable(summary)}")
    return 0


def _signer(args: argparse.Namespace) -> tuple[Signer, Hsm | None]:
    if args.key_file:
        from custody.audit.signers import Ed25519Signer
        from custody.secretsource import read_secret
        from custody.signing import private_from_pem

        pw = read_secret(
            what="signing key passphrase", file=args.passphrase_file, env="CUSTODY_PASSPHRASE"
        )
        try:
            pem = Path(args.key_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read {args.key_file}", "Check the --key-file path.") from exc
        return Ed25519Signer(Path(args.key_file).stem, private_from_pem(pem, pw.encode())), None
    from custody.audit.signers import HsmSigner
    from custody_cli.common import open_home_token

    hsm = open_home_token(args)
    return HsmSigner("hsm-audit", hsm, HSM_AUDIT_LABEL), hsm


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from custody.audit.signers import HsmSealer, TrustKey
    from custody_cli.common import open_home_token

    sealed = None
    with _log(args) as log:
        signer, hsm = _signer(args)
        try:
            cp = log.checkpoint(signer)
            if args.seal:
                token = hsm if hsm is not None else open_home_token(args)
                try:
                    sealed = log.seal(HsmSealer(token, create=True))
                finally:
                    if token is not hsm:
                        token.close()
        finally:
            if hsm is not None:
                hsm.close()
        exported = log.export_checkpoints(Path(args.export)) if args.export else []
    tk = TrustKey.of(signer).to_json()
    if args.trust_out:
        Path(args.trust_out).write_text(json.dumps(tk, sort_keys=True) + "\n")
    if args.json:
        emit_json(
            {"ok": True, "checkpoint": cp, "signer": tk, "exported": exported, "sealed": sealed}
        )
    else:
        print(f"checkpoint at tree size {cp['tree_size']}, root {cp['root']}")
        print(f"signed by {tk['name']} ({tk['alg']} {tk['public']})")
        if sealed is not None:
            print(f"sealed the chain up to entry {sealed} with the token's MAC key")
        for name in exported:
            print(f"exported {printable(name)} to {printable(args.export)}")
    return 0


def _visible(args: argparse.Namespace) -> Any:
    """The acting principal's view of the log (None: the local operator, who sees it all)."""
    import os

    from custody_cli import common

    if not (args.as_principal or args.token_file or os.environ.get("CUSTODY_TOKEN")):
        return None
    with common.open_home(args, pin=False) as dep, access_session.opened(dep, args) as ac:
        who = access_session.acting(ac, args)
        return ac.audit_view(who, mfa_code=access_session.mfa_code(args))


def cmd_tail(args: argparse.Namespace) -> int:
    visible = _visible(args)
    with _log(args) as log:
        n = log.size()
        lines = log.lines(max(0, n - args.n), n) if visible is None else log.lines()
    entries = [json.loads(x) for x in lines]
    if visible is not None:  # a principal's own view: its last N entries
        entries = [e for e in entries if visible(e)][-args.n :] if args.n > 0 else []
    if args.json:
        emit_json({"entries": entries, "total": n})
        return 0
    from datetime import datetime

    p = printable
    for e in entries:
        ts = datetime.fromtimestamp(e["time"], UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        det = " ".join(f"{p(k)}={p(v)}" for k, v in e["details"].items())
        print(
            f"{e['seq']:>7} {ts} {p(e['outcome']):<6} {p(e['actor']):<12} {p(e['op'])} "
            f"{p(e['target'])} {det}"
        )
    return 0
