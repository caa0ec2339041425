"""Offline copies for disaster recovery (docs/recovery.md):

* ``custody root export --out DIR`` / ``root verify-export DIR`` / ``root import DIR``: the
  root-key blobs, live KEKs, the share set's public facts and the roster, signed by a
  super-admin, for offline media; imported into a fresh home when store and token are lost;
* ``custody store snapshot --out FILE`` / ``store restore FILE``: the whole store through
  SQLite's online backup API, with a signed manifest.

The formats and the choice of signing key are in :mod:`ceremonies.offline`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.errors import CustodyError, IntegrityError, PolicyError, UsageError
from custody_cli import common

if TYPE_CHECKING:
    from custody.audit.signers import TrustKey
    from custody.store import Store


def _add_key(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        required=True,
        metavar="FILE",
        help="the signing super-admin's NAME.key.pem or NAME.token.json",
    )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="passphrase of --key (the token PIN for a NAME.token.json); else "
        "$CUSTODY_PASSPHRASE, else a prompt",
    )


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PUB",
        help="a super-admin's NAME.pub.json (or a pin file), obtained out of band; "
        "repeatable. Default: the super-admins of --home's roster, when it has one",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "root",
        help="offline export of the root keys (for a lost store and token)",
        description="The root export for offline media (docs/recovery.md).",
    )
    rs = p.add_subparsers(dest="root_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _help(p))

    e = rs.add_parser(
        "export",
        help="write the root-key blobs and the share set's public facts, signed",
        description=(
            "Write DIR/root-export.json (the live root versions with their root-key blobs, "
            "the live KEK versions sealed under them, the active share set's public facts, "
            "the roster's public keys) and DIR/root-export.sig.json, signed with --key (an "
            "enrolled super-admin). Nothing in it opens without a quorum of custodian "
            "shares. Export again after every generate, reshare, rotate-root and kek rotate."
        ),
    )
    common.add_home(e)
    e.add_argument("--out", required=True, metavar="DIR", help="a new or empty directory")
    _add_key(e)
    common.add_json(e)
    e.set_defaults(func=cmd_export)

    v = rs.add_parser(
        "verify-export",
        help="check a root export's signature and contents",
        description=(
            "Check DIR: the signature over root-export.json, by a pinned key (--trust, or a "
            "super-admin of --home's roster) that is an enrolled super-admin of the exported "
            "roster. Exit 0 when it verifies, 6 when anything was altered."
        ),
    )
    v.add_argument("dir", metavar="DIR")
    common.add_home(v)
    _add_trust(v)
    common.add_json(v)
    v.set_defaults(func=cmd_verify_export)

    i = rs.add_parser(
        "import",
        help="load a verified root export into a fresh home",
        description=(
            "Verify DIR (as verify-export) and write it into the empty store of a fresh home "
            "('custody init --home NEW' first); the home takes the exported deployment id. "
            "Then 'custody ceremony recover' restores the roots onto the home's token."
        ),
    )
    i.add_argument("dir", metavar="DIR")
    common.add_home(i)
    _add_trust(i)
    common.add_json(i)
    i.set_defaults(func=cmd_import)

    s = sub.add_parser(
        "store",
        help="signed snapshots of the store (SQLite online backup)",
        description="Store snapshots for a lost or damaged store (docs/recovery.md).",
    )
    ss = s.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    s.set_defaults(func=lambda args: _help(s))

    sn = ss.add_parser(
        "snapshot",
        help="copy the live store to FILE with a signed manifest",
        description=(
            "Copy the store with SQLite's online backup API to FILE (mode 0600) and write "
            "FILE.manifest.json (its SHA-256, size and deployment), signed with --key (an "
            "enrolled super-admin). Everything sensitive in the store is already wrapped."
        ),
    )
    common.add_home(sn)
    sn.add_argument("--out", required=True, metavar="FILE", help="a new file")
    _add_key(sn)
    common.add_json(sn)
    sn.set_defaults(func=cmd_snapshot)

    rr = ss.add_parser(
        "restore",
        help="restore the store from a signed snapshot",
        description=(
            "Check FILE against FILE.manifest.json (SHA-256, and a signature by a pinned "
            "super-admin of the snapshot's roster: --trust, or --home's roster), copy it "
            "with SQLite's backup API and put it in place of the home's store. Refused when "
            "the home holds a store with keys unless --replace (the old file is kept as "
            "custody.db.before-restore). A fresh home takes the snapshot's deployment id."
        ),
    )
    rr.add_argument("file", metavar="FILE")
    common.add_home(rr)
    _add_trust(rr)
    rr.add_argument("--replace", action="store_true", help="replace a store that still holds keys")
    common.add_json(rr)
    rr.set_defaults(func=cmd_restore)

    mg = ss.add_parser(
        "migrate",
        help="copy this home's SQLite store and audit log into PostgreSQL, then switch",
        description=(
            "Copy every table of the home's SQLite store and audit log into the PostgreSQL "
            "database at --to (a password-less postgresql:// URL; the password comes from "
            "--store-password-file, CUSTODY_STORE_PASSWORD, PGPASSWORD or a prompt), verify "
            "every row (counts and a SHA-256 per table, and the audit chain read back from "
            "PostgreSQL), and only then set store = URL in custody.toml. Writers to the "
            "SQLite files are held off meanwhile. Resumable and idempotent: run it again "
            "after any failure. See docs/store.md."
        ),
    )
    common.add_home(mg)
    mg.add_argument("--to", required=True, metavar="URL", help="postgresql://USER@HOST/DB")
    mg.add_argument(
        "--store-password-file",
        metavar="FILE",
        help="a 0600 file with the store's password (recorded in the config)",
    )
    common.add_json(mg)
    mg.set_defaults(func=cmd_migrate)


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


# ------------------------------------------------------------------------- helpers
def _pins(paths: list[str]) -> list[TrustKey]:
    from ceremonies.transcript.pins import load_pins

    out: list[TrustKey] = []
    for path in paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read {path}", "Check the --trust path.") from exc
        out += load_pins(raw, default_name=Path(path).name.split(".")[0])
    return out


def _trust(args: argparse.Namespace, store: Store | None) -> list[TrustKey]:
    from ceremonies.offline import roster_trust

    keys = _pins(args.trust)
    if store is not None:
        keys += roster_trust(store)
    if not keys:
        raise UsageError(
            "Nothing to check the signature against",
            "Give --trust SUPER-ADMIN.pub.json (the pinned key of whoever signed it).",
        )
    return keys


def _open_store_if_any(home: Any) -> Store | None:
    from custody.deployment import open_home_store
    from custody.errors import CustodyError

    cfg = home.load() if home.exists() else None
    if (cfg is None or cfg.store is None) and not home.db_path.exists():
        return None
    try:
        return open_home_store(home, cfg)
    except CustodyError:
        return None  # a damaged store vouches for nothing


def _signing_admin(args: argparse.Namespace, store: Store) -> Any:
    """The --key signer, once it is an unrevoked super-admin of *store*'s roster."""
    from ceremonies.offline import roster_trust
    from ceremonies.participants import as_member
    from custody_cli.ceremony_drive import signer_of

    signer = signer_of(args)
    me = next((t for t in roster_trust(store) if t.public == signer.public), None)
    if me is None:
        raise PolicyError(
            "Only an enrolled super-admin can sign an offline copy",
            "Use an enrolled super-admin's key (--key).",
        )
    return as_member(signer, me.name)


