"""Shared helpers for the CLI ceremony tests (flows, faults, kills, approvals) and the TUI
ceremony pilot: the ``Dep`` handle on a deployment home, template builders (an enrolled
roster; a generated 3-of-5 root with KEKs and DEKs), copying a template per test, losing the
token, and signing approvals in process (rotate-root's custodians, a later enrolment's
custodian majority, emergency-rotate's witness ``wendy``).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

from tests.conftest import TEST_PIN, TEST_SO_PIN, passphrase_of, run_cli, write_secret

CUST = ("alice", "bob", "carol", "dave", "erin")


class Dep:
    def __init__(self, root: Path) -> None:
        self.root, self.people, self.pin = root, root / "people", root / "pins"

    def coord(self, pin: bool = True) -> list[str]:
        a = [
            "--home",
            str(self.root),
            "--key",
            str(self.people / "admin.key.pem"),
            "--passphrase-file",
            str(self.people / "admin.pass"),
            "--json",
        ]
        return a + (["--pin-file", str(self.pin)] if pin else [])

    def shares(self, *names: str, d: str = "shares") -> list[str]:
        return [a for n in names for a in ("--share", str(self.root / d / f"{n}.share.txt"))]

    def run(self, *args: str, env: dict[str, str] | None = None):
        return run_cli(*args, env=env)

    def ceremony(self, *args: str, env: dict[str, str] | None = None):
        if args and args[0] in ("generate", "reshare") and "--seal-to" not in args:
            # the suite's stories hand shares in as files; sealed issue has its own tests
            args = (*args, "--plain-shares")
        r = run_cli("ceremony", *args, env=env)
        try:
            r.out = json.loads(r.stdout) if r.stdout.strip() else {}  # type: ignore[attr-defined]
        except ValueError:
            r.out = {}  # type: ignore[attr-defined]
        return r

    def trust(self) -> list[str]:
        return [a for p in sorted(self.people.glob("*.pub.json")) for a in ("--trust", str(p))]

    def verify(self, bundle: str) -> None:
        v = run_cli("transcript", "verify", bundle, *self.trust())
        assert v.returncode == 0, v.stdout + v.stderr

    def deks_ok(self) -> None:
        r = run_cli(
            "dek",
            "verify",
            "--all",
            "--home",
            str(self.root),
            "--pin-file",
            str(self.pin),
            "--json",
        )
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["failed"] == [] and out["checked"] == 50

    def roots(self) -> list[tuple[int, str]]:
        c = sqlite3.connect(self.root / "custody.db")
        rows = c.execute("SELECT version, state FROM root_versions ORDER BY version").fetchall()
        c.close()
        return rows


def init_home(root: Path, pins: Path) -> None:
    """Create *root*, write the test PINs to *pins* (0600) and run ``custody init``."""
    root.mkdir(parents=True)
    write_secret(pins, f"pin={TEST_PIN}\nso_pin={TEST_SO_PIN}\n")
    assert run_cli("init", "--home", str(root), "--pin-file", str(pins)).returncode == 0


def create_people(people: Path, *extra: tuple[str, str]) -> None:
    """Key pairs (passphrase ``passphrase_of(NAME)``) for admin, the custodians, *extra*,
    audrey (an auditor) and wendy (a witness: emergency-rotate's second person)."""
    from ceremonies.participants import create_participant

    people.mkdir()
    for n, role in [
        ("admin", "super-admin"),
        *[(c, "custodian") for c in CUST],
        *extra,
        ("audrey", "auditor"),
        ("wendy", "witness"),
    ]:
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, role, passphrase_of(n), people)


def build_enrolled(root: Path, *extra: tuple[str, str]):
    """An initialised home whose roster (admin, the custodians, audrey, wendy) is enrolled;
    *extra* participants get key pairs but are not enrolled. Returns the Dep and the enrol
    result."""
    d = Dep(root)
    init_home(root, d.pin)
    create_people(d.people, *extra)
    adds = [
        a
        for n in ("admin", *CUST, "audrey", "wendy")
        for a in ("--add", str(d.people / f"{n}.pub.json"))
    ]
    r = d.ceremony("enrol", *d.coord(pin=False), *adds)
    assert r.returncode == 0, r.stderr
    return d, r


