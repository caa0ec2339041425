"""SIGKILL at every step of ``recover``, ``reshare`` and ``rotate-root`` (``generate`` is in
test_ceremony_faults.py), through the CLI against real SoftHSMv2.

Each kill point is a step of the kind's script (:data:`ceremonies.engine.SCRIPTS`), either
right after its ``step.begin`` is recorded (``STEP``) or after its effect, before its
``step.done`` (``STEP:done``), using the ``CUSTODY_TEST_KILL_AT`` hook. After the kill the
coordinator resumes; a refusal (``SecretLost``: RK died with the process) is followed by an
abort and, for recover, a fresh recover. Afterwards the previous or the new state is fully
usable (every DEK decrypts) and every transcript written verifies.

Cost: the expensive setup is shared. One template per module holds the state right before
the killed invocation (a ceremony already waiting for approvals, or for the verification
round); each test copies it and rewrites the absolute paths the copy's store holds.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ceremonies.engine import SCRIPTS
from tests.ceremony_fixtures import (
    Dep,
    copy_dep,
    generated_copy,
    lose_token,
    sign_approvals,
    start_rotate_root,
)
from tests.conftest import cli_env

pytestmark = pytest.mark.hsm


def _points(kind: str) -> list[str]:
    return [p for s in SCRIPTS[kind] for p in (s, f"{s}:done")]


def _copy(src: Dep, dst: Path) -> Dep:
    """Copy a home, including the paths of in-flight ceremonies (bundle, params, files)."""
    return copy_dep(src, dst, in_flight=True)


def _kind_rows(d: Dep, kind: str) -> list[tuple[str, str, str]]:
    c = sqlite3.connect(d.root / "custody.db")
    try:
        rows = c.execute(
            "SELECT id, state, bundle FROM ceremonies WHERE kind=? ORDER BY created, rowid", (kind,)
        ).fetchall()
    finally:
        c.close()
    return [(i, st, str(d.root / b)) for i, st, b in rows]  # the store keeps it home-relative


def _approvals(d: Dep, cid: str) -> list[str]:
    """``--approval`` arguments for the rotate-root request of *cid* (fresh file names)."""
    files = sign_approvals(d, cid, tag=f"-{time.monotonic_ns()}")
    return [a for f in files for a in ("--approval", str(f))]


def _killed(r) -> None:
    assert r.returncode == -9, r.stdout + r.stderr


def _resume_or_abort(d: Dep, cid: str, more: dict[str, list[str]]):
    """Resume after the kill; feed what a waiting step asks for; abort on SecretLost.

    Returns the final CLI result (closed or aborted) and the bundles to verify.
    """
    r = d.ceremony("resume", cid, *d.coord())
    for _ in range(3):
        if r.returncode != 10:
            break
        assert r.out["step"] in more, r.stdout
        r = d.ceremony("resume", cid, *d.coord(), *more[r.out["step"]])
    if r.returncode == 8:
        assert r.out["error"] == "SecretLost" and f"abort {cid}" in r.out["hint"], r.stdout
        r = d.ceremony("abort", cid, *d.coord())
        assert r.returncode == 0 and r.out["status"] == "aborted", r.stderr
    else:
        assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    return r


# ----------------------------------------------------------------------------- recover
@pytest.fixture(scope="module")
def template(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("tpl") / "home")


@pytest.fixture(scope="module")
def lost_tpl(template: Dep, tmp_path_factory) -> Dep:
    d = _copy(template, tmp_path_factory.mktemp("lost") / "home")
    lose_token(d)
    return d


@pytest.mark.parametrize("point", _points("recover"))
def test_recover_killed_at_each_step(lost_tpl: Dep, tmp_path: Path, point: str):
    d = _copy(lost_tpl, tmp_path / "home")
    three = d.shares("alice", "bob", "carol")
    _killed(d.ceremony("recover", *d.coord(), *three, env=cli_env(CUSTODY_TEST_KILL_AT=point)))
    [(cid, _st, bundle)] = _kind_rows(d, "recover")
    r = _resume_or_abort(d, cid, {"collect-shares": three})
    d.verify(bundle)
    if r.out["status"] == "aborted":  # the previous state: a token without the root
        assert d.roots() == [(1, "active")]
        r = d.ceremony("recover", *d.coord(), *three)
        assert r.returncode == 0 and r.out["status"] == "closed", r.stderr
        d.verify(r.out["bundle"])
    d.deks_ok()


# ----------------------------------------------------------------------------- reshare
RESHARE = ("--custodian", "alice", "--custodian", "bob", "--custodian", "carol", "--threshold", "2")


def _reshare(d: Dep, env=None):
    return d.ceremony(
        "reshare",
        *d.coord(),
        *RESHARE,
        "--out",
        str(d.root / "new"),
        *d.shares("carol", "dave", "erin"),
        env=env,
    )


@pytest.fixture(scope="module")
def reshare_waiting(template: Dep, tmp_path_factory) -> Dep:
    """A reshare waiting for its verification round (new shares issued, nothing final)."""
    d = _copy(template, tmp_path_factory.mktemp("rsw") / "home")
    r = _reshare(d)
    assert r.returncode == 10 and r.out["step"] == "verify-shares", r.stderr
    return d


LATE = {
    p for s in ("verify-shares", "finalise", "rewrap", "retire-epoch") for p in (s, f"{s}:done")
}


@pytest.mark.parametrize("point", _points("reshare"))
def test_reshare_killed_at_each_step(
    template: Dep, reshare_waiting: Dep, tmp_path: Path, point: str
):
    kill = cli_env(CUSTODY_TEST_KILL_AT=point)
    new = lambda d: d.shares("alice", "bob", d="new")  # noqa: E731
    if point in LATE:
        d = _copy(reshare_waiting, tmp_path / "home")
        [(cid, _st, bundle)] = _kind_rows(d, "reshare")
        _killed(d.ceremony("resume", cid, *d.coord(), *new(d), env=kill))
    else:
        d = _copy(template, tmp_path / "home")
        _killed(_reshare(d, kill))
        [(cid, _st, bundle)] = _kind_rows(d, "reshare")
    r = _resume_or_abort(
        d, cid, {"collect-shares": d.shares("carol", "dave", "erin"), "verify-shares": new(d)}
    )
    d.verify(bundle)
    d.deks_ok()
    if r.out["status"] == "closed":  # the new state: root/v2 under the new 2-of-3 shares
        assert [v for v, s in d.roots() if s == "active"] == [2]
        assert d.ceremony("drill", *d.coord(pin=False), *new(d)).returncode == 0
    else:  # the previous state, untouched: root/v1 and the old 3-of-5 shares
        assert d.roots() == [(1, "active")]
        assert not list((d.root / "new").glob("*")) if (d.root / "new").exists() else True
        r = d.ceremony("drill", *d.coord(pin=False), *d.shares("alice", "bob", "dave"))
        assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------- rotate-root
@pytest.fixture(scope="module")
def rotate_waiting(template: Dep, tmp_path_factory) -> Dep:
    """A rotate-root waiting for its custodian approvals."""
    return start_rotate_root(_copy(template, tmp_path_factory.mktemp("rrw") / "home"))


@pytest.mark.parametrize("point", _points("rotate-root"))
def test_rotate_root_killed_at_each_step(
    template: Dep, rotate_waiting: Dep, tmp_path: Path, point: str
):
    kill = cli_env(CUSTODY_TEST_KILL_AT=point)
    if point == "hsm-check" or point == "hsm-check:done":
        d = _copy(template, tmp_path / "home")
        _killed(d.ceremony("rotate-root", *d.coord(), env=kill))
        [(cid, _st, bundle)] = _kind_rows(d, "rotate-root")
        r = d.ceremony("resume", cid, *d.coord(), "--request-out", str(d.root / "req.json"))
        assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stderr
    else:
        d = _copy(rotate_waiting, tmp_path / "home")
        [(cid, _st, bundle)] = _kind_rows(d, "rotate-root")
        _killed(d.ceremony("resume", cid, *d.coord(), *_approvals(d, cid), env=kill))
    # approvals are single-use: a step killed before its approvals were recorded asks again
    r = _resume_or_abort(d, cid, {"approve": _approvals(d, cid)})
    assert r.out["status"] == "closed"  # nothing in rotate-root needs RK: always forward
    assert d.roots() == [(1, "decrypt-only"), (2, "active")]
    d.verify(bundle)
    d.deks_ok()
