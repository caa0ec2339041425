"""The evidence a compliance report is computed from: the store's metadata and the audit log.

:func:`gather` reads a live deployment (its store, through the port, and its audit log);
:func:`write_bundle` writes the same evidence to a directory and :func:`load_bundle` reads it
back, so an auditor recomputes the report offline from the files alone and gets the same
answer (``custody report export DIR``, then ``custody report compliance --bundle DIR``).

A bundle (docs/compliance.md) is four files, each 0600 in a 0700 directory:

* ``store.json``: the store's read model, canonical JSON: key versions and the rotation
  policy, secrets' metadata (no value, no ciphertext, no DEK), principals (no token hash),
  grants (no signed record), MFA enrolment states (no TOTP secret), the active share set's
  holders and their drills;
* ``audit.jsonl``: every audit entry line, byte for byte (the hash chain verifies);
* ``checkpoints.jsonl``: every signed checkpoint line;
* ``manifest.json``: the log id, the deployment, when it was collected, and the SHA-256 of
  each file above. A file that does not match its digest is refused.

The audit part is tamper-evident on its own (its chain, and checkpoints signed by a key the
auditor pins with ``--trust``); the manifest guards against damage, not against the person
who exported it: an auditor who needs that pins the audit log's checkpoint key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from custody.audit.log import AuditLog
from custody.canonical import canonical_bytes, strict_loads
from custody.clock import iso
from custody.config import Config
from custody.errors import IntegrityError, UsageError
from custody.keys.hierarchy import KeyHierarchy
from custody.privatefile import private_dir, write_private
from custody.rekey.retire import key_ages
from custody.secrets.categories import SecretPolicy
from custody.store.port import Store

BUNDLE_TYPE = "custody.compliance-evidence/v1"
FILES = ("store.json", "audit.jsonl", "checkpoints.jsonl")
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """What a report is computed from. ``store`` is JSON data (see the module doc);
    ``lines`` and ``checkpoints`` are the audit log's entry and checkpoint lines."""

    store: Mapping[str, Any]
    log_id: str
    lines: Sequence[bytes] = field(repr=False)
    checkpoints: Sequence[bytes] = field(repr=False)
    source: str


def _store_model(
    store: Store, config: Config, secret_policy: SecretPolicy, now: datetime
) -> dict[str, Any]:
    h = KeyHierarchy(store, None)
    keys = [
        {
            "key": a.key,
            "version": a.version,
            "created": iso(a.created) if a.created else None,
        }
        for a in key_ages(h, config)
    ]
    branches = {
        k: {"key_class": b.key_class, "warn_days": b.warn_days} for k, b in config.branches.items()
    }
    secrets = [
        {
            "env": r.env,
            "path": r.path,
            "category": r.category,
            "class": r.security_class,
            "owner": r.owner,
            "state": r.state,
            "expires": r.expires,
            "updated": r.updated,
            "rotation_failures": r.rotation_failures,
            "pending_version": r.pending_version,
        }
        for r in store.secrets()
    ]
    principals = [
        {
            "name": p.name,
            "kind": p.kind,
            "role": p.role,
            "services": list(p.services),
            "envs": list(p.envs),
            "created": p.created,
            "revoked_at": p.revoked_at,
        }
        for p in store.principals()
    ]
    grants = [
        {
            "id": g.id,
            "principal": g.principal,
            "env": g.env,
            "path": g.path,
            "actions": list(g.actions),
            "not_before": g.not_before,
            "not_after": g.not_after,
            "created": g.created,
            "revoked_at": g.revoked_at,
        }
        for g in store.grants()
    ]
    mfa = [
        {
            "principal": m.principal,
            "enrolled_at": m.enrolled_at,
            "confirmed_at": m.confirmed_at,
            "last_used": m.last_used,
            "locked_until": m.locked_until,
        }
        for m in store.mfa_enrolments()
    ]
    ss = store.active_share_set()
    share_set = None
    if ss is not None:
        holders = sorted({hd.custodian for hd in ss.holders})
        share_set = {
            "epoch": ss.epoch,
            "ceremony_id": ss.ceremony_id,
            "created": ss.created,
            "holders": holders,
            "last_drill": {c: store.last_drill(c, ss.epoch) for c in holders},
        }
    return {
        "type": BUNDLE_TYPE,
        "collected_at": iso(now),
        "policy": {
            "branches": branches,
            "secret_max_rotation_failures": secret_policy.max_rotation_failures,
            "secret_warn_days": list(secret_policy.warn_days),
        },
        "keys": keys,
        "secrets": secrets,
        "principals": principals,
        "mfa": mfa,
        "share_set": share_set,
        "grants": grants,
    }


