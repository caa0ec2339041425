"""Issue 11, Deliver 3: no root material in host memory during rotation.

rotate-root and emergency-rotate run through the CLI against a real SoftHSMv2 token, with
every call across the HSM adapter recorded (tests/hsm_recorder: a wrapper around the real
adapter, not a mock). The test then plays the coordinator who kept everything the host saw:
no value that crossed the adapter is a root key, none opens a root blob, and no token RNG
output is ever handed back as key material. The blobs still recover the root through the
recover ceremony. A kill at any point of a rotation leaves no extractable root on the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from custody.hsm import kcv_of_bytes
from tests.ceremony_fixtures import (
    Dep,
    approval_args,
    copy_dep,
    generated_copy,
    lose_token,
    sign_approvals,
)
from tests.conftest import ROOT, TEST_PIN, cli_env

pytestmark = pytest.mark.hsm

RECORDER = ROOT / "tests" / "fixtures" / "hsm_recorder"


@pytest.fixture(scope="module")
def template(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("seal") / "home")


def recording_env(rec: Path, **extra: str) -> dict[str, str]:
    env = cli_env(CUSTODY_TEST_HSM_RECORD=str(rec), **extra)
    env["PYTHONPATH"] = str(RECORDER) + os.pathsep + env["PYTHONPATH"]
    return env


def _bytes_in(v: Any) -> list[bytes]:
    if isinstance(v, dict):
        if set(v) == {"hex"}:
            return [bytes.fromhex(v["hex"])]
        return [b for x in v.values() for b in _bytes_in(x)]
    if isinstance(v, list):
        return [b for x in v for b in _bytes_in(x)]
    return []


def _records(rec: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in rec.read_text().splitlines()]


def _roots(d: Dep) -> dict[int, tuple[str, bytes | None]]:
    c = sqlite3.connect(d.root / "custody.db")
    try:
        rows = c.execute("SELECT version, kcv, blob FROM root_versions").fetchall()
    finally:
        c.close()
    return {v: (kcv, None if b is None else bytes(b)) for v, kcv, b in rows}


def _wrapped_parts(blob: bytes) -> list[bytes]:
    """Every RFC 5649 blob inside a stored root blob (raw, or CSB1/CSB2 JSON)."""
    if blob[:3] == b"CSB":
        return [bytes.fromhex(json.loads(blob[4:])["wrapped"])]
    return [blob]


def _rotate_root(d: Dep, env: dict[str, str]) -> dict[str, Any]:
    r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(d.root / "req.json"), env=env)
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    appr = [a for f in sign_approvals(d, cid) for a in ("--approval", str(f))]
    r = d.ceremony("resume", cid, *d.coord(), *appr, env=env)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    return r.out


def _emergency_approved(d: Dep, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Start an emergency-rotate and have wendy (the witness) co-sign it: (id, --approval
    arguments for the resume that carries out the rotation)."""
    req = d.root / "emergency-req.json"
    r = d.ceremony(
        "emergency-rotate",
        *d.coord(),
        "--reason",
        "laptop stolen",
        "--request-out",
        str(req),
        env=env,
    )
    assert r.returncode == 10 and r.out["step"] == "second-person", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    return cid, approval_args(sign_approvals(d, cid, ("wendy",), tag="-emergency", req=req))


def _emergency(d: Dep, env: dict[str, str]) -> dict[str, Any]:
    cid, appr = _emergency_approved(d, env)
    r = d.ceremony("resume", cid, *d.coord(), *appr, env=env)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    return r.out


def assert_host_saw_no_root(d: Dep, rec: Path, versions: set[int]) -> None:
    """What the coordinator's process saw cannot give any root key."""
    records = _records(rec)
    roots = _roots(d)
    assert versions <= set(roots)
    made = [
        x for x in records if x["method"] == "generate_aes_key" and x["args"][0] == "root"
    ]  # the recorder did see the rotations create the new roots
    assert {x["args"][1] for x in made} == versions, made
    kcvs = {kcv for kcv, _ in roots.values()}
    seen = [b for x in records for b in _bytes_in(x.get("args")) + _bytes_in(x.get("result"))]
    # 1. no plaintext root crossed the adapter
    keys = {b for b in seen if len(b) in (16, 24, 32)}
    assert not [k for k in keys if kcv_of_bytes(k) in kcvs], "a root key crossed the adapter"
    # 2. nothing that crossed opens any root blob (the coordinator's attack of issue 11)
    blobs = {b for b in seen if len(b) == 40}
    for _kcv, blob in roots.values():
        if blob is not None:
            blobs.update(_wrapped_parts(blob))
    opened = []
    for k in keys:
        for blob in blobs:
            with contextlib.suppress(InvalidUnwrap, ValueError):
                opened.append(kcv_of_bytes(aes_key_unwrap_with_padding(k, blob)))
    assert not set(opened) & kcvs, "a key the host saw unwraps a root blob"
    # 3. no token RNG output comes back in as key material (a host-side wrapping key)
    rng = {b for x in records if x["method"] == "random" for b in _bytes_in(x["result"])}
    fed = {b for x in records for b in _bytes_in(x["args"])}
    assert not rng & fed, "random bytes from the token were used as a key"
    # 4. no raw wrapping key was handed to the token for any root
    assert not [x for x in records if x["method"] == "export_wrapped"]


