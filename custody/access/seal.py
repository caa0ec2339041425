"""The access seal: an HMAC under a token-held key over every access-control row.

Access-control rows are plain store rows, so whoever can write ``custody.db`` but does not
hold the token PIN could add a principal with a token hash of their own, drop an MFA
enrolment, a release rule or a grant's revocation, or swap a key. The seal closes that:
one HMAC-SHA256 (under the non-extractable token key ``access-seal-<deployment id>``,
:mod:`custody.hsm.pkcs11.mackeys`, a separate key from the audit seal's ``audit-mac``)
over a canonical digest of the whole access state, kept in the store's meta table
(``access_seal``). The digest covers:

- every principal: name, kind, role, services, envs, public, x25519, token_id, token_salt,
  token_hash, token_revoked_at, revoked_at;
- every MFA enrolment's existence and principal binding (principal, object_uid; not the
  counters a code check moves: last_step, failures, lockout);
- every release rule (env, path, mode, needed);
- the revoked grants: the list of ``(grant id, revoked_at)`` sealed last (kept beside the
  seal in meta ``access_seal_revoked``). A sealed revocation must still be in the store,
  unchanged; a revocation made since (``custody access revoke`` by a service with its token,
  without the PIN) only takes access away, so it is accepted and absorbed into the seal by
  the next token-open check.

Because it is ONE seal over the whole set, an inserted, edited or deleted row changes the
digest: deletion is caught the same way as an edit, with no per-row MAC and no counter.
Every token-open write that changes these rows re-seals in the same store transaction
(:meth:`AccessSeal.write`); every token-open decision recomputes and compares
(:meth:`AccessSeal.check`), refusing with :class:`~custody.errors.IntegrityError`
(audited as ``access seal`` ``failed``) on a mismatch.

First use: when the token has no ``access-seal-<id>`` key yet (a home made before the seal
existed), the first token-open check creates it and seals the rows as they are
(audited ``access seal`` ``ok`` with ``first_use``). Once the key exists, a missing seal is
refused, not re-made. ``custody access seal`` re-seals deliberately (after the PIN holder
has reviewed ``custody principal list``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from custody.errors import IntegrityError, KeyNotFound
from custody.store.port import Store

SEAL_META = "access_seal"
REVOKED_META = "access_seal_revoked"
DOMAIN = b"custody/access-seal/v1\0"


class MacToken(Protocol):
    """The part of the :class:`custody.hsm.Hsm` port the seal uses."""

    def ensure_mac_key(self, label: str) -> None: ...

    def mac(self, label: str, data: bytes) -> bytes: ...


class SealAudit(Protocol):
    def append(
        self,
        op: str,
        target: str,
        actor: str,
        *,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...


def seal_label(deployment_id: str) -> str:
    return f"access-seal-{deployment_id}"


def _hex(b: bytes | memoryview | None) -> str | None:
    return None if b is None else bytes(b).hex()


def revoked_now(store: Store) -> list[list[Any]]:
    """``[grant id, revoked_at]`` of every revoked grant, sorted."""
    return sorted([g.id, g.revoked_at] for g in store.grants() if g.revoked_at is not None)


def access_state(store: Store) -> list[Any]:
    """The canonical access state the seal covers (see the module docstring)."""
    principals = [
        [
            p.name,
            p.kind,
            p.role,
            list(p.services),
            list(p.envs),
            _hex(p.public),
            _hex(p.x25519),
            p.token_id,
            _hex(p.token_salt),
            _hex(p.token_hash),
            p.token_revoked_at,
            p.revoked_at,
        ]
        for p in sorted(store.principals(), key=lambda r: r.name)
    ]
    mfa = sorted([m.principal, _hex(m.object_uid)] for m in store.mfa_enrolments())
    rules = [list(r) for r in store.release_rules()]
    return [["principals", principals], ["mfa", mfa], ["release", rules]]


def _canon(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def state_digest(store: Store, revoked: str) -> bytes:
    """The digest sealed: the access state and the sealed revocation list (*revoked*, JSON)."""
    doc = _canon([*access_state(store), ["revoked", revoked]])
    return hashlib.sha256(doc.encode("utf-8")).digest()


class AccessSeal:
    """Checks and renews the access seal of *store* with the token key *label*.

    Args:
        store: the deployment's store.
        token: the logged-in token (the HMAC key never leaves it).
        label: the MAC key label, :func:`seal_label` of the deployment id.
        audit: where a refused seal (and the first seal) is recorded.
    """

    def __init__(self, store: Store, token: MacToken, label: str, audit: SealAudit) -> None:
        self.store, self._token, self.label, self._audit = store, token, label, audit
        # (digest, stored seal) last checked against the token: the same pair needs no new
        # HMAC on the token (a long-lived caller checks before every decision)
        self._checked: tuple[bytes, str] | None = None
        # the store's change counter when the rows last passed the whole check: while it
        # stays the same nothing in the store changed, so the rows need no new digest
        self._clean_at: object | None = None

    def __repr__(self) -> str:
        return f"AccessSeal(label={self.label!r})"

    def _mac(self, digest: bytes) -> bytes | None:
        try:
            return bytes(self._token.mac(self.label, DOMAIN + digest))
        except KeyNotFound:
            return None

    def _refuse(self, reason: str) -> IntegrityError:
        self._audit.append(
            "access seal", "access", "custody", outcome="failed", details={"reason": reason}
        )
        return IntegrityError(
            f"Access-control rows fail their seal ({reason})",
            "A principal, MFA enrolment, release rule or grant revocation was changed "
            "without the token. Nothing was decided. Compare 'custody principal list' with "
            "the audit log; after restoring the rows, 'custody access seal' re-seals them.",
        )

    def check(self) -> None:
        """Refuse unless the stored seal matches the current rows (first use: seal them).

        Raises:
            IntegrityError: a mismatch, or a missing seal once the key exists (audited).
            HsmError: the token failed.
        """
        counter = self.store.change_counter()
        if counter is not None and counter == self._clean_at:
            return
        self._clean_at = None
        stored = self.store.get_meta(SEAL_META)
        revoked = self.store.get_meta(REVOKED_META) or "[]"
        digest = state_digest(self.store, revoked)
        if stored is None or self._checked != (digest, stored):
            mac = self._mac(digest)
            if mac is None:
                if stored is not None:
                    raise self._refuse("the token holds no access-seal key for this deployment")
                self.reseal(first_use=True)
                return
            if stored is None:
                raise self._refuse("the seal is missing")
            if not hmac.compare_digest(stored, mac.hex()):
                raise self._refuse("the rows do not match the seal")
            self._checked = (digest, stored)
        sealed = json.loads(revoked)  # authenticated by the seal just checked
        now = revoked_now(self.store)
        current = {g: t for g, t in now}
        if any(current.get(g) != t for g, t in sealed):
            raise self._refuse("a sealed grant revocation was undone or changed")
        if len(now) != len(sealed):  # revocations made without the token: absorb them
            with self.store.transaction():
                self.reseal()
            return  # written: the counter moved, the next check reads again
        self._clean_at = counter

    def reseal(self, *, first_use: bool = False, by: str = "custody") -> None:
        """Seal the current rows and revocations (creating the token key if absent)."""
        self._token.ensure_mac_key(self.label)
        revoked = _canon(revoked_now(self.store))
        mac = self._mac(state_digest(self.store, revoked))
        if mac is None:  # pragma: no cover - ensure_mac_key just made it
            raise IntegrityError("The access-seal key could not be created", "Check the token.")
        self.store.set_meta(REVOKED_META, revoked)
        self.store.set_meta(SEAL_META, mac.hex())
        if first_use:
            self._audit.append(
                "access seal", "access", by, outcome="ok", details={"first_use": True}
            )

    @contextmanager
    def write(self) -> Iterator[None]:
        """Check, then run the write and re-seal in one store transaction."""
        self.check()
        with self.store.transaction():
            yield
            self.reseal()


__all__ = [
    "REVOKED_META",
    "SEAL_META",
    "AccessSeal",
    "MacToken",
    "access_state",
    "seal_label",
    "state_digest",
]
