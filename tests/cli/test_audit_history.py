"""History that cannot be rewritten unseen: ``audit checkpoint --export`` and
``audit verify --trust --witness / --known-checkpoint`` against an attacker who can write
``audit.db`` (but does not hold the pinned checkpoint key)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from custody.audit.log import AuditLog
from custody.audit.records import chain_hash, genesis
from custody.audit.signers import Ed25519Signer
from custody.canonical import canonical_bytes
from custody.signing import private_to_pem
from tests.conftest import passphrase_of, run_cli, write_secret


def _key(tmp_path: Path, seed: int, name: str) -> tuple[Path, Path]:
    s = Ed25519Signer.from_seed(name, bytes([seed]) * 32)
    pem = tmp_path / f"{name}.pem"
    pem.write_bytes(private_to_pem(s.key, passphrase_of(name).encode()))
    pw = tmp_path / f"{name}.pw"
    write_secret(pw, passphrase_of(name) + "\n")
    return pem, pw


def _append(home: Path, n: int, start: int = 0) -> None:
    with AuditLog(home / "audit.db") as log:
        for i in range(start, start + n):
            log.append("secret.get", f"svc{i}", "alice", details={"i": i})


def _checkpoint(home: Path, key: tuple[Path, Path], *extra: str) -> dict:
    pem, pw = key
    r = run_cli(
        "audit", "checkpoint", "--home", str(home), "--key-file", str(pem),
        "--passphrase-file", str(pw), "--json", *extra,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _verify(home: Path, *args: str) -> tuple[int, str]:
    r = run_cli("audit", "verify", "--home", str(home), *args)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("history")
    home, wit = d / "home", d / "witness"
    home.mkdir()
    key = _key(d, 5, "auditkey")
    _append(home, 12)
    first = _checkpoint(home, key, "--export", str(wit), "--trust-out", str(d / "trust.json"))
    assert first["exported"] == [f"{first['checkpoint']['log']}-{12:012d}.json"]
    (d / "known.json").write_text(json.dumps(first))  # the auditor keeps this one
    _append(home, 8, 12)
    second = _checkpoint(home, key, "--export", str(wit))
    assert second["checkpoint"]["tree_size"] == 20
    assert len(second["exported"]) == 1  # the first one was already there
    _append(home, 3, 20)
    return {"dir": d, "home": home, "witness": wit, "trust": d / "trust.json"}


@pytest.fixture
def dep(template: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    shutil.copytree(template["home"], home)
    return {**template, "home": home}


def _sql(home: Path, *stmts: str) -> None:
    db = sqlite3.connect(home / "audit.db", isolation_level=None)
    for s in stmts:
        db.execute(s)
    db.close()


def _rechain(home: Path, seq: int, **change: str) -> None:
    """What an attacker with write access does: edit entry *seq*, recompute every later
    line's ``prev`` and chain hash, so that the unkeyed chain verifies again."""
    db = sqlite3.connect(home / "audit.db", isolation_level=None)
    log_id = db.execute("SELECT v FROM meta WHERE k='log_id'").fetchone()[0]
    rows = db.execute("SELECT seq, line FROM entries ORDER BY seq").fetchall()
    prev = genesis(log_id)
    db.execute("BEGIN")
    for s, line in rows:
        e = json.loads(line)
        if s == seq:
            e.update(change)
        e["prev"] = prev.hex()
        new = canonical_bytes(e)
        prev = chain_hash(new)
        db.execute("UPDATE entries SET line = ?, chain = ? WHERE seq = ?", (new, prev, s))
    db.execute("COMMIT")
    db.close()


def test_untouched_log_verifies_against_witness_and_known(dep: dict[str, Path]) -> None:
    home, t = dep["home"], str(dep["trust"])
    rc, out = _verify(
        home, "--trust", t, "--witness", str(dep["witness"]),
        "--known-checkpoint", str(dep["dir"] / "known.json"),
    )  # fmt: skip
    assert rc == 0, out
    assert "held to 2 witness checkpoints" in out and "VALID: 23 entries" in out


def test_deleted_checkpoints_fail_with_trust(dep: dict[str, Path]) -> None:
    home, t = dep["home"], str(dep["trust"])
    _sql(home, "DELETE FROM checkpoints")
    assert _verify(home)[0] == 0  # without --trust nothing anchors the history...
    rc, out = _verify(home, "--trust", t)
    assert rc == 6 and "no checkpoint signed by a pinned key" in out  # ...with it, fail
    rc, out = _verify(home, "--trust", t, "--witness", str(dep["witness"]))
    assert rc == 6 and "missing from the database" in out