def build_generated(root: Path) -> Dep:
    """The enrolled roster (plus frank, not enrolled), a generated 3-of-5 root, KEKs, 50 DEKs."""
    d, r = build_enrolled(root, ("frank", "custodian"))
    d.verify(r.out["bundle"])
    cust = [a for n in CUST for a in ("--custodian", n)]
    r = d.ceremony("generate", *d.coord(), *cust, "--threshold", "3", "--out", str(root / "shares"))
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stderr
    assert d.roots() == []  # not final before the verification round
    r = d.ceremony("resume", r.out["ceremony_id"], *d.coord(), *d.shares("alice", "bob", "carol"))
    assert r.returncode == 0, r.stderr
    d.verify(r.out["bundle"])
    for b in ("data", "backup", "secrets"):
        assert (
            run_cli(
                "kek", "rotate", "--branch", b, "--home", str(root), "--pin-file", str(d.pin)
            ).returncode
            == 0
        )
    assert (
        run_cli(
            "dek", "generate", "--count", "50", "--home", str(root), "--pin-file", str(d.pin)
        ).returncode
        == 0
    )
    return d


def generated_copy(master: Dep, root: Path) -> Dep:
    """A generated deployment at *root*: a copy of the session's *master* (the
    ``generated_master`` fixture of tests/conftest.py, one :func:`build_generated` per test
    process) instead of a new build (ten CLI runs, nine key pairs). The stored ceremony paths are
    rewritten to *root*, so the copy is used exactly like a deployment built there."""
    root.parent.mkdir(parents=True, exist_ok=True)
    return copy_dep(master, root, in_flight=True)


def copy_home(src: Path, dst: Path) -> None:
    """Copy a home and rewrite its SoftHSMv2 config for the copy."""
    from custody.hsm import softhsm

    shutil.copytree(src, dst)
    softhsm.write_conf(dst)


def copy_dep(src: Dep, dst: Path, *, in_flight: bool = False) -> Dep:
    """Copy a deployment; with *in_flight*, also rewrite the paths the store holds for
    ceremonies (bundle, params, files) so that in-flight ceremonies resume in the copy."""
    copy_home(src.root, dst)
    if in_flight:
        c = sqlite3.connect(dst / "custody.db")
        try:
            with c:
                c.execute(
                    "UPDATE ceremonies SET bundle=replace(bundle, ?, ?), "
                    "pending=replace(pending, ?, ?)",
                    (str(src.root), str(dst)) * 2,
                )
        finally:
            c.close()
    return Dep(dst)


def lose_token(d: Dep) -> None:
    """Replace the deployment's token by a new, empty one."""
    from custody.hsm import softhsm

    conf = d.root / softhsm.CONF_NAME
    softhsm.delete_token(conf, "custody")
    softhsm.init_token(conf, "custody", TEST_SO_PIN, TEST_PIN)


def sign_approvals(
    d: Dep, cid: str, names=("alice", "bob", "carol"), tag: str = "", req: Path | None = None
) -> list[Path]:
    """Approval files (appr-NAME{tag}.json) for the request of *cid* in *req* (default
    d.root/req.json: rotate-root's), signed in process (fast)."""
    from ceremonies.participants import load_signer
    from ceremonies.transcript.records import Approval

    rq = json.loads((req or d.root / "req.json").read_text())
    assert rq["ceremony_id"] == cid
    out: list[Path] = []
    for n in names:
        a = Approval.create(
            load_signer(d.people / f"{n}.key.pem", passphrase_of(n)),
            ceremony_id=cid,
            action=rq["action"],
            action_id=rq["action_id"],
            digest=rq["action_digest"],
            now=int(time.time()),
            window=int(rq["window"]),
        )
        f = d.root / f"appr-{n}{tag}.json"
        f.write_text(json.dumps(a.to_json()))
        out.append(f)
    return out


def start_rotate_root(d: Dep) -> Dep:
    """Start a rotate-root in *d*, left waiting for its custodian approvals (req.json)."""
    r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(d.root / "req.json"))
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stderr
    return d


def approval_args(files: list[Path]) -> list[str]:
    return [a for f in files for a in ("--approval", str(f))]


def enrol_with_quorum(d: Dep, *args: str, approvers=("alice", "bob", "carol")):
    """An enrolment after the bootstrap (``--add PUB`` / ``--revoke NAME`` in *args*): with
    the single super-admin of these fixtures, a majority of the five custodians approves.
    Returns the closing result."""
    req = d.root / "enrol-req.json"
    r = d.ceremony("enrol", *d.coord(pin=False), *args, "--request-out", str(req))
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    files = sign_approvals(d, cid, approvers, tag="-enrol", req=req)
    r = d.ceremony("resume", cid, *d.coord(pin=False), *approval_args(files))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    return r


def emergency_rotate(d: Dep, reason: str, *, second: str = "wendy"):
    """An emergency-rotate co-signed by *second* (the witness by default). Returns the
    closing result."""
    req = d.root / "emergency-req.json"
    r = d.ceremony("emergency-rotate", *d.coord(), "--reason", reason, "--request-out", str(req))
    assert r.returncode == 10 and r.out["step"] == "second-person", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    files = sign_approvals(d, cid, (second,), tag="-emergency", req=req)
    r = d.ceremony("resume", cid, *d.coord(), *approval_args(files))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    return r
