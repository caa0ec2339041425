"""``custody kek ...`` and ``custody dek ...``: KEK versions and wrapped data keys."""

from __future__ import annotations

import argparse
import json
import sys

from custody_cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kek = sub.add_parser("kek", help="key-encryption keys (data, backup, secrets branches)")
    ks = kek.add_subparsers(dest="kek_command", metavar="ACTION", required=True)
    p = ks.add_parser(
        "rotate",
        help="create a new KEK version and make it current",
        description="Create a new KEK version under the current root key. The "
        "previous version becomes decrypt-only; objects move with 'custody rekey run'.",
    )
    p.add_argument("--branch", required=True, choices=("data", "backup", "secrets"))
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_kek_rotate)
    p = ks.add_parser("list", help="list KEK versions with their states")
    common.add_standard(p)
    p.set_defaults(func=cmd_kek_list)

    dek = sub.add_parser("dek", help="wrapped data keys")
    ds = dek.add_subparsers(dest="dek_command", metavar="ACTION", required=True)
    p = ds.add_parser(
        "generate",
        help="create N wrapped data keys (like KMS GenerateDataKey)",
        description="Create N random AES-256 data keys wrapped under the branch's "
        "current KEK. A digest of each plaintext is recorded for later checks; the "
        "plaintexts are not printed.",
    )
    p.add_argument("--branch", default="data", choices=("data", "backup", "secrets"))
    p.add_argument("--count", type=int, default=1, metavar="N")
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_dek_generate)
    p = ds.add_parser("verify", help="decrypt wrapped keys and check them against their digests")
    p.add_argument("--all", action="store_true", help="check every object (default: a sample)")
    p.add_argument(
        "--sample",
        type=int,
        default=1000,
        metavar="N",
        help="how many random objects to check without --all (default 1000)",
    )
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_dek_verify)


def cmd_kek_rotate(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=True) as dep:
        k = dep.hierarchy.create_kek_version(args.branch)
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "branch": k.branch,
                "version": k.version,
                "kcv": k.kcv,
                "root_version": k.root_version,
            }
        )
    else:
        print(f"{k.branch}/v{k.version} is now current (kcv {k.kcv}, under root/v{k.root_version})")
    return 0


def cmd_kek_list(args: argparse.Namespace) -> int:
    with common.open_home(args, pin=False) as dep:
        keks = dep.hierarchy.keks()
    if args.json:
        common.emit_json(
            [
                {
                    "branch": k.branch,
                    "version": k.version,
                    "state": k.state.value,
                    "kcv": k.kcv,
                    "root_version": k.root_version,
                    "created": k.created,
                    "objects": k.objects,
                }
                for k in keks
            ]
        )
        return 0
    if not keks:
        print("no KEK versions yet")
    for k in keks:
        print(
            f"{k.branch}/v{k.version}\t{k.state.value}\tkcv {k.kcv}\troot/v{k.root_version}\t"
            f"{k.objects} objects\tcreated {k.created}"
        )
    return 0


def cmd_dek_generate(args: argparse.Namespace) -> int:
    from custody_cli.progress import progress_bar

    # Streamed in committed batches: text output keeps only a count; --json keeps the raw
    # 16-byte uids in one bytearray (not a list of objects) and writes them out at the end.
    ids = bytearray()
    count = 0
    with common.open_home(args, pin=True) as dep:
        batches = dep.hierarchy.iter_generate_deks(args.branch, args.count)
        with progress_bar("wrapping data keys", args.count, enabled=not args.json) as advance:
            for uids in batches:
                count += len(uids)
                if args.json:
                    ids.extend(b"".join(uids))
                advance(len(uids))
        kek = dep.hierarchy.current_kek(args.branch)
    if args.json:
        head = {"ok": True, "branch": args.branch, "kek_version": kek.version, "count": count}
        _emit_with_ids(head, ids)
    else:
        print(f"created {count} data keys under {args.branch}/v{kek.version}")
    return 0


def _emit_with_ids(head: dict[str, object], ids: bytearray, width: int = 16) -> None:
    """What ``common.emit_json({**head, "ids": [hex, ...]})`` prints, without building the
    list: the document is printed around a placeholder and the ids written in between."""
    doc = json.dumps({**head, "ids": [0]}, indent=2, sort_keys=True, default=str)
    before, after = doc.rsplit("    0\n", 1)
    out = sys.stdout
    out.write(before)
    n = len(ids) // width
    for i in range(n):
        u = ids[i * width : (i + 1) * width].hex()
        out.write(f'    "{u}",\n' if i < n - 1 else f'    "{u}"\n')
    out.write(after)
    out.write("\n")


def cmd_dek_verify(args: argparse.Namespace) -> int:
    from custody_cli.progress import progress_bar

    with common.open_home(args, pin=True) as dep:
        total = sum(dep.hierarchy.object_counts().values())
        n = total if args.all else min(args.sample, total)
        with progress_bar("verifying", n, enabled=not args.json) as advance:
            rep = dep.hierarchy.verify_objects(None if args.all else args.sample, progress=advance)
    if args.json:
        common.emit_json({"ok": rep.ok, "checked": rep.checked, "failed": list(rep.failed)})
    else:
        print(
            f"checked {rep.checked} objects: {rep.checked - len(rep.failed)} ok, "
            f"{len(rep.failed)} failed"
        )
        for uid in rep.failed[:20]:
            print(f"  FAILED {uid}")
    return 0 if rep.ok else 6
