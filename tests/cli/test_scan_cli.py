"""``custody scan``: custody-format keys by checksum and known values by keyed hash, in files,
a git repository's whole history and its staged changes; the project's own test tree gives
no false hit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.rekey_fixtures import cli, make_deployment

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("scan-cli")]
VALUE = "Scan-Canary-" + "3c9d!Hw4#Pn7@Yt"  # never whole in this file: it is scanned too


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    base = tmp_path_factory.mktemp("scan")
    home, pins = make_deployment(base / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    for args, stdin in (
        (("put", "app/db/password", "--stdin", "--category", "database-credential"), VALUE),
        (("generate", "app/stripe/key", "--category", "external-api-key", "--prefix",
          "pay_live"), None),
    ):  # fmt: skip
        r = run_cli("secret", *args, "--env", "prod", "--owner", "app", "--home", str(home),
                    "--pin-file", str(pins), input=stdin)  # fmt: skip
        assert r.returncode == 0, r.stderr
    r = run_cli("secret", "get", "app/stripe/key", "--env", "prod", "--home", str(home),
                "--pin-file", str(pins))  # fmt: skip
    return home, pins, r.stdout


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def scan(home: Path, pins: Path, *args: str):
    r = run_cli("scan", *args, "--home", str(home), "--pin-file", str(pins), "--json")
    return r, (json.loads(r.stdout) if r.stdout.strip() else {})


def test_a_key_committed_three_commits_back_is_found(dep, tmp_path: Path):
    home, pins, key = dep
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "settings.py").write_text(f"DEBUG = False\nSTRIPE_KEY = '{key}'\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "settings")
    (repo / "settings.py").write_text("DEBUG = False\nSTRIPE_KEY = os.environ['STRIPE']\n")
    git(repo, "commit", "-qam", "read the key from the environment")
    for i in range(2):
        (repo / f"n{i}.txt").write_text(f"note {i}\n")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"note {i}")
    assert key not in (repo / "settings.py").read_text()  # gone from the tree...
    r, out = scan(home, pins, str(repo), "--git")
    assert r.returncode == 1, r.stderr
    first = subprocess.run(["git", "-C", str(repo), "rev-list", "--max-parents=0", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    kinds = {(h["kind"], h["file"], h["line"], h["commit"]) for h in out["hits"]}
    # ...but found in history, by format and by value, in the first commit, line 2
    assert ("custody-key", "settings.py", 2, first) in kinds
    assert ("known-value", "settings.py", 2, first) in kinds
    assert key not in r.stdout + r.stderr  # the report never repeats the value


def test_a_known_value_pasted_into_a_config_file_and_the_pre_commit_hook(dep, tmp_path: Path):
    home, pins, _ = dep
    cfg = tmp_path / "app"
    cfg.mkdir()
    (cfg / "config.yaml").write_text(f'db:\n  host: db1\n  password: "{VALUE}"\n')
    r = run_cli("scan", str(cfg), "--home", str(home), "--pin-file", str(pins))
    assert r.returncode == 1 and "app/db/password" in r.stdout
    assert "config.yaml:3" in r.stdout and "--emergency" in r.stdout and VALUE not in r.stdout
    audit = (home / "audit.db").read_bytes()
    assert b"leak-found" in audit and VALUE.encode() not in audit
    # staged: the hook refuses the commit
    git(cfg, "init", "-q")
    git(cfg, "add", "config.yaml")
    r, out = scan(home, pins, str(cfg), "--staged")
    assert r.returncode == 1 and out["hits"][0]["secret"] == "prod:app/db/password"


def test_the_projects_own_tree_gives_no_false_hit(dep):
    home, pins, _ = dep
    r, out = scan(home, pins, str(ROOT / "tests"), str(ROOT / "custody"), str(ROOT / "docs"))
    assert r.returncode == 0, out
    assert out["hits"] == [] and out["known_values"] == 2
    r = run_cli("scan", str(ROOT / "tests"), "--keys-only", "--home", str(home))
    assert r.returncode == 0 and "no leaks found" in r.stdout
