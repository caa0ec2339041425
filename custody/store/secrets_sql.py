"""The secrets tables' SQL (:class:`custody.store.port.SecretStore`: secrets and their
versions), shared by the SQLite and PostgreSQL adapters: portable statements with ``?``
placeholders, run by the adapter's base class (:mod:`custody.store.queries`), which also
turns a duplicate key or value into the typed error given here."""

from __future__ import annotations

from typing import Any

from custody.errors import StorageError
from custody.store.queries import Runners
from custody.store.rows import SecretRow, SecretVersionRow

# the column lists are literals: no statement is built from input (update_secret's column
# names come from the _UPDATABLE allow-list)
_SELECT_SECRETS = (
    "SELECT env, path, category, class, owner, state, current_version, pending_version, "
    "previous_version, next_version, expires, created, updated, deleted_at, destroy_after, "
    "rotation_failures, prefix, previous_until FROM secrets"
)
_INSERT_META = (
    "INSERT INTO secrets(env, path, category, class, owner, state, current_version, "
    "pending_version, previous_version, next_version, expires, created, updated, deleted_at, "
    "destroy_after, rotation_failures, prefix, previous_until) "
    "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_SELECT_VERSIONS = (
    "SELECT env, path, version, state, dek_uid, ciphertext, value_mac, lookup, source, "
    "created FROM secret_versions"
)
_INSERT_VERSION = (
    "INSERT INTO secret_versions(env, path, version, state, dek_uid, ciphertext, value_mac, "
    "lookup, source, created) VALUES(?,?,?,?,?,?,?,?,?,?)"
)
_UPDATABLE = {
    "state",
    "owner",
    "current_version",
    "pending_version",
    "previous_version",
    "next_version",
    "expires",
    "updated",
    "deleted_at",
    "destroy_after",
    "rotation_failures",
    "previous_until",
}


def _secret(r: Any) -> SecretRow:
    return SecretRow(
        env=r[0],
        path=r[1],
        category=r[2],
        security_class=r[3],
        owner=r[4],
        state=r[5],
        current_version=r[6],
        pending_version=r[7],
        previous_version=r[8],
        next_version=r[9],
        expires=r[10],
        created=r[11],
        updated=r[12],
        deleted_at=r[13],
        destroy_after=r[14],
        rotation_failures=r[15],
        prefix=r[16],
        previous_until=r[17],
    )


def _version(r: Any) -> SecretVersionRow:
    return SecretVersionRow(
        env=r[0],
        path=r[1],
        version=r[2],
        state=r[3],
        dek_uid=None if r[4] is None else bytes(r[4]),
        ciphertext=None if r[5] is None else bytes(r[5]),
        value_mac=None if r[6] is None else bytes(r[6]),
        lookup=None if r[7] is None else bytes(r[7]),
        source=r[8],
        created=r[9],
    )


class SecretQueries(Runners):
    """The ``secrets`` and ``secret_versions`` tables."""

    def add_secret(self, row: SecretRow) -> None:
        self._require_transaction("add_secret")
        self._insert_unique(
            _INSERT_META,
            (
                row.env,
                row.path,
                row.category,
                row.security_class,
                row.owner,
                row.state,
                row.current_version,
                row.pending_version,
                row.previous_version,
                row.next_version,
                row.expires,
                row.created,
                row.updated,
                row.deleted_at,
                row.destroy_after,
                row.rotation_failures,
                row.prefix,
                row.previous_until,
            ),
            StorageError(
                f"A secret {row.env}:{row.path} already exists", "Use 'custody secret put'."
            ),
        )

    def secret(self, env: str, path: str) -> SecretRow | None:
        r = self._one(_SELECT_SECRETS + " WHERE env=? AND path=?", (env, path))
        return None if r is None else _secret(r)

    def secrets(self, env: str | None = None, prefix: str = "") -> list[SecretRow]:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if env is None:
            rows = self._rows(
                _SELECT_SECRETS + " WHERE path LIKE ? ESCAPE '\\' ORDER BY env, path",
                (like,),
            )
        else:
            rows = self._rows(
                _SELECT_SECRETS + " WHERE env=? AND path LIKE ? ESCAPE '\\' ORDER BY path",
                (env, like),
            )
        return [_secret(r) for r in rows]

    def update_secret(self, env: str, path: str, **fields: Any) -> None:
        self._require_transaction("update_secret")
        bad = set(fields) - _UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        cur = self._write(
            f"UPDATE secrets SET {sets} WHERE env=? AND path=?",  # noqa: S608
            (*fields.values(), env, path),
        )
        if cur.rowcount != 1:
            raise StorageError(f"No secret {env}:{path}", "Check the environment and path.")

    def add_secret_version(self, row: SecretVersionRow) -> None:
        self._require_transaction("add_secret_version")
        self._insert_unique(
            _INSERT_VERSION,
            (
                row.env,
                row.path,
                row.version,
                row.state,
                row.dek_uid,
                row.ciphertext,
                row.value_mac,
                row.lookup,
                row.source,
                row.created,
            ),
            StorageError(
                "The store already holds this value or version",
                "API keys are unique: generate a new one.",
            ),
        )

    def secret_versions(self, env: str, path: str) -> list[SecretVersionRow]:
        rows = self._rows(
            _SELECT_VERSIONS + " WHERE env=? AND path=? ORDER BY version",
            (env, path),
        )
        return [_version(r) for r in rows]

    def secret_version(self, env: str, path: str, version: int) -> SecretVersionRow | None:
        r = self._one(
            _SELECT_VERSIONS + " WHERE env=? AND path=? AND version=?",
            (env, path, version),
        )
        return None if r is None else _version(r)

    def lookup_exists(self, lookup: bytes) -> bool:
        return self._one("SELECT 1 FROM secret_versions WHERE lookup=?", (lookup,)) is not None

    def set_version_state(self, env: str, path: str, version: int, state: str) -> None:
        self._require_transaction("set_version_state")
        self._write(
            "UPDATE secret_versions SET state=? WHERE env=? AND path=? AND version=?",
            (state, env, path, version),
        )

    def shred_secret_version(self, env: str, path: str, version: int) -> None:
        """Crypto-shred one version: its DEK's objects row and its ciphertext are deleted
        (``secure_delete`` zeroes the freed pages), the row keeps only its metadata."""
        self._require_transaction("shred_secret_version")
        r = self._one(
            "SELECT dek_uid FROM secret_versions WHERE env=? AND path=? AND version=?",
            (env, path, version),
        )
        if r is None:
            raise StorageError(f"No version {version} of {env}:{path}", "Check the version.")
        if r[0] is not None:
            self._write("DELETE FROM objects WHERE uid=?", (r[0],))
        self._write(
            "UPDATE secret_versions SET state='destroyed', dek_uid=NULL, ciphertext=NULL, "
            "value_mac=NULL WHERE env=? AND path=? AND version=?",
            (env, path, version),
        )


__all__ = ["SecretQueries"]
