"""The access-control tables' SQL, shared by the SQLite and PostgreSQL adapters
(:class:`custody.store.port.AccessStore`, docs/access.md).

The statements are the portable subset (no engine-only function), written with ``?``
placeholders. Lists (services, environments, actions) are kept as comma-joined text: their
items are names and paths, which hold no comma. No driver is imported here: each adapter's
base class runs the statements, turns ``?`` into its driver's placeholder and maps its
driver's errors (:mod:`custody.store.queries`).
"""

from __future__ import annotations

from typing import Any

from custody.errors import StorageError
from custody.store.queries import Runners
from custody.store.rows import AccessApprovalRow, AccessRequestRow, GrantRow, PrincipalRow

_P_COLS = (
    "name, kind, role, services, envs, public, x25519, token_id, token_salt, token_hash, "
    "token_created, token_revoked_at, created, created_by, revoked_at"
)
_R_COLS = (
    "id, kind, requester, env, path, actions, not_before, not_after, nonce, reason, "
    "security_class, needed, digest, state, created, updated"
)
_A_COLS = "request_id, approver, public, sig, approved_at"
_G_COLS = (
    "id, request_id, principal, env, path, actions, not_before, not_after, created, record, "
    "revoked_at, revoked_by, revoke_reason"
)


def _join(items: tuple[str, ...]) -> str:
    if any("," in i for i in items):
        raise ValueError("list items must not contain a comma")
    return ",".join(items)


