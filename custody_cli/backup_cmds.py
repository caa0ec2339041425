"""``custody backup create|restore|verify|rekey``: encrypted backups under the backup branch."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from custody.errors import UsageError
from custody_cli import common

if TYPE_CHECKING:
    from custody.backup.archive import BackupInfo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bk = sub.add_parser("backup", help="encrypted backup containers (backup KEK branch)")
    bs = bk.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    p = bs.add_parser(
        "create",
        help="encrypt SRC into a new backup FILE",
        description="Encrypt a file with a fresh per-backup key sealed under the "
        "current backup KEK (AES-256-GCM STREAM chunks; see docs/backups.md).",
    )
    p.add_argument("src", metavar="SRC", nargs="?")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--chunk-size", type=int, default=1 << 20, metavar="BYTES")
    p.add_argument(
        "--secrets",
        action="store_true",
        help="back up the secret store (instead of SRC): its rows and wrapped DEKs, "
        "ciphertext only, encrypted again under the backup branch",
    )
    _common(p)
    p.set_defaults(func=cmd_create)
    p = bs.add_parser(
        "test-restore",
        help="restore a --secrets backup in memory and open every version (for a timer)",
        description="Decrypt FILE into a private temporary file, then unwrap every live "
        "version's DEK, decrypt its value and check its digest, in memory, writing nothing "
        "to the store. The result is recorded (audit log and 'custody status' metadata); "
        "exit 6 when anything fails.",
    )
    p.add_argument("file", metavar="FILE")
    _common(p)
    p.set_defaults(func=cmd_test_restore)
    p = bs.add_parser("restore", help="decrypt FILE to DST (appears only when fully verified)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--out", required=True, metavar="DST")
    _common(p)
    p.set_defaults(func=cmd_restore)
    p = bs.add_parser("verify", help="check every chunk of FILE; exit 0 only if all verify")
    p.add_argument("file", metavar="FILE")
    _common(p)
    p.set_defaults(func=cmd_verify)
    p = bs.add_parser(
        "rekey",
        help="move backups to the current backup KEK",
        description="Default: rewrap only the header (O(1) per file). --full: "
        "re-encrypt the whole file into a new key, resumable, replacing the "
        "original only after the new file verifies.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--full", action="store_true", help="re-encrypt every chunk (after compromise)")
    p.add_argument(
        "--checkpoint-mib",
        type=int,
        default=256,
        metavar="MIB",
        help="durable progress checkpoint interval (also every 5 s; default 256)",
    )
    _common(p)
    p.set_defaults(func=cmd_rekey)


def _common(p: argparse.ArgumentParser) -> None:
    common.add_standard(p, pin=True)


def _info(i: BackupInfo) -> dict[str, str | int]:
    return {
        "path": i.path,
        "file_id": i.file_id,
        "kek_version": i.kek_version,
        "chunk_size": i.chunk_size,
        "chunks": i.chunks,
        "bytes": i.plaintext_bytes,
    }


def cmd_create(args: argparse.Namespace) -> int:
    from custody.backup import archive as backup
    from custody_cli.progress import progress_bar

    if bool(args.src) == bool(args.secrets):
        raise UsageError("Give SRC or --secrets", "See 'custody backup create --help'.")
    if args.secrets:
        return _create_secrets(args)
    size = os.path.getsize(args.src) if os.path.exists(args.src) else 0
    with (
        common.open_home(args, pin=True) as dep,
        progress_bar("encrypting", max(size, 1), enabled=not args.json) as adv,
    ):
        info = backup.create(
            dep.hierarchy, Path(args.src), Path(args.out), chunk_size=args.chunk_size, progress=adv
        )
    if args.json:
        common.emit_json({"ok": True, **_info(info)})
    else:
        print(
            f"backup {info.path}: {info.plaintext_bytes} bytes in {info.chunks} chunks "
            f"under backup/v{info.kek_version}"
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from custody.backup import archive as backup
    from custody_cli.progress import progress_bar

    with (
        common.open_home(args, pin=True) as dep,
        progress_bar("restoring", max(os.path.getsize(args.file), 1), enabled=not args.json) as adv,
    ):
        info = backup.restore(dep.hierarchy, Path(args.file), Path(args.out), progress=adv)
    if args.json:
        common.emit_json({"ok": True, **_info(info), "out": args.out})
    else:
        print(
            f"restored {info.plaintext_bytes} bytes to {args.out} "
            f"(all {info.chunks} chunks verified)"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from custody.backup import archive as backup
    from custody_cli.progress import progress_bar

    with (
        common.open_home(args, pin=True) as dep,
        progress_bar("verifying", max(os.path.getsize(args.file), 1), enabled=not args.json) as adv,
    ):
        info = backup.verify(dep.hierarchy, Path(args.file), progress=adv)
    if args.json:
        common.emit_json({"ok": True, **_info(info)})
    else:
        print(f"ok: {info.chunks} chunks, {info.plaintext_bytes} bytes, backup/v{info.kek_version}")
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    from custody.backup import archive as backup
    from custody.backup import rekey as backup_rekey
    from custody_cli.progress import progress_bar

    out = []
    with common.open_home(args, pin=True) as dep:
        h = dep.hierarchy
        if not args.full:
            infos = backup.rewrap(h, [Path(f) for f in args.files])
            out = [{**_info(i), "mode": "rewrap"} for i in infos]
        else:
            for f in args.files:
                with progress_bar(
                    f"re-encrypting {Path(f).name}",
                    max(os.path.getsize(f), 1),
                    enabled=not args.json,
                ) as adv:
                    info, start = backup_rekey.rekey_full(
                        h, Path(f), checkpoint_bytes=args.checkpoint_mib << 20, progress=adv
                    )
                out.append({**_info(info), "mode": "full", "resumed_from_chunk": start})
    if args.json:
        common.emit_json({"ok": True, "files": out})
    else:
        for o in out:
            resumed = o.get("resumed_from_chunk")
            extra = f", resumed at chunk {o['resumed_from_chunk']}" if resumed else ""
            print(f"{o['path']}: {o['mode']} done, now under backup/v{o['kek_version']}{extra}")
    return 0


def _create_secrets(args: argparse.Namespace) -> int:
    import tempfile

    from custody.backup import archive as backup
    from custody.privatefile import write_private
    from custody.secrets import Vault

    with common.open_home(args, pin=True) as dep:
        data = Vault(dep.store, dep.hierarchy).dump()
        with tempfile.TemporaryDirectory(prefix="custody-secrets-") as d:
            dump = Path(d) / "secrets.jsonl"  # ciphertext and metadata only, in a 0700 dir
            write_private(dump, data)
            info = backup.create(dep.hierarchy, dump, Path(args.out), chunk_size=args.chunk_size)
    n = data.count(b"\n")
    if args.json:
        common.emit_json({"ok": True, "secrets": n, **_info(info)})
    else:
        print(f"backup {info.path}: {n} secrets under backup/v{info.kek_version}")
    return 0


def cmd_test_restore(args: argparse.Namespace) -> int:
    import json
    import tempfile
    import time

    from custody.backup import archive as backup
    from custody.secrets import Vault

    with common.open_home(args, pin=True) as dep:
        with tempfile.TemporaryDirectory(prefix="custody-restore-test-") as d:
            out = Path(d) / "secrets.jsonl"
            backup.restore(dep.hierarchy, Path(args.file), out)
            res = Vault(dep.store, dep.hierarchy).check_dump(out.read_bytes())
        res = {"ok": not res["failed"], "file": args.file, "time": int(time.time()), **res}
        with dep.store.transaction():
            dep.store.set_meta("backup-restore-test", json.dumps(res, sort_keys=True))
    if args.json:
        common.emit_json(res)
    else:
        print(
            f"restore test of {args.file}: {res['secrets']} secrets, {res['versions']} versions "
            f"opened, {len(res['failed'])} failed"
        )
        for f in res["failed"][:20]:
            print(f"  FAILED {f}")
    return 0 if res["ok"] else 6
