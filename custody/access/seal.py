"""The access seal: an HMAC under a token-held key over every access-control row.

Access-control rows are plain store rows, so whoever can write ``custody.db`` but does not
hold the token PIN could add a principal with a token hash of their own, drop an MFA
enrolment, a release rule or a grant's revocation, swap a key, un-revoke a custodian's
participant key, downgrade a secret from high to low class, or put back an older copy of
the whole database. The seal closes that: one HMAC-SHA256 (under the non-extractable token
key ``access-seal-<deployment id>``, :mod:`custody.hsm.pkcs11.mackeys`, a separate key from
the audit seal's ``audit-mac``) over a canonical digest of the whole access state, kept in
the store's meta table (``access_seal``). The digest covers:

- every principal: name, kind, role, services, envs, public, x25519, token_id, token_salt,
  token_hash, token_revoked_at, revoked_at;
- every MFA enrolment's existence and principal binding (principal, object_uid; not the
  counters a code check moves: last_step, failures, lockout);
- every release rule (env, path, mode, needed);
- the local operator's TOTP binding (meta ``access_local_operator``, when set: see
  :meth:`custody.access.control.AccessControl.operator`);
- the revoked grants: the list of ``(grant id, revoked_at)`` sealed last (kept beside the
  seal in meta ``access_seal_revoked``). A sealed revocation must still be in the store,
  unchanged; a revocation made since (``custody access revoke`` by a service with its token,
  without the PIN) only takes access away, so it is accepted and absorbed into the seal by
  the next token-open check;
- the sealed participants roster (meta ``access_seal_roster``): each sealed participant's
  name, role, alg, public key, fingerprint, validity and revocation. A sealed participant
  must still be in the store, unchanged, except that a revocation made since (the enrol
  ceremony revokes without the PIN) is accepted and absorbed. A participant enrolled since
  the last seal is not trusted by access control (:meth:`AccessSeal.trusted_participants`:
  it approves nothing) until a super-admin with the token adds its principal
  (``custody principal add --key``, which vouches for it) or re-seals everything after review
  (``custody access seal``);
- the sealed secrets (meta ``access_seal_secrets``): each sealed secret's env, path,
  category and security class, which decide how many approvers a grant or release needs.
  A sealed secret's row must keep them; a secret created through the vault with the token
  is sealed in the same transaction (:meth:`AccessSeal.write` with ``secrets=``); one that
  is not sealed is treated as ``high`` class (:meth:`AccessSeal.trusted_class`);
- the seal's generation (meta ``access_seal_gen``), the rollback guard below.

Local-operator binding anchor: the binding (meta ``access_local_operator``) is under the
seal, but a re-seal after tampering (``custody access seal``) must not learn from the
tampered rows whose TOTP code to ask for (the row could be deleted, renamed to a principal
whose code the disk operator knows, or the bound principal's enrolment pointed at an older
secret the disk operator kept). So the token also holds the binding as it was last sealed:
a counter labelled ``<seal label>/local-mfa:<principal>:<enrolment object uid hex>`` (or
``<seal label>/local-mfa:`` when lifted) whose value is an epoch; the label with the
highest epoch is the binding (:meth:`AccessSeal.anchored_binding`). It is written by every
token-open check the rows pass and after every sealed write, whenever it differs from the
sealed rows (:meth:`AccessSeal.sync_binding`), so only rows that passed their seal ever
move it.

Because it is ONE seal over the whole set, an inserted, edited or deleted row changes the
digest: deletion is caught the same way as an edit, with no per-row MAC.
Every token-open write that changes these rows re-seals in the same store transaction
(:meth:`AccessSeal.write`); every token-open decision recomputes and compares
(:meth:`AccessSeal.check`), refusing with :class:`~custody.errors.IntegrityError`
(audited as ``access seal`` ``failed``) on a mismatch.

Rollback guard: each re-seal raises the generation by one, and the newest generation is
also kept on the token, as a monotonic counter (``<seal label>/generation``,
:mod:`custody.hsm.pkcs11.counters`) that only a logged-in user can advance. A check reads
the token's counter first and refuses a seal whose generation is below it: an older
``custody.db`` put back with the seal it had then (bringing back a revoked grant or
principal) is refused. The store commits first and the token is advanced right after
(:meth:`write`); a seal exactly one generation ahead of the token (a process that stopped
between the two) is accepted and the token is brought forward, so a crash never locks the
home, and the one state that can still be put back is the one just before such a crash,
until the next check advances the token.

First use: refused while a home's own token (``exclusive``) holds the counter of another
``access-seal-*`` label (the id is on the disk: changed, with the seal deleted, it would
otherwise look like a first use). Otherwise, when the token has no ``access-seal-<id>`` key
and no counter yet and the store no seal (a home made before the seal existed), the first
token-open check creates the key and seals the rows as they are (audited ``access seal``
``ok`` with ``first_use``). A seal made before the roster, the secrets and the generation
were covered (no ``access_seal_gen``) is checked as it was made and then re-sealed with them
(audited with ``upgraded``), but only while the token has no counter: once it has one, such
a seal is refused. Once the key exists, a missing seal is refused, not re-made. ``custody
access seal`` re-seals deliberately (after the PIN holder has reviewed ``custody principal
list`` and ``custody participant list``), also after a refused rollback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from custody.errors import IntegrityError, KeyNotFound
from custody.store.port import Store
from custody.store.rows import SecretRow

SEAL_META = "access_seal"
REVOKED_META = "access_seal_revoked"
ROSTER_META = "access_seal_roster"
SECRETS_META = "access_seal_secrets"
GEN_META = "access_seal_gen"
#: the principal whose TOTP the local PIN holder must give for super-admin actions
LOCAL_MFA_META = "access_local_operator"
DOMAIN_V1 = b"custody/access-seal/v1\0"
DOMAIN = b"custody/access-seal/v2\0"
#: the class an unsealed secret is treated as (the strictest)
UNSEALED_CLASS = "high"


class MacToken(Protocol):
    """The part of the :class:`custody.hsm.Hsm` port the seal uses."""

    def ensure_mac_key(self, label: str) -> None: ...

    def mac(self, label: str, data: bytes) -> bytes: ...

    def counter(self, label: str) -> int | None: ...

    def advance_counter(self, label: str, value: int) -> int: ...

    def counter_labels(self) -> list[str]: ...


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


SEAL_LABEL_PREFIX = "access-seal-"
#: after the seal label: the token counters anchoring the local-operator binding
BINDING_INFIX = "/local-mfa:"


@dataclass(frozen=True, slots=True)
class Binding:
    """The local operator's TOTP binding: the principal (None: not bound) and the object
    uid of that principal's enrolment when it was sealed."""

    principal: str | None
    object_uid: bytes | None = None

    def anchor(self, label: str) -> str:
        if self.principal is None:
            return f"{label}{BINDING_INFIX}"
        uid = (self.object_uid or b"").hex()
        return f"{label}{BINDING_INFIX}{self.principal}:{uid}"

    @classmethod
    def parse(cls, label: str, counter: str) -> Binding | None:
        """The binding named by the token counter *counter* of the seal *label*, or None
        (another counter, or a malformed one)."""
        prefix = f"{label}{BINDING_INFIX}"
        if not counter.startswith(prefix):
            return None
        rest = counter[len(prefix) :]
        if not rest:
            return cls(None)
        name, sep, uid = rest.partition(":")
        try:
            raw = bytes.fromhex(uid)
        except ValueError:
            return None
        if not sep or not name:
            return None
        return cls(name, raw or None)


