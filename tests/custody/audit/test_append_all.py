"""AuditLog.append_all: several entries in one batch, in order, all or none."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from custody.audit.log import AuditLog
from custody.errors import AuditError


def test_entries_are_consecutive_in_order_and_the_chain_verifies(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    try:
        log.append("before", "t", "a")
        stop = threading.Event()

        def noise():
            while not stop.is_set():
                log.append("noise", "t", "b")

        others = [threading.Thread(target=noise) for _ in range(3)]
        for t in others:
            t.start()
        try:
            for i in range(20):
                got = log.append_all(
                    [
                        {"op": "access decide", "target": f"x:{i}", "actor": "a"},
                        {"op": "secret get", "target": f"x:{i}", "actor": "a",
                         "details": {"version": i}},
                    ]
                )  # fmt: skip
                assert got[1]["seq"] == got[0]["seq"] + 1  # nothing in between
        finally:
            stop.set()
            for t in others:
                t.join()
        report = log.verify()
        assert report.ok and report.entries == log.size() > 40
    finally:
        log.close()


def test_a_refused_batch_writes_none_of_it(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    try:
        log.append("before", "t", "a")
        n = log.size()
        con = sqlite3.connect(tmp_path / "audit.db")
        con.execute(
            "CREATE TRIGGER no_second BEFORE INSERT ON entries WHEN NEW.seq = "
            f"{n + 1} BEGIN SELECT RAISE(ABORT, 'x'); END"
        )
        con.commit()
        with pytest.raises(AuditError):
            log.append_all([{"op": "one", "target": "t", "actor": "a"},
                            {"op": "two", "target": "t", "actor": "a"}])  # fmt: skip
        assert log.size() == n
        con.execute("DROP TRIGGER no_second")
        con.commit()
        con.close()
        with pytest.raises(ValueError):  # a value-like key is the caller's bug, nothing queued
            log.append_all([{"op": "x", "target": "t", "actor": "a", "details": {"value": "v"}}])
        assert log.size() == n
    finally:
        log.close()
