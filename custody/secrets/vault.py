"""The secret store: typed, versioned secrets on the key hierarchy.

A secret is (environment, path) with a category, an owner and an expiry. Each version's
value is sealed under its own 256-bit DEK (AES-256-GCM, from the HSM's RNG), and the DEK is
an object wrapped under the ``secrets`` KEK branch, so the re-key job moves it to a new KEK
like any other object and the value's ciphertext never changes. The value's AAD binds the
environment, the path, the version and the DEK's id: a ciphertext moved to another path,
environment or version does not open. Labels ``current``, ``pending`` and ``previous`` name
versions; metadata is readable without decrypting anything.

Lifecycle: ``active`` → ``deprecated`` (soft-deleted: a recovery window in which ``restore``
works and every read is refused and raises an alert) → ``destroyed`` (crypto-shredding: the
DEKs' objects rows and the ciphertexts are deleted; ``secure_delete`` zeroes the pages).

Nothing here logs, returns in an error, or puts in a ``repr`` a secret value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody.canonical import canonical_bytes, load_json
from custody.clock import iso, parse, utcnow
from custody.errors import CustodyError, IntegrityError, PolicyError, UsageError
from custody.keys.hierarchy import KeyHierarchy
from custody.secrets import standards
from custody.secrets.categories import Category, SecretPolicy, check_path
from custody.secrets.scan import KnownValues
from custody.store.port import Store
from custody.store.rows import SecretRow, SecretVersionRow

BRANCH = "secrets"
LABELS = ("current", "pending", "previous")
Alert = Callable[[Mapping[str, Any]], None]


class CreationSeal(Protocol):
    """The access seal (:class:`custody.access.seal.AccessSeal`) as the vault uses it: a
    new secret's category and class are sealed in the transaction that creates it."""

    def write(
        self, *, secrets: Collection[tuple[str, str]] = ()
    ) -> AbstractContextManager[None]: ...


class SecretNotFound(UsageError):
    """No such secret, version or label."""


class CasMismatch(UsageError):
    """A check-and-set write was stale: another writer got there first."""


