"""docs/recovery.md, followed step by step through the CLI (each step a subprocess).

One template deployment (enrolled roster, a generated 3-of-5 root, KEKs, 50 DEKs) is built
per module; its offline copies are made as the runbook's "Before anything is lost" says
(a root export and a store snapshot, outside the home) and the template is copied per test.
Each test names the runbook section and step it carries out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.ceremony_fixtures import Dep, copy_dep, generated_copy
from tests.conftest import TEST_PIN, TEST_SO_PIN, run_cli, write_secret

pytestmark = pytest.mark.hsm

ALARM_EXIT = 6


@pytest.fixture(scope="module")
def template(generated_master: Dep, tmp_path_factory) -> Dep:
    d = generated_copy(generated_master, tmp_path_factory.mktemp("tpl") / "home")
    offline = d.root.parent / "offline"
    # "Before anything is lost", steps 1 and 2
    r = run_cli(
        "root", "export", "--home", str(d.root), "--out", str(offline / "export"), *_admin(d)
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "store",
        "snapshot",
        "--home",
        str(d.root),
        "--out",
        str(offline / "custody-snapshot.db"),
        *_admin(d),
    )
    assert r.returncode == 0, r.stderr
    return d


def _admin(d: Dep) -> list[str]:
    return [
        "--key",
        str(d.people / "admin.key.pem"),
        "--passphrase-file",
        str(d.people / "admin.pass"),
    ]


@pytest.fixture
def dep(template: Dep, tmp_path: Path) -> Dep:
    d = copy_dep(template, tmp_path / "home")
    shutil.copytree(template.root.parent / "offline", tmp_path / "offline")
    return d


def _offline(d: Dep) -> Path:
    return d.root.parent / "offline"


def _h(d: Dep | Path) -> list[str]:
    root = d.root if isinstance(d, Dep) else d
    return ["--home", str(root)]


def _status(home: Path, pins: Path):
    r = run_cli("status", "--home", str(home), "--pin-file", str(pins), "--json")
    return r, json.loads(r.stdout)


def _recover(d: Dep, home: Path | None = None):
    home = home or d.root
    args = ["--home", str(home), *d.coord()[2:]]
    r = d.ceremony("recover", *args, *d.shares("alice", "carol", "erin"))
    assert r.returncode == 0, r.stdout + r.stderr
    d.verify(r.out["bundle"])
    return r


def _deks(home: Path, pins: Path) -> dict:
    r = run_cli("dek", "verify", "--all", "--home", str(home), "--pin-file", str(pins), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


# ---------------------------------------------------------------------- lost token
def test_lost_token(dep: Dep):
    shutil.rmtree(dep.root / "tokens")  # the token is gone (disk, laptop, HSM failure)
    # 1. custody status: the token is unreachable, and the hint names provision
    r, st = _status(dep.root, dep.pin)
    assert r.returncode == 5 and st["hsm"]["reachable"] is False
    assert "custody hsm provision" in st["hsm"]["hint"]
    # dek verify fails naming the cause, not the healthy-looking status
    r = run_cli("dek", "verify", "--all", *_h(dep), "--pin-file", str(dep.pin))
    assert r.returncode == 5
    # 2. custody hsm provision: a new, empty token; PINs from the 0600 file
    r = run_cli("hsm", "provision", *_h(dep), "--pin-file", str(dep.pin))
    assert r.returncode == 0, r.stderr
    assert TEST_PIN not in r.stdout + r.stderr and TEST_SO_PIN not in r.stdout + r.stderr
    # a second provision is refused: the token is there
    assert run_cli("hsm", "provision", *_h(dep), "--pin-file", str(dep.pin)).returncode == 2
    # 3. custody status: reachable, but an ALARM names the missing root and the fix
    r, st = _status(dep.root, dep.pin)
    assert r.returncode == ALARM_EXIT and st["hsm"]["reachable"] is True
    assert [a["text"] for a in st["alarms"]] == [
        "root/v1 is not on this token: run `custody ceremony recover`"
    ]
    t = run_cli("status", *_h(dep), "--pin-file", str(dep.pin))
    assert t.returncode == ALARM_EXIT and "ALARM       root/v1 is not on this token" in t.stdout
    r = run_cli("dek", "verify", "--all", *_h(dep), "--pin-file", str(dep.pin))
    assert r.returncode == 5 and "root/v1 is not on the token" in r.stderr
    assert "custody ceremony recover" in r.stderr
    # 4. custody ceremony recover with a quorum of shares
    _recover(dep)
    # 5. custody status is clean; every DEK opens
    r, st = _status(dep.root, dep.pin)
    assert r.returncode == 0 and st["alarms"] == []
    assert st["offline_export"]["current"] is True
    dep.deks_ok()


# ---------------------------------------------------------------------- lost store
def _lose_store(home: Path) -> None:
    for p in home.glob("custody.db*"):
        p.unlink()


def test_lost_store_restored_from_the_snapshot(dep: Dep):
    _lose_store(dep.root)
    # 1. custody status fails and points at the restore
    r = run_cli("status", *_h(dep), "--pin-file", str(dep.pin))
    assert r.returncode == 4 and "custody store restore" in r.stderr
    snap = _offline(dep) / "custody-snapshot.db"
    trust = ["--trust", str(dep.people / "admin.pub.json")]
    # 2. custody store restore FILE --trust ADMIN.pub.json
    r = run_cli("store", "restore", str(snap), *_h(dep), *trust, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    # 3. custody status: the token matches the restored store
    r, st = _status(dep.root, dep.pin)
    assert r.returncode == 0 and st["alarms"] == [], st
    dep.deks_ok()
    # restoring over a store that holds keys needs --replace, which keeps the old file
    r = run_cli("store", "restore", str(snap), *_h(dep), *trust)
    assert r.returncode == 2 and "--replace" in r.stderr
    assert not (dep.root / "custody.db.before-restore").exists()
    r = run_cli("store", "restore", str(snap), *_h(dep), *trust, "--replace")
    assert r.returncode == 0, r.stderr
    assert (dep.root / "custody.db.before-restore").is_file()
    dep.deks_ok()


def test_lost_store_without_a_snapshot_imports_the_root_export(dep: Dep):
    _lose_store(dep.root)
    export = _offline(dep) / "export"
    # 2 (no snapshot). verify the export, then import it into the home
    trust = ["--trust", str(dep.people / "admin.pub.json")]
    r = run_cli("root", "verify-export", str(export), *trust)
    assert r.returncode == 0 and "VALID" in r.stdout, r.stderr
    r = run_cli("root", "import", str(export), *_h(dep), *trust)
    assert r.returncode == 0, r.stderr
    # 3. the token still holds root/v1: no alarm, the KEKs open, the wrapped DEKs are gone
    r, st = _status(dep.root, dep.pin)
    assert r.returncode == 0 and st["alarms"] == [], st
    assert {k["branch"] for k in st["keks"]} == {"data", "backup", "secrets"}
    assert _deks(dep.root, dep.pin)["checked"] == 0
    r = run_cli("kek", "rotate", "--branch", "data", *_h(dep), "--pin-file", str(dep.pin))
    assert r.returncode == 0, r.stderr  # the imported root seals a new KEK


# ----------------------------------------------------------------------- lost both
def _fresh_home(tmp: Path) -> tuple[Path, Path]:
    new, pins = tmp / "new-home", tmp / "new-pins"
    write_secret(pins, f"pin={TEST_PIN}\nso_pin={TEST_SO_PIN}\n")
    r = run_cli("init", "--home", str(new), "--pin-file", str(pins))
    assert r.returncode == 0, r.stderr
    return new, pins


def test_lost_both_with_a_snapshot(dep: Dep, tmp_path: Path):
    shutil.rmtree(dep.root / "tokens")
    _lose_store(dep.root)
    # 1. a fresh home on a new machine (custody init makes its token)
    new, pins = _fresh_home(tmp_path)
    # 2. restore the snapshot into it
    snap = _offline(dep) / "custody-snapshot.db"
    r = run_cli(
        "store",
        "restore",
        str(snap),
        "--home",
        str(new),
        "--trust",
        str(dep.people / "admin.pub.json"),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # 3. status: the new token lacks root/v1
    r, st = _status(new, pins)
    assert r.returncode == ALARM_EXIT and st["alarms"][0]["fix"] == "custody ceremony recover"
    # 4. recover, 5. clean status and every DEK opens
    _recover(dep, new)
    r, st = _status(new, pins)
    assert r.returncode == 0 and st["alarms"] == []
    out = _deks(new, pins)
    assert out["failed"] == [] and out["checked"] == 50


def test_lost_both_from_the_offline_export_only(dep: Dep, tmp_path: Path):
    shutil.rmtree(dep.root / "tokens")
    _lose_store(dep.root)
    new, pins = _fresh_home(tmp_path)
    export = _offline(dep) / "export"
    trust = ["--trust", str(dep.people / "admin.pub.json")]
    # 2. import the verified export (a fresh home has no roster: --trust is required)
    assert run_cli("root", "import", str(export), "--home", str(new)).returncode == 2
    r = run_cli("root", "import", str(export), "--home", str(new), *trust, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["roots"] == ["root/v1"]
    # the fresh home is now the old deployment
    old_id = (dep.root / "custody.toml").read_text().split('id = "')[1].split('"')[0]
    assert f'id = "{old_id}"' in (new / "custody.toml").read_text()
    # 3. status: the alarm, 4. recover, 5. clean
    r, st = _status(new, pins)
    assert r.returncode == ALARM_EXIT
    assert st["alarms"][0]["text"] == "root/v1 is not on this token: run `custody ceremony recover`"
    rec = _recover(dep, new)
    assert rec.out["facts"]["imported"] == [1]
    r, st = _status(new, pins)
    assert r.returncode == 0 and st["alarms"] == [] and st["offline_export"]["current"]
    # the KEKs came back with the root: a backup made before the loss can be opened again
    r = run_cli("kek", "rotate", "--branch", "backup", "--home", str(new), "--pin-file", str(pins))
    assert r.returncode == 0, r.stderr
    # a second import into the now-populated home is refused
    r = run_cli("root", "import", str(export), "--home", str(new), *trust)
    assert r.returncode == 8


def test_a_tampered_export_or_snapshot_is_refused(dep: Dep, tmp_path: Path):
    trust = ["--trust", str(dep.people / "admin.pub.json")]
    export = _offline(dep) / "export"
    doc = json.loads((export / "root-export.json").read_text())
    doc["roots"][0]["kcv"] = "000000"
    bad = tmp_path / "bad-export"
    shutil.copytree(export, bad)
    (bad / "root-export.json").write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    r = run_cli("root", "verify-export", str(bad), *trust)
    assert r.returncode == 6 and "failed verification" in r.stderr
    # signed by someone who is not a pinned super-admin: alice's key as the only pin
    r = run_cli("root", "verify-export", str(export), "--trust", str(dep.people / "alice.pub.json"))
    assert r.returncode == 6 and "pinned" in r.stderr
    # an export signed by a custodian is refused at export time
    r = run_cli(
        "root",
        "export",
        *_h(dep),
        "--out",
        str(tmp_path / "x"),
        "--key",
        str(dep.people / "alice.key.pem"),
        "--passphrase-file",
        str(dep.people / "alice.pass"),
    )
    assert r.returncode == 7 and not (tmp_path / "x").exists()
    # a snapshot with one flipped byte
    snap = tmp_path / "snap.db"
    shutil.copy(_offline(dep) / "custody-snapshot.db", snap)
    shutil.copy(
        _offline(dep) / "custody-snapshot.db.manifest.json", tmp_path / "snap.db.manifest.json"
    )
    raw = bytearray(snap.read_bytes())
    raw[-100] ^= 1
    snap.write_bytes(bytes(raw))
    _lose_store(dep.root)
    r = run_cli("store", "restore", str(snap), *_h(dep), *trust)
    assert r.returncode == 6 and "SHA-256" in r.stderr
    assert not (dep.root / "custody.db").exists()


# ------------------------------------------------------------------- lost custodian
def _approve(d: Dep, req: Path, *names: str) -> list[str]:
    out = []
    for n in names:
        f = d.root.parent / f"appr-{n}.json"
        r = run_cli(
            "ceremony",
            "approve",
            str(req),
            "--key",
            str(d.people / f"{n}.key.pem"),
            "--passphrase-file",
            str(d.people / f"{n}.pass"),
            "--out",
            str(f),
        )
        assert r.returncode == 0, r.stderr
        out += ["--approval", str(f)]
    return out


def test_lost_custodian(dep: Dep, tmp_path: Path):
    new = tmp_path / "new-shares"
    # 1. reshare to the custodians who still hold their shares (erin lost hers)
    cust = [a for n in ("alice", "bob", "carol", "dave") for a in ("--custodian", n)]
    r = dep.ceremony(
        "reshare",
        *dep.coord(),
        *cust,
        "--threshold",
        "3",
        "--out",
        str(new),
        *dep.shares("alice", "bob", "carol"),
    )
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    new_shares = [
        a for n in ("alice", "bob", "carol") for a in ("--share", str(new / f"{n}.share.txt"))
    ]
    r = dep.ceremony("resume", cid, *dep.coord(), *new_shares)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    dep.verify(r.out["bundle"])
    dep.deks_ok()
    # 2. revoke erin's enrolment: a majority of the custodians approves
    req = tmp_path / "REQ.json"
    r = dep.ceremony("enrol", *dep.coord(pin=False), "--revoke", "erin", "--request-out", str(req))
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    eid = r.out["ceremony_id"]
    r = dep.ceremony(
        "resume", eid, *dep.coord(pin=False), *_approve(dep, req, "alice", "bob", "carol")
    )
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    # 3. new offline copies: the new export names the new share set, without erin
    trust = ["--trust", str(dep.people / "admin.pub.json")]
    out = tmp_path / "export-2"
    r = run_cli("root", "export", *_h(dep), "--out", str(out), *_admin(dep))
    assert r.returncode == 0, r.stderr
    v = run_cli("root", "verify-export", str(out), *trust, "--json")
    assert v.returncode == 0, v.stderr
    now = json.loads(v.stdout)
    old = json.loads(
        run_cli("root", "verify-export", str(_offline(dep) / "export"), *trust, "--json").stdout
    )
    assert now["epoch"] > old["epoch"] and now["custodians"] == ["alice", "bob", "carol", "dave"]
    # erin's old share no longer counts
    r = dep.ceremony("drill", *dep.coord(pin=False), *new_shares[:4], *dep.shares("erin"))
    assert r.returncode == 6 and "share of erin rejected" in r.stderr, r.stderr


# --------------------------------------------------------------- suspected compromise
def test_suspected_compromise(dep: Dep, tmp_path: Path):
    req = tmp_path / "REQ.json"
    # 2. emergency-rotate: the impact report, then it waits for a second person
    r = dep.ceremony(
        "emergency-rotate", *dep.coord(), "--reason", "laptop stolen", "--request-out", str(req)
    )
    assert r.returncode == 10 and r.out["step"] == "second-person", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    # 3. the witness signs, 4. the coordinator resumes with it
    r = dep.ceremony("resume", cid, *dep.coord(), *_approve(dep, req, "wendy"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    assert (dep.root / r.out["facts"]["report"]).is_file()
    dep.verify(r.out["bundle"])
    assert dep.roots()[-1] == (2, "active") and dep.roots()[0][1] != "active"
    # 5. rotate the KEKs, re-key; status is clean
    for b in ("data", "backup", "secrets"):
        r = run_cli("kek", "rotate", *_h(dep), "--pin-file", str(dep.pin), "--branch", b)
        assert r.returncode == 0, r.stderr
    r = run_cli("rekey", "run", *_h(dep), "--pin-file", str(dep.pin))
    assert r.returncode == 0, r.stdout + r.stderr
    r, st = _status(dep.root, dep.pin)
    assert r.returncode == 0 and st["alarms"] == []
    assert st["offline_export"]["current"] is False and "root/v2" in st["offline_export"]["missing"]
    t = run_cli("status", *_h(dep), "--pin-file", str(dep.pin))
    warn = [ln for ln in t.stdout.splitlines() if "the offline root export lacks" in ln]
    assert warn and "root/v2" in warn[0] and "custody root export" in warn[0]
    dep.deks_ok()
    # 6. new offline copies: only the new root is in the export
    out = tmp_path / "export-2"
    r = run_cli("root", "export", *_h(dep), "--out", str(out), *_admin(dep), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["roots"] == ["root/v2"]
    assert _status(dep.root, dep.pin)[1]["offline_export"]["current"] is True