def _adopt_deployment(home: Any, deployment_id: str) -> bool:
    cfg = home.load()
    if cfg.deployment_id == deployment_id:
        return False
    home.write_config(dataclasses.replace(cfg, deployment_id=deployment_id))
    return True


def _store_is_empty(store: Store) -> bool:
    return not (store.roots() or store.participants() or store.active_share_set())


# ------------------------------------------------------------------------- root export
def cmd_export(args: argparse.Namespace) -> int:
    from ceremonies.offline import export_document, export_marker, write_export

    with common.open_home(args, pin=False) as dep:
        signer = _signing_admin(args, dep.store)
        doc = export_document(dep.store, dep.config.deployment_id)
        files = write_export(Path(args.out), doc, signer)
        dep.store.set_meta("root_export", json.dumps(export_marker(doc), sort_keys=True))
    roots = [f"root/v{r['version']}" for r in doc["roots"]]
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "out": str(Path(args.out)),
                "files": [str(f) for f in files],
                "roots": roots,
                "keks": len(doc["keks"]),
                "epoch": doc["share_set"]["epoch"],
                "signer": signer.name,
            }
        )
    else:
        print(
            f"Exported {', '.join(roots)}, {len(doc['keks'])} KEK version(s) and share set "
            f"epoch {doc['share_set']['epoch']} to {args.out} (signed by {signer.name})"
        )
        print("Keep it on offline media, apart from the shares. Check a copy with")
        print(f"  custody root verify-export {args.out} --trust {signer.name}.pub.json")
    return 0