def gather(
    store: Store,
    log: AuditLog,
    config: Config,
    secret_policy: SecretPolicy,
    *,
    now: datetime,
    source: str,
) -> Evidence:
    """Collect the evidence of a live deployment (reads only; no token needed).

    Raises:
        StorageError: the store or the audit log cannot be read.
    """
    model = _store_model(store, config, secret_policy, now)
    model["deployment_id"] = config.deployment_id
    return Evidence(
        store=model,
        log_id=log.log_id,
        lines=tuple(log.lines()),
        checkpoints=tuple(log.checkpoint_lines()),
        source=source,
    )


def _jsonl(lines: Sequence[bytes]) -> bytes:
    return b"".join(ln + b"\n" for ln in lines)


def write_bundle(ev: Evidence, directory: Path) -> dict[str, Any]:
    """Write *ev* to *directory* (created 0700; it must be empty or new). Returns the
    manifest.

    Raises:
        UsageError: *directory* exists and is not empty.
        StorageError: a file cannot be written.
    """
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} is not an empty directory", "Export to a new directory.")
    private_dir(directory)
    data = {
        "store.json": canonical_bytes(dict(ev.store)),
        "audit.jsonl": _jsonl(ev.lines),
        "checkpoints.jsonl": _jsonl(ev.checkpoints),
    }
    manifest = {
        "type": BUNDLE_TYPE,
        "log_id": ev.log_id,
        "deployment_id": ev.store.get("deployment_id"),
        "collected_at": ev.store.get("collected_at"),
        "entries": len(ev.lines),
        "files": {name: hashlib.sha256(raw).hexdigest() for name, raw in data.items()},
    }
    for name, raw in data.items():
        write_private(directory / name, raw, exclusive=True)
    write_private(directory / MANIFEST, canonical_bytes(manifest) + b"\n", exclusive=True)
    return manifest


def _read(directory: Path, name: str) -> bytes:
    try:
        return (directory / name).read_bytes()
    except OSError as exc:
        raise UsageError(
            f"Cannot read {name} in {directory}",
            "Give the directory 'custody report export' wrote.",
        ) from exc


def _lines(raw: bytes) -> tuple[bytes, ...]:
    return tuple(ln for ln in raw.split(b"\n") if ln)


def load_bundle(directory: Path) -> Evidence:
    """Read a bundle written by :func:`write_bundle`, checking every file's digest.

    Raises:
        UsageError: a file is missing or unreadable.
        IntegrityError: the manifest is malformed, or a file does not match its digest.
    """
    bad = IntegrityError(
        f"The evidence bundle {directory} is damaged",
        "A file does not match the manifest: export it again from the deployment.",
    )
    try:
        manifest = strict_loads(_read(directory, MANIFEST))
        digests = dict(manifest["files"])
        log_id = str(manifest["log_id"])
        if manifest.get("type") != BUNDLE_TYPE or sorted(digests) != sorted(FILES):
            raise bad
    except (ValueError, KeyError, TypeError):
        raise bad from None
    raw = {name: _read(directory, name) for name in FILES}
    for name, blob in raw.items():
        if hashlib.sha256(blob).hexdigest() != digests[name]:
            raise IntegrityError(
                f"{name} in {directory} does not match the manifest",
                "The bundle was altered or damaged: export it again.",
            )
    try:
        model = strict_loads(raw["store.json"])
        if not isinstance(model, dict) or model.get("type") != BUNDLE_TYPE:
            raise bad
    except ValueError:
        raise bad from None
    return Evidence(
        store=model,
        log_id=log_id,
        lines=_lines(raw["audit.jsonl"]),
        checkpoints=_lines(raw["checkpoints.jsonl"]),
        source=f"bundle {os.fspath(directory)}",
    )
