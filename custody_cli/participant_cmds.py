"""``custody participant new|list``: participant signing keys and the roster view."""

from __future__ import annotations

import argparse
from pathlib import Path

from custody_cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p0 = sub.add_parser("participant", help="participant signing keys and the roster")
    ps = p0.add_subparsers(dest="participant_command", metavar="ACTION", required=True)
    p = ps.add_parser(
        "new",
        help="create a participant's signing key (Ed25519; on a token without EdDSA, P-256)",
        description="Create NAME.key.pem (encrypted PKCS#8 under the passphrase) "
        "and NAME.pub.json (the public identity; also a trust-key file for "
        "'custody transcript verify --trust'). With --token-label, the key is "
        "generated on the participant's own PKCS#11 token instead and "
        "NAME.token.json (a non-secret reference to it) replaces NAME.key.pem. "
        "Enrol it with 'custody ceremony enrol'.",
    )
    p.add_argument("name")
    p.add_argument(
        "--role", required=True, choices=("custodian", "super-admin", "auditor", "witness")
    )
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="file holding the key passphrase; else $CUSTODY_PASSPHRASE, else a prompt",
    )
    p.add_argument(
        "--token-label",
        metavar="LABEL",
        help="generate the key on this PKCS#11 token (the participant's own) instead",
    )
    p.add_argument(
        "--token-module",
        metavar="PATH",
        default=None,
        help="PKCS#11 library of that token (default: SoftHSMv2's; a SoftHSMv2 "
        "token is looked up under $SOFTHSM2_CONF)",
    )
    p.add_argument(
        "--token-slot",
        type=int,
        metavar="N",
        help="slot of that token (when several share the label)",
    )
    p.add_argument(
        "--token-alg",
        choices=("auto", "ed25519", "ecdsa-p256"),
        default=None,
        help="algorithm of the key made on the token: auto (default: Ed25519 where the "
        "token offers CKM_EDDSA, else ECDSA P-256 where it offers CKM_ECDSA), ed25519 or "
        "ecdsa-p256; a token with neither is refused before anything is created",
    )
    common.add_pin(p)
    common.add_json(p)
    p.set_defaults(func=cmd_new)
    p = ps.add_parser("list", help="list enrolled participants")
    common.add_standard(p)
    p.set_defaults(func=cmd_list)


def _new_on_token(args: argparse.Namespace) -> int:
    from ceremonies.participants import (
        TOKEN_ENC_SUFFIX,
        create_token_participant,
        load_identity,
    )
    from custody.config import DEFAULT_SOFTHSM_MODULE
    from custody.errors import UsageError

    if args.passphrase_file:
        raise UsageError(
            "--passphrase-file does not apply to a token-held key",
            "Give the token PIN with --pin-file (or $CUSTODY_PIN, or a prompt).",
        )
    pin = common.user_pin(args)
    ref, pub = create_token_participant(
        args.name,
        args.role,
        Path(args.out),
        token_label=args.token_label,
        pin=pin,
        module=args.token_module or DEFAULT_SOFTHSM_MODULE,
        slot=args.token_slot,
        algorithm=args.token_alg or "auto",
    )
    ident = load_identity(pub)
    enc = Path(args.out) / f"{ident.name}{TOKEN_ENC_SUFFIX}"
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "name": ident.name,
                "role": ident.role,
                "fingerprint": ident.fingerprint,
                "alg": ident.alg,
                "token": str(ref),
                "token_label": args.token_label,
                "identity": str(pub),
                "encryption_key": str(enc) if ident.x25519 is not None else None,
            }
        )
    else:
        print(
            f"created {ident.role} {ident.name} (fingerprint {ident.fingerprint}) "
            f"on token {args.token_label!r}"
        )
        print(f"  algorithm   : {ident.alg}" + _alg_note(ident.alg, args.token_alg))
        print(f"  token ref   : {ref}  (use it as --key; the secret is the token PIN)")
        if ident.x25519 is not None:
            print(f"  encryption  : {enc}  (open sealed shares with it; the token PIN again)")
        else:
            print("  encryption  : none (the token has no AES-GCM; shares go to you in plain)")
        print(f"  identity    : {pub}  (hand this to the coordinator)")
    return 0


def _alg_note(alg: str, asked: str | None) -> str:
    if alg == "ecdsa-p256" and asked != "ecdsa-p256":
        return "  (the token has no CKM_EDDSA; recorded in NAME.pub.json and NAME.token.json)"
    return ""


def cmd_new(args: argparse.Namespace) -> int:
    from ceremonies.participants import create_participant, load_identity
    from custody.errors import UsageError
    from custody.secretsource import read_secret

    if args.token_label:
        return _new_on_token(args)
    if args.token_module or args.token_slot is not None or args.pin_file or args.token_alg:
        raise UsageError(
            "--token-module, --token-slot, --token-alg and --pin-file need --token-label",
            "Add --token-label LABEL, or drop them for a passphrase key.",
        )
    pw = read_secret(
        what="key passphrase",
        file=args.passphrase_file,
        file_key=None,
        env="CUSTODY_PASSPHRASE",
        confirm=True,
    )
    key, pub = create_participant(args.name, args.role, pw, Path(args.out))
    ident = load_identity(pub)
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "name": ident.name,
                "role": ident.role,
                "fingerprint": ident.fingerprint,
                "key": str(key),
                "identity": str(pub),
            }
        )
    else:
        print(f"created {ident.role} {ident.name} (fingerprint {ident.fingerprint})")
        print(f"  private key : {key}  (keep it; passphrase-protected)")
        print(f"  identity    : {pub}  (hand this to the coordinator)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ceremonies.roster import Roster
    from custody.deployment import open_home_store

    home = common.home_of(args)
    store = open_home_store(home)
    try:
        members = Roster(store).members()
    finally:
        store.close()
    rows = [
        {
            "name": m.name,
            "role": m.role,
            "alg": m.alg,
            "fingerprint": m.fingerprint,
            "valid_from": m.valid_from,
            "valid_until": m.valid_until,
            "revoked_at": m.revoked_at,
            "enrolled_by": m.enrolled_by,
        }
        for m in members
    ]
    if args.json:
        common.emit_json(rows)
        return 0
    if not rows:
        print("no participants enrolled")
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        print(f"{r['name']}\t{r['role']}\t{r['alg']}\t{r['fingerprint']}\t{state}")
    return 0
