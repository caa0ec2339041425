"""Real PKCS#11 tokens other than SoftHSMv2, for the portability tests.

* NSS softokn through the p11-kit proxy. python-pkcs11 calls C_Initialize(NULL), and NSS
  softokn needs its configuration in CK_C_INITIALIZE_ARGS.pReserved, so it is reached
  through p11-kit, whose module file passes it (``x-init-reserved``). p11-kit ignores the
  user config of a program run as root, so the module file goes in /etc/pkcs11/modules/
  and is removed at teardown. The proxy loads one instance per library path, so each
  token gets its own copy of libsoftokn3.so. The NSS database password is the token's user
  PIN; ``certutil`` reads it from a file (never argv).
* opencryptoki's soft token (slot 3), which needs its daemon ``pkcsslotd``: the fixture
  resets the soft token's state, starts the daemon, initialises the token with throwaway
  test PINs (``pkcsconf`` takes PINs on argv: test fixtures only) and stops the daemon at
  teardown.

Each helper skips the test (with the reason) when the machine lacks the packages or the
rights; ``make system`` installs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

P11KIT_PROXY = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"
SOFTOKN = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"
MODULES_DIR = Path("/etc/pkcs11/modules")
OPENCRYPTOKI = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
OCK_SLOT = 3  # the soft token (swtok) in opencryptoki's default config
OCK_DEFAULT_SO_PIN = "87654321"


def _need(paths: tuple[str, ...], tools: tuple[str, ...]) -> None:
    missing = [p for p in paths if not Path(p).exists()] + [
        t for t in tools if shutil.which(t) is None
    ]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make system installs them)")


@contextmanager
def nss_token(root: Path, pin: str, label: str | None = None) -> Iterator[str]:
    """An NSS softokn token labelled *label* (default: a fresh one) with user PIN *pin*,
    reachable through the p11-kit proxy while the block runs. Yields the label."""
    _need((P11KIT_PROXY, SOFTOKN), ("certutil",))
    label = label or f"nss-{uuid.uuid4().hex[:10]}"
    try:
        MODULES_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        pytest.skip(f"cannot write {MODULES_DIR}: {exc}")
    root.mkdir(parents=True, exist_ok=True)
    db = root / "nssdb"
    db.mkdir()
    lib = root / "libsoftokn3.so"
    shutil.copy2(SOFTOKN, lib)
    pw = root / "nss.pw"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    try:
        subprocess.run(
            ["certutil", "-N", "-d", f"sql:{db}", "-f", str(pw)],
            check=True,
            capture_output=True,
        )
    finally:
        pw.unlink()
    module_file = MODULES_DIR / f"custody-test-{label}.module"
    module_file.write_text(
        f"module: {lib}\n"
        f"x-init-reserved: configdir='sql:{db}' certPrefix='' keyPrefix='' secmod='' "
        "flags= updatedir='' manufacturerID='Mozilla' libraryDescription='NSS softokn' "
        f"cryptoTokenDescription='nss-crypto' dbTokenDescription='{label}' "
        "cryptoSlotDescription='nss crypto slot' dbSlotDescription='nss db slot'\n",
        encoding="utf-8",
    )
    try:
        yield label
    finally:
        module_file.unlink(missing_ok=True)


OCK_STATE = Path("/var/lib/opencryptoki/swtok")
OCK_PIDFILE = Path("/var/run/pkcsslotd.pid")


def _slotd_pid() -> int | None:
    """The running pkcsslotd's pid, or None (no pid file, or a stale one)."""
    try:
        pid = int(OCK_PIDFILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _stop_slotd() -> None:
    pid = _slotd_pid()
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _reset_swtok() -> None:
    for name in ("MK_SO", "MK_USER", "NVTOK.DAT"):
        (OCK_STATE / name).unlink(missing_ok=True)
    shutil.rmtree(OCK_STATE / "TOK_OBJ", ignore_errors=True)
    (OCK_STATE / "TOK_OBJ").mkdir(parents=True, exist_ok=True)
    Path("/dev/shm/var.lib.opencryptoki.swtok").unlink(missing_ok=True)


@contextmanager
def opencryptoki_token(so_pin: str, user_pin: str, label: str = "ocktest") -> Iterator[str]:
    """opencryptoki's soft token, freshly initialised as *label*, with pkcsslotd running
    for the block (started and stopped here). Yields the label."""
    _need((OPENCRYPTOKI,), ("pkcsslotd", "pkcsconf"))
    if os.geteuid() != 0:
        pytest.skip("opencryptoki's soft token needs root to reset its state here")
    if _slotd_pid() is not None:
        pytest.skip("pkcsslotd is already running (not started by the tests); not touching it")
    OCK_PIDFILE.unlink(missing_ok=True)  # stale: pkcsslotd leaves it behind
    for d in ("swtok", "ccatok", "lite", "tpm", "icsf", "ep11tok", "cca"):
        p = Path("/var/lock/opencryptoki") / d
        p.mkdir(parents=True, exist_ok=True, mode=0o770)
    _reset_swtok()
    started = subprocess.run(["pkcsslotd"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        pytest.skip(f"pkcsslotd did not start: {started.stderr.strip()[-200:]}")

    def conf(*args: str, stdin: str = "") -> None:
        r = subprocess.run(
            ["pkcsconf", "-c", str(OCK_SLOT), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"pkcsconf {args[0]} failed: {r.stderr.strip()[-200:]}")

    try:
        # Throwaway PINs on argv: pkcsconf has no other way; test fixtures only.
        conf("-I", "-S", OCK_DEFAULT_SO_PIN, stdin=label + "\n")
        conf("-P", "-S", OCK_DEFAULT_SO_PIN, "-n", so_pin)
        conf("-u", "-S", so_pin, "-n", user_pin)
        conf("-p", "-U", user_pin, "-n", user_pin[::-1])
        conf("-p", "-U", user_pin[::-1], "-n", user_pin)
        yield label
    finally:
        _stop_slotd()
        _reset_swtok()


def token_objects(module: str, label: str, pin: str) -> list[str]:
    """Labels of every object on a token, read in a child process (the test process keeps
    to SoftHSM: the p11-kit proxy would load the system's softhsm2 module beside it)."""
    code = (
        "import sys, pkcs11\n"
        "lib = pkcs11.lib(sys.argv[1])\n"
        "tok = lib.get_token(token_label=sys.argv[2])\n"
        "with tok.open(user_pin=sys.stdin.read().strip()) as s:\n"
        "    print('\\n'.join(sorted(str(o.label) for o in s.get_objects())))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, module, label],
        input=pin,
        capture_output=True,
        text=True,
        check=True,
    )
    return [ln for ln in r.stdout.splitlines() if ln]
