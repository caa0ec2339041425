"""Issue 15 acceptance: a canary planted in 100 secrets never leaks.

One deployment on a real SoftHSMv2 token holds 100 secrets whose values all carry the
canary (planted through the library, as the CLI's ``secret put`` stores them). Then every
``custody secret`` command runs over them as a subprocess, with ``--json`` and without:
list, show, versions, due, get (the one place a value is meant to show: stdout of that
command), rotate, delete, restore, export to a recipient, and ``backup create --secrets``
with its restore test, then ``audit tail`` and ``audit verify``. The canary must never
appear in any child's argv, in any other output, in the audit log, the store's bytes, the
export bundle, the backup, the alert hook's file, or a ``repr``.
"""

from __future__ import annotations

import json

import pytest

from ceremonies.participants import create_participant
from custody.config import Home
from custody.deployment import open_deployment
from custody.secrets.categories import Category
from custody.secrets.operator import operator_vault
from tests.conftest import TEST_PIN, passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
CANARY = "Canary100-9d2f!Kq7#Wm4@Xe1$"
N = 100
CATS = (Category.DATABASE_CREDENTIAL, Category.SERVICE_CREDENTIAL, Category.CONFIGURATION_SECRET)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary100")
    home, pins = make_deployment(root / "d", backup_kek=True)
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    hook = root / "alerts.jsonl"
    conf = home / "custody.toml"
    conf.write_text(
        conf.read_text().replace("[policy]", f'[policy]\nalert_hook = "tee -a {hook}"', 1)
    )
    people = root / "people"
    people.mkdir()
    for n in ("sam", "rita"):
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, "super-admin", passphrase_of(n), people)
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "sam.key.pem"),
                "--passphrase-file", str(people / "sam.pass"), "--add",
                str(people / "sam.pub.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    h = Home(home)
    with open_deployment(h, TEST_PIN) as dep:
        vault = operator_vault(dep, h)
        for i in range(N):
            w = vault.put(
                "prod",
                f"svc{i % 10}/item{i}/secret",
                f"{CANARY}{i:03d}",
                category=CATS[i % len(CATS)],
                owner=f"team{i % 4}",
            )
            assert CANARY not in repr(w)
        got = vault.get("prod", "svc0/item0/secret")
        assert got.value == f"{CANARY}000" and CANARY not in repr(got) + repr(vault)
    return {"home": home, "pins": pins, "people": people, "hook": hook, "root": root}


def _leaks(text: str) -> bool:
    return CANARY in text or CANARY[:12] in text


def test_every_secret_command_over_a_hundred_canaries(world):
    home, pins, people, root = world["home"], world["pins"], world["people"], world["root"]
    base = ("--home", str(home))
    one = "svc3/item3/secret"
    runs = []

    def run(*args: str, ok: bool = True, value_out: bool = False, pin: bool = False):
        r = run_cli(*args, *base, *(("--pin-file", str(pins)) if pin else ()))
        runs.append(r)
        assert not _leaks(" ".join(r.args)), r.args  # never in argv
        if ok:
            assert r.returncode == 0, r.stderr
        assert not _leaks(r.stderr), r.stderr
        if not value_out:
            assert not _leaks(r.stdout), (args, r.stdout[:400])
        return r

    for fmt in ((), ("--json",)):
        listed = run("secret", "list", "--env", "prod", *fmt)
        if fmt:
            assert len(json.loads(listed.stdout)) == N
        run("secret", "show", one, "--env", "prod", *fmt)
        run("secret", "versions", one, "--env", "prod", *fmt)
        run("secret", "due", *fmt)
    got = run("secret", "get", one, "--env", "prod", "--json", value_out=True, pin=True)
    assert json.loads(got.stdout)["value"] == f"{CANARY}003"  # the one place it shows
    run("secret", "rotate", one, "--env", "prod", "--key", str(people / "sam.key.pem"),
        "--passphrase-file", str(people / "sam.pass"), "--json", pin=True)  # fmt: skip
    run("secret", "delete", "svc4/item4/secret", "--env", "prod", "--json")
    refused = run("secret", "get", "svc4/item4/secret", "--env", "prod", ok=False, pin=True)
    assert refused.returncode != 0  # a read in the recovery window: refused and an alert
    run("secret", "restore", "svc4/item4/secret", "--env", "prod", "--json")
    bundle = root / "bundle.json"
    run("secret", "export", "svc5/item5/secret", "svc6/item6/secret", "--env", "prod",
        "--to", str(people / "rita.pub.json"), "--key", str(people / "sam.key.pem"),
        "--passphrase-file", str(people / "sam.pass"), "--out", str(bundle), "--json",
        pin=True)  # fmt: skip
    backup = root / "secrets.backup"
    run("backup", "create", "--secrets", "--out", str(backup), "--json", pin=True)
    run("backup", "test-restore", str(backup), "--json", pin=True)
    for fmt in ((), ("--json",)):
        run("audit", "tail", "-n", "500", *fmt)
    run("audit", "verify")

    files = {
        "audit.db": home / "audit.db",
        "custody.db": home / "custody.db",
        "export bundle": bundle,
        "backup": backup,
        "alert hook": world["hook"],
    }
    assert world["hook"].exists() and "svc4/item4/secret" in world["hook"].read_text()
    for name, f in files.items():
        data = f.read_bytes()
        assert CANARY.encode() not in data and CANARY[:12].encode() not in data, name
    for p in home.rglob("*"):  # nothing else custody wrote under the home holds it either
        if p.is_file() and p.stat().st_size < 64 << 20:
            assert CANARY[:12].encode() not in p.read_bytes(), p
    assert len(runs) >= 18
