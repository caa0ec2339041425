"""The access seal and the sealed audit checkpoint on NSS softokn through the p11-kit proxy.

NSS softokn cannot store CKA_ALLOWED_MECHANISMS on a token object (the whole key generation
fails with CKR_GENERAL_ERROR) and keeps no CKO_DATA token objects at all, so on this token
the seal's HMAC key is made without the attribute and its rollback counter is held by a
usage-less secret key (custody/hsm/pkcs11/counters.py). Before that, the first sealed write
failed ("create MAC key"), so the seal was unusable on NSS. Here: a secret is put, principals
are added and listed with their rows verified, a row changed on disk is refused (exit 6),
an older custody.db put back is refused (the token's counter is ahead), and a sealed audit
checkpoint verifies. All through the CLI (tests/token_fixtures.py says why the test process
itself never loads the proxy)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from tests.conftest import TEST_PIN, passphrase_of, run_cli, write_secret
from tests.token_fixtures import P11KIT_PROXY, nss_token, token_objects

pytestmark = [pytest.mark.hsm, pytest.mark.slow, pytest.mark.xdist_group("other-tokens")]
CANARY = "Nss-Seal-Canary-4kQ!x9#Lp2"


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite file (WAL included), written as one transaction."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def test_access_seal_and_audit_seal_on_nss_softokn(tmp_path: Path) -> None:
    with nss_token(tmp_path / "nss", TEST_PIN) as label:
        home = tmp_path / "home"
        pins = write_secret(tmp_path / "pins", f"pin={TEST_PIN}\n")
        h = ("--home", str(home), "--pin-file", str(pins))

        def ok(*args: str, stdin: str | None = None) -> str:
            r = run_cli(*args, *h, input=stdin)
            assert r.returncode == 0, (args, r.stdout + r.stderr)
            return r.stdout

        r = run_cli("init", "--module", P11KIT_PROXY, "--token-label", label, "--dev-root", *h)
        assert r.returncode == 0, r.stderr
        ok("kek", "rotate", "--branch", "secrets")
        people = tmp_path / "people"
        people.mkdir()
        for n, role in (("admin", "super-admin"), ("alice", "custodian")):
            write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
            create_participant(n, role, passphrase_of(n), people)
        adds = [a for n in ("admin", "alice") for a in ("--add", str(people / f"{n}.pub.json"))]
        r = run_cli("ceremony", "enrol", "--home", str(home), "--key",
                    str(people / "admin.key.pem"), "--passphrase-file",
                    str(people / "admin.pass"), *adds, "--json")  # fmt: skip
        assert r.returncode == 0, r.stderr

        # the first sealed write creates the MAC key and the counter on the NSS token
        ok("secret", "put", "billing/db/password", "--env", "prod", "--stdin", "--category",
           "database-credential", "--owner", "billing", stdin=CANARY)  # fmt: skip
        objs = token_objects(P11KIT_PROXY, label, TEST_PIN)
        assert any(o.startswith("custody-counter:access-seal-") for o in objs), objs
        assert any(o.startswith("access-seal-") and ":" not in o for o in objs), objs
        ok("principal", "add", "alice", "--role", "service-admin", "--key",
           str(people / "alice.pub.json"), "--service", "billing")  # fmt: skip
        ok(
            "principal",
            "add",
            "billing-svc",
            "--role",
            "service-user",
            "--service-account",
            "--service",
            "billing",
            "--env",
            "prod",
            "--token-out",
            str(tmp_path / "svc.token"),
        )
        r = run_cli("principal", "list", "--json", *h)  # --pin-file: the rows are checked
        assert r.returncode == 0 and "NOT verified" not in r.stderr, r.stderr
        names = [p["name"] for p in json.loads(r.stdout)]
        assert names == ["alice", "billing-svc"], names
        assert CANARY not in r.stdout + r.stderr
        r = run_cli("principal", "list", "--json", "--home", str(home))  # no PIN: said so
        assert r.returncode == 0 and "NOT verified" in r.stderr, r.stderr

        # an older custody.db put back: its seal was valid then, the token's counter is ahead
        db = home / "custody.db"
        old = tmp_path / "old.db"
        _copy(db, old)
        ok(
            "principal",
            "add",
            "later-svc",
            "--role",
            "service-user",
            "--service-account",
            "--service",
            "billing",
            "--env",
            "prod",
            "--token-out",
            str(tmp_path / "l.token"),
        )
        saved = tmp_path / "now.db"
        _copy(db, saved)
        _copy(old, db)
        r = run_cli("principal", "list", "--json", *h)
        assert r.returncode == 6 and "seal" in r.stderr, (r.returncode, r.stdout, r.stderr)
        _copy(saved, db)
        ok("principal", "list", "--json")

        # a row changed on disk: refused by the next sealed read, nothing written
        with sqlite3.connect(db) as c:
            c.execute("UPDATE principals SET role='super-admin' WHERE name='billing-svc'")
        r = run_cli("principal", "list", "--json", *h)
        assert r.returncode == 6 and "seal" in r.stderr, (r.returncode, r.stdout, r.stderr)
        r = run_cli(
            "principal",
            "add",
            "evil",
            "--role",
            "service-user",
            "--service-account",
            "--service",
            "billing",
            "--token-out",
            str(tmp_path / "e.token"),
            *h,
        )
        assert r.returncode == 6, r.stderr
        _copy(saved, db)

        # the audit chain's HMAC seal under a token key of this NSS token
        ok("audit", "checkpoint", "--seal")
        out = ok("audit", "verify")
        assert "VALID" in out, out