def _split(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def _b(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def _principal(r: Any) -> PrincipalRow:
    return PrincipalRow(
        name=r[0],
        kind=r[1],
        role=r[2],
        services=_split(r[3]),
        envs=_split(r[4]),
        public=_b(r[5]),
        x25519=_b(r[6]),
        token_id=r[7],
        token_salt=_b(r[8]),
        token_hash=_b(r[9]),
        token_created=r[10],
        token_revoked_at=r[11],
        created=r[12],
        created_by=r[13],
        revoked_at=r[14],
    )


def _request(r: Any) -> AccessRequestRow:
    return AccessRequestRow(
        id=r[0],
        kind=r[1],
        requester=r[2],
        env=r[3],
        path=r[4],
        actions=_split(r[5]),
        not_before=r[6],
        not_after=r[7],
        nonce=r[8],
        reason=r[9],
        security_class=r[10],
        needed=r[11],
        digest=r[12],
        state=r[13],
        created=r[14],
        updated=r[15],
    )


def _approval(r: Any) -> AccessApprovalRow:
    return AccessApprovalRow(
        request_id=r[0], approver=r[1], public=bytes(r[2]), sig=bytes(r[3]), approved_at=r[4]
    )


def _grant(r: Any) -> GrantRow:
    return GrantRow(
        id=r[0],
        request_id=r[1],
        principal=r[2],
        env=r[3],
        path=r[4],
        actions=_split(r[5]),
        not_before=r[6],
        not_after=r[7],
        created=r[8],
        record=r[9],
        revoked_at=r[10],
        revoked_by=r[11],
        revoke_reason=r[12],
    )


class AccessQueries(Runners):
    """The ``principals``, ``access_requests``, ``access_approvals``, ``grants``,
    ``release_rules`` and ``releases`` tables, over an adapter base's statement runners."""

    # -- principals -------------------------------------------------------------------
    def add_principal(self, row: PrincipalRow) -> None:
        with self.transaction():
            if self.principal(row.name) is not None:
                raise StorageError(
                    f"A principal {row.name!r} already exists", "Choose another name."
                )
            self._write(
                f"INSERT INTO principals({_P_COLS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.name,
                    row.kind,
                    row.role,
                    _join(row.services),
                    _join(row.envs),
                    row.public,
                    row.x25519,
                    row.token_id,
                    row.token_salt,
                    row.token_hash,
                    row.token_created,
                    row.token_revoked_at,
                    row.created,
                    row.created_by,
                    row.revoked_at,
                ),
            )

    def principal(self, name: str) -> PrincipalRow | None:
        r = self._one(f"SELECT {_P_COLS} FROM principals WHERE name=?", (name,))  # noqa: S608
        return None if r is None else _principal(r)

    def principals(self) -> list[PrincipalRow]:
        rows = self._rows(f"SELECT {_P_COLS} FROM principals ORDER BY name")  # noqa: S608
        return [_principal(r) for r in rows]

    def principal_by_token_id(self, token_id: str) -> PrincipalRow | None:
        r = self._one(
            f"SELECT {_P_COLS} FROM principals WHERE token_id=?",  # noqa: S608
            (token_id,),
        )
        return None if r is None else _principal(r)

    def set_principal_token(
        self, name: str, *, token_id: str, salt: bytes, digest: bytes, now: int
    ) -> None:
        cur = self._write(
            "UPDATE principals SET token_id=?, token_salt=?, token_hash=?, token_created=?, "
            "token_revoked_at=NULL WHERE name=? AND revoked_at IS NULL",
            (token_id, salt, digest, now, name),
        )
        if cur.rowcount != 1:
            raise StorageError(f"No live principal {name!r}", "See 'custody principal list'.")

    def revoke_principal(self, name: str, *, now: int) -> bool:
        cur = self._write(
            "UPDATE principals SET revoked_at=?, token_revoked_at=COALESCE(token_revoked_at, ?) "
            "WHERE name=? AND revoked_at IS NULL",
            (now, now, name),
        )
        return bool(cur.rowcount == 1)

    def revoke_principal_token(self, name: str, *, now: int) -> bool:
        cur = self._write(
            "UPDATE principals SET token_revoked_at=? WHERE name=? AND token_id IS NOT NULL "
            "AND token_revoked_at IS NULL",
            (now, name),
        )
        return bool(cur.rowcount == 1)

    # -- requests and approvals -------------------------------------------------------
    def add_access_request(self, row: AccessRequestRow) -> None:
        self._write(
            f"INSERT INTO access_requests({_R_COLS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                row.kind,
                row.requester,
                row.env,
                row.path,
                _join(row.actions),
                row.not_before,
                row.not_after,
                row.nonce,
                row.reason,
                row.security_class,
                row.needed,
                row.digest,
                row.state,
                row.created,
                row.updated,
            ),
        )

    def access_request(self, request_id: str) -> AccessRequestRow | None:
        r = self._one(
            f"SELECT {_R_COLS} FROM access_requests WHERE id=?",  # noqa: S608
            (request_id,),
        )
        return None if r is None else _request(r)

    def access_requests(self, *, state: str | None = None) -> list[AccessRequestRow]:
        base = f"SELECT {_R_COLS} FROM access_requests"  # noqa: S608
        if state is None:
            rows = self._rows(base + " ORDER BY created DESC, id")
        else:
            rows = self._rows(base + " WHERE state=? ORDER BY created DESC, id", (state,))
        return [_request(r) for r in rows]

    def set_access_request_state(self, request_id: str, state: str, *, now: int) -> None:
        self._write(
            "UPDATE access_requests SET state=?, updated=? WHERE id=?", (state, now, request_id)
        )

    def add_access_approval(self, row: AccessApprovalRow) -> bool:
        with self.transaction():
            if self._one(
                "SELECT 1 FROM access_approvals WHERE request_id=? AND approver=?",
                (row.request_id, row.approver),
            ):
                return False
            self._write(
                f"INSERT INTO access_approvals({_A_COLS}) VALUES(?,?,?,?,?)",
                (row.request_id, row.approver, row.public, row.sig, row.approved_at),
            )
            return True

    def access_approvals(self, request_id: str) -> list[AccessApprovalRow]:
        rows = self._rows(
            f"SELECT {_A_COLS} FROM access_approvals WHERE request_id=? "  # noqa: S608
            "ORDER BY approved_at, approver",
            (request_id,),
        )
        return [_approval(r) for r in rows]

    # -- grants -----------------------------------------------------------------------
    def add_grant(self, row: GrantRow) -> None:
        self._write(
            f"INSERT INTO grants({_G_COLS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                row.request_id,
                row.principal,
                row.env,
                row.path,
                _join(row.actions),
                row.not_before,
                row.not_after,
                row.created,
                row.record,
                row.revoked_at,
                row.revoked_by,
                row.revoke_reason,
            ),
        )

    def grant(self, grant_id: str) -> GrantRow | None:
        r = self._one(f"SELECT {_G_COLS} FROM grants WHERE id=?", (grant_id,))  # noqa: S608
        return None if r is None else _grant(r)

    def grants(self, *, principal: str | None = None, env: str | None = None) -> list[GrantRow]:
        where, params = [], []
        if principal is not None:
            where.append("principal=?")
            params.append(principal)
        if env is not None:
            where.append("env=?")
            params.append(env)
        sql = f"SELECT {_G_COLS} FROM grants"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_grant(r) for r in self._rows(sql + " ORDER BY created DESC, id", params)]

    def revoke_grant(self, grant_id: str, *, now: int, by: str, reason: str) -> bool:
        cur = self._write(
            "UPDATE grants SET revoked_at=?, revoked_by=?, revoke_reason=? "
            "WHERE id=? AND revoked_at IS NULL",
            (now, by, reason[:200], grant_id),
        )
        return bool(cur.rowcount == 1)

    def lapse_grants(self, *, now: int) -> list[GrantRow]:
        # every decision calls this: a read first, so that a decision takes the store's
        # write lock (a write transaction on SQLite, the advisory lock on PostgreSQL) only
        # when a grant has in fact lapsed; the transaction below reads again
        if not self._rows(
            "SELECT 1 FROM grants WHERE revoked_at IS NULL AND lapsed_at IS NULL "
            "AND not_after <= ? LIMIT 1",
            (now,),
        ):
            return []
        with self.transaction():
            rows = self._rows(
                f"SELECT {_G_COLS} FROM grants WHERE revoked_at IS NULL AND lapsed_at IS NULL "  # noqa: S608
                "AND not_after <= ? ORDER BY not_after, id",
                (now,),
            )
            self._write(
                "UPDATE grants SET lapsed_at=? WHERE revoked_at IS NULL AND lapsed_at IS NULL "
                "AND not_after <= ?",
                (now, now),
            )
        return [_grant(r) for r in rows]

    def revoke_grants_on(
        self, env: str, path: str, *, now: int, by: str, reason: str
    ) -> list[GrantRow]:
        with self.transaction():
            hit = [
                g
                for g in self.grants(env=env)
                if g.revoked_at is None
                and (g.path == path or (g.path.endswith("/") and path.startswith(g.path)))
            ]
            for g in hit:
                self.revoke_grant(g.id, now=now, by=by, reason=reason)
        return hit

    # -- quorum release ---------------------------------------------------------------
    def release_rule(self, env: str, path: str) -> tuple[str, int] | None:
        r = self._one("SELECT mode, needed FROM release_rules WHERE env=? AND path=?", (env, path))
        return None if r is None else (str(r[0]), int(r[1]))

    def release_rules(self) -> list[tuple[str, str, str, int]]:
        return [
            (str(r[0]), str(r[1]), str(r[2]), int(r[3]))
            for r in self._rows(
                "SELECT env, path, mode, needed FROM release_rules ORDER BY env, path", ()
            )
        ]

    def set_release_rule(
        self, env: str, path: str, *, mode: str, needed: int, by: str, now: int
    ) -> None:
        with self.transaction():
            self._write("DELETE FROM release_rules WHERE env=? AND path=?", (env, path))
            if mode != "normal":
                self._write(
                    "INSERT INTO release_rules(env, path, mode, needed, set_by, created) "
                    "VALUES(?,?,?,?,?,?)",
                    (env, path, mode, needed, by, now),
                )

    def record_release(
        self, request_id: str, *, version: int, sealed_sha256: str, now: int
    ) -> bool:
        with self.transaction():
            if self._one("SELECT 1 FROM releases WHERE request_id=?", (request_id,)):
                return False
            self._write(
                "INSERT INTO releases(request_id, version, sealed_sha256, delivered_at) "
                "VALUES(?,?,?,?)",
                (request_id, version, sealed_sha256, now),
            )
            return True


__all__ = ["AccessQueries"]
