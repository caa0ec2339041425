"""``custody shamir split|combine``: a general SLIP-0039 tool, like ``ssss``.

The secret is read as hex on stdin and printed as hex on stdout; the passphrase comes from
``--passphrase-file`` or ``--ask-passphrase``, never from argv. A bad set exits non-zero
with a typed error naming the share (``FILE:LINE``) and nothing on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from custody.errors import ConfigError, UsageError
from custody.privatefile import private_dir, write_private
from custody.secretsource import read_secret
from custody_cli.common import add_json, emit_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "shamir",
        help="split or combine a secret with SLIP-0039 shares",
        description="Split a 16- to 32-byte secret into SLIP-0039 mnemonic "
        "shares, or combine shares back. Compatible with any SLIP-0039 tool.",
    )
    ss = p.add_subparsers(dest="shamir_command", metavar="ACTION", required=True)

    sp = ss.add_parser(
        "split",
        help="split a hex secret read on stdin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a secret as hex on stdin (16 to 32 bytes, an even number) and split "
        "it.\nOne group:   custody shamir split --threshold 3 --shares 5 < secret.hex\n"
        "Groups:      custody shamir split --group-threshold 2 --group 2/3 --group 3/5 "
        "--group 1/1\nOutput: one mnemonic per line, a blank line between groups; or one "
        "file per share (mode 0600) with --out DIR.",
    )
    sp.add_argument("--threshold", "-t", type=int, metavar="T", help="shares needed (one group)")
    sp.add_argument("--shares", "-n", type=int, metavar="N", help="shares made (one group)")
    sp.add_argument("--group-threshold", type=int, metavar="G", help="groups needed")
    sp.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="T/N",
        help="a group of N shares, T of which are needed (repeat per group)",
    )
    sp.add_argument(
        "--extendable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="set the SLIP-0039 extendable-backup flag (default: on)",
    )
    sp.add_argument(
        "--iteration-exponent",
        type=int,
        default=1,
        metavar="E",
        help="PBKDF2 cost exponent, 0..15 (default 1)",
    )
    sp.add_argument("--out", metavar="DIR", help="write one file per share into DIR")
    _add_passphrase(sp)
    add_json(sp)
    sp.set_defaults(func=cmd_split)

    cp = ss.add_parser(
        "combine",
        help="combine mnemonics and print the secret as hex",
        description="Read mnemonics, one share per line (blank lines and '#' comments are "
        "skipped; unique 4-letter prefixes are accepted), from FILEs or stdin, and print the "
        "master secret as hex. A bad or insufficient set names the share and the problem.",
    )
    cp.add_argument("files", nargs="*", metavar="FILE", help="share files (default: stdin)")
    _add_passphrase(cp)
    add_json(cp)
    cp.set_defaults(func=cmd_combine)


def _add_passphrase(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="file holding the SLIP-0039 passphrase (one trailing newline stripped)",
    )
    g.add_argument(
        "--ask-passphrase",
        action="store_true",
        help="prompt for the SLIP-0039 passphrase (default: empty passphrase)",
    )


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes:
    if not args.passphrase_file and not args.ask_passphrase:
        return b""
    value = read_secret(
        what="SLIP-0039 passphrase",
        file=args.passphrase_file,
        prompt=args.ask_passphrase,
        confirm=confirm,
    )
    if not all(32 <= ord(c) <= 126 for c in value):
        raise UsageError(
            "The passphrase has characters other than printable ASCII",
            "SLIP-0039 passphrases use ASCII codes 32 to 126 only.",
        )
    return value.encode()


def _groups(args: argparse.Namespace) -> tuple[int, list[tuple[int, int]]]:
    if args.group:
        if args.threshold is not None or args.shares is not None:
            raise UsageError(
                "Use either --threshold/--shares or --group, not both",
                "For groups, give --group-threshold G and --group T/N per group.",
            )
        groups = []
        for g in args.group:
            t, sep, n = g.partition("/")
            if not (sep and t.isdigit() and n.isdigit()):
                raise UsageError(f"--group {g!r} is not T/N", "Write a group as 2/3.")
            groups.append((int(t), int(n)))
        return (args.group_threshold or 1), groups
    if args.threshold is None or args.shares is None:
        raise UsageError(
            "Say how to split",
            "Give --threshold T --shares N, or "
            "--group-threshold G with --group T/N for each group.",
        )
    if args.group_threshold not in (None, 1):
        raise UsageError("--group-threshold needs --group", "Add one --group T/N per group.")
    return 1, [(args.threshold, args.shares)]


def _read_secret_hex() -> bytes:
    text = "".join(sys.stdin.read().split())
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise UsageError(
            "The secret on stdin is not hex", "Give 32 to 64 hex digits (16 to 32 bytes)."
        ) from None
    if not 16 <= len(secret) <= 32 or len(secret) % 2:
        raise UsageError(
            f"The secret is {len(secret)} bytes", "SLIP-0039 takes 16 to 32 bytes, an even number."
        )
    return secret


def cmd_split(args: argparse.Namespace) -> int:
    from custody.shares import slip39

    gt, groups = _groups(args)
    secret = _read_secret_hex()
    passphrase = _passphrase(args, confirm=True)
    try:
        out = slip39.split(
            secret,
            groups=groups,
            group_threshold=gt,
            passphrase=passphrase,
            extendable=args.extendable,
            iteration_exponent=args.iteration_exponent,
        )
    except ValueError as exc:  # messages name parameters only, never values
        raise UsageError(f"Cannot split: {exc}", "Check the thresholds and counts.") from None
    if args.out:
        paths = _write_shares(Path(args.out), out)
        if args.json:
            emit_json({"ok": True, "files": [[str(p) for p in g] for g in paths]})
        else:
            print(f"wrote {sum(map(len, paths))} share files to {args.out}", file=sys.stderr)
        return 0
    if args.json:
        emit_json({"ok": True, "group_threshold": gt, "groups": [list(g) for g in out]})
        return 0
    print("\n\n".join("\n".join(g) for g in out))
    return 0


def _write_shares(out: Path, groups: tuple[tuple[str, ...], ...]) -> list[list[Path]]:
    private_dir(out)
    paths = [
        [out / f"share-g{gi}-m{mi}.txt" for mi in range(1, len(g) + 1)]
        for gi, g in enumerate(groups, start=1)
    ]
    for p in (p for row in paths for p in row):
        if os.path.lexists(p):
            raise UsageError(
                f"{p} already exists",
                "Use an empty directory; existing shares are never overwritten.",
            )
    for row, g in zip(paths, groups, strict=True):
        for p, m in zip(row, g, strict=True):
            write_private(p, (m + "\n").encode(), exclusive=True)
    return paths


def read_share_lines(files: list[str]) -> tuple[list[str], list[str]]:
    """Read shares, one per non-blank, non-'#' line. Returns (mnemonics, labels FILE:LINE).

    Raises:
        ConfigError: a file cannot be read.
    """
    sources: list[tuple[str, str | None]] = [(f, None) for f in files] or [
        ("stdin", sys.stdin.read())
    ]
    shares, labels = [], []
    for name, text in sources:
        if text is None:
            try:
                text = Path(name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"Cannot read share file {name}", "Check the path and that it is a text file."
                ) from exc
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                shares.append(line)
                labels.append(f"{name}:{n}")
    return shares, labels


def cmd_combine(args: argparse.Namespace) -> int:
    from custody.shares import slip39

    shares, labels = read_share_lines(args.files)
    passphrase = _passphrase(args, confirm=False)
    secret = slip39.combine(shares, passphrase, labels=labels)
    if args.json:
        emit_json({"ok": True, "secret": secret.hex()})
    else:
        print(secret.hex())
    return 0
