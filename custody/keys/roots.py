"""Root key versions: the top of the hierarchy, held on the token as ``root/vN``.

The store records each version's KCV, state and (after a generate ceremony) the root-key
blob wrapped under RK. KEKs are sealed under the current root *inside the HSM*
(:meth:`RootKeys.seal_kek`, :meth:`RootKeys.open_kek`); rotating the root re-seals them
(:meth:`RootKeys.rewrap_keks`). :class:`KeyContext` is what every part of the hierarchy
shares: the store, the HSM (optional) and the clock.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from custody.clock import Clock, iso, utcnow
from custody.errors import CeremonyError, IntegrityError, KeyNotFound, PolicyError, UsageError
from custody.hsm import Hsm, kcv_of_bytes
from custody.keys import wrapped as envelope
from custody.model import CAN_DECRYPT, KeyState, can_move
from custody.store.port import Store
from custody.store.rows import KekRewrap, NewRoot, RootVersion

ROOT_LABEL = "root"


def kek_context(branch: str, version: int) -> bytes:
    return f"custody/kek/{branch}/v{version}".encode()


class KeyContext:
    """The store, the HSM (``None`` for read-only use) and the clock of one deployment."""

    def __init__(self, store: Store, hsm: Hsm | None, *, clock: Clock = utcnow):
        self.store = store
        self._hsm = hsm
        self.clock = clock
        self._kek_cache: dict[tuple[str, int], bytes] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(store={self.store!r}, cached_keks={len(self._kek_cache)})"

    @property
    def has_hsm(self) -> bool:
        return self._hsm is not None

    @property
    def hsm(self) -> Hsm:
        if self._hsm is None:
            raise UsageError("This operation needs the HSM", "Provide the token PIN.")
        return self._hsm

    def forget_keys(self) -> None:
        """Drop cached KEK plaintexts (end of a job)."""
        self._kek_cache.clear()

    def _now(self, now: datetime | None = None) -> str:
        return iso(now if now is not None else self.clock())


class RootKeys(KeyContext):
    """Root versions and the sealing of KEKs under them."""

    def roots(self) -> list[RootVersion]:
        return self.store.roots()

    def current_root(self) -> RootVersion:
        """The active root version.

        Raises:
            CeremonyError: there is no root key yet.
        """
        for r in reversed(self.roots()):
            if r.state is KeyState.ACTIVE:
                return r
        raise CeremonyError(
            "There is no active root key",
            "Run the generate ceremony ('custody ceremony generate') or 'custody init --dev-root'.",
        )

    def next_root_version(self) -> int:
        return self.store.next_root_version()

    def record_root(
        self, version: int, kcv: str, *, blob: bytes | None, epoch: int | None, activate: bool
    ) -> RootVersion:
        """Record a root version that now exists on the token.

        When *activate*, it becomes the active root and the previous active root becomes
        decrypt-only, in one transaction. KEKs are *not* rewrapped here; see :meth:`rewrap_keks`.
        """
        self.store.add_root(
            NewRoot(version=version, kcv=kcv, epoch=epoch, blob=blob),
            activate=activate,
            now=self._now(),
        )
        return next(r for r in self.roots() if r.version == version)

    def root_blob(self, version: int) -> bytes:
        blob = self.store.root_blob(version)
        if blob is None:
            raise CeremonyError(f"No root-key blob for root/v{version}", "Use the offline copy.")
        return blob

    def set_root_state(
        self, version: int, state: KeyState, *, destroy_after: str | None = None
    ) -> None:
        """Move a root version to *state* (staged retirement).

        ``destroy-scheduled`` records *destroy_after*; ``destroyed`` first deletes the key
        object from the token (C_DestroyObject; an already-absent key is fine) and then
        erases the root-key blob from the store, so neither copy of that root remains.

        Raises:
            PolicyError: the move is not allowed, or a KEK is still wrapped under it.
            UsageError: no such version, or ``destroyed`` without the HSM.
            HsmError: the token refused to destroy the key (the state is unchanged).
        """
        src = self.store.root_state(version)
        if src is None:
            raise UsageError(f"No root/v{version}", "See 'custody status'.")
        if not can_move(src, state):
            raise PolicyError(
                f"root/v{version} cannot go from {src} to {state}", "See docs/keys.md."
            )
        with self.store.transaction():
            if state not in CAN_DECRYPT:
                n = self.store.live_keks_under_root(version)
                if n:
                    raise PolicyError(
                        f"root/v{version} still wraps {n} KEK version(s)",
                        "Rewrap the KEKs under the current root first.",
                    )
            if state is KeyState.DESTROYED:
                # a replaced token may never have held it (recovery restores the current root)
                with contextlib.suppress(KeyNotFound):
                    self.hsm.destroy_key(ROOT_LABEL, version)
            self.store.set_root_state(
                version,
                state,
                now=self._now(),
                destroy_after=destroy_after if state is KeyState.DESTROY_SCHEDULED else None,
            )

    def create_dev_root(self) -> RootVersion:
        """Generate a non-extractable root in the HSM with no recovery shares (development)."""
        version = self.next_root_version()
        ref = self.hsm.generate_aes_key(ROOT_LABEL, version, extractable=False)
        return self.record_root(version, ref.kcv, blob=None, epoch=None, activate=True)

    def rewrap_keks(self, to_root: int) -> int:
        """Re-seal every live KEK version under root/v*to_root* (rotate-root).

        Each KEK is decrypted under its current root and encrypted under the new one inside
        the HSM; its KCV is checked before the row is updated, all in one transaction.

        Returns:
            The number of KEK versions rewrapped.
        """
        updates = []
        for k in self.store.live_keks_not_under(to_root):
            plain = self.open_kek(k.branch, k.version, k.root_version, k.wrapped)
            if kcv_of_bytes(plain) != k.kcv:
                raise IntegrityError(
                    f"KEK {k.branch}/v{k.version} KCV mismatch", "Stop; investigate."
                )
            sealed = self.seal_kek(k.branch, k.version, to_root, plain)
            updates.append(
                KekRewrap(branch=k.branch, version=k.version, root_version=to_root, wrapped=sealed)
            )
        for u in updates:
            self.open_kek(u.branch, u.version, u.root_version, u.wrapped)  # verify before commit
        self.store.rewrap_keks(updates)
        return len(updates)

    # -- sealing KEKs under a root (inside the HSM) ---------------------------------------
    @staticmethod
    def _root_missing(root_version: int) -> KeyNotFound:
        return KeyNotFound(
            f"root/v{root_version} is not on the token",
            "The token was replaced or emptied. 'custody status' shows the alarm; restore the "
            "root with 'custody ceremony recover' (docs/recovery.md, lost token).",
        )

    def seal_kek(self, branch: str, version: int, root_version: int, plain: bytes) -> bytes:
        """Seal a KEK under root/v*root_version* inside the HSM, the token's way
        (:meth:`custody.hsm.Hsm.seal`: AES-GCM, or the AES-CBC-PAD + HMAC fallback)."""
        hdr = envelope.header(ROOT_LABEL, root_version)
        try:
            return hdr + self.hsm.seal(
                ROOT_LABEL, root_version, plain, hdr + kek_context(branch, version)
            )
        except KeyNotFound as exc:
            raise self._root_missing(root_version) from exc

    def open_kek(self, branch: str, version: int, root_version: int, wrapped: bytes) -> bytes:
        """Open a sealed KEK; only the home's recorded way is tried (no downgrade).

        Raises:
            IntegrityError: the blob names another root, or does not verify.
            KeyNotFound: the root is not on the token.
        """
        env = envelope.parse(wrapped)
        if env.key_id != ROOT_LABEL or env.key_version != root_version:
            raise IntegrityError(f"KEK {branch}/v{version} names the wrong root", "Store damaged.")
        hdr = envelope.header(ROOT_LABEL, root_version)
        try:
            return self.hsm.unseal(
                ROOT_LABEL, root_version, wrapped[len(hdr) :], hdr + kek_context(branch, version)
            )
        except KeyNotFound as exc:
            raise self._root_missing(root_version) from exc
