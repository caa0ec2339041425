"""Re-key jobs through the real CLI (subprocess), a real SoftHSMv2 token and SQLite on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custody.rekey import lease as rekey_lease
from custody.store.sqlite import SqliteStore as Store
from tests.conftest import cli_env
from tests.rekey_fixtures import cli, cli_json, db, make_deployment, retired_but_used

# The tests share one module-scoped deployment and build on each other in file order, so
# they must run on one xdist worker (make test uses --dist loadgroup).
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("rekey-rotated")]
N = 5000


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    home, pins = make_deployment(tmp_path_factory.mktemp("rk"), data_objects=N)
    cli(home, pins, "kek", "rotate", "--branch", "data")
    return home, pins


def test_plan_run_verify_status_then_idempotent(rotated: tuple[Path, Path]) -> None:
    home, pins = rotated
    plan = cli_json(home, None, "rekey", "plan")
    assert plan["items"] == [{"branch": "data", "from_version": 1, "to_version": 2, "objects": N}]
    assert plan["total"] == N and plan["rate_per_s"] > 0
    out = cli_json(home, pins, "rekey", "run", "--batch", "700", "--verify", "all")
    assert out["status"] == "done"
    assert [(j["branch"], j["moved"], j["verified"]) for j in out["jobs"]] == [("data", N, N)]
    assert out["retired"][0] == "data/v1: disabled"
    st = cli_json(home, None, "rekey", "status")
    v1 = next(v for v in st["versions"] if v["branch"] == "data" and v["version"] == 1)
    assert v1["state"] == "destroy-scheduled" and v1["objects"] == 0 and v1["destroy_after"]
    assert st["jobs"][0]["state"] == "done" and st["jobs"][0]["done"] == N
    ver = cli_json(home, pins, "rekey", "verify", "--all")
    assert ver == {"ok": True, "checked": N, "failed": []}
    again = cli_json(home, pins, "rekey", "run", "--due")
    assert again["status"] == "nothing-to-do" and again["moved"] == 0
    assert retired_but_used(home) == []
    text = cli(home, pins, "rekey", "run", "--due").stdout
    assert "nothing to do" in text


def test_cancel_destroy_cli(rotated: tuple[Path, Path]) -> None:
    home, _pins = rotated
    out = cli_json(home, None, "rekey", "cancel-destroy", "--branch", "data", "--version", "1")
    assert out["state"] == "disabled"
    bad = cli(
        home, None, "rekey", "cancel-destroy", "--branch", "data", "--version", "2", check=False
    )
    assert bad.returncode == 7 and "not destroy-scheduled" in bad.stderr


def test_run_due_rotates_overdue_branch_once(tmp_path: Path) -> None:
    home, pins = make_deployment(tmp_path, data_objects=1200)
    old = (datetime.now(UTC) - timedelta(days=181)).isoformat(timespec="seconds")
    with db(home) as c:
        c.execute("UPDATE kek_versions SET created=? WHERE branch='data'", (old,))
    plan = cli_json(home, None, "rekey", "plan", "--due")
    assert plan["rotate"] == ["data"] and plan["total"] == 1200
    out = cli_json(home, pins, "rekey", "run", "--due")
    assert out["rotated"] == ["data/v2"] and out["moved"] == 1200
    assert any(w["key"] == "data" and w["status"] == "overdue" for w in out["warnings"])
    again = cli_json(home, pins, "rekey", "run", "--due")
    assert again["status"] == "nothing-to-do" and again["rotated"] == []


def test_second_run_exits_cleanly_while_lease_is_held(rotated: tuple[Path, Path]) -> None:
    home, pins = rotated
    store = Store.open(home / "custody.db")
    try:
        lease = rekey_lease.try_acquire(store, now=datetime.now(UTC))
        assert isinstance(lease, rekey_lease.Lease)
        proc = cli(home, pins, "rekey", "run", "--json")
        assert proc.returncode == 0 and '"status": "busy"' in proc.stdout
        assert f'"pid": {os.getpid()}' in proc.stdout
        rekey_lease.release(store, lease)
    finally:
        store.close()


def test_concurrent_runs_never_share_objects(tmp_path: Path) -> None:
    home, pins = make_deployment(tmp_path, data_objects=40_000)
    cli(home, pins, "kek", "rotate", "--branch", "data")
    cmd = [
        sys.executable,
        "-m",
        "custody_cli",
        "rekey",
        "run",
        "--json",
        "--batch",
        "500",
        "--wait",
        "120",
        "--home",
        str(home),
        "--pin-file",
        str(pins),
    ]
    procs = [
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    import json

    reports = [json.loads(o[0]) for o in outs]
    assert sorted(r["moved"] for r in reports) == [0, 40_000]
    with db(home) as c:
        assert c.execute("SELECT COUNT(*) FROM objects WHERE kek_version=2").fetchone()[0] == 40_000
        assert c.execute("SELECT SUM(done) FROM rekey_jobs").fetchone()[0] == 40_000
    assert cli_json(home, pins, "rekey", "verify", "--all")["ok"] is True


def test_damaged_object_stops_job_without_loss(tmp_path: Path) -> None:
    home, pins = make_deployment(tmp_path, data_objects=3000)
    cli(home, pins, "kek", "rotate", "--branch", "data")
    with db(home) as c:
        (oid, blob) = c.execute(
            "SELECT id, wrapped FROM objects ORDER BY id LIMIT 1 OFFSET 2500"
        ).fetchone()
        c.execute(
            "UPDATE objects SET wrapped=? WHERE id=?", (blob[:-1] + bytes([blob[-1] ^ 1]), oid)
        )
    proc = cli(home, pins, "rekey", "run", "--batch", "1000", check=False)
    assert proc.returncode == 6 and "failed to decrypt" in proc.stderr
    with db(home) as c:
        moved = c.execute("SELECT COUNT(*) FROM objects WHERE kek_version=2").fetchone()[0]
        states = dict(
            c.execute("SELECT version, state FROM kek_versions WHERE branch='data'").fetchall()
        )
    assert moved == 2000  # the two batches before the damaged one committed; the third did not
    assert states[1] == "decrypt-only"
    assert retired_but_used(home) == []
