"""Attacks on the access seal's one-second reuse of the token counter (AccessSeal.check,
TOKEN_RECHECK) by the operator with the disk, from ANOTHER process: a long-lived
AccessControl (the server's) holds a clean check; the operator puts an older custody.db
back within the second, or edits it in place. The very next check must refuse it. The
lead's test restores through the checking connection itself (its total_changes moves);
here the change comes from another connection, seen only through PRAGMA data_version, or
from a raw copy of the file that SQLite's change detection may not see. Real SQLite on
disk, real SoftHSMv2 token."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from custody.access import AccessControl
from custody.access.flow import GrantFlow
from custody.access.seal import AccessSeal
from custody.errors import IntegrityError
from tests.custody.access import test_access_seal as base
from tests.custody.access.test_access_seal import PATH

world = base.world

pytestmark = pytest.mark.hsm


def _db(store: Any) -> Path:
    path = getattr(store, "path", None)
    if path is None or store.change_counter() is None:
        pytest.skip("a SQLite file store only (the one with a change counter)")
    return Path(path)


def _copy(src: Path, dst: Path) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


RESTORE_BACKUP = textwrap.dedent(
    """
    import sqlite3, sys
    old, live = sys.argv[1:3]
    a, b = sqlite3.connect(old), sqlite3.connect(live, timeout=30)
    a.backup(b)
    a.close(); b.close()
    """
)
RESTORE_SQL = textwrap.dedent(
    """
    import sqlite3, sys
    old, live = sys.argv[1:3]
    b = sqlite3.connect(live, timeout=30, isolation_level=None)
    b.execute("ATTACH ? AS old", (old,))
    b.execute("BEGIN IMMEDIATE")
    for (t,) in b.execute("SELECT name FROM old.sqlite_master WHERE type='table'").fetchall():
        if t.startswith("sqlite_"):
            continue
        b.execute(f"DELETE FROM main.{t}")
        b.execute(f"INSERT INTO main.{t} SELECT * FROM old.{t}")
    b.execute("COMMIT")
    b.close()
    """
)


def _lived(ac: AccessControl, store: Any, log: Any) -> AccessControl:
    assert ac.seal is not None
    seal = AccessSeal(store, ac.seal._token, ac.seal.label, log)
    return AccessControl(store, log, clock=ac._clock, seal=seal)


def _revoked_then_put_back(world: Any, tmp_path: Path, how: str) -> AccessControl:
    ac, store, log, token = world
    live = _db(store)
    old = tmp_path / "old.db"
    _copy(live, old)  # the operator keeps a copy (g-live still valid then)
    lived = _lived(ac, store, log)
    GrantFlow(ac, "dep-1").revoke("g-live", ac.principal("root"), reason="incident")
    assert lived.authenticate_token(token).name == "svc"  # a clean check, just now
    lived.authorize(lived.operator("root"), "read", "prod", PATH)
    if how == "raw copy":
        store.query("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(old, live)  # in place: the same inode, written over
    else:
        script = RESTORE_BACKUP if how == "backup api" else RESTORE_SQL
        r = subprocess.run([sys.executable, "-c", script, str(old), str(live)],
                           capture_output=True, text=True, check=False)  # fmt: skip
        assert r.returncode == 0, r.stderr
    return lived


@pytest.mark.parametrize("how", ["backup api", "sql from another process"])
def test_an_older_store_put_back_by_another_process_is_refused_at_the_next_check(
    world, tmp_path, how
):
    token = world[3]
    lived = _revoked_then_put_back(world, tmp_path, how)
    with pytest.raises(IntegrityError):
        lived.authenticate_token(token)


def test_a_concurrent_sealed_writer_is_followed_and_its_rollback_refused(world, tmp_path):
    """Another process's AccessControl (its own connection) revokes a grant with the token:
    the long-lived one accepts the new state at once (no false refusal), and the state
    before it, put back, is refused at the next check."""
    from custody.store import open_store

    ac, store, log, token = world
    live = _db(store)
    old = tmp_path / "old.db"
    _copy(live, old)
    lived = _lived(ac, store, log)
    assert lived.authenticate_token(token).name == "svc"
    other_store = open_store(live)
    try:
        other = _lived(ac, other_store, log)
        GrantFlow(other, "dep-1").revoke("g-live", other.principal("root"), reason="x")
    finally:
        other_store.close()
    assert lived.authenticate_token(token).name == "svc"  # the writer's state: accepted
    r = subprocess.run([sys.executable, "-c", RESTORE_BACKUP, str(old), str(live)],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with pytest.raises(IntegrityError, match="rolled back"):
        lived.authenticate_token(token)


def test_a_raw_copy_over_the_file_is_never_honoured(world, tmp_path):
    """The old file copied over custody.db byte for byte (same inode, after a checkpoint):
    SQLite's data_version does not move (the WAL index is unchanged), so the long-lived
    connection keeps its cached pages: it still sees g-live revoked, also after a full
    check (a second later), so the rollback is not honoured there; any fresh connection
    (the next CLI command, a restarted server) sees the old state and refuses it."""
    from custody.store import open_store

    ac, store, log, token = world
    lived = _revoked_then_put_back(world, tmp_path, "raw copy")
    for _ in range(2):
        try:
            lived.authenticate_token(token)
        except IntegrityError:
            break  # refused: held
        revoked = {g.id: g.revoked_at for g in store.grants()}
        assert revoked["g-live"] is not None  # not refused, but the rollback is not seen
        lived.seal._token_read_at -= 5  # and a full check a second later
    fresh_store = open_store(_db(store))
    try:
        assert {g.id: g.revoked_at for g in fresh_store.grants()}["g-live"] is None
        fresh = _lived(ac, fresh_store, log)
        with pytest.raises(IntegrityError, match="rolled back"):
            fresh.authenticate_token(token)
    finally:
        fresh_store.close()


def test_a_row_edited_in_place_by_another_process_is_refused_at_the_next_check(world):
    """The seal and its generation left as they are, one principal's role raised by
    another process within the second: only the store's change counter (data_version)
    tells the long-lived check that the rows moved."""
    ac, store, log, token = world
    live = _db(store)
    lived = _lived(ac, store, log)
    assert lived.authenticate_token(token).name == "svc"
    lived.authorize(lived.operator("root"), "read", "prod", PATH)
    edit = "UPDATE principals SET role='super-admin' WHERE name='svc'"
    r = subprocess.run([sys.executable, "-c", "import sqlite3, sys\nc = sqlite3.connect("
                        "sys.argv[1], timeout=30)\nc.execute(sys.argv[2])\nc.commit()",
                        str(live), edit], capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with pytest.raises(IntegrityError, match="do not match"):
        lived.authenticate_token(token)


@pytest.mark.parametrize("alg", ["ecdsa-p256", "rsa"])
def test_a_participant_algorithm_edited_on_disk_is_refused(world, alg):
    """The roster under the seal covers each participant's algorithm: a sealed Ed25519
    participant re-labelled as P-256 (or anything) on disk fails the next check."""
    from tests.custody.access.test_access_seal import _raw, _refused

    ac, store, log, token = world
    _raw(store, "UPDATE participants SET alg=? WHERE name='sa1'", (alg,))
    _refused(ac, log, token)