def test_truncated_tail_fails_against_witness_and_known(dep: dict[str, Path]) -> None:
    home, t = dep["home"], str(dep["trust"])
    # drop the last 8 entries and the checkpoint that covered them: the DB alone still
    # verifies (the checkpoint at 12 is intact), which is why witnesses exist
    _sql(
        home, "DELETE FROM entries WHERE seq >= 15", "DELETE FROM checkpoints WHERE tree_size > 12"
    )
    assert _verify(home, "--trust", t)[0] == 0
    rc, out = _verify(home, "--trust", t, "--witness", str(dep["witness"]))
    assert rc == 6 and "beyond the log's 15 entries" in out
    second = sorted(dep["witness"].glob("*.json"))[-1]
    rc, out = _verify(home, "--trust", t, "--known-checkpoint", str(second))
    assert rc == 6 and "entries were removed" in out


def test_rewritten_and_rechained_entries_fail(dep: dict[str, Path], tmp_path: Path) -> None:
    home, t = dep["home"], str(dep["trust"])
    _rechain(home, 5, actor="mallory")
    rc, out = _verify(home, "--trust", t)
    assert rc == 6 and "root does not match" in out  # the stored checkpoints still catch it
    # so the attacker deletes them and signs their own with a key nobody pinned
    _sql(home, "DELETE FROM checkpoints")
    _checkpoint(home, _key(tmp_path, 9, "mallory"))
    assert _verify(home)[0] == 0  # self-asserted signatures are no anchor...
    rc, out = _verify(home, "--trust", t)
    assert rc == 6 and "no checkpoint signed by a pinned key" in out  # ...a pinned key is
    rc, out = _verify(home, "--trust", t, "--witness", str(dep["witness"]))
    assert rc == 6 and "history was rewritten" in out
    rc, out = _verify(home, "--trust", t, "--known-checkpoint", str(dep["dir"] / "known.json"))
    assert rc == 6 and "history was rewritten" in out


def test_rewritten_tail_after_the_checkpoint_fails_against_witness(dep: dict[str, Path]) -> None:
    home, t = dep["home"], str(dep["trust"])
    _sql(home, "DELETE FROM checkpoints WHERE tree_size > 12")
    _rechain(home, 15, target="elsewhere")  # after the checkpoint the DB still holds
    assert _verify(home, "--trust", t)[0] == 0  # the DB alone cannot see it
    rc, out = _verify(home, "--trust", t, "--witness", str(dep["witness"]))
    assert rc == 6 and "history was rewritten" in out


def test_export_refuses_a_conflicting_checkpoint(dep: dict[str, Path], tmp_path: Path) -> None:
    home = dep["home"]
    wit = tmp_path / "w"
    shutil.copytree(dep["witness"], wit)
    _rechain(home, 3, actor="mallory")
    _sql(home, "DELETE FROM checkpoints")
    pem, pw = _key(tmp_path, 5, "auditkey")
    _sql(home, "DELETE FROM entries WHERE seq >= 12")
    r = run_cli(
        "audit", "checkpoint", "--home", str(home), "--key-file", str(pem),
        "--passphrase-file", str(pw), "--export", str(wit),
    )  # fmt: skip
    assert r.returncode == 6 and "different checkpoint" in r.stderr
    assert len(list(wit.glob("*.json"))) == 2  # nothing overwritten


def test_warns_when_the_pinned_checkpoint_is_far_behind(dep: dict[str, Path]) -> None:
    home, t = dep["home"], str(dep["trust"])
    rc, out = _verify(home, "--trust", t, "--max-behind", "2", "--max-age", "30d")
    assert rc == 0 and "WARN the newest pinned checkpoint (size 20) is 3 entries behind" in out
    rc, out = _verify(home, "--trust", t, "--max-behind", "3")
    assert rc == 0 and "WARN" not in out
    r = run_cli("audit", "verify", "--home", str(home), "--max-age", "soon")
    assert r.returncode == 2


@pytest.mark.hsm
def test_checkpoint_seal_and_verify_seal_through_the_token(tmp_path: Path) -> None:
    pins = tmp_path / "pins"
    write_secret(pins, "pin=pin-for-seal-1\nso_pin=so-pin-for-seal-1\n")
    h = tmp_path / "home"
    r = run_cli("init", "--home", str(h), "--pin-file", str(pins), "--dev-root")
    assert r.returncode == 0, r.stderr
    base = ["--home", str(h), "--pin-file", str(pins)]
    r = run_cli("audit", "checkpoint", *base, "--seal", "--trust-out", str(tmp_path / "t.json"))
    assert r.returncode == 0 and "sealed the chain up to entry" in r.stdout, r.stderr
    r = run_cli("audit", "verify", *base, "--seal", "--trust", str(tmp_path / "t.json"))
    assert r.returncode == 0 and "sealed by the token's MAC key" in r.stdout, r.stdout + r.stderr
    _rechain(h, 0, actor="mallory")  # no token needed to recompute the unkeyed chain...
    _sql(h, "DELETE FROM checkpoints")
    assert run_cli("audit", "verify", "--home", str(h)).returncode == 0
    r = run_cli("audit", "verify", *base, "--seal")  # ...but the seal needs the token
    assert r.returncode == 6 and "without the token" in r.stdout, r.stdout + r.stderr
