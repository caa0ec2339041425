"""KEK versions: per-branch (``data``, ``backup``, ``secrets``) random 256-bit keys sealed
under the current root inside the HSM, and their staged retirement.

The HSM unwraps a KEK once per job (:meth:`KekKeys.kek_plaintext` caches it for the life of
the hierarchy object); DEKs never make a per-object HSM round trip.
"""

from __future__ import annotations

from datetime import datetime

from custody.clock import iso, parse
from custody.errors import CeremonyError, IntegrityError, PolicyError, UsageError
from custody.hsm import kcv_of_bytes
from custody.keys.roots import RootKeys
from custody.model import BRANCHES, CAN_DECRYPT, KeyState, can_move
from custody.store.rows import KekVersion, NewKek


def check_branch(branch: str) -> None:
    if branch not in BRANCHES:
        raise UsageError(f"Unknown KEK branch {branch!r}", f"Use one of: {', '.join(BRANCHES)}.")


class KekKeys(RootKeys):
    """KEK versions of every branch."""

    def keks(self, branch: str | None = None) -> list[KekVersion]:
        return self.store.keks(branch)

    def current_kek(self, branch: str) -> KekVersion:
        """The active KEK version of *branch*.

        Raises:
            UsageError: unknown branch. CeremonyError: the branch has no KEK yet.
        """
        check_branch(branch)
        for k in reversed(self.keks(branch)):
            if k.state is KeyState.ACTIVE:
                return k
        raise CeremonyError(
            f"The {branch} branch has no active KEK",
            f"Create one with 'custody kek rotate --branch {branch}'.",
        )

    def create_kek_version(self, branch: str) -> KekVersion:
        """Create a new KEK version under the current root and make it active.

        The previous active version becomes decrypt-only in the same transaction.
        """
        check_branch(branch)
        root = self.current_root()
        plain = self.hsm.random(32)
        version = self.store.next_kek_version(branch)
        sealed = self.seal_kek(branch, version, root.version, plain)
        self.store.add_kek(
            NewKek(
                branch=branch,
                version=version,
                kcv=kcv_of_bytes(plain),
                root_version=root.version,
                wrapped=sealed,
            ),
            now=self._now(),
        )
        self._kek_cache[(branch, version)] = plain
        return next(k for k in self.keks(branch) if k.version == version)

    def kek_plaintext(self, branch: str, version: int, *, for_encrypt: bool = False) -> bytes:
        """The KEK's bytes, unwrapped once through the HSM and cached for this object's life.

        Raises:
            PolicyError: the version is not usable (disabled or destroyed, or not active when
                *for_encrypt*). IntegrityError: the unwrap failed its tag or KCV check.
        """
        k = self.store.sealed_kek(branch, version)
        if k is None:
            raise IntegrityError(f"No KEK {branch}/v{version}", "The object names a missing key.")
        st = k.state
        if st not in CAN_DECRYPT or (for_encrypt and st is not KeyState.ACTIVE):
            raise PolicyError(f"KEK {branch}/v{version} is {st}", "Use the active version.")
        key = self._kek_cache.get((branch, version))
        if key is None:
            key = self.open_kek(branch, version, k.root_version, k.wrapped)
            if kcv_of_bytes(key) != k.kcv:
                raise IntegrityError(f"KEK {branch}/v{version} KCV mismatch", "Store damaged.")
            self._kek_cache[(branch, version)] = key
        return key

    # ------------------------------------------------------ staged retirement
    # Additive API for re-key jobs (custody.rekey.jobs); see docs/rekey.md.
    def kek_users(self, branch: str, version: int) -> int:
        """How many things are still wrapped under KEK *branch*/v*version*.

        Counts stored objects and, for the ``backup`` branch, catalogued backup files. Call it
        inside the transaction that changes the version's state, so the count cannot go stale.
        """
        return self.store.kek_users(branch, version)

    def set_kek_state(
        self,
        branch: str,
        version: int,
        state: KeyState,
        *,
        destroy_after: datetime | None = None,
        now: datetime | None = None,
    ) -> KekVersion:
        """Move a KEK version to *state* (staged retirement), checking the rules atomically.

        The current state is re-read and the "wraps nothing" rule is checked inside the same
        write transaction that changes the state, so no object can be wrapped under a version
        that has just been disabled.

        Args:
            branch: the KEK branch.
            version: the KEK version.
            state: the target state.
            destroy_after: required when *state* is ``destroy-scheduled``.
            now: the time of the change (defaults to the hierarchy's clock).

        Returns:
            The version after the change.

        Raises:
            UsageError: unknown branch or version, or a missing *destroy_after*.
            PolicyError: the move is not allowed, the version still wraps something, another
                version is active, or its destruction delay has not passed.
        """
        check_branch(branch)
        now = now if now is not None else self.clock()
        with self.store.transaction():
            row = self.store.sealed_kek(branch, version)
            if row is None:
                raise UsageError(f"No KEK {branch}/v{version}", "See 'custody kek list'.")
            src = row.state
            if not can_move(src, state):
                raise PolicyError(
                    f"KEK {branch}/v{version} cannot go from {src} to {state}",
                    "See docs/rekey.md for the retirement stages.",
                )
            if state not in CAN_DECRYPT:
                users = self.kek_users(branch, version)
                if users:
                    raise PolicyError(
                        f"KEK {branch}/v{version} still wraps {users} object(s)",
                        f"Move them first with 'custody rekey run --branch {branch}'.",
                    )
            if state is KeyState.ACTIVE and self.store.active_kek_count(branch):
                raise PolicyError(
                    f"The {branch} branch already has an active KEK",
                    "Only one version per branch is active.",
                )
            after: str | None = None
            if state is KeyState.DESTROY_SCHEDULED:
                if destroy_after is None:
                    raise UsageError("A destruction needs a date", "Pass destroy_after.")
                after = iso(destroy_after)
            if state is KeyState.DESTROYED:
                if row.destroy_after is None or parse(row.destroy_after) > now:
                    raise PolicyError(
                        f"KEK {branch}/v{version} may not be destroyed before {row.destroy_after}",
                        "Wait for the destruction delay, or cancel it.",
                    )
                after = row.destroy_after  # the sealed key is erased; the row stays as a record
            self.store.set_kek_state(branch, version, state, now=iso(now), destroy_after=after)
        if state not in CAN_DECRYPT:
            self._kek_cache.pop((branch, version), None)
        return next(k for k in self.keks(branch) if k.version == version)
