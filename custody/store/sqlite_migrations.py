"""The SQLite schema, as numbered migrations (``PRAGMA user_version`` = how many ran).

Kept with the SQLite adapter: its DDL is SQLite's dialect (``INTEGER PRIMARY KEY`` row ids,
``BLOB``). A PostgreSQL adapter carries the same numbered steps in its own dialect, so a
store of either kind at version *n* has the same tables and columns (docs/store.md).
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: key hierarchy and wrapped objects
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE root_versions(
        version INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        kcv TEXT NOT NULL,
        epoch INTEGER,
        blob BLOB,
        created TEXT NOT NULL,
        state_changed TEXT NOT NULL
    );
    CREATE TABLE kek_versions(
        branch TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        kcv TEXT NOT NULL,
        root_version INTEGER NOT NULL REFERENCES root_versions(version),
        wrapped BLOB NOT NULL,
        created TEXT NOT NULL,
        state_changed TEXT NOT NULL,
        destroy_after TEXT,
        PRIMARY KEY(branch, version)
    );
    CREATE TABLE objects(
        id INTEGER PRIMARY KEY,
        uid BLOB NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        branch TEXT NOT NULL,
        kek_version INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        digest BLOB NOT NULL,
        label TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE INDEX objects_by_version ON objects(branch, kek_version);
    """,
    # 2: re-key jobs (durable checkpoint), the job lease, retirement holds, backup catalog
    """
    CREATE TABLE rekey_jobs(
        id INTEGER PRIMARY KEY,
        branch TEXT NOT NULL,
        to_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        total INTEGER NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        last_id INTEGER NOT NULL DEFAULT 0,
        batch INTEGER NOT NULL,
        owner_pid INTEGER,
        started TEXT NOT NULL,
        updated TEXT NOT NULL,
        finished TEXT,
        verified INTEGER,
        verify_failed INTEGER,
        error TEXT
    );
    CREATE INDEX rekey_jobs_by_state ON rekey_jobs(state, branch);
    CREATE TABLE rekey_lease(
        name TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        owner_pid INTEGER NOT NULL,
        owner_host TEXT NOT NULL,
        acquired TEXT NOT NULL,
        expires TEXT NOT NULL
    );
    CREATE TABLE retire_holds(
        branch TEXT NOT NULL,
        version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY(branch, version)
    );
    CREATE TABLE backups(
        file_id BLOB PRIMARY KEY,
        path TEXT NOT NULL,
        kek_version INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE INDEX backups_by_version ON backups(kek_version);
    """,
    # 3: ceremonies: participant roster, ceremony registry, share sets, drills, incidents
    """
    CREATE TABLE participants(
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        alg TEXT NOT NULL,
        public BLOB NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL UNIQUE,
        valid_from INTEGER NOT NULL,
        valid_until INTEGER NOT NULL,
        revoked_at INTEGER,
        enrolled_by TEXT NOT NULL,
        enrolled_in TEXT
    );
    CREATE TABLE ceremonies(
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        coordinator TEXT,
        bundle TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        pending TEXT
    );
    CREATE TABLE share_sets(
        epoch INTEGER PRIMARY KEY,
        ceremony_id TEXT NOT NULL,
        policy_digest TEXT NOT NULL,
        dealer_public BLOB NOT NULL,
        rk_kcv TEXT NOT NULL,
        rk_public BLOB NOT NULL,
        scheme TEXT NOT NULL,
        state TEXT NOT NULL,
        created INTEGER NOT NULL,
        retired_at INTEGER
    );
    CREATE TABLE share_holders(
        epoch INTEGER NOT NULL REFERENCES share_sets(epoch),
        custodian TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        group_index INTEGER NOT NULL,
        member_index INTEGER NOT NULL,
        commitment TEXT NOT NULL,
        PRIMARY KEY(epoch, group_index, member_index)
    );
    CREATE TABLE drills(
        id INTEGER PRIMARY KEY,
        ceremony_id TEXT NOT NULL,
        custodian TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        passed_at INTEGER NOT NULL
    );
    CREATE TABLE incidents(
        id TEXT PRIMARY KEY,
        ceremony_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        created INTEGER NOT NULL,
        report TEXT NOT NULL
    );
    """,
    # 4: staged destruction of retired root versions
    """
    ALTER TABLE root_versions ADD COLUMN destroy_after TEXT;
    """,
    # 5: typed, versioned secrets (docs/secrets.md): metadata readable without decrypting,
    # each version's value sealed under its own DEK (an objects row, branch 'secrets')
    """
    CREATE TABLE secrets(
        env TEXT NOT NULL,
        path TEXT NOT NULL,
        category TEXT NOT NULL,
        class TEXT NOT NULL,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        current_version INTEGER,
        pending_version INTEGER,
        previous_version INTEGER,
        next_version INTEGER NOT NULL,
        expires TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        deleted_at TEXT,
        destroy_after TEXT,
        rotation_failures INTEGER NOT NULL DEFAULT 0,
        prefix TEXT,
        previous_until TEXT,
        PRIMARY KEY(env, path)
    );
    CREATE TABLE secret_versions(
        env TEXT NOT NULL,
        path TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        dek_uid BLOB,
        ciphertext BLOB,
        value_mac BLOB,
        lookup BLOB UNIQUE,
        source TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY(env, path, version),
        FOREIGN KEY(env, path) REFERENCES secrets(env, path)
    );
    """,
    # 6: object counters by (branch, KEK version, kind), so status reads them in O(1); seeded
    # from the objects already stored. The adapter keeps them in the transaction that inserts
    # or moves objects (add_objects, move_objects: one statement per batch, not a per-row
    # trigger, which halved re-key throughput); a trigger counts deletes, which only repairs
    # and raw SQL make. Rows whose count falls to 0 stay, read as absent.
    """
    CREATE TABLE object_tally(
        branch TEXT NOT NULL,
        kek_version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY(branch, kek_version, kind)
    ) WITHOUT ROWID;
    INSERT INTO object_tally(branch, kek_version, kind, n)
        SELECT branch, kek_version, kind, COUNT(*) FROM objects
        GROUP BY branch, kek_version, kind;
    CREATE TRIGGER object_tally_delete AFTER DELETE ON objects BEGIN
        UPDATE object_tally SET n = n - 1
            WHERE branch = OLD.branch AND kek_version = OLD.kek_version AND kind = OLD.kind;
    END;
    """,
    # 7: access control (docs/access.md): principals (a person's participant key, a service's
    # salted token hash), grant and release requests, their signed approvals, and grants
    # (revoked_at: an emergency rotation revokes every grant). Times are Unix seconds.
    """
    CREATE TABLE principals(
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        role TEXT NOT NULL,
        services TEXT NOT NULL,
        envs TEXT NOT NULL,
        public BLOB,
        x25519 BLOB,
        token_id TEXT UNIQUE,
        token_salt BLOB,
        token_hash BLOB,
        token_created INTEGER,
        token_revoked_at INTEGER,
        created INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE access_requests(
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        requester TEXT NOT NULL,
        env TEXT NOT NULL,
        path TEXT NOT NULL,
        actions TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        nonce TEXT NOT NULL UNIQUE,
        reason TEXT NOT NULL,
        security_class TEXT NOT NULL,
        needed INTEGER NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL
    );
    CREATE TABLE access_approvals(
        request_id TEXT NOT NULL REFERENCES access_requests(id),
        approver TEXT NOT NULL,
        public BLOB NOT NULL,
        sig BLOB NOT NULL,
        approved_at INTEGER NOT NULL,
        PRIMARY KEY(request_id, approver)
    );
    CREATE TABLE grants(
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        principal TEXT NOT NULL,
        env TEXT NOT NULL,
        path TEXT NOT NULL,
        actions TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        created INTEGER NOT NULL,
        record TEXT NOT NULL,
        revoked_at INTEGER,
        revoked_by TEXT,
        revoke_reason TEXT,
        lapsed_at INTEGER
    );
    CREATE INDEX grants_by_principal ON grants(principal, env);
    CREATE TABLE release_rules(
        env TEXT NOT NULL,
        path TEXT NOT NULL,
        mode TEXT NOT NULL,
        needed INTEGER NOT NULL,
        set_by TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY(env, path)
    );
    CREATE TABLE releases(
        request_id TEXT PRIMARY KEY REFERENCES access_requests(id),
        version INTEGER NOT NULL,
        sealed_sha256 TEXT NOT NULL,
        delivered_at INTEGER NOT NULL
    );
    """,
    # 8: TOTP enrolments (docs/mfa.md): one row per principal. The TOTP secret is an objects
    # row wrapped under the 'secrets' KEK branch (object_uid); last_step makes each code
    # single-use; failures and locked_until carry the lockout.
    """
    CREATE TABLE mfa_enrolments(
        principal TEXT PRIMARY KEY,
        object_uid BLOB NOT NULL,
        digits INTEGER NOT NULL,
        period INTEGER NOT NULL,
        algorithm TEXT NOT NULL,
        enrolled_at TEXT NOT NULL,
        confirmed_at TEXT,
        last_step INTEGER,
        last_used TEXT,
        failures INTEGER NOT NULL,
        locked_until TEXT
    );
    """,
    # 9: the objects of one KEK version in id order, from the index alone: re-key claims
    # (ORDER BY id LIMIT n) and the verify step's pages (id > last) no longer scan past the
    # rows already moved (SQLite's index held the rowid already; PostgreSQL's did not)
    """
    DROP INDEX objects_by_version;
    CREATE INDEX objects_by_version ON objects(branch, kek_version, id);
    """,
    # 10: lockout counters of custody serve shared by every replica of one PostgreSQL store
    # (custody.store.postgres_guard, docs/scaling.md): failed authentications per client
    # address (at: Unix seconds) and the lockouts they engaged. A SQLite home keeps them in
    # HOME/guard.db (custody.store.sqlite_guard) and leaves these tables empty. Client
    # addresses only, never a token.
    """
    CREATE TABLE guard_fails(
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX guard_fails_by_client ON guard_fails(client, at);
    CREATE TABLE guard_locks(
        client TEXT PRIMARY KEY,
        until REAL NOT NULL
    );
    """,
)


SCHEMA_VERSION = len(MIGRATIONS)