#: seconds a clean check may rely on the token counter it last read (see AccessSeal.check)
TOKEN_RECHECK = 1.0


def seal_label(deployment_id: str) -> str:
    return f"{SEAL_LABEL_PREFIX}{deployment_id}"


def counter_label(label: str) -> str:
    """The token counter that holds the newest generation of the seal keyed *label*."""
    return f"{label}/generation"


def _hex(b: bytes | memoryview | None) -> str | None:
    return None if b is None else bytes(b).hex()


def revoked_now(store: Store) -> list[list[Any]]:
    """``[grant id, revoked_at]`` of every revoked grant, sorted."""
    return sorted([g.id, g.revoked_at] for g in store.grants() if g.revoked_at is not None)


def roster_now(store: Store) -> list[list[Any]]:
    """Every participant as sealed: ``[name, role, alg, public, fingerprint, valid_from,
    valid_until, revoked_at]``, sorted by name (``revoked_at`` last)."""
    return sorted(
        [
            p.name,
            p.role,
            p.alg,
            _hex(p.public),
            p.fingerprint,
            p.valid_from,
            p.valid_until,
            p.revoked_at,
        ]
        for p in store.participants()
    )


def _secret_entry(r: SecretRow) -> list[str]:
    return [r.env, r.path, r.category, r.security_class]