class SecretUnavailable(PolicyError):
    """The secret is soft-deleted or destroyed: its value is not served."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """The outcome of a write (no value in it)."""

    env: str
    path: str
    version: int
    created: bool
    source: str
    expires: str


@dataclass(frozen=True, slots=True)
class Revealed:
    """A value read from the vault. ``repr`` never shows it."""

    env: str
    path: str
    version: int
    value: str = field(repr=False)


def _aad(env: str, path: str, version: int, dek_uid: bytes) -> bytes:
    return b"custody/secret-value/v1" + canonical_bytes(
        {"env": env, "path": path, "version": version, "dek": dek_uid.hex()}
    )


def _open(dek: bytes, ciphertext: bytes, env: str, path: str, version: int, uid: bytes) -> bytes:
    """Decrypt one version's value (nonce || AES-256-GCM) under its DEK and its binding.

    Raises:
        InvalidTag: altered, or bound to another environment, path, version or DEK.
    """
    return AESGCM(dek).decrypt(ciphertext[:12], ciphertext[12:], _aad(env, path, version, uid))


def _mac(dek: bytes, value: bytes) -> bytes:
    return hmac.new(dek, b"custody/secret-digest/v1" + value, hashlib.sha256).digest()


def _lookup(category: Category, value: str) -> bytes | None:
    """A uniqueness tag for API keys (256-bit random, so a plain hash reveals nothing)."""
    if standards.RULES[category].kind != "api-key":
        return None
    return hashlib.sha256(b"custody/api-key-lookup/v1" + value.encode()).digest()


class Vault:
    """Secrets of one deployment (its store and key hierarchy, logged in to the token).

    Args:
        store: the deployment's store.
        hierarchy: its key hierarchy (token logged in for writes and reads).
        policy: classes, periods, environments and windows.
        actor: who is acting (recorded as a version's source for supplied values).
        alert: called with each alert (a soft-deleted secret was read, an expiry is near);
            the front end records it in the audit log and runs the alert hook.
        rng: random bytes (the HSM's ``random``).
        clock: the current time.
    """

    def __init__(
        self,
        store: Store,
        hierarchy: KeyHierarchy,
        *,
        policy: SecretPolicy | None = None,
        actor: str = "operator",
        alert: Alert | None = None,
        rng: Callable[[int], bytes] | None = None,
        clock: Callable[[], datetime] = utcnow,
        seal: CreationSeal | None = None,
    ) -> None:
        self.store = store
        self.seal = seal
        self.hierarchy = hierarchy
        self.policy = policy or SecretPolicy()
        self.actor = actor
        self._alert = alert
        self._rng = rng
        self._clock = clock

    def __repr__(self) -> str:
        return f"Vault({self.store!r})"

    # -- helpers -------------------------------------------------------------------
    def _random(self, n: int) -> bytes:
        if self._rng is not None:
            return self._rng(n)
        hsm = self.hierarchy.hsm
        if hsm is None:
            raise UsageError("This needs the token", "Give the token PIN (--pin-file).")
        return bytes(hsm.random(n))

    def _row(self, env: str, path: str) -> SecretRow:
        self.policy.check_env(env)
        check_path(path)
        row = self.store.secret(env, path)
        if row is None:
            raise SecretNotFound(
                f"No secret {path} in {env}",
                "See 'custody secret list --env ENV'; environments never share secrets.",
            )
        return row

    def _emit(self, kind: str, row: SecretRow, **extra: Any) -> None:
        if self._alert is not None:
            self._alert(
                {
                    "kind": kind,
                    "env": row.env,
                    "path": row.path,
                    "owner": row.owner,
                    "class": row.security_class,
                    **extra,
                }
            )

    def _writing(self, env: str, path: str) -> AbstractContextManager[None]:
        """The transaction of a write to (env, path): one that creates the secret (rows are
        never deleted, so a row seen now stays) also seals its category and class, with
        the access seal checked first (:mod:`custody.access.seal`)."""
        if self.seal is not None and self.store.secret(env, path) is None:
            return self.seal.write(secrets=[(env, path)])
        return self.store.transaction()

    # -- writes --------------------------------------------------------------------
    def put(
        self,
        env: str,
        path: str,
        value: str,
        *,
        category: Category | None = None,
        owner: str | None = None,
        prefix: str | None = None,
        cas: int | None = None,
        label: str = "current",
        source: str | None = None,
        _checked: bool = False,
    ) -> Written:
        """Store *value* as a new version of (env, path).

        The first write creates the secret (category and owner required); later writes
        keep its category. ``cas``: the version the writer last saw as ``current`` (0 when
        it expects no secret); a stale writer is refused. ``label``: ``current`` (promote
        now, the old current becomes ``previous``) or ``pending`` (stage for a rotation).

        Raises:
            WeakSecret: the value breaks the category's rule.
            CasMismatch: *cas* is stale.
            UsageError: missing category or owner, a bad path, environment or label, or an
                API key the store already holds.
        """
        self.policy.check_env(env)
        check_path(path)
        if label not in ("current", "pending"):
            raise UsageError("A write goes to 'current' or 'pending'", "Use --label pending.")
        now = self._clock()
        with self._writing(env, path):
            row = self.store.secret(env, path)
            seen = 0 if row is None else (row.current_version or 0)
            if cas is not None and cas != seen:
                raise CasMismatch(
                    f"Check-and-set refused: {env}:{path} is at version {seen}, not {cas}",
                    "Read the secret again and retry with the version you saw.",
                )
            if row is not None and row.state not in ("active", "rotating"):
                raise SecretUnavailable(
                    f"{env}:{path} is {row.state}",
                    "Restore it first ('custody secret restore') or choose another path.",
                )
            if row is None:
                if category is None or not owner:
                    raise UsageError(
                        f"{env}:{path} is new: give --category and --owner",
                        "See docs/secrets.md for the categories.",
                    )
                cat = category
            else:
                cat = Category(row.category)
                if category is not None and category != cat:
                    raise UsageError(
                        f"{env}:{path} is a {cat.value}, not a {category.value}",
                        "A secret keeps its category; use another path.",
                    )
            pfx = prefix or (row.prefix if row is not None else None)
            if not _checked:
                standards.check(cat, value, prefix=pfx)
            lookup = _lookup(cat, value)
            if lookup is not None and self.store.lookup_exists(lookup):
                raise UsageError(
                    "The store already holds this API key",
                    "API keys are globally unique: generate a new one.",
                )
            expires = iso(now + timedelta(days=self.policy.period_days(cat)))
            if row is None:
                version = 1
                self.store.add_secret(
                    SecretRow(
                        env=env,
                        path=path,
                        category=cat.value,
                        security_class=self.policy.class_of(cat).value,
                        owner=str(owner),
                        state="active",
                        current_version=None,
                        pending_version=None,
                        previous_version=None,
                        next_version=2,
                        expires=expires,
                        created=iso(now),
                        updated=iso(now),
                        prefix=pfx,
                    )
                )
            else:
                version = row.next_version
            dek = self._random(32)
            uid = self.hierarchy.store_object(
                BRANCH, dek, kind="secret-dek", label=f"{env}:{path}#v{version}"
            )
            nonce = os.urandom(12)
            data = value.encode("utf-8")
            ct = nonce + AESGCM(dek).encrypt(nonce, data, _aad(env, path, version, uid))
            src = source or f"operator:{self.actor}"
            self.store.add_secret_version(
                SecretVersionRow(
                    env=env,
                    path=path,
                    version=version,
                    state="live",
                    dek_uid=uid,
                    ciphertext=ct,
                    value_mac=_mac(dek, data),
                    lookup=lookup,
                    source=src,
                    created=iso(now),
                )
            )
            fields: dict[str, Any] = {"next_version": version + 1, "updated": iso(now)}
            if label == "current":
                old = None if row is None else row.current_version
                fields.update(current_version=version, previous_version=old, expires=expires)
            else:
                fields.update(pending_version=version, state="rotating")
            self.store.update_secret(env, path, **fields)
        return Written(
            env=env,
            path=path,
            version=version,
            created=row is None,
            source=src,
            expires=fields.get("expires", row.expires if row else expires),
        )

    def generate(
        self,
        env: str,
        path: str,
        *,
        category: Category | None = None,
        owner: str | None = None,
        prefix: str | None = None,
        cas: int | None = None,
        label: str = "current",
    ) -> Written:
        """A new version made to the category's standard (:mod:`custody.secrets.standards`)."""
        self.policy.check_env(env)
        row = self.store.secret(env, path)
        cat = category or (Category(row.category) if row else None)
        if cat is None:
            raise UsageError(f"{env}:{path} is new: give --category", "See docs/secrets.md.")
        pfx = prefix or (row.prefix if row else None)
        value, source = standards.generate(cat, self._random, prefix=pfx)
        return self.put(
            env,
            path,
            value,
            category=cat,
            owner=owner,
            prefix=pfx,
            cas=cas,
            label=label,
            source=source,
            _checked=True,
        )

    # -- reads ---------------------------------------------------------------------
    def resolve(self, row: SecretRow, version: int | None, label: str | None) -> int:
        if version is not None and label is not None:
            raise UsageError("Give --version or --label, not both", "")
        if version is not None:
            return version
        lab = label or "current"
        if lab not in LABELS:
            raise UsageError(f"Unknown label {lab[:20]!r}", f"Use one of {', '.join(LABELS)}.")
        v = {
            "current": row.current_version,
            "pending": row.pending_version,
            "previous": row.previous_version,
        }[lab]
        if v is None:
            raise SecretNotFound(f"{row.env}:{row.path} has no {lab} version", "")
        return v

    def get(
        self, env: str, path: str, *, version: int | None = None, label: str | None = None
    ) -> Revealed:
        """Decrypt one version (``current`` by default).

        Raises:
            SecretUnavailable: soft-deleted (an alert is raised) or destroyed.
            SecretNotFound: no such version or label.
            IntegrityError: the ciphertext, its DEK or its binding was altered.
        """
        row = self._row(env, path)
        if row.state == "deprecated":
            self._emit("read-during-recovery-window", row, destroy_after=row.destroy_after)
            raise SecretUnavailable(
                f"{env}:{path} is deleted (recoverable until {row.destroy_after})",
                "Reads are refused and reported; 'custody secret restore' brings it back.",
            )
        if row.state == "destroyed":
            raise SecretUnavailable(f"{env}:{path} was destroyed", "Its values are gone.")
        v = self.resolve(row, version, label)
        ver = self.store.secret_version(env, path, v)
        if ver is None:
            raise SecretNotFound(f"{env}:{path} has no version {v}", "")
        if ver.state != "live" or ver.dek_uid is None or ver.ciphertext is None:
            raise SecretUnavailable(f"Version {v} of {env}:{path} is {ver.state}", "")
        dek = self.hierarchy.unwrap_object(ver.dek_uid)
        try:
            data = _open(dek, ver.ciphertext, env, path, v, ver.dek_uid)
        except InvalidTag:
            raise IntegrityError(
                f"Version {v} of {env}:{path} does not decrypt",
                "Its ciphertext or binding was altered; restore the store from a backup.",
            ) from None
        if ver.value_mac is None or not hmac.compare_digest(_mac(dek, data), ver.value_mac):
            raise IntegrityError(f"Version {v} of {env}:{path} fails its digest", "Store damaged.")
        return Revealed(env=env, path=path, version=v, value=data.decode("utf-8"))

    def show(self, env: str, path: str) -> dict[str, Any]:
        """Metadata (no value, no decrypt): labels, versions, class, expiry, state."""
        row = self._row(env, path)
        return self._meta(row, with_versions=True)

    def list_secrets(self, env: str | None = None, prefix: str = "") -> list[dict[str, Any]]:
        if env is not None:
            self.policy.check_env(env)
        return [self._meta(r) for r in self.store.secrets(env, prefix)]

    def _meta(self, row: SecretRow, *, with_versions: bool = False) -> dict[str, Any]:
        now = self._clock()
        left = (parse(row.expires) - now).total_seconds() / 86400
        d: dict[str, Any] = {
            "env": row.env,
            "path": row.path,
            "category": row.category,
            "class": row.security_class,
            "owner": row.owner,
            "state": row.state,
            "labels": {
                "current": row.current_version,
                "pending": row.pending_version,
                "previous": row.previous_version,
            },
            "expires": row.expires,
            "days_left": int(left // 1),
            "created": row.created,
            "updated": row.updated,
            "deleted_at": row.deleted_at,
            "destroy_after": row.destroy_after,
            "rotation_failures": row.rotation_failures,
        }
        if with_versions:
            d["versions"] = [
                {"version": v.version, "state": v.state, "source": v.source, "created": v.created}
                for v in self.store.secret_versions(row.env, row.path)
            ]
        return d

    # -- rotation (the steps; ceremonies.secret_rotation records them) --------------
    def value_digest(self, env: str, path: str, version: int) -> str | None:
        """The version's keyed digest (HMAC under its own DEK), hex: what a rotation record
        carries instead of the value. Without the DEK it tells nothing about the value."""
        ver = self.store.secret_version(env, path, version)
        return None if ver is None or ver.value_mac is None else ver.value_mac.hex()

    def promote(self, env: str, path: str, *, overlap_seconds: int) -> dict[str, Any]:
        """``pending`` becomes ``current``; the old ``current`` stays readable as
        ``previous`` until the overlap window ends (then :meth:`revoke_previous`)."""
        row = self._row(env, path)
        if row.pending_version is None:
            raise UsageError(f"{env}:{path} has no pending version", "Stage one first.")
        now = self._clock()
        pol = self.policy
        until = iso(now + timedelta(seconds=max(0, overlap_seconds)))
        with self.store.transaction():
            if row.previous_version is not None:  # an older previous is revoked now
                self._revoke(env, path, row.previous_version)
            self.store.update_secret(
                env, path, current_version=row.pending_version, pending_version=None,
                previous_version=row.current_version, previous_until=until, state="active",
                rotation_failures=0, updated=iso(now),
                expires=iso(now + timedelta(days=pol.period_days(Category(row.category)))),
            )  # fmt: skip
        return {"current": row.pending_version, "previous": row.current_version, "until": until}

    def _revoke(self, env: str, path: str, version: int) -> None:
        self.store.shred_secret_version(env, path, version)
        self.store.set_version_state(env, path, version, "revoked")

    def revoke_previous(self, env: str, path: str) -> int | None:
        """Revoke (and shred) ``previous``: it is no longer served. Returns its version."""
        row = self._row(env, path)
        v = row.previous_version
        if v is None:
            return None
        with self.store.transaction():
            self._revoke(env, path, v)
            self.store.update_secret(
                env, path, previous_version=None, previous_until=None, updated=iso(self._clock())
            )
        return v

    def discard_pending(self, env: str, path: str) -> tuple[int | None, int]:
        """A failed rotation: ``pending`` is shredded, ``current`` unchanged. Returns the
        discarded version and the count of failures in a row."""
        row = self._row(env, path)
        v = row.pending_version
        with self.store.transaction():
            if v is not None:
                self.store.shred_secret_version(env, path, v)
                self.store.set_version_state(env, path, v, "discarded")
            self.store.update_secret(
                env, path, pending_version=None, state="active",
                rotation_failures=row.rotation_failures + 1, updated=iso(self._clock()),
            )  # fmt: skip
        return v, row.rotation_failures + 1

    def paused(self, row: SecretRow) -> bool:
        return row.rotation_failures >= self.policy.max_rotation_failures

    def rotations_due(self) -> list[SecretRow]:
        """Active secrets at or past expiry whose automatic rotation is not paused."""
        now = self._clock()
        return [
            r
            for r in self.store.secrets()
            if r.state == "active" and now >= parse(r.expires) and not self.paused(r)
        ]

    def overlaps_ended(self) -> list[SecretRow]:
        now = self._clock()
        return [
            r
            for r in self.store.secrets()
            if r.previous_version is not None
            and r.previous_until is not None
            and now >= parse(r.previous_until)
        ]

    def alert(self, kind: str, row: SecretRow, **extra: Any) -> None:
        self._emit(kind, row, **extra)

    def known_values(self) -> KnownValues:
        """A :class:`~custody.secrets.scan.KnownValues` index of every live version's value
        (keyed hashes under a key made for this scan; the values leave memory at once)."""
        known = KnownValues()
        for row in self.store.secrets():
            if row.state not in ("active", "rotating", "deprecated"):
                continue
            for ver in self.store.secret_versions(row.env, row.path):
                if ver.state == "live" and ver.dek_uid is not None and ver.ciphertext:
                    dek = self.hierarchy.unwrap_object(ver.dek_uid)
                    data = _open(dek, ver.ciphertext, row.env, row.path, ver.version, ver.dek_uid)
                    known.add(data.decode("utf-8"), f"{row.env}:{row.path}")
        return known

    # -- backups -------------------------------------------------------------------
    def dump(self) -> bytes:
        """The secret store as canonical JSON lines, ciphertext only: each secret's
        metadata, its versions (value ciphertexts and digests) and their wrapped DEKs. The
        caller encrypts it again into a backup container (branch ``backup``)."""
        lines = []
        for row in self.store.secrets():
            vers = []
            for v in self.store.secret_versions(row.env, row.path):
                obj = self.store.stored_object(v.dek_uid) if v.dek_uid else None
                vers.append(
                    {
                        "version": v.version,
                        "state": v.state,
                        "source": v.source,
                        "created": v.created,
                        "dek_uid": v.dek_uid.hex() if v.dek_uid else None,
                        "ciphertext": v.ciphertext.hex() if v.ciphertext else None,
                        "mac": v.value_mac.hex() if v.value_mac else None,
                        "wrapped": obj.wrapped.hex() if obj else None,
                        "kek_version": obj.kek_version if obj else None,
                    }
                )
            meta = {k: getattr(row, k) for k in row.__dataclass_fields__}
            lines.append(canonical_bytes({"secret": meta, "versions": vers}))
        return b"\n".join(lines) + (b"\n" if lines else b"")

    def check_dump(self, data: bytes) -> dict[str, Any]:
        """A restore test: open every live version of a :meth:`dump` in memory (its DEK
        unwrapped under its recorded KEK version, its value decrypted and its digest
        checked), without writing anything. Returns counts and the failures by name."""
        secrets = versions = 0
        failed: list[str] = []
        for line in data.splitlines():
            if not line.strip():
                continue
            doc = load_json(line)
            s = doc["secret"]
            secrets += 1
            for v in doc["versions"]:
                if v["state"] != "live":
                    continue
                versions += 1
                name = f"{s['env']}:{s['path']}#v{v['version']}"
                try:
                    uid = bytes.fromhex(v["dek_uid"])
                    dek = self.hierarchy.open_object(
                        uid, bytes.fromhex(v["wrapped"]), BRANCH, int(v["kek_version"])
                    )
                    ct = bytes.fromhex(v["ciphertext"])
                    data_ = _open(dek, ct, s["env"], s["path"], v["version"], uid)
                    if not hmac.compare_digest(_mac(dek, data_), bytes.fromhex(v["mac"])):
                        raise ValueError("digest")
                except (CustodyError, InvalidTag, ValueError, KeyError, TypeError):
                    failed.append(name)
        return {"secrets": secrets, "versions": versions, "failed": failed}

    # -- lifecycle -----------------------------------------------------------------
    def delete(self, env: str, path: str) -> dict[str, Any]:
        """Soft-delete: reads refused (and reported) until restored or destroyed."""
        row = self._row(env, path)
        if row.state not in ("active", "rotating"):
            raise UsageError(f"{env}:{path} is already {row.state}", "")
        now = self._clock()
        after = iso(now + timedelta(days=self.policy.recovery_window_days))
        with self.store.transaction():
            self.store.update_secret(
                env, path, state="deprecated", deleted_at=iso(now), destroy_after=after,
                updated=iso(now), pending_version=None,
            )  # fmt: skip
        return {"env": env, "path": path, "state": "deprecated", "destroy_after": after}

    def restore(self, env: str, path: str) -> dict[str, Any]:
        row = self._row(env, path)
        if row.state != "deprecated":
            raise UsageError(f"{env}:{path} is {row.state}, not deleted", "Nothing to restore.")
        now = self._clock()
        with self.store.transaction():
            self.store.update_secret(
                env, path, state="active", deleted_at=None, destroy_after=None, updated=iso(now)
            )
        return {"env": env, "path": path, "state": "active"}

    def destroy(self, env: str, path: str, *, version: int | None = None) -> dict[str, Any]:
        """Crypto-shred: a soft-deleted secret whose recovery window has ended (every
        version), or one named version that no label points to.

        Raises:
            PolicyError: the window has not ended, or the version is labelled.
        """
        row = self._row(env, path)
        now = self._clock()
        if version is not None:
            if version in (row.current_version, row.pending_version, row.previous_version):
                raise PolicyError(
                    f"Version {version} of {env}:{path} is labelled",
                    "Rotate or delete first: only unlabelled versions are destroyed alone.",
                )
            if self.store.secret_version(env, path, version) is None:
                raise SecretNotFound(f"{env}:{path} has no version {version}", "")
            with self.store.transaction():
                self.store.shred_secret_version(env, path, version)
            return {"env": env, "path": path, "destroyed": [version]}
        if row.state != "deprecated" or row.destroy_after is None:
            raise PolicyError(
                f"{env}:{path} is {row.state}", "Delete it first; it is destroyed after its window."
            )
        if now < parse(row.destroy_after):
            raise PolicyError(
                f"{env}:{path} can be restored until {row.destroy_after}",
                "Wait for the recovery window to end (it is the delay that 'restore' cancels).",
            )
        gone = []
        with self.store.transaction():
            for v in self.store.secret_versions(env, path):
                if v.state != "destroyed":
                    self.store.shred_secret_version(env, path, v.version)
                    gone.append(v.version)
            self.store.update_secret(
                env, path, state="destroyed", current_version=None, previous_version=None,
                pending_version=None, updated=iso(now),
            )  # fmt: skip
        return {"env": env, "path": path, "destroyed": gone}

    def destroy_due(self) -> list[dict[str, Any]]:
        """Destroy every soft-deleted secret whose window has ended (for cron)."""
        now = self._clock()
        out = []
        for row in self.store.secrets():
            if row.state == "deprecated" and row.destroy_after and now >= parse(row.destroy_after):
                out.append(self.destroy(row.env, row.path))
        return out

    def due(self, *, within_days: int = 30, notify: bool = False) -> list[dict[str, Any]]:
        """Active secrets that expire within *within_days* or already have. With *notify*,
        one alert per secret at each warning point (30, 14, 7, 1 days, and on the day)."""
        now = self._clock()
        out = []
        for row in self.store.secrets():
            if row.state not in ("active", "rotating"):
                continue
            left = int(((parse(row.expires) - now).total_seconds() / 86400) // 1)
            if left > within_days:
                continue
            item = self._meta(row)
            item["overdue"] = left < 0
            out.append(item)
            if notify:
                self._warn(row, left)
        return out

    def _warn(self, row: SecretRow, left: int) -> None:
        point = next((p for p in sorted(self.policy.warn_days) if left <= p), None)
        if point is None:
            return
        key = f"secret-warned:{row.env}:{row.path}:{row.expires}"
        last = self.store.get_meta(key)
        if last is not None and int(last) <= point:
            return  # this warning point (or a later one) was already sent
        self._emit("expiry-overdue" if left < 0 else "expiry-near", row, days_left=left)
        with self.store.transaction():
            self.store.set_meta(key, str(point))
