"""``custody share ...``: what a custodian does with their share.

verify (against the signed envelope), card (PNG/SVG/PDF), seal/unseal (passphrase or the
custodian's token), and the remote hand-in: offer (coordinator), send (custodian),
receive (coordinator). File formats are in ``docs/formats.md``; the custodian's guide is
``docs/shares.md``. Secrets are read from files, the environment or a prompt, never argv.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from custody.errors import ConfigError, UsageError
from custody.privatefile import PUBLIC, private_dir, write_private
from custody.secretsource import read_secret
from custody_cli.common import add_home, add_json, add_pin, emit_json, home_of

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from custody.hsm import Hsm

SEAL_KEY_LABEL = "share-seal"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "share",
        help="verify, print, seal and hand in a custodian's share",
        description="A custodian's share: check it against its signed "
        "envelope, print a card, seal it at rest, hand it in remotely.",
    )
    ss = p.add_subparsers(dest="share_command", metavar="ACTION", required=True)

    v = ss.add_parser(
        "verify",
        help="check a share against its signed envelope",
        description="Check SHARE (a mnemonic text file) against ENV (its "
        "envelope) signed by the dealer key in PUBKEY. Reports a bad signature, "
        "wrong ceremony or epoch, or a commitment mismatch.",
    )
    v.add_argument("share", metavar="SHARE")
    v.add_argument("--envelope", required=True, metavar="ENV")
    v.add_argument(
        "--trust",
        required=True,
        metavar="PUBKEY",
        help='dealer public key: JSON {"alg":"ed25519","public":hex} or a hex line',
    )
    v.add_argument("--ceremony", metavar="ID", help="the ceremony the share must belong to")
    v.add_argument("--epoch", type=int, metavar="N", help="the epoch it must belong to")
    add_json(v)
    v.set_defaults(func=cmd_verify)

    c = ss.add_parser(
        "card",
        help="render a printable share card",
        description="Render the share card: the custodian, 'k of n', the deployment, "
        "the full ceremony id, epoch, date, KCV and envelope fingerprint, the words in "
        "numbered columns with the identifying words large, a QR code of the envelope "
        "(level Q) and what to do with the card. The card holds the words: keep it like "
        "the share.",
    )
    c.add_argument("share", metavar="SHARE")
    c.add_argument("--envelope", required=True, metavar="ENV")
    c.add_argument(
        "--format",
        choices=("png", "svg", "pdf"),
        default=None,
        help="pdf (vector, for printing), svg or png (300 dpi); default: from the --out "
        "suffix (.pdf, .svg, .png), else pdf",
    )
    c.add_argument(
        "--size",
        choices=("a6", "a4", "letter"),
        default="a6",
        help="page: a6 (default; prints at 100%% on A4 or Letter paper), a4, letter",
    )
    c.add_argument("--out", required=True, metavar="PATH")
    c.add_argument("--name", default="", help="custodian name printed on the card")
    c.add_argument("--label", default="", help="a label printed on the card")
    c.add_argument(
        "--deployment",
        default="",
        metavar="ID",
        help="deployment id printed on the card (default: the home's, if there is one)",
    )
    c.add_argument(
        "--group-size",
        type=int,
        default=0,
        metavar="N",
        help="how many shares the card's group has, printed as 'k of N' "
        "(the share itself states only k)",
    )
    c.add_argument(
        "--kind", default="", metavar="KIND", help="the ceremony that issued it: generate, reshare"
    )
    add_home(c)
    c.set_defaults(func=cmd_card)

    for name, helptext in (
        ("seal", "encrypt a share file at rest"),
        ("unseal", "decrypt a sealed share file"),
    ):
        s = ss.add_parser(
            name,
            help=helptext,
            description=(
                "Seal a share under a passphrase (Argon2id + AES-256-GCM) or to the custodian's "
                "token (--token: P-256 ECDH + HKDF + AES-256-GCM)."
                if name == "seal"
                else "Open a sealed share; a wrong passphrase or altered file is refused."
            ),
        )
        s.add_argument("input", metavar="SHARE" if name == "seal" else "SEALED")
        s.add_argument(
            "--out",
            metavar="PATH",
            required=name == "seal",
            help="output file (mode 0600)" + ("" if name == "seal" else "; default stdout"),
        )
        s.add_argument("--envelope", metavar="ENV", help="bind to / check against this envelope")
        g = s.add_mutually_exclusive_group()
        g.add_argument(
            "--passphrase-file",
            metavar="FILE",
            help="passphrase file (else $CUSTODY_SHARE_PASSPHRASE, else a prompt)",
        )
        g.add_argument("--token", action="store_true", help="use the custodian's token")
        s.add_argument("--key-label", default=SEAL_KEY_LABEL, help="token ECDH key label")
        add_home(s)
        add_pin(s)
        s.set_defaults(func=cmd_seal if name == "seal" else cmd_unseal)

    op = ss.add_parser(
        "open",
        help="open the share sealed to you at issue (on your own machine)",
        description="Open NAME.share.sealed, the share generate or reshare sealed to your "
        "encryption key, with your NAME.enc.pem and its passphrase (the same as your signing "
        "key's). Checks that the share is the one its envelope commits to (and, with "
        "--trust, the dealer's signature), then shows the words, or writes them to --out, "
        "and prints your card with --card.",
    )
    op.add_argument("sealed", metavar="SEALED", help="your NAME.share.sealed")
    op.add_argument("--envelope", required=True, metavar="ENV", help="your NAME.envelope.json")
    op.add_argument(
        "--key",
        required=True,
        metavar="FILE",
        help="your NAME.enc.pem (from participant new), or NAME.enc.token.json when your keys "
        "are on your token (then the passphrase is the token PIN)",
    )
    op.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="passphrase of --key (else $CUSTODY_PASSPHRASE, else a prompt)",
    )
    op.add_argument(
        "--trust", metavar="PUBKEY", help="the dealer's public key: also check its signature"
    )
    op.add_argument("--out", metavar="PATH", help="write the words here (mode 0600), not stdout")
    op.add_argument("--card", metavar="PATH", help="also print your share card here (0600)")
    op.add_argument("--card-format", choices=("png", "svg", "pdf"), default="pdf")
    op.add_argument("--card-size", choices=("a6", "a4", "letter"), default="a6")
    add_json(op)
    op.set_defaults(func=cmd_open)

    o = ss.add_parser(
        "offer",
        help="coordinator: make a signed transport offer",
        description="Make an ephemeral X25519 offer bound to the share set "
        "(ceremony and epoch) and to the session (the ceremony that will open the "
        "hand-ins), signed by the coordinator. Writes OUT/offer.txt and "
        "OUT/offer.key (private, mode 0600) and prints the offer as text and QR.",
    )
    o.add_argument(
        "--ceremony",
        required=True,
        metavar="ID",
        help="the share set's generating ceremony (as in the envelopes)",
    )
    o.add_argument("--epoch", type=int, default=0, metavar="N")
    o.add_argument(
        "--session",
        metavar="ID",
        help="the running ceremony that opens the hand-ins (default: a fresh "
        "random session id, printed; give it to the custodian and to 'receive')",
    )
    o.add_argument("--ttl", type=int, default=900, metavar="SECONDS", help="validity (900)")
    o.add_argument("--out", required=True, metavar="DIR")
    k = o.add_mutually_exclusive_group(required=True)
    k.add_argument("--key", metavar="PEM", help="coordinator key: encrypted PKCS#8 PEM")
    k.add_argument(
        "--ephemeral-key",
        action="store_true",
        help="generate an unencrypted coordinator key into OUT (tests, drills)",
    )
    o.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key")
    add_json(o)
    o.set_defaults(func=cmd_offer)

    s = ss.add_parser(
        "send",
        help="custodian: seal a share to a coordinator's offer",
        description="Check the offer (signature by --trust, expiry, and the "
        "envelope's ceremony/epoch), then print the sealed blob and the short "
        "authentication string to compare with the coordinator by voice.",
    )
    s.add_argument("share", metavar="SHARE")
    s.add_argument("--offer", required=True, metavar="OFFER", help="offer text or file")
    s.add_argument("--trust", required=True, metavar="PUBKEY", help="coordinator public key")
    s.add_argument("--envelope", metavar="ENV", help="send the envelope along (recommended)")
    s.add_argument("--ceremony", metavar="ID")
    s.add_argument("--epoch", type=int, metavar="N")
    s.add_argument(
        "--session",
        metavar="ID",
        help="refuse the offer unless it is for this running ceremony (the "
        "coordinator tells you its id)",
    )
    s.add_argument("--out", metavar="PATH", help="write the blob here instead of stdout")
    add_json(s)
    s.set_defaults(func=cmd_send)

    r = ss.add_parser(
        "receive",
        help="coordinator: open a custodian's blob",
        description="Open BLOB with the offer's private key; refuses blobs for "
        "another offer, ceremony, epoch or session, expired offers and altered "
        "blobs.",
    )
    r.add_argument("blob", metavar="BLOB", help="blob text or file")
    r.add_argument("--offer-key", required=True, metavar="KEYFILE")
    r.add_argument(
        "--session",
        metavar="ID",
        help="refuse unless the offer was made for this session (ceremony); "
        "default: the session of --offer-key's own offer (printed)",
    )
    r.add_argument("--out", metavar="PATH", help="write the share here (0600), else stdout")
    add_json(r)
    r.set_defaults(func=cmd_receive)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {what} {path}", "Check the path.") from exc


def _text_or_file(value: str, what: str) -> str:
    if os.path.exists(value):
        return _read(value, what).decode("utf-8", "replace")
    return value


def read_share_file(path: str) -> str:
    """A share file: the mnemonic words, any line breaks; '#' lines are comments."""
    text = _read(path, "share file").decode("utf-8", "replace")
    return " ".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))


def cmd_verify(args: argparse.Namespace) -> int:
    from custody.shares import envelope as ev
    from custody.shares.slip39 import parse_share

    share = parse_share(read_share_file(args.share), label=args.share)
    env = ev.load_envelope(_read(args.envelope, "envelope"))
    pub, _, alg = ev.load_trust_public(_read(args.trust, "public key").decode("utf-8", "replace"))
    ev.verify_share(
        share, env, pub, alg=alg, expected_ceremony=args.ceremony, expected_epoch=args.epoch
    )
    p = env.payload
    info = {
        "ok": True,
        "ceremony_id": p.ceremony_id,
        "epoch": p.epoch,
        "group": p.group_index + 1,
        "member": p.member_index + 1,
        "custodian": p.custodian,
        "fingerprint": env.short_fingerprint(),
    }
    if args.json:
        emit_json(info)
    else:
        print(
            f"share OK: ceremony {p.ceremony_id}, epoch {p.epoch}, group {info['group']}, "
            f"member {info['member']}, envelope fingerprint {info['fingerprint']}"
        )
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from custody.shares import card
    from custody.shares import envelope as ev
    from custody.shares.slip39 import parse_share

    fmt = _card_format(args.format, args.out)
    share = parse_share(read_share_file(args.share), label=args.share)
    env = ev.load_envelope(_read(args.envelope, "envelope"))
    ev.check_commitment(share, env)
    deployment = args.deployment
    if not deployment:
        home = home_of(args)
        if home.exists():
            deployment = home.load().deployment_id
    try:
        c = card.Card(
            name=args.name,
            label=args.label,
            words=tuple(share.mnemonic.split()),
            envelope=env,
            facts=card.CardFacts(deployment=deployment, kind=args.kind, group_size=args.group_size),
        )
        data = card.render(c, fmt, size=args.size)
    except ValueError as exc:
        raise UsageError(
            f"Cannot print this card: {exc}", "Check --group-size and --name."
        ) from exc
    write_private(args.out, data)
    print(
        f"wrote {fmt} {args.size} card to {args.out} (fingerprint {env.short_fingerprint()})",
        file=sys.stderr,
    )
    return 0


def _card_format(fmt: str | None, out: str) -> str:
    """The card's format: --format, else the --out suffix, else pdf. A suffix that names
    another format is refused: a PNG saved as card.pdf would not open or print.

    Raises:
        UsageError: --format and the suffix disagree.
    """
    suffix = Path(out).suffix.lower().lstrip(".")
    known = suffix in ("png", "svg", "pdf")
    if fmt is None:
        return suffix if known else "pdf"
    if known and suffix != fmt:
        raise UsageError(
            f"--format {fmt} but --out ends in .{suffix}",
            f"Name the file .{fmt}, or drop --format to write {suffix}.",
        )
    return fmt


def _seal_passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes:
    return read_secret(
        what="share passphrase",
        file=args.passphrase_file,
        env="CUSTODY_SHARE_PASSPHRASE",
        confirm=confirm,
    ).encode()


def _open_token(args: argparse.Namespace) -> Hsm:
    from custody_cli.common import open_home_token

    return open_home_token(args)


def cmd_seal(args: argparse.Namespace) -> int:
    from custody.shares import seal
    from custody.shares.slip39 import parse_share

    share = parse_share(read_share_file(args.input), label=args.input).mnemonic
    env = _read(args.envelope, "envelope") if args.envelope else None
    if args.token:
        with closing(_open_token(args)) as hsm:
            out = seal.seal_to_token(
                share,
                hsm.ensure_ecdh_key(args.key_label),
                key_label=args.key_label,
                envelope=env,
            )
    else:
        out = seal.seal_with_passphrase(share, _seal_passphrase(args, confirm=True), envelope=env)
    write_private(args.out, out + b"\n")
    print(f"sealed share written to {args.out}", file=sys.stderr)
    return 0


def cmd_unseal(args: argparse.Namespace) -> int:
    from custody.shares import seal

    raw = _read(args.input, "sealed share")
    env = _read(args.envelope, "envelope") if args.envelope else None
    if seal.load_sealed(raw).mode == "token":
        with closing(_open_token(args)) as hsm:
            share = seal.unseal_with_token(raw, hsm, envelope=env)
    else:
        if args.token:
            raise UsageError(
                "This share is sealed under a passphrase", "Drop --token and give the passphrase."
            )
        share = seal.unseal_with_passphrase(
            raw, _seal_passphrase(args, confirm=False), envelope=env
        )
    if args.out:
        write_private(args.out, share.encode() + b"\n")
    else:
        print(share)
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    from ceremonies.participants import load_encryption_key
    from custody.shares import card, seal
    from custody.shares import envelope as ev
    from custody.shares.slip39 import parse_share

    raw = _read(args.sealed, "sealed share")
    env_raw = _read(args.envelope, "envelope")
    env = ev.load_envelope(env_raw)
    pw = read_secret(what="key passphrase", file=args.passphrase_file, env="CUSTODY_PASSPHRASE")
    key = load_encryption_key(Path(args.key), pw)
    words = seal.unseal_with_recipient_key(raw, key, envelope=env_raw)
    share = parse_share(words, label=args.sealed)
    if args.trust:
        text = _read(args.trust, "public key").decode("utf-8", "replace")
        pub, _, alg = ev.load_trust_public(text)
        ev.verify_share(share, env, pub, alg=alg)
    else:
        ev.check_commitment(share, env)
    p = env.payload
    name = str(seal.load_sealed(raw).header.get("custodian", ""))
    if args.card:
        c = card.Card(
            name=name,
            words=tuple(share.mnemonic.split()),
            envelope=env,
            facts=card.CardFacts(deployment="", kind="", group_size=0),
        )
        write_private(args.card, card.render(c, args.card_format, size=args.card_size))
    if args.out:
        write_private(args.out, (share.mnemonic + "\n").encode())
    info = {
        "ok": True,
        "custodian": name,
        "ceremony_id": p.ceremony_id,
        "epoch": p.epoch,
        "group": p.group_index + 1,
        "member": p.member_index + 1,
        "fingerprint": env.short_fingerprint(),
        "dealer_checked": bool(args.trust),
        "out": args.out,
        "card": args.card,
    }
    if args.json:
        emit_json(info)  # never the words: those go to the terminal or to --out only
        if not args.out:
            print(share.mnemonic, file=sys.stderr)
        return 0
    print(
        f"share OK: {name}, group {info['group']} member {info['member']}, ceremony "
        f"{p.ceremony_id}, envelope fingerprint {info['fingerprint']}",
        file=sys.stderr,
    )
    if not args.out:
        for i, w in enumerate(share.mnemonic.split(), start=1):
            print(f"{i:2d} {w}")
    return 0


def _coordinator_key(args: argparse.Namespace, out: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from custody.shares.envelope import public_key_json
    from custody.signing import private_from_pem, public_raw

    if args.key:
        pw = read_secret(
            what="coordinator key passphrase",
            file=args.passphrase_file,
            env="CUSTODY_PASSPHRASE",
        )
        return private_from_pem(_read(args.key, "coordinator key"), pw.encode())
    key = Ed25519PrivateKey.generate()
    write_private(
        str(out / "coordinator.key.pem"),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private(
        out / "coordinator.pub.json",
        (public_key_json(public_raw(key), "coordinator") + "\n").encode(),
        mode=PUBLIC,
    )
    return key


def cmd_offer(args: argparse.Namespace) -> int:
    from custody.shares import card, transport

    if args.ttl <= 0 or args.epoch < 0:
        raise UsageError("--ttl must be positive and --epoch not negative", "")
    out = Path(args.out)
    private_dir(out)
    key = _coordinator_key(args, out)
    if args.session is not None and not args.session:
        raise UsageError("--session must not be empty", "Give the running ceremony's id.")
    session = args.session if args.session is not None else secrets.token_hex(16)
    ok = transport.make_offer(
        ceremony_id=args.ceremony,
        epoch=args.epoch,
        session=session,
        coordinator=key,
        now=int(time.time()),
        ttl=args.ttl,
    )
    text = ok.offer.to_text()
    write_private(out / "offer.key", ok.to_json().encode())
    write_private(out / "offer.txt", (text + "\n").encode(), mode=PUBLIC)
    if args.json:
        emit_json(
            {
                "ok": True,
                "offer": text,
                "expires": ok.offer.expires,
                "session": ok.offer.session,
                "key_file": str(out / "offer.key"),
            }
        )
    else:
        print(text)
        qr = card.screen_qr_matrix(card.offer_qr_content(text))  # the compact form, level L
        print(card.half_blocks(qr, dark_foreground=False), file=sys.stderr)
        print(
            f"offer valid until {time.strftime('%H:%M:%S', time.localtime(ok.offer.expires))}; "
            f"session {ok.offer.session}; private half in {out / 'offer.key'}",
            file=sys.stderr,
        )
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from custody.shares import envelope as ev
    from custody.shares import transport
    from custody.shares.slip39 import parse_share

    share = parse_share(read_share_file(args.share), label=args.share)
    env = _read(args.envelope, "envelope") if args.envelope else None
    if env is not None:
        ev.check_commitment(share, ev.load_envelope(env))
    pub, _, alg = ev.load_trust_public(_read(args.trust, "public key").decode("utf-8", "replace"))
    offer = _text_or_file(args.offer, "offer")
    blob, words = transport.seal_to_offer(
        offer,
        share.mnemonic,
        trusted_coordinator=pub,
        trusted_alg=alg,
        now=int(time.time()),
        envelope=env,
        expected_ceremony=args.ceremony,
        expected_epoch=args.epoch,
        expected_session=args.session,
    )
    session = transport.parse_offer(offer).session
    if args.out:
        write_private(args.out, (blob + "\n").encode())
    if args.json:
        emit_json({"ok": True, "blob": blob, "sas": words, "session": session})
    else:
        if not args.out:
            print(blob)
        print(f"sealed for session (ceremony) {session}", file=sys.stderr)
        print(f"short authentication string: {words}", file=sys.stderr)
        print("read these words to the coordinator; stop if theirs differ", file=sys.stderr)
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from custody.shares import transport

    key = transport.load_offer_key(_read(args.offer_key, "offer key").decode("utf-8", "replace"))
    if args.session is not None and not args.session:
        raise UsageError("--session must not be empty", "Give the running ceremony's id.")
    session = args.session if args.session is not None else key.offer.session
    hand = transport.open_blob(
        _text_or_file(args.blob, "blob"), key, now=int(time.time()), expected_session=session
    )
    if args.out:
        write_private(args.out, hand.share.encode() + b"\n")
        if hand.envelope is not None:
            write_private(args.out + ".envelope.json", hand.envelope, mode=PUBLIC)
    if args.json:
        emit_json(
            {
                "ok": True,
                "sas": hand.sas,
                "session": session,
                "share": None if args.out else hand.share,
                "envelope": hand.envelope.decode() if hand.envelope else None,
            }
        )
    else:
        if not args.out:
            print(hand.share)
        print(f"opened for session (ceremony) {session}", file=sys.stderr)
        print(f"short authentication string: {hand.sas}", file=sys.stderr)
    return 0
