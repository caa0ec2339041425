"""The deployment's roster: who is enrolled, in which role, with which key, for how long.

Enrolment and revocation happen only in an ``enrol`` ceremony (:mod:`ceremonies.runner`);
the participants' own identities and keys are :mod:`ceremonies.participants`.
"""

from __future__ import annotations

from ceremonies.participants import KEY_VALIDITY_SECONDS, ROLES, Identity, Member, check_name
from custody.errors import PolicyError, UsageError
from custody.signing import fingerprint
from custody.store.port import Store
from custody.store.rows import ParticipantRow


class Roster:
    """The enrolled participants of one deployment (table ``participants``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"Roster({self.store!r})"

    def members(self, *, include_revoked: bool = True) -> list[Member]:
        out = [
            Member(
                name=r.name,
                role=r.role,
                public=r.public,
                fingerprint=r.fingerprint,
                valid_from=r.valid_from,
                valid_until=r.valid_until,
                revoked_at=r.revoked_at,
                enrolled_by=r.enrolled_by,
                alg=r.alg,
            )
            for r in self.store.participants()
        ]
        return [m for m in out if include_revoked or m.revoked_at is None]

    def get(self, name: str) -> Member | None:
        return next((m for m in self.members() if m.name == name), None)

    def by_public(self, public: bytes) -> Member | None:
        return next((m for m in self.members() if m.public == public), None)

    def active(self, role: str | None = None, *, now: int) -> list[Member]:
        """Members usable at *now*, optionally only those in *role*."""
        return [
            m
            for m in self.members()
            if m.usable_at(now) is None and (role is None or m.role == role)
        ]

    def require(self, public: bytes, *, now: int, role: str | None = None) -> Member:
        """The enrolled, currently valid member holding *public*.

        Raises:
            PolicyError: not enrolled, revoked/expired, or not in *role*.
        """
        m = self.by_public(public)
        if m is None:
            raise PolicyError(
                f"Key {fingerprint(public)[:16]} is not enrolled",
                "Enrol the participant first with 'custody ceremony enrol'.",
            )
        why = m.usable_at(now)
        if why:
            raise PolicyError(why, "Use a currently enrolled participant's key.")
        if role is not None and m.role != role:
            raise PolicyError(
                f"{m.name} is a {m.role}, not a {role}", f"This action needs a {role}."
            )
        return m

    def add(
        self,
        ident: Identity,
        *,
        now: int,
        enrolled_by: str,
        ceremony_id: str | None,
        validity: int = KEY_VALIDITY_SECONDS,
    ) -> None:
        """Insert a member (called by the enrol ceremony only).

        Raises:
            UsageError: bad role, or the name or key is already enrolled.
        """
        check_name(ident.name)
        if ident.role not in ROLES:
            raise UsageError(
                f"{ident.name} has unknown role {ident.role!r}", f"Use one of: {', '.join(ROLES)}."
            )
        if self.get(ident.name) is not None or self.by_public(ident.public) is not None:
            raise UsageError(
                f"{ident.name} (or that key) is already enrolled",
                "Revoke the old entry first, or use another name.",
            )
        self.store.add_participant(
            ParticipantRow(
                name=ident.name,
                role=ident.role,
                alg=ident.alg,
                public=ident.public,
                fingerprint=ident.fingerprint,
                valid_from=now,
                valid_until=now + validity,
                revoked_at=None,
                enrolled_by=enrolled_by,
                enrolled_in=ceremony_id,
            )
        )

    def revoke(self, name: str, *, now: int) -> None:
        """Mark a member revoked from *now*.

        Raises:
            UsageError: no such member.
        """
        if not self.store.revoke_participant(name, now=now):
            raise UsageError(
                f"{name} is not an enrolled, unrevoked participant",
                "See 'custody participant list'.",
            )
