"""Attacks on how the CLI picks its principal (--as, $CUSTODY_TOKEN, --token-file), as real
subprocesses on one SoftHSMv2 deployment: a token file others can read, a wrong or revoked
token, --as a revoked principal, a token bound to prod reading dev, and whether any output,
error or listing carries a token, its hash or a value."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli
from tests.rekey_fixtures import cli, make_deployment

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("attacks-access-cli")]
CANARY = "Attack-Canary-3k8!Vb5#Qm2@Zx"
PATH = "billing/db/password"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("attack-cli")
    home, pins = make_deployment(root / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    for env in ("prod", "dev"):
        r = run_cli("secret", "put", PATH, "--env", env, "--stdin", "--category",
                    "database-credential", "--owner", "billing", "--home", str(home),
                    "--pin-file", str(pins), input=CANARY + env)  # fmt: skip
        assert r.returncode == 0, r.stderr
    tok = root / "svc.token"
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-admin",
        "--service-account", "--service", "billing", "--env", "prod",
        "--token-out", str(tok))  # fmt: skip
    return home, pins, tok, tok.read_text().strip()


def _get(home: Path, pins: Path, env: str, *who: str, environ: dict | None = None):
    return run_cli("secret", "get", PATH, "--env", env, "--home", str(home), "--pin-file",
                   str(pins), *who, env=environ)  # fmt: skip


def _clean(r, token: str) -> None:
    secret = token.split("_", 2)[2]  # the secret itself may hold "_"
    for text in (r.stdout, r.stderr):
        assert secret not in text and CANARY not in text


def test_a_token_bound_to_prod_reads_prod_only_and_never_says_what_dev_holds(dep):
    home, pins, tok, token = dep
    ok = _get(home, pins, "prod", "--token-file", str(tok))
    assert ok.returncode == 0 and ok.stdout == CANARY + "prod", ok.stderr
    there = _get(home, pins, "dev", "--token-file", str(tok))
    nothing = run_cli("secret", "get", "billing/none", "--env", "dev", "--home", str(home),
                      "--pin-file", str(pins), "--token-file", str(tok))  # fmt: skip
    assert there.returncode == nothing.returncode == 7
    assert there.stderr.replace(PATH, "P") == nothing.stderr.replace("billing/none", "P")
    _clean(there, token)
    r = run_cli("secret", "list", "--home", str(home), "--token-file", str(tok), "--json")
    assert r.returncode == 0, r.stderr
    assert {(i["env"], i["path"]) for i in json.loads(r.stdout)} == {("prod", PATH)}


def test_a_token_file_others_can_read_is_refused_and_nothing_is_read(dep, tmp_path):
    home, pins, _tok, token = dep
    loose = tmp_path / "loose.token"
    loose.write_text(token + "\n")
    os.chmod(loose, 0o644)
    r = _get(home, pins, "prod", "--token-file", str(loose))
    assert r.returncode != 0 and "chmod 600" in r.stderr
    _clean(r, token)


def test_a_wrong_token_in_the_environment_is_refused_without_echo(dep):
    home, pins, _tok, token = dep
    bad = token[:-5] + ("AAAAA" if not token.endswith("AAAAA") else "BBBBA")
    r = _get(home, pins, "prod", environ=cli_env(CUSTODY_TOKEN=bad))
    assert r.returncode == 7 and "token was refused" in r.stderr
    _clean(r, bad)
    both = _get(home, pins, "prod", "--as", "billing-svc",
                environ=cli_env(CUSTODY_TOKEN=token))  # fmt: skip
    assert both.returncode != 0 and "not both" in both.stderr
    _clean(both, token)


def test_listings_never_show_a_token_or_its_hash(dep):
    home, _pins, _tok, token = dep
    secret = token.split("_", 2)[2]  # the secret itself may hold "_"
    for args in (("principal", "list", "--json"), ("principal", "show", "billing-svc", "--json")):
        r = run_cli(*args, "--home", str(home))
        assert r.returncode == 0, r.stderr
        assert secret not in r.stdout and "hash" not in r.stdout and "salt" not in r.stdout


def test_a_revoked_principal_is_refused_by_token_and_by_name(dep):
    home, pins, tok, token = dep
    cli(home, pins, "principal", "revoke", "billing-svc")
    r = _get(home, pins, "prod", "--token-file", str(tok))
    assert r.returncode == 7 and CANARY not in r.stdout
    r = _get(home, pins, "prod", "--as", "billing-svc")
    assert r.returncode == 7 and "revoked" in r.stderr and CANARY not in r.stdout
    _clean(r, token)


def test_a_principal_written_into_custody_db_is_refused_until_resealed(tmp_path: Path):
    """The disk operator (no PIN) writes a service principal with a token of their own
    into custody.db: every command that opens the token refuses (exit 6, audited); the PIN
    holder's 'custody access seal' is what would accept the rows as they are."""
    import sqlite3

    from custody.access import tokens as tk

    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home),
                "--pin-file", str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-user",
        "--service-account", "--service", "billing",
        "--token-out", str(tmp_path / "t"))  # fmt: skip
    m = tk.mint()
    db = sqlite3.connect(home / "custody.db")
    with db:
        db.execute(
            "INSERT INTO principals(name, kind, role, services, envs, token_id, token_salt, "
            "token_hash, token_created, created, created_by) VALUES('ghost', 'service', "
            "'service-admin', 'billing', '', ?, ?, ?, 0, 0, 'root')",
            (m.token_id, m.salt, m.digest),
        )
    db.close()
    ghost = tmp_path / "ghost.token"
    ghost.write_text(m.token)
    ghost.chmod(0o600)
    r = _get(home, pins, "prod", "--token-file", str(ghost))
    assert r.returncode == 6 and "fail their seal" in r.stderr and CANARY not in r.stdout
    r = _get(home, pins, "prod")  # the operator's own reads are refused too: nothing decides
    assert r.returncode == 6 and CANARY not in r.stdout
    log = run_cli("audit", "tail", "--home", str(home), "--json")
    assert '"access seal"' in log.stdout and '"failed"' in log.stdout
    r = run_cli("access", "seal", "--home", str(home), "--pin-file", str(pins), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["sealed"]["principals"] == 2, r.stderr
    assert _get(home, pins, "prod", "--token-file", str(ghost)).returncode == 0


def _home_with_secret(tmp_path: Path) -> tuple[Path, Path]:
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home),
                "--pin-file", str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return home, pins