def _read(args: argparse.Namespace) -> Any:
    from ceremonies.offline import read_export

    home = common.home_of(args)
    store = _open_store_if_any(home) if home.exists() else None
    try:
        return read_export(Path(args.dir), _trust(args, store))
    finally:
        if store is not None:
            store.close()


def _summary(exp: Any) -> dict[str, Any]:
    return {
        "deployment_id": exp.doc["deployment_id"],
        "exported_at": exp.doc["exported_at"],
        "roots": exp.roots,
        "keks": len(exp.doc["keks"]),
        "epoch": exp.doc["share_set"]["epoch"],
        "custodians": [h["custodian"] for h in exp.doc["share_set"]["holders"]],
        "signer": exp.signer,
        "sha256": exp.digest,
    }


def cmd_verify_export(args: argparse.Namespace) -> int:
    exp = _read(args)
    s = _summary(exp)
    if args.json:
        common.emit_json({"ok": True, **s})
    else:
        print(f"VALID root export of deployment {s['deployment_id']} ({s['exported_at']})")
        print(f"  roots {', '.join(s['roots'])}; {s['keks']} KEK version(s)")
        print(f"  share set epoch {s['epoch']}: {', '.join(s['custodians'])}")
        print(f"  signed by {s['signer']}; sha256 {s['sha256']}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ceremonies.offline import import_export, read_export
    from custody.deployment import open_home_store

    home = common.home_of(args)
    cfg = home.load()  # a home made by 'custody init'
    exp = read_export(Path(args.dir), _pins(args.trust) or _refuse_without_trust())
    store = open_home_store(home, cfg, create=True)
    try:
        import_export(store, exp)
    finally:
        store.close()
    _adopt_deployment(home, str(exp.doc["deployment_id"]))
    s = _summary(exp)
    if args.json:
        common.emit_json({"ok": True, "home": str(home.root), **s})
    else:
        print(f"Imported {', '.join(s['roots'])} of deployment {s['deployment_id']}")
        print("Next:")
        print("  1. 'custody status' (an ALARM names each root the token lacks)")
        print("  2. 'custody ceremony recover' with a quorum of custodian shares")
    return 0


def _refuse_without_trust() -> list[TrustKey]:
    raise UsageError(
        "root import needs --trust",
        "A fresh home has no roster to check the export against: give --trust "
        "SUPER-ADMIN.pub.json, obtained out of band.",
    )


# -------------------------------------------------------------------- store snapshots
def _refuse_postgres(store: str | None, what: str) -> None:
    if store is not None:
        raise UsageError(
            f"'custody store {what}' copies the embedded SQLite file; this home's store is "
            "PostgreSQL",
            "Use the server's backups (pg_dump, base backups with WAL archiving); "
            "docs/store.md. Nothing was changed.",
        )


def cmd_snapshot(args: argparse.Namespace) -> int:
    from ceremonies.offline import write_manifest
    from custody.store import backup

    out = Path(args.out)
    _refuse_postgres(common.home_of(args).load().store, "snapshot")
    with common.open_home(args, pin=False) as dep:
        signer = _signing_admin(args, dep.store)
        if backup.staging_path(dep.home.db_path).exists():
            raise UsageError("A restore is in progress", "Finish or remove it first.")
        size = backup.snapshot(dep.home.db_path, out)
        manifest = write_manifest(out, dep.config.deployment_id, signer)
    if args.json:
        common.emit_json({"ok": True, "file": str(out), "manifest": str(manifest), "size": size})
    else:
        print(f"Wrote {out} ({size} bytes) and {manifest.name} (signed by {signer.name})")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from custody.audit.log import AuditLog
    from custody.audit.scope import actor_name
    from custody.store_migrate import describe, migrate

    home = common.home_of(args)
    home.load()
    pw = None if args.store_password_file is None else Path(args.store_password_file).resolve()
    target = describe(args.to)
    who = actor_name()
    if home.load().store == args.to:
        if args.json:
            common.emit_json({"ok": True, "to": target, "already": True, "switched": False})
        else:
            print(f"this home's store is already {target}; nothing to do")
        return 0
    with AuditLog.for_home(home) as log:  # the old log: the intent is part of the copy
        intent = log.append("store migrate", target, who, outcome="intent", details={"to": target})
    try:
        rep = migrate(
            home,
            args.to,
            password_file=pw,
            store_password_file=None if pw is None else home.rel(pw),
        )
    except CustodyError as err:
        with AuditLog.for_home(home) as log:  # still the old log: nothing was switched
            log.append(
                "store migrate",
                target,
                who,
                outcome="failed",
                details={"intent_seq": intent["seq"], "error": type(err).__name__},
            )
        raise
    with AuditLog.for_home(home) as log:  # now the PostgreSQL chain, which continues the old
        log.append(
            "store migrate",
            target,
            who,
            outcome="ok",
            details={"intent_seq": intent["seq"], "tables": len(rep.tables)},
        )
    if args.json:
        common.emit_json(rep.to_json())
        return 0
    for t in rep.tables:
        print(f"  {t.target:<20} {t.rows:>9} rows  sha256 {t.digest[:16]}")
    print(f"copied and verified {len(rep.tables)} tables; audit chain: {rep.audit_entries} entries")
    if rep.pruned:
        print(f"  removed {rep.pruned} target rows the source no longer has")
    print(f"custody.toml now names the store {target}; the SQLite files are kept, unused")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ceremonies.offline import manifest_path

    home = common.home_of(args)
    cfg = home.load()
    _refuse_postgres(cfg.store, "restore")
    snap = Path(args.file)
    with tempfile.TemporaryDirectory(dir=home.root, prefix=".restore-") as tmp:
        # checked and copied from one private copy: the medium cannot change in between
        local = Path(tmp) / snap.name
        for src, dst in ((snap, local), (manifest_path(snap), manifest_path(local))):
            with contextlib.suppress(OSError):  # check_manifest reports a missing file
                shutil.copyfile(src, dst)
        return _restore(args, home, cfg, snap, local)


def _restore(args: argparse.Namespace, home: Any, cfg: Any, snap: Path, local: Path) -> int:
    from ceremonies.offline import check_manifest, check_snapshot_signer
    from custody.store import backup, open_store

    doc, sig = check_manifest(local)
    current = _open_store_if_any(home)
    fresh = True
    try:
        if current is not None:
            fresh = _store_is_empty(current)
            if not fresh and not args.replace:
                raise UsageError(
                    f"{home.db_path} still holds keys",
                    "Nothing was changed. Give --replace to restore over it (the old file is "
                    "kept as custody.db.before-restore).",
                )
        trust = _trust(args, None if current is None or fresh else current)
    finally:
        if current is not None:
            current.close()
    stage = backup.stage_restore(local, home.db_path)
    try:
        staged = open_store(stage)
        try:
            signer = check_snapshot_signer(doc, sig, staged.participants(), trust)
            inner = staged.get_meta("deployment_id")
        finally:
            staged.close()
        if inner != doc["deployment_id"]:
            raise IntegrityError(
                "The snapshot's store names another deployment than its manifest",
                "Do not use it; take the snapshot from another medium.",
            )
        if inner != cfg.deployment_id and not fresh:
            raise IntegrityError(
                f"The snapshot belongs to deployment {inner}, this home is {cfg.deployment_id}",
                "Restore it into a fresh home ('custody init --home NEW'), or pick the right "
                "snapshot.",
            )
    except BaseException:
        backup.discard_restore(home.db_path)
        raise
    keep = home.root / "custody.db.before-restore" if current is not None else None
    backup.install_restore(home.db_path, keep_old=keep)
    adopted = _adopt_deployment(home, str(inner))
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "home": str(home.root),
                "deployment_id": inner,
                "signer": signer,
                "snapshot_created": doc["created"],
                "adopted_deployment": adopted,
                "kept_old": str(keep) if keep and keep.exists() else None,
            }
        )
    else:
        print(f"Restored the store of deployment {inner} from {snap.name} ({doc['created']})")
        print(f"  signed by {signer}; run 'custody status' to compare it with the token")
    return 0
