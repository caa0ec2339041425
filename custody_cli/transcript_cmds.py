"""``custody transcript verify|show``: the auditor's offline commands for ceremony bundles.

``verify`` takes its trust anchors only from ``--trust`` pin files on the command line
(identities with a name and a role: :mod:`ceremonies.transcript.pins`) and exits 0 only
when every check passes (6, the integrity exit code, otherwise). Every string from a bundle
is escaped before it is printed, and the verdict is the last line of the output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custody.errors import IntegrityError, UsageError
from custody.textsafe import printable
from custody_cli.common import add_json, emit_json

if TYPE_CHECKING:
    from ceremonies.transcript.pins import Pins
    from custody.audit.signers import TrustKey


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("transcript", help="verify and show ceremony transcript bundles (offline)")
    tsub = p.add_subparsers(dest="transcript_cmd", metavar="ACTION", required=True)

    v = tsub.add_parser("verify", help="verify a bundle against pinned trust keys")
    v.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar archive")
    v.add_argument(
        "--trust",
        metavar="PINS",
        action="append",
        default=[],
        required=True,
        help="pin file: an identity JSON {alg, public, name, role}, a pin list, or 64 hex "
        "(no role: counts toward no quorum); repeatable",
    )
    v.add_argument(
        "--prev",
        metavar="BUNDLE",
        help="the previous ceremony's bundle: check that this one follows its final checkpoint",
    )
    v.add_argument(
        "--min-policy-signatures",
        type=int,
        default=1,
        metavar="N",
        help="distinct pinned keys that must have signed the policy (default 1)",
    )
    add_json(v)
    v.set_defaults(func=cmd_verify)

    e = tsub.add_parser(
        "endorse", help="add your super-admin signature to a bundle's policy (second signer)"
    )
    e.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    e.add_argument("--key", required=True, metavar="KEY", help="your NAME.key.pem (or token ref)")
    e.add_argument("--passphrase-file", metavar="FILE", help="passphrase of --key")
    add_json(e)
    e.set_defaults(func=cmd_endorse)

    k = tsub.add_parser("pack", help="write a bundle directory as one canonical .tar archive")
    k.add_argument("bundle", metavar="BUNDLE")
    k.add_argument("out", metavar="OUT.tar")
    k.set_defaults(func=cmd_pack)

    s = tsub.add_parser("show", help="print a readable timeline of a bundle")
    s.add_argument("bundle", metavar="BUNDLE")
    s.add_argument("--html", metavar="OUT", help="also write a self-contained HTML page")
    s.add_argument(
        "--trust",
        metavar="PINS",
        action="append",
        default=[],
        help="include a verification report against these pin files",
    )
    s.add_argument("--prev", metavar="BUNDLE", help="the previous bundle (see verify --prev)")
    s.set_defaults(func=cmd_show)


def _trust(paths: list[str]) -> Pins:
    from ceremonies.transcript.pins import Pins, load_pins

    keys: list[TrustKey] = []
    for path in paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read pin file {path}", "Check the --trust path.") from exc
        keys += load_pins(raw, default_name=Path(path).name.split(".")[0])
    return Pins.of(keys)


PROGRESS_FROM = 16 << 20  # bytes of events.jsonl from which a progress bar is drawn


def cmd_verify(args: argparse.Namespace) -> int:
    from ceremonies.transcript.bundle import open_bundle
    from ceremonies.transcript.verify import verify_bundle
    from custody_cli.progress import progress_bar

    pins = _trust(args.trust)
    src = open_bundle(args.bundle)
    total = src.events_size()
    with progress_bar("verifying", total, enabled=total >= PROGRESS_FROM) as advance:
        done = [0]

        def tick(n: int) -> None:
            advance(n - done[0])
            done[0] = n

        report = verify_bundle(
            src,
            pins,
            min_policy_signatures=args.min_policy_signatures,
            prev=args.prev,
            progress=tick,
        )
    if args.json:
        emit_json(report.to_json())
    else:
        sys.stdout.write(report.text() + "\n")
    return 0 if report.ok else IntegrityError.exit_code


def cmd_show(args: argparse.Namespace) -> int:
    from ceremonies.transcript.bundle import load_bundle
    from ceremonies.transcript.show import render_html, render_text
    from ceremonies.transcript.verify import verify_bundle

    data = load_bundle(args.bundle)
    report = verify_bundle(data, _trust(args.trust), prev=args.prev) if args.trust else None
    if args.html:  # written first, so that the verdict stays the last line printed
        try:
            Path(args.html).write_text(render_html(data, report), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"Cannot write {args.html}", "Check the --html path.") from exc
        print(f"wrote {printable(args.html)}")
    sys.stdout.write(render_text(data, report) + "\n")
    return 0


def cmd_endorse(args: argparse.Namespace) -> int:
    from ceremonies.participants import load_signer
    from ceremonies.transcript.endorse import endorse_policy
    from custody.secretsource import read_secret

    pw = read_secret(what="key passphrase", file=args.passphrase_file, env="CUSTODY_PASSPHRASE")
    signer = load_signer(Path(args.key), pw)
    try:
        signed, added = endorse_policy(args.bundle, signer)
    finally:
        close = getattr(signer, "close", None)
        if close is not None:
            close()
    names = [s.signer for s in signed.signatures]
    if args.json:
        emit_json({"ok": True, "added": added, "signers": names})
    else:
        what = "endorsed" if added else "already endorsed"
        print(f"{what}: policy of {signed.policy.ceremony_id} signed by {', '.join(names)}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from ceremonies.transcript.bundle import load_bundle, to_archive

    data = load_bundle(args.bundle)
    if data.problems:
        raise IntegrityError(
            f"Cannot pack {args.bundle}: {data.problems[0]}",
            "Verify the bundle; only a well-formed bundle can be packed.",
        )
    try:
        Path(args.out).write_bytes(to_archive(data))
    except OSError as exc:
        raise UsageError(f"Cannot write {args.out}", "Check the output path.") from exc
    print(f"wrote {args.out}")
    return 0
