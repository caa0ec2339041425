"""The MFA enrolment rows of the store port on both adapters: a code's step is used once
(also by two connections racing), failures lock out, deleting an enrolment shreds its
secret's objects row."""

from __future__ import annotations

import pytest

from custody.errors import StorageError
from custody.store.rows import MfaRow, NewKek, NewObject, NewRoot
from tests.custody.store.conftest import Backend

NOW = "2026-01-01T00:00:00+00:00"
UID = b"\x07" * 16


def _enrol(s) -> None:
    s.add_root(NewRoot(version=1, kcv="aaaaaa", epoch=None, blob=None), activate=True, now=NOW)
    s.add_kek(NewKek(branch="secrets", version=1, kcv="b", root_version=1, wrapped=b"k"), now=NOW)
    s.add_objects(
        [NewObject(uid=UID, kind="mfa", branch="secrets", kek_version=1, wrapped=b"w",
                   digest=b"d", label=None)],
        now=NOW,
    )  # fmt: skip
    with s.transaction():
        s.add_mfa_enrolment(
            MfaRow(principal="alice", object_uid=UID, digits=6, period=30, algorithm="SHA1",
                   enrolled_at=NOW)
        )  # fmt: skip


def test_a_step_is_used_once_even_by_two_connections(backend: Backend) -> None:
    a = backend.open(create=True)
    b = backend.open()
    try:
        _enrol(a)
        with pytest.raises(StorageError), a.transaction():
            a.add_mfa_enrolment(
                MfaRow(principal="alice", object_uid=UID, digits=6, period=30,
                       algorithm="SHA1", enrolled_at=NOW)
            )  # fmt: skip
        assert a.use_mfa_step("alice", 100, now=NOW) is True
        assert b.use_mfa_step("alice", 100, now=NOW) is False  # the same code, replayed
        assert b.use_mfa_step("alice", 99, now=NOW) is False  # an older one
        assert b.use_mfa_step("alice", 101, now=NOW) is True
        row = a.mfa_enrolment("alice")
        assert row is not None and row.last_step == 101 and row.confirmed_at == NOW
    finally:
        a.close()
        b.close()


def test_failures_lock_out_and_delete_shreds_the_secret(backend: Backend) -> None:
    s = backend.open(create=True)
    try:
        _enrol(s)
        with s.transaction():
            assert s.fail_mfa("alice", limit=3, locked_until="L") == (1, False)
            assert s.fail_mfa("alice", limit=3, locked_until="L") == (2, False)
            assert s.fail_mfa("alice", limit=3, locked_until="L") == (3, True)
        row = s.mfa_enrolment("alice")
        assert row is not None and row.locked_until == "L" and row.failures == 0
        with s.transaction():
            gone = s.delete_mfa_enrolment("alice")
        assert gone is not None and s.mfa_enrolment("alice") is None
        assert s.stored_object(UID) is None and s.mfa_enrolments() == []
    finally:
        s.close()
