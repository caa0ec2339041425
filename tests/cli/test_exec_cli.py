"""``custody exec`` as a subprocess: the secret reaches CMD's environment (or a private
0600 file, or a rendered template) and is absent from every argv (/proc/PID/cmdline of
custody and of CMD); a rotation restarts CMD with the new value; the private directory is
gone afterwards, and every read is in the audit log as ``secret get`` via exec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env
from tests.rekey_fixtures import cli, make_deployment
from tests.server_fixtures import audit_entries

pytestmark = pytest.mark.hsm
V1 = "Exec-Canary-4c!Wd8#Jm5@Qt2$Ry7"
V2 = "Exec-Canary-9h!Lx3#Pv6@Bn1$Kz4"
CHILD = r"""
import json, os, sys, time
name = os.environ["DB_PW"]
value = open(name).read() if os.environ.get("MODE") == "files" else name
info = {"pid": os.getpid(), "value": value, "exec_dir": os.environ["CUSTODY_EXEC_DIR"],
        "cmdline": open(f"/proc/{os.getpid()}/cmdline", "rb").read().decode(errors="replace"),
        "pin_seen": any(k.startswith("CUSTODY_P") for k in os.environ)}
if os.environ.get("MODE") == "files":
    info["mode"] = oct(os.stat(name).st_mode & 0o777)
    info["conf"] = open(os.path.join(os.environ["CUSTODY_EXEC_DIR"], "app.conf")).read()
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(info) + "\n")
time.sleep(60)
"""


@pytest.fixture
def dep(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    put(home, pins, V1, "--category", "database-credential", "--owner", "pay")
    return home, pins


def put(home, pins, value, *extra):
    r = subprocess.run(
        [sys.executable, "-m", "custody_cli", "secret", "put", "payments/db", "--env", "prod",
         "--stdin", "--home", str(home), "--pin-file", str(pins), *extra],
        input=value, capture_output=True, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def _lines(out: Path, n: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists():
            got = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
            if len(got) >= n:
                return got
        time.sleep(0.1)
    raise AssertionError(f"CMD did not report {n} times: {out.read_text() if out.exists() else ''}")


def _exec(home, pins, tmp_path, *extra, mode="env"):
    out = tmp_path / f"child-{mode}.jsonl"
    argv = [sys.executable, "-m", "custody_cli", "exec", "--home", str(home), "--pin-file",
            str(pins), "--env", "prod", "--secret", "DB_PW=payments/db", *extra, "--",
            sys.executable, "-c", CHILD, str(out)]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=cli_env(MODE=mode), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return proc, out


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_secret_in_env_never_in_argv_and_a_rotation_restarts_cmd(dep, tmp_path):
    home, pins = dep
    proc, out = _exec(home, pins, tmp_path, "--on-rotate", "restart", "--poll", "0.2")
    try:
        first = _lines(out, 1)[0]
        assert first["value"] == V1 and not first["pin_seen"]
        assert V1 not in first["cmdline"]
        assert V1.encode() not in _cmdline(proc.pid)  # custody's own argv
        assert V1.encode() not in _cmdline(first["pid"])
        put(home, pins, V2)
        second = _lines(out, 2)[1]
        assert second["value"] == V2 and second["pid"] != first["pid"]
        assert not _alive(first["pid"])  # the first CMD was stopped (and reaped)
    finally:
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=60)
    assert "rotated; restarting" in stderr.decode()
    assert V1.encode() not in stderr and V2.encode() not in stderr
    assert not Path(first["exec_dir"]).exists()
    gets = [
        e
        for e in audit_entries(home)
        if e["op"] == "secret get" and e["details"].get("via") == "exec"
    ]
    assert [e["details"]["version"] for e in gets] == [1, 2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_files_mode_and_a_template_in_a_private_tmpfs_directory(dep, tmp_path):
    home, pins = dep
    tpl = tmp_path / "app.conf"
    tpl.write_text("[db]\npassword = custody://prod/payments/db\nuser = pay\n")
    proc, out = _exec(home, pins, tmp_path, "--files", "--template", str(tpl), mode="files")
    try:
        info = _lines(out, 1)[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert info["value"] == V1 and info["mode"] == "0o600"
    assert info["conf"] == f"[db]\npassword = {V1}\nuser = pay\n"
    if Path("/dev/shm").is_dir():
        assert info["exec_dir"].startswith("/dev/shm/custody-exec-")
    assert V1 not in info["cmdline"]
    assert not Path(info["exec_dir"]).exists()  # removed with the files in it


def test_bad_usage_changes_nothing(dep):
    home, pins = dep
    for bad in (["--secret", "lower-case=payments/db"], ["--secret", "NOPATH"], []):
        r = subprocess.run(
            [sys.executable, "-m", "custody_cli", "exec", "--home", str(home), "--pin-file",
             str(pins), "--env", "prod", *bad, "--", "true"],
            capture_output=True, text=True, env=cli_env(), check=False,
        )  # fmt: skip
        assert r.returncode == 2 and "error:" in r.stderr