def _recover(d: Dep) -> None:
    lose_token(d)
    r = d.ceremony("recover", *d.coord(), *d.shares("alice", "bob", "carol"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    d.verify(r.out["bundle"])
    d.deks_ok()


def test_rotations_leave_no_root_material_on_the_host_and_blobs_recover(
    template: Dep, tmp_path: Path
):
    d = copy_dep(template, tmp_path / "home")
    rec = tmp_path / "adapter.jsonl"
    out = _rotate_root(d, recording_env(rec))
    d.verify(out["bundle"])
    assert_host_saw_no_root(d, rec, {2})
    # the rotate-root blob recovers root/v2 into an empty token through the recover ceremony
    d2 = copy_dep(d, tmp_path / "home2")
    _recover(d2)

    rec2 = tmp_path / "adapter2.jsonl"
    out = _emergency(d, recording_env(rec2))
    d.verify(out["bundle"])
    assert_host_saw_no_root(d, rec2, {3})
    _recover(d)  # the emergency-rotate blob recovers root/v3
    assert [v for v, s in d.roots() if s == "active"] == [3]


# ----------------------------------------------------------------- crash inside the window
_LIST_KEYS = """
import json, sys
from pathlib import Path
from custody.config import Home
from custody.deployment import open_deployment
dep = open_deployment(Home(Path(sys.argv[1])), sys.argv[2])
print(json.dumps([[k.label, k.version, k.extractable] for k in dep.token.list_keys()]))
"""


def token_keys(d: Dep) -> list[tuple[str, int, bool]]:
    """The token's keys as a fresh process sees them (session objects of others excluded)."""
    p = subprocess.run(
        [sys.executable, "-c", _LIST_KEYS, str(d.root), TEST_PIN],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return [tuple(x) for x in json.loads(p.stdout)]


WINDOW = ("generate-root", "generate-root:done", "seal-blob", "seal-blob:done", "lock-root")


@pytest.mark.parametrize("kind", ["rotate-root", "emergency-rotate"])
@pytest.mark.parametrize("point", WINDOW)
def test_a_kill_during_rotation_leaves_no_extractable_root(
    template: Dep, tmp_path: Path, kind: str, point: str
):
    d = copy_dep(template, tmp_path / "home")
    kill = cli_env(CUSTODY_TEST_KILL_AT=point)
    if kind == "rotate-root":
        r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(d.root / "req.json"))
        cid = r.out["ceremony_id"]
        appr = [a for f in sign_approvals(d, cid) for a in ("--approval", str(f))]
        k = d.ceremony("resume", cid, *d.coord(), *appr, env=kill)
    else:
        cid, appr = _emergency_approved(d)
        k = d.ceremony("resume", cid, *d.coord(), *appr, env=kill)
    assert k.returncode == -9, k.stdout + k.stderr
    keys = token_keys(d)
    assert [k for k in keys if k[2]] == [], keys  # nothing extractable survives the kill
    r = d.ceremony("resume", cid, *d.coord())
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    d.verify(r.out["bundle"])
    assert [v for v, s in d.roots() if s == "active"] == [2]
    assert [k for k in token_keys(d) if k[2]] == []
    d.deks_ok()


def test_a_share_set_without_a_p256_key_is_refused_before_any_key_is_made(
    template: Dep, tmp_path: Path
):
    """A share set recorded before in-token sealing (X25519 rk_public): no rotation falls
    back to wrapping in host memory; it is refused with a hint to reshare."""
    d = copy_dep(template, tmp_path / "home")
    c = sqlite3.connect(d.root / "custody.db")
    with c:
        c.execute("UPDATE share_sets SET rk_public=? WHERE state='active'", (os.urandom(32),))
    c.close()
    cid, appr = _emergency_approved(d)
    r = d.ceremony("resume", cid, *d.coord(), *appr)
    assert r.returncode != 0 and r.out["error"] == "CeremonyError", r.stdout + r.stderr
    assert "reshare" in r.out["hint"]
    assert [k for k in token_keys(d) if k[0] == "root"] == [("root", 1, False)]
    assert d.roots() == [(1, "active")]