def test_a_secret_downgraded_in_custody_db_is_refused(tmp_path: Path):
    """The disk operator lowers a secret's class (fewer approvers, no TOTP to read it):
    the class was sealed when 'secret put' created it, so every decision refuses."""
    import sqlite3

    home, pins = _home_with_secret(tmp_path)
    db = sqlite3.connect(home / "custody.db")
    (cls,) = db.execute("SELECT class FROM secrets WHERE path=?", (PATH,)).fetchone()
    assert cls == "high"
    with db:
        db.execute("UPDATE secrets SET class='low' WHERE path=?", (PATH,))
    db.close()
    r = _get(home, pins, "prod")
    assert r.returncode == 6 and "changed its class" in r.stderr and CANARY not in r.stdout


def test_custody_db_put_back_from_a_copy_after_a_revocation_is_refused(tmp_path: Path):
    """Copy custody.db (with the seal it holds), revoke a service principal with the PIN,
    put the copy back: the revoked token must not work again (the token's generation
    counter is ahead of the copy's seal)."""
    import shutil

    home, pins = _home_with_secret(tmp_path)
    tok = tmp_path / "svc.token"
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-admin",
        "--service-account", "--service", "billing", "--token-out", str(tok))  # fmt: skip
    assert _get(home, pins, "prod", "--token-file", str(tok)).returncode == 0
    copy = tmp_path / "custody.db.copy"
    shutil.copy2(home / "custody.db", copy)
    cli(home, pins, "principal", "revoke", "billing-svc")
    assert _get(home, pins, "prod", "--token-file", str(tok)).returncode == 7
    for extra in ("-wal", "-shm"):
        (home / f"custody.db{extra}").unlink(missing_ok=True)
    shutil.copy2(copy, home / "custody.db")
    r = _get(home, pins, "prod", "--token-file", str(tok))
    assert r.returncode == 6 and "rolled back" in r.stderr and CANARY not in r.stdout
    log = run_cli("audit", "tail", "--home", str(home), "--json")
    assert '"access seal"' in log.stdout and "rolled back" in log.stdout


def test_a_changed_deployment_id_with_the_seal_deleted_is_not_a_first_use(tmp_path: Path):
    """The seal's token key and counter are named after the deployment id, which lives on
    the disk (custody.toml and the store). The disk operator writes a principal of their
    own, changes the id in both places and deletes the seal's rows, so that the next
    token-open command would take the home for one never sealed and seal the rows as they
    are. The home's token already anchors a seal: that is refused, and the ghost's token
    never works."""
    import re
    import sqlite3

    from custody.access import tokens as tk

    home, pins = _home_with_secret(tmp_path)
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-user",
        "--service-account", "--service", "billing",
        "--token-out", str(tmp_path / "t"))  # fmt: skip
    m = tk.mint()
    new_id = "f" * 32
    db = sqlite3.connect(home / "custody.db")
    with db:
        db.execute(
            "INSERT INTO principals(name, kind, role, services, envs, token_id, token_salt, "
            "token_hash, token_created, created, created_by) VALUES('ghost', 'service', "
            "'service-admin', 'billing', '', ?, ?, ?, 0, 0, 'root')",
            (m.token_id, m.salt, m.digest),
        )
        db.execute("DELETE FROM meta WHERE key LIKE 'access_seal%'")
        db.execute("UPDATE meta SET value=? WHERE key='deployment_id'", (new_id,))
    db.close()
    conf = home / "custody.toml"
    text, n = re.subn(r'(?m)^id = "[0-9a-f]+"', f'id = "{new_id}"', conf.read_text())
    assert n == 1
    conf.write_text(text)
    ghost = tmp_path / "ghost.token"
    ghost.write_text(m.token)
    ghost.chmod(0o600)
    for _ in range(2):  # refused, and nothing was sealed by the refusal
        r = _get(home, pins, "prod", "--token-file", str(ghost))
        assert r.returncode == 6 and "another deployment id" in r.stderr, r.stderr
        assert CANARY not in r.stdout
    r = _get(home, pins, "prod")
    assert r.returncode == 6 and CANARY not in r.stdout
    log = run_cli("audit", "tail", "--home", str(home), "--json")
    assert '"access seal"' in log.stdout and "another deployment id" in log.stdout
