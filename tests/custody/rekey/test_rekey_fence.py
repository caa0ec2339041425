"""The re-key lease fences the job's last effects too: a worker whose lease was taken over
while it verified (a long ``--verify all``, a stall) marks nothing done and retires
nothing; it raises LeaseLost, and the job is resumed by whoever holds the lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custody.clock import iso
from custody.deployment import open_deployment
from custody.leader import LeaseLost
from custody.rekey import jobs as rekey
from custody.rekey import lease as rekey_lease
from custody.store.rows import LeaseRow
from tests.conftest import TEST_PIN
from tests.rekey_fixtures import cli, cli_json, make_deployment

pytestmark = pytest.mark.hsm
N = 1500


def test_a_worker_that_lost_its_lease_while_verifying_finishes_and_retires_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, pins = make_deployment(tmp_path, data_objects=N)
    cli(home, pins, "kek", "rotate", "--branch", "data")
    real_verify = rekey.verify_branch
    stolen: list[str] = []

    def verify_then_lose_the_lease(hierarchy: Any, *a: Any, **kw: Any) -> Any:
        out = real_verify(hierarchy, *a, **kw)
        st = hierarchy.store
        with st.transaction():  # meanwhile, the lease expired and another worker took it
            now = datetime.now(UTC)
            st.put_lease(LeaseRow(name=rekey_lease.LEASE_NAME, token="c" * 32, owner_pid=1,
                                  owner_host="other-host", acquired=iso(now),
                                  expires=iso(now + timedelta(seconds=300))))  # fmt: skip
        stolen.append("yes")
        return out

    monkeypatch.setattr(rekey, "verify_branch", verify_then_lose_the_lease)
    with open_deployment(home, TEST_PIN) as dep:
        with pytest.raises(LeaseLost):
            rekey.run(dep.hierarchy, dep.config, verify="all", batch=500)
        assert stolen == ["yes"]
        job = dep.store.running_job("data")
        assert job is not None and job.done == N  # moved, but not marked done
        v1 = next(k for k in dep.hierarchy.keks("data") if k.version == 1)
        assert v1.state.value == "decrypt-only" and v1.objects == 0  # not retired
        row = dep.store.lease(rekey_lease.LEASE_NAME)
        assert row is not None and row.owner_host == "other-host"  # not released by the loser
        with dep.store.transaction():
            dep.store.drop_lease(rekey_lease.LEASE_NAME, "c" * 32)  # the other worker ends
    monkeypatch.undo()
    out = cli_json(home, pins, "rekey", "run", "--verify", "all")  # resumes, then retires
    assert out["status"] == "done" and out["retired"][0] == "data/v1: disabled"