def secrets_now(store: Store) -> list[list[str]]:
    """Every secret as sealed: ``[env, path, category, security_class]``, sorted."""
    return sorted(_secret_entry(r) for r in store.secrets())


def access_state(store: Store) -> list[Any]:
    """The canonical access rows the seal covers directly (see the module docstring)."""
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
    state: list[Any] = [["principals", principals], ["mfa", mfa], ["release", rules]]
    local = store.get_meta(LOCAL_MFA_META)
    if local:  # absent or lifted (""): the digest a seal without the binding had
        state.append(["local operator", local])
    return state


def _canon(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def state_digest_v1(store: Store, revoked: str) -> bytes:
    """The digest a seal made before the roster, secrets and generation were covered."""
    doc = _canon([*access_state(store), ["revoked", revoked]])
    return hashlib.sha256(doc.encode("utf-8")).digest()


def state_digest(store: Store, revoked: str, roster: str, secrets: str, gen: int) -> bytes:
    """The digest sealed: the access rows, the sealed revocation list, roster and secrets
    (each the JSON kept in meta) and the generation."""
    doc = _canon(
        [
            *access_state(store),
            ["revoked", revoked],
            ["roster", roster],
            ["secrets", secrets],
            ["generation", gen],
        ]
    )
    return hashlib.sha256(doc.encode("utf-8")).digest()


class AccessSeal:
    """Checks and renews the access seal of *store* with the token key *label*.

    Args:
        store: the deployment's store.
        token: the logged-in token (the HMAC key never leaves it; it keeps the counter).
        label: the MAC key label, :func:`seal_label` of the deployment id.
        audit: where a refused seal (and the first seal) is recorded.
    """

    def __init__(
        self,
        store: Store,
        token: MacToken,
        label: str,
        audit: SealAudit,
        *,
        exclusive: bool = False,
    ) -> None:
        """Args:
        exclusive: the token serves this deployment alone (a home's own token): a first
            use is refused while the token holds another seal's counter. The label comes
            from the deployment id in ``custody.toml``, on the disk: without this, whoever
            can write the disk could change the id, delete the seal and have the rows as
            they are sealed as new at the next token-open command."""
        self.store, self._token, self.label, self._audit = store, token, label, audit
        self.exclusive = exclusive
        self.counter = counter_label(label)
        # (digest, stored seal) last checked against the token: the same pair needs no new
        # HMAC on the token (a long-lived caller checks before every decision). The token
        # counter is still read on every check: a rollback to a pair checked before fails.
        self._checked: tuple[bytes, str] | None = None
        self.invalidations = 0
        self._pending: int | None = None  # a generation sealed, for the token after commit
        self._secrets_seen: tuple[str, set[tuple[Any, ...]]] | None = None
        # (the store's change counter, the token's counter, the stored seal and generation)
        # when the rows last passed the whole check: while all four stay the same nothing
        # in the store changed, so the rows need no new digest. The token counter and the
        # seal's generation are still read on every check, so a rollback is still refused.
        self._clean_at: tuple[object, ...] | None = None
        # when the token counter in _clean_at was read (time.monotonic): see check()
        self._token_read_at = float("-inf")
        # (epoch, binding) the token anchored when last read or written
        self._anchor_seen: tuple[int, Binding] | None = None

    def __repr__(self) -> str:
        return f"AccessSeal(label={self.label!r})"

    def invalidate(self, _table: str = "*") -> None:
        """Forget the (digest, seal) pair last checked, so that the next check asks the
        token again. Called when another replica changed the access rows (PostgreSQL's
        NOTIFY, :meth:`custody.store.port.StoreCore.watch_access`). The pair is keyed by
        the rows' digest, so a stale pair could never pass changed rows; dropping it is a
        prompt, not what makes the check sound."""
        self._checked = None
        # refusals met inside the read snapshot, audited once it has ended
        self._deferred: list[str] | None = None
        self._clean_at = None
        self._token_read_at = float("-inf")
        self.invalidations += 1

    def _mac(self, domain: bytes, digest: bytes) -> bytes | None:
        try:
            return bytes(self._token.mac(self.label, domain + digest))
        except KeyNotFound:
            return None

    def _audit_refusal(self, reason: str) -> None:
        self._audit.append(
            "access seal", "access", "custody", outcome="failed", details={"reason": reason}
        )

    def _refuse(self, reason: str) -> IntegrityError:
        if self._deferred is not None:
            self._deferred.append(reason)  # audited once the read snapshot has ended
        else:
            self._audit_refusal(reason)
        return IntegrityError(
            f"Access-control rows fail their seal ({reason})",
            "A principal, MFA enrolment, release rule, grant revocation, participant or "
            "secret class was changed without the token, or an older store was put back. "
            "Nothing was decided. Compare 'custody principal list' and 'custody participant "
            "list' with the audit log; after restoring the rows, 'custody access seal' "
            "re-seals them.",
        )

    def _meta_list(self, key: str) -> tuple[str, list[Any]]:
        raw = self.store.get_meta(key) or "[]"
        try:
            doc = json.loads(raw)
        except ValueError:
            raise self._refuse(f"{key} is not JSON") from None
        if not isinstance(doc, list):
            raise self._refuse(f"{key} is not a list")
        return raw, doc

    # -- check ------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse unless the stored seal matches the current rows and is not older than the
        token's generation (first use: seal them).

        Raises:
            IntegrityError: a mismatch, a rollback, or a missing seal once the key exists
                (audited).
            HsmError: the token failed.
        """
        # Clean and recent: the store has not changed since the rows last passed, and the
        # token's counter was read less than TOKEN_RECHECK ago. A search of the token's
        # objects costs about 0.5 ms on SoftHSM, twice per API read, so it is not redone
        # then. This is sound. Custody writers commit the store before they move the
        # counter, so a counter that moved means a store change, and the store change
        # counter then differs. A store put back changes it too, and then the seal's
        # generation is compared again with the token, read afresh.
        if time.monotonic() - self._token_read_at < TOKEN_RECHECK and self._clean_at:
            with self._reading():
                if self._still_clean(self._clean_at[1]):
                    return
        # the token first, then the store: a writer commits the store before the token
        on_token = self._token.counter(self.counter)
        self._token_read_at = time.monotonic()
        # every row and meta value from ONE snapshot: read statement by statement, a check
        # racing a concurrent sealed write (another process, another replica) could see
        # the rows of one generation and the seal of the next, and refuse healthy rows
        with self._reading():
            then = self._verify(on_token)
        if then is not None:  # a write the check decided on, after the snapshot
            then()

    def in_use(self) -> bool:
        """Whether this deployment's rows were ever sealed: a seal in the store, or the
        token's counter or key for it. False only for a home never sealed, whose first
        check would seal the rows (first use) and create the token's objects.

        Raises:
            HsmError: the token failed.
        """
        return (
            self.store.get_meta(SEAL_META) is not None
            or self._token.counter(self.counter) is not None
            or self._mac(DOMAIN, b"") is not None
        )

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """The store's read snapshot; refusals are audited once it has ended (the audit
        port may write through a connection of its own, never inside this one's view)."""
        self._deferred = []
        try:
            with self.store.read_snapshot():
                yield
        finally:
            deferred, self._deferred = self._deferred, None
            for reason in deferred or ():
                self._audit_refusal(reason)

    def _still_clean(self, on_token: object) -> bool:
        """Inside the snapshot: whether the store is as when the rows last passed."""
        counter = self.store.change_counter()
        if counter is None:  # no change counter (PostgreSQL): every check reads the rows
            return False
        now = (counter, on_token, self.store.get_meta(SEAL_META), self.store.get_meta(GEN_META))
        return now == self._clean_at

    def _verify(self, on_token: int | None) -> Callable[[], None] | None:
        """:meth:`check` inside the snapshot: raises on a mismatch, returns what to write
        afterwards (first use, an upgrade, absorbed revocations) or None."""
        counter = self.store.change_counter()
        stored = self.store.get_meta(SEAL_META)
        gen_raw = self.store.get_meta(GEN_META)
        clean = (counter, on_token, stored, gen_raw)
        if counter is not None and stored is not None and clean == self._clean_at:
            return None
        self._clean_at = None
        revoked, sealed_revoked = self._meta_list(REVOKED_META)
        if stored is None:
            if on_token is None and self._mac(DOMAIN, b"") is None:  # no key: first use
                if self.exclusive and self._other_seals():
                    raise self._refuse(
                        "the token already anchors the access seal of another deployment id "
                        "(was the id in custody.toml or the store changed?); nothing was "
                        "sealed"
                    )

                def first_use() -> None:
                    with self.store.transaction():
                        self.reseal(first_use=True, everything=True)
                    self.advance()
                    self.sync_binding()

                return first_use
            raise self._refuse("the seal is missing")
        if gen_raw is None:
            return self._check_v1(stored, revoked, on_token)
        try:
            gen = int(gen_raw)
        except ValueError:
            raise self._refuse("the seal generation is not a number") from None
        roster, sealed_roster = self._meta_list(ROSTER_META)
        secrets, sealed_secrets = self._meta_list(SECRETS_META)
        digest = state_digest(self.store, revoked, roster, secrets, gen)
        if self._checked != (digest, stored):
            mac = self._mac(DOMAIN, digest)
            if mac is None:
                raise self._refuse("the token holds no access-seal key for this deployment")
            if not hmac.compare_digest(stored, mac.hex()):
                raise self._refuse("the rows do not match the seal")
            self._checked = (digest, stored)
        if on_token is None:
            raise self._refuse("the token holds no generation counter for this seal")
        if gen < on_token:
            raise self._refuse(
                f"the store was rolled back: its seal is generation {gen}, the token's {on_token}"
            )
        if gen > on_token:
            # committed by writers that have not advanced the token yet (each commits the
            # store first): one that stopped in between, or several at once on a shared
            # store. Only the token's key makes a seal that verifies, so a generation ahead
            # was written by custody with the token; bring the token up to it.
            self._token.advance_counter(self.counter, gen)
        absorb = self._check_revoked(sealed_revoked)
        absorb = self._check_roster(sealed_roster) or absorb
        self._check_secrets(sealed_secrets)
        if absorb:  # revocations made without the token: absorb them

            def absorbed() -> None:
                with self.store.transaction():
                    self.reseal()
                self.advance()
                self.sync_binding()
                # written: the counters moved, the next check reads again

            return absorbed
        self._clean_at = clean
        return self.sync_binding

    def _other_seals(self) -> list[str]:
        return [
            c
            for c in self._token.counter_labels()
            if c.startswith(SEAL_LABEL_PREFIX)
            and c != self.counter
            and not c.startswith(self.label + BINDING_INFIX)
        ]

    def _check_v1(self, stored: str, revoked: str, on_token: int | None) -> Callable[[], None]:
        if on_token is not None:
            raise self._refuse("the seal has no generation, and the token has a counter")
        mac = self._mac(DOMAIN_V1, state_digest_v1(self.store, revoked))
        if mac is None:
            raise self._refuse("the token holds no access-seal key for this deployment")
        if not hmac.compare_digest(stored, mac.hex()):
            raise self._refuse("the rows do not match the seal")
        self._check_revoked(json.loads(revoked))

        def upgrade() -> None:
            with self.store.transaction():
                self.reseal(everything=True)
            self.advance()
            self.sync_binding()
            self._audit.append(
                "access seal", "access", "custody", outcome="ok", details={"upgraded": True}
            )

        return upgrade

    def _check_revoked(self, sealed: list[Any]) -> bool:
        now = revoked_now(self.store)
        current = {g: t for g, t in now}
        if any(current.get(g) != t for g, t in sealed):
            raise self._refuse("a sealed grant revocation was undone or changed")
        return len(now) != len(sealed)

    def _check_roster(self, sealed: list[Any]) -> bool:
        current = {e[0]: e for e in roster_now(self.store)}
        absorb = False
        for e in sealed:
            c = current.get(e[0])
            if c is None:
                raise self._refuse(f"sealed participant {e[0]} was deleted")
            if c[:-1] != e[:-1] or (e[-1] is not None and c[-1] != e[-1]):
                raise self._refuse(f"sealed participant {e[0]} was changed")
            absorb = absorb or (e[-1] is None and c[-1] is not None)
        return absorb

    def _check_secrets(self, sealed: list[Any]) -> None:
        current = {(e[0], e[1]): e for e in secrets_now(self.store)}
        for e in sealed:
            c = current.get((e[0], e[1]))
            if c is None:
                raise self._refuse(f"sealed secret {e[0]}:{e[1]} was deleted")
            if c != e:
                raise self._refuse(f"sealed secret {e[0]}:{e[1]} changed its class or category")

    # -- what a decision may trust (after check) ----------------------------------------
    def trusted_participants(self) -> set[str]:
        """The names of the sealed participants (a participant enrolled since the last
        seal, by whoever could write the store, is not among them)."""
        _raw, doc = self._meta_list(ROSTER_META)
        return {str(e[0]) for e in doc}

    def trusted_class(self, row: SecretRow) -> str:
        """*row*'s security class when the secret is sealed with it, else ``high``."""
        raw = self.store.get_meta(SECRETS_META) or "[]"
        if self._secrets_seen is None or self._secrets_seen[0] != raw:
            _raw, doc = self._meta_list(SECRETS_META)
            self._secrets_seen = (raw, {tuple(e) for e in doc})
        sealed = tuple(_secret_entry(row)) in self._secrets_seen[1]
        return row.security_class if sealed else UNSEALED_CLASS

    # -- renew --------------------------------------------------------------------------
    def reseal(
        self,
        *,
        first_use: bool = False,
        by: str = "custody",
        everything: bool = False,
        participants: Collection[str] = (),
        secrets: Collection[tuple[str, str]] = (),
    ) -> None:
        """Seal the current rows, revocations, roster and secrets at the next generation
        (creating the token key if absent), inside the caller's store transaction; then
        :meth:`advance` the token once that transaction has committed.

        Args:
            everything: seal every participant and secret as they are (first use, and
                ``custody access seal``); otherwise only those sealed before (with the
                revocations made since), and:
            participants: names of participants to add to the sealed roster.
            secrets: ``(env, path)`` of secrets to add to the sealed secrets.
        """
        self._token.ensure_mac_key(self.label)
        on_token = self._token.counter(self.counter) or 0
        gen_raw = self.store.get_meta(GEN_META)
        stored_gen = int(gen_raw) if gen_raw and gen_raw.isdigit() else 0
        if on_token < stored_gen:  # a committed generation the token missed: bring it on
            on_token = self._token.advance_counter(self.counter, stored_gen)
        gen = max(on_token, stored_gen) + 1
        roster_rows, secret_rows = roster_now(self.store), secrets_now(self.store)
        if not everything:
            names = self.trusted_participants() | set(participants)
            roster_rows = [e for e in roster_rows if e[0] in names]
            _raw, sealed = self._meta_list(SECRETS_META)
            keep = {(e[0], e[1]) for e in sealed} | set(secrets)
            secret_rows = [e for e in secret_rows if (e[0], e[1]) in keep]
        revoked, roster, sec = (
            _canon(revoked_now(self.store)),
            _canon(roster_rows),
            _canon(secret_rows),
        )
        mac = self._mac(DOMAIN, state_digest(self.store, revoked, roster, sec, gen))
        if mac is None:  # pragma: no cover - ensure_mac_key just made it
            raise IntegrityError("The access-seal key could not be created", "Check the token.")
        self.store.set_meta(REVOKED_META, revoked)
        self.store.set_meta(ROSTER_META, roster)
        self.store.set_meta(SECRETS_META, sec)
        self.store.set_meta(GEN_META, str(gen))
        self.store.set_meta(SEAL_META, mac.hex())
        self._pending = gen
        if first_use:
            self._audit.append(
                "access seal", "access", by, outcome="ok", details={"first_use": True}
            )

    def advance(self) -> None:
        """Raise the token's counter to the generation last sealed (after its commit)."""
        gen, self._pending = self._pending, None
        if gen is not None:
            self._token.advance_counter(self.counter, gen)

    @contextmanager
    def write(
        self,
        *,
        participants: Collection[str] = (),
        secrets: Collection[tuple[str, str]] = (),
    ) -> Iterator[None]:
        """Check, then run the write and re-seal in one store transaction, then advance the
        token's counter (*participants* and *secrets*: see :meth:`reseal`)."""
        self.check()
        with self.store.transaction():
            yield
            self.reseal(participants=participants, secrets=secrets)
        self.advance()
        self.sync_binding()

    # -- the local-operator binding on the token ----------------------------------------
    def sealed_binding(self) -> Binding:
        """The binding as the store has it (trust it only once :meth:`check` passed)."""
        name = self.store.get_meta(LOCAL_MFA_META) or None
        if name is None:
            return Binding(None)
        row = self.store.mfa_enrolment(name)
        return Binding(name, None if row is None else bytes(row.object_uid))

    def anchored_binding(self) -> Binding | None:
        """The binding the token anchors (its highest epoch), or None when the token
        anchors none for this seal (a home bound before the anchor and not checked since).

        Raises:
            HsmError: the token failed.
        """
        best: tuple[int, Binding] | None = None
        for c in self._token.counter_labels():
            b = Binding.parse(self.label, c)
            if b is not None:
                epoch = self._token.counter(c) or 0
                if best is None or epoch > best[0]:
                    best = (epoch, b)
        self._anchor_seen = best
        return None if best is None else best[1]

    def anchor(self, binding: Binding) -> None:
        """Anchor *binding* on the token now, ahead of the store transaction that will
        commit it (a new binding: a process stopped between the two leaves the stricter
        anchor, which the next check the rows pass brings back in line with the store).

        Raises:
            HsmError: the token failed.
        """
        if self.anchored_binding() == binding:
            return
        epoch = 1 + (self._anchor_seen[0] if self._anchor_seen is not None else 0)
        self._token.advance_counter(binding.anchor(self.label), epoch)
        self._anchor_seen = (epoch, binding)

    def sync_binding(self) -> None:
        """Make the token's anchor the binding of the store's rows, which have just passed
        their seal or been sealed (nothing to do while they agree). The store is read again
        after the anchor is written, so that a binding another process committed meanwhile
        is not left behind a stale one.

        Raises:
            HsmError: the token failed.
        """
        for _ in range(3):
            want = self.sealed_binding()
            if self._anchor_seen is not None and self._anchor_seen[1] == want:
                return
            self.anchor(want)


__all__ = [
    "BINDING_INFIX",
    "GEN_META",
    "LOCAL_MFA_META",
    "REVOKED_META",
    "ROSTER_META",
    "SEAL_META",
    "SECRETS_META",
    "AccessSeal",
    "Binding",
    "MacToken",
    "access_state",
    "counter_label",
    "seal_label",
    "state_digest",
]
