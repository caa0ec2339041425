"""The MFA part of the store port on both adapters (SQLite, and PostgreSQL on the test
server): single use of a step as one conditional update, consecutive failures that lock,
and a reset that deletes the wrapped secret's object with the enrolment."""

from __future__ import annotations

import threading
import time

import pytest

from custody.errors import StorageError
from custody.store.rows import MfaRow, NewObject
from tests.custody.store.conftest import Backend

NOW = "2027-01-15T08:00:00+00:00"


@pytest.fixture
def store(backend: Backend):
    s = backend.open(create=True)
    yield s
    s.close()


def _enrol(store, name: str) -> MfaRow:
    uid = name.encode().ljust(16, b".")
    row = MfaRow(principal=name, object_uid=uid, digits=6, period=30, algorithm="SHA1",
                 enrolled_at=NOW)  # fmt: skip
    with store.transaction():
        store.add_objects([NewObject(uid=uid, kind="mfa-totp", branch="secrets", kek_version=1,
                                     wrapped=b"w" * 40, digest=b"d" * 32, label=f"mfa:{name}")],
                          now=NOW)  # fmt: skip
        store.add_mfa_enrolment(row)
    return row


def test_a_step_is_used_once_and_never_an_earlier_one(store) -> None:
    _enrol(store, "alice")
    assert store.use_mfa_step("alice", 100, now=NOW)
    assert not store.use_mfa_step("alice", 100, now=NOW)  # the replay
    assert not store.use_mfa_step("alice", 99, now=NOW)  # an earlier step
    assert store.use_mfa_step("alice", 101, now=NOW)
    row = store.mfa_enrolment("alice")
    assert (row.last_step, row.confirmed_at, row.last_used) == (101, NOW, NOW)
    assert not store.use_mfa_step("nobody", 1, now=NOW)


def test_a_step_is_refused_while_locked_even_if_the_lock_came_in_between(store) -> None:
    """A right code checked before a concurrent run of failures locked the principal
    (the lock committed between the check and the use) is not accepted."""
    _enrol(store, "erin")
    with store.transaction():
        assert store.fail_mfa("erin", limit=1, locked_until="2027-01-15T08:15:00+00:00")[1]
    assert not store.use_mfa_step("erin", 10, now=NOW)
    row = store.mfa_enrolment("erin")
    assert (row.last_step, row.locked_until) == (None, "2027-01-15T08:15:00+00:00")
    assert store.use_mfa_step("erin", 10, now="2027-01-15T08:15:00+00:00")  # it has ended


def test_failures_lock_at_the_limit_and_a_good_step_clears_them(store) -> None:
    _enrol(store, "bob")
    for n in (1, 2):
        with store.transaction():
            assert store.fail_mfa("bob", limit=3, locked_until=NOW) == (n, False)
    with store.transaction():
        assert store.fail_mfa("bob", limit=3, locked_until=NOW) == (3, True)
    row = store.mfa_enrolment("bob")
    assert (row.failures, row.locked_until) == (0, NOW)
    with store.transaction():
        store.fail_mfa("bob", limit=3, locked_until=NOW)
    assert store.use_mfa_step("bob", 7, now=NOW)
    row = store.mfa_enrolment("bob")
    assert (row.failures, row.locked_until) == (0, None)


def test_one_enrolment_per_principal_and_a_reset_shreds_its_object(store) -> None:
    row = _enrol(store, "carol")
    with pytest.raises(StorageError), store.transaction():
        store.add_mfa_enrolment(row)
    assert [r.principal for r in store.mfa_enrolments()] == ["carol"]
    assert store.stored_object(row.object_uid) is not None
    with store.transaction():
        assert store.delete_mfa_enrolment("carol") == row
        assert store.delete_mfa_enrolment("carol") is None
    assert store.mfa_enrolment("carol") is None and store.stored_object(row.object_uid) is None
    with pytest.raises(StorageError):
        store.delete_mfa_enrolment("carol")  # outside a transaction: a caller's bug


def test_two_connections_using_one_step_at_once_one_wins(store, backend: Backend) -> None:
    _enrol(store, "dave")
    results: list[bool] = []

    def second() -> None:  # another process's connection (opened in its own thread)
        other = backend.open()
        try:
            results.append(other.use_mfa_step("dave", 500, now=NOW))
        finally:
            other.close()

    with store.transaction():
        assert store.use_mfa_step("dave", 500, now=NOW)
        t = threading.Thread(target=second)
        t.start()  # the same step, while the first connection holds it
        time.sleep(0.3)
        assert results == []  # it waits for the first transaction
    t.join(timeout=30)
    assert results == [False]
