"""Commands that run without the token PIN cannot check the access seal, and say so: a
warning on stderr (text and JSON mode alike), and ``"access_seal": "unverified"`` in a
JSON document (a JSON list keeps its shape). The disk operator edits a principal's role in
custody.db: the listing without the PIN shows the edit but flags it unverified, and the
first command with the PIN refuses. Real subprocesses on one SoftHSMv2 deployment."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import run_cli
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
PATH = "billing/db/password"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("unverified")
    home, pins = make_deployment(root / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home),
                "--pin-file", str(pins), input="Unverified-Canary-7q!Lw2#")  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-user",
        "--service-account", "--service", "billing", "--token-out", str(root / "t"))  # fmt: skip
    return home, pins


def test_listings_given_the_pin_check_the_rows_and_say_so(dep):
    home, pins = dep
    for args in (("principal", "show", "billing-svc"), ("principal", "list"),
                 ("access", "grants"), ("access", "requests"), ("mfa", "list"),
                 ("secret", "list")):  # fmt: skip
        r = run_cli(*args, "--json", "--home", str(home), "--pin-file", str(pins))
        assert r.returncode == 0, (args, r.stderr)
        assert "NOT verified" not in r.stderr, args
        doc = json.loads(r.stdout)
        if isinstance(doc, dict):
            assert doc["access_seal"] == "checked", args


def test_commands_without_the_pin_say_the_rows_are_unverified(dep):
    home, _pins = dep
    h = ("--home", str(home))
    show = run_cli("principal", "show", "billing-svc", "--json", *h)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["access_seal"] == "unverified"
    assert "NOT verified" in show.stderr
    for args in (("principal", "list"), ("access", "grants"), ("access", "requests"),
                 ("mfa", "list")):  # fmt: skip
        r = run_cli(*args, "--json", *h)
        assert r.returncode == 0, r.stderr
        assert isinstance(json.loads(r.stdout), list)  # the list keeps its shape
        assert "NOT verified" in r.stderr, args
        text = run_cli(*args, *h)
        assert text.returncode == 0 and "NOT verified" in text.stderr, args
    req = run_cli("access", "request", PATH, "--env", "prod", "--for", "10m", "--why",
                  "deploy", "--as", "billing-svc", "--json", *h)  # fmt: skip
    assert req.returncode == 0, req.stderr
    doc = json.loads(req.stdout)
    assert doc["access_seal"] == "unverified" and "NOT verified" in req.stderr
    shown = run_cli("access", "show", doc["id"], *h)
    assert json.loads(shown.stdout)["access_seal"] == "unverified"


def test_an_edited_role_is_flagged_unverified_without_the_pin_and_refused_with_it(dep):
    home, pins = dep
    db = sqlite3.connect(home / "custody.db")
    with db:
        db.execute("UPDATE principals SET role='service-admin' WHERE name='billing-svc'")
    db.close()
    try:
        r = run_cli("principal", "show", "billing-svc", "--json", "--home", str(home))
        doc = json.loads(r.stdout)
        assert doc["role"] == "service-admin" and doc["access_seal"] == "unverified"
        got = run_cli("secret", "get", PATH, "--env", "prod", "--home", str(home),
                      "--pin-file", str(pins), "--as", "billing-svc")  # fmt: skip
        assert got.returncode == 6 and "fail their seal" in got.stderr
        # the listings given --pin-file check the rows before they show them
        for args in (("principal", "show", "billing-svc"), ("principal", "list"),
                     ("access", "grants"), ("access", "requests"), ("mfa", "list"),
                     ("secret", "list")):  # fmt: skip
            r = run_cli(*args, "--json", "--home", str(home), "--pin-file", str(pins))
            assert r.returncode == 6 and "fail their seal" in r.stderr, (args, r.stderr)
            assert "service-admin" not in r.stdout, args
    finally:
        db = sqlite3.connect(home / "custody.db")
        with db:
            db.execute("UPDATE principals SET role='service-user' WHERE name='billing-svc'")
        db.close()
