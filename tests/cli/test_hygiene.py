"""Issue 11, items 7 and 8, through the CLI as a subprocess (and a real generate ceremony
on a SoftHSMv2 token): a leftover ``.tmp`` or a planted link never receives or redirects a
share; PIN and passphrase files others can read are refused with a ``chmod 600`` hint;
core dumps are off in live CLI, TUI and scratch-child processes; weak new passphrases are
refused with zxcvbn's reason, never the passphrase. The writer itself is tested in
tests/custody/test_privatefile.py, child environments in tests/custody/test_hardening.py."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ceremony_fixtures import CUST, build_enrolled
from tests.conftest import ROOT, TEST_PIN, TEST_SO_PIN, cli_env, run_cli, write_secret

SHARE_PW = "ochre pylon marsh 4417 velvet"


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture(scope="module")
def share_words() -> str:
    r = run_cli("shamir", "split", "--threshold", "2", "--shares", "3", input="ab" * 16 + "\n")
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[0]


def test_cli_unseal_never_writes_through_a_link(tmp_path, share_words):
    from custody.shares import seal

    pw = write_secret(tmp_path / "pw", SHARE_PW + "\n")
    sealed = tmp_path / "share.sealed"
    fast = seal.Argon2Params(memory_kib=64, iterations=1, lanes=1)
    sealed.write_bytes(seal.seal_with_passphrase(share_words, SHARE_PW.encode(), params=fast))
    loot = tmp_path / "loot"
    loot.write_bytes(b"")
    out = tmp_path / "share.txt"
    out.symlink_to(loot)
    r = run_cli("share", "unseal", str(sealed), "--passphrase-file", str(pw), "--out", str(out))
    assert r.returncode == 4, r.stderr
    assert "symbolic link" in r.stderr and share_words.split()[3] not in r.stdout + r.stderr
    assert loot.read_bytes() == b"" and out.is_symlink()
    out.unlink()
    r = run_cli("share", "unseal", str(sealed), "--passphrase-file", str(pw), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text().strip() == share_words and _mode(out) == 0o600


@pytest.mark.hsm
def test_generate_share_files_ignore_leftover_tmp_and_refuse_links(tmp_path):
    """A real generate ceremony: a stale world-readable ``NAME.share.txt.tmp`` and a link at
    another ``.tmp`` name neither receive a share nor widen its mode; a link at a final name
    refuses the step before any share is written."""
    d, _ = build_enrolled(tmp_path / "dep")
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    cust = [a for n in CUST for a in ("--custodian", n)]

    out = d.root / "shares"
    out.mkdir(mode=0o700)
    (out / "alice.share.txt.tmp").write_text("stale\n")
    (out / "alice.share.txt.tmp").chmod(0o644)
    (out / "bob.share.txt.tmp").symlink_to(attacker / "bob-loot")
    r = d.ceremony("generate", *d.coord(), *cust, "--threshold", "3", "--out", str(out))
    assert r.returncode == 10, r.stderr
    for n in CUST:
        share = out / f"{n}.share.txt"
        assert not share.is_symlink() and _mode(share) == 0o600, n
        assert len(share.read_text().split()) >= 20
    assert list(attacker.iterdir()) == []
    assert (out / "alice.share.txt.tmp").read_text() == "stale\n"
    assert r.out["ceremony_id"]

    out2 = d.root / "shares2"
    out2.mkdir(mode=0o700)
    (out2 / "carol.share.txt").symlink_to(attacker / "carol-loot")
    abort = d.ceremony("abort", r.out["ceremony_id"], *d.coord())
    assert abort.returncode == 0, abort.stderr
    r2 = d.ceremony("generate", *d.coord(), *cust, "--threshold", "3", "--out", str(out2))
    assert r2.returncode == 4, r2.stdout + r2.stderr
    assert "symbolic link" in r2.stderr
    assert list(attacker.iterdir()) == []
    assert sorted(p.name for p in out2.iterdir()) == ["carol.share.txt"]  # nothing written


def test_world_readable_pin_file_is_refused_with_chmod_hint_and_nothing_changes(tmp_path):
    pins = tmp_path / "pins"
    pins.write_text(f"pin={TEST_PIN}\nso_pin={TEST_SO_PIN}\n")
    pins.chmod(0o644)
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--json")
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["error"] == "InsecureSecretFile"
    assert f"chmod 600 {pins}" in r.stderr and TEST_PIN not in r.stdout + r.stderr
    assert not (home / "custody.toml").exists() and not (home / "tokens").exists()
    pins.chmod(0o640)  # group-readable is refused too
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins))
    assert r.returncode == 3 and "chmod 600" in r.stderr
    assert not (home / "custody.toml").exists()


def test_world_readable_passphrase_file_is_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(SHARE_PW + "\n")
    pw.chmod(0o604)
    r = run_cli(
        "participant", "new", "alice", "--role", "custodian", "--out", str(tmp_path / "p"),
        "--passphrase-file", str(pw),
    )  # fmt: skip
    assert r.returncode == 3 and f"chmod 600 {pw}" in r.stderr, r.stderr
    assert SHARE_PW not in r.stdout + r.stderr and not (tmp_path / "p").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_pin_file_owned_by_another_user_is_refused(tmp_path):
    from custody.secretsource import InsecureSecretFile, read_secret_file

    f = write_secret(tmp_path / "pins", "pin=1234abcd\n")
    os.chown(f, 65534, 65534)
    with pytest.raises(InsecureSecretFile, match="another user") as ei:
        read_secret_file(f)
    assert "1234abcd" not in str(ei.value) + repr(ei.value)


def _allow_cores() -> None:  # the child starts with core dumps allowed, as a shell might
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def test_core_dumps_are_off_in_a_live_cli_process():
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("this test process cannot allow core dumps, so the check would be vacuous")
    # `shamir combine` waits for shares on stdin: a live CLI process to look at from outside
    proc = subprocess.Popen(
        [sys.executable, "-m", "custody_cli", "shamir", "combine"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        preexec_fn=_allow_cores,
    )
    try:
        limits = ""
        for _ in range(200):
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            line = next(ln for ln in limits.splitlines() if ln.startswith("Max core file size"))
            if line.split()[4:6] == ["0", "0"]:
                break
            time.sleep(0.05)
        assert line.split()[4:6] == ["0", "0"], line
        assert proc.poll() is None  # still running: the limit was read from the live process
    finally:
        proc.kill()
        proc.communicate()


ENTRY_POINTS = {
    "cli": "from custody_cli import main\nmain([])\n",
    "tui": "from tui.__main__ import main\nmain(['--home', '/nonexistent-custody-home'])\n",
    "scratch-child": (
        "import io, sys\nsys.stdin = io.StringIO('{}')\n"
        "from ceremonies.runner.scratch import main\n"
        "try:\n    main()\nexcept KeyError:\n    pass\n"
    ),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_cli_process_is_not_dumpable(entry):
    """Each entry point (the CLI's main, the TUI's main, the drill's scratch child) in a
    fresh interpreter that starts with core dumps allowed: afterwards the process reports
    itself non-dumpable (prctl) with a zero core limit. Another process of the same user can
    then neither ptrace it nor read /proc/PID/mem."""
    code = ENTRY_POINTS[entry] + (
        "import ctypes, resource\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE),"
        " file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code],
        env=cli_env(),
        capture_output=True,
        text=True,
        preexec_fn=_allow_cores,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "0 (0, 0)", r.stderr


def test_weak_participant_passphrase_is_refused_with_the_reason(tmp_path):
    pw = write_secret(tmp_path / "pw", "alice2024\n")
    out = tmp_path / "p"
    r = run_cli(
        "participant", "new", "alice", "--role", "custodian", "--out", str(out),
        "--passphrase-file", str(pw), "--json",
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    doc = json.loads(r.stdout)
    assert doc["error"] == "WeakPassphrase" and "too weak" in doc["title"]
    assert "10^12" in doc["title"] and doc["hint"]  # zxcvbn's feedback, in the hint
    assert "alice2024" not in r.stdout + r.stderr
    assert not out.exists()


def test_weak_share_passphrase_is_refused_and_nothing_is_sealed(tmp_path, share_words):
    share = tmp_path / "share.txt"
    share.write_text(share_words + "\n")
    pw = write_secret(tmp_path / "pw", "password1\n")
    out = tmp_path / "share.sealed"
    r = run_cli("share", "seal", str(share), "--out", str(out), "--passphrase-file", str(pw))
    assert r.returncode == 2, r.stderr
    assert "too weak" in r.stderr and "common password" in r.stderr  # zxcvbn's warning
    assert "password1" not in r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pw", "share.txt"]  # nothing sealed


def test_strong_passphrases_pass_and_the_bar_is_documented():
    from custody import passphrase

    for good in ("ochre pylon marsh 4417 velvet", "x7Gq-9pLm-Zw2r-K4vT", "alice-ochre-pylon-marsh"):
        passphrase.check_strength(good, what="the test passphrase", user_inputs=("alice",))
    for bad in ("alice-passphrase", "Tr0ub4dor&3", "hunter22", "qwertyuiop1"):
        with pytest.raises(passphrase.WeakPassphrase):
            passphrase.check_strength(bad, what="the test passphrase", user_inputs=("alice",))
    doc = (ROOT / "docs" / "threat-model.md").read_text()
    assert "10^12" in doc and "zxcvbn" in doc
