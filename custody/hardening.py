"""Process hygiene: no core dumps from a process that may hold keys, and lean child
environments.

A custody process can hold the recovery key RK, shares, PINs and KEK plaintext in memory.
A core dump (a crash, ``kill -QUIT``, ``gcore``) would write all of it to disk, readable
by whoever collects crash reports. :func:`harden_process` turns that off, early, in every
entry point (the CLI, which also starts the TUI, and the ceremony child processes):

- ``RLIMIT_CORE`` is set to 0, soft and hard, so the process and its children cannot raise
  it again (POSIX ``setrlimit``; inherited across ``fork`` and ``exec``).
- On Linux, ``prctl(PR_SET_DUMPABLE, 0)`` as well. That also stops ``systemd-coredump`` and
  other ``core_pattern`` pipes (which ignore ``RLIMIT_CORE``), and stops another process of
  the same user from attaching with ``ptrace`` or reading ``/proc/PID/mem``. The flag is
  reset by ``execve``, so a Python child calls :func:`harden_process` itself.
- Elsewhere (macOS, BSD) only the rlimit applies; the result says so. On Windows neither
  exists; the result says so and nothing is done.

Child processes (``softhsm2-util``, the drill's scratch-token builder, the demo's CLI
steps, the alert hook) get :func:`child_env`: an allow-list, so a PIN given through
``CUSTODY_PIN``, a passphrase through ``CUSTODY_PASSPHRASE``, or an ``LD_PRELOAD`` never
reaches them.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_PDEATHSIG = 1

BASE_ENV: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    "SYSTEMROOT",  # Windows needs it to start any process
)
PYTHON_ENV: tuple[str, ...] = ("PYTHONPATH",)
HOOK_ENV: tuple[str, ...] = (
    "HOME",
    "USER",
    "LOGNAME",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hardening:
    """What :func:`harden_process` achieved.

    Attributes:
        core_limit_zero: ``RLIMIT_CORE`` is 0 (soft and hard).
        not_dumpable: ``PR_SET_DUMPABLE`` is 0 (Linux only; False elsewhere).
        notes: why a measure is missing, one line each (empty when both hold).
    """

    core_limit_zero: bool
    not_dumpable: bool
    notes: tuple[str, ...]


def _set_core_limit() -> str | None:
    try:
        import resource
    except ImportError:
        return "no RLIMIT_CORE on this platform (not POSIX); core dumps are not limited"
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        return f"setrlimit(RLIMIT_CORE, 0) failed: {exc}"
    return None


def _set_not_dumpable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"PR_SET_DUMPABLE is Linux-only (this is {sys.platform}); only RLIMIT_CORE applies"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError) as exc:
        return f"prctl is not available: {exc}"
    prctl.restype = ctypes.c_int
    zero = ctypes.c_ulong(0)
    if prctl(PR_SET_DUMPABLE, zero, zero, zero, zero) != 0:
        return f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(ctypes.get_errno())}"
    if prctl(PR_GET_DUMPABLE, zero, zero, zero, zero) != 0:
        return "prctl(PR_SET_DUMPABLE, 0) did not take effect"
    return None


def die_with_parent(sig: int) -> bool:
    """Linux: have the kernel send *sig* to this process when its parent dies, so that a
    pre-forked server child does not outlive its supervisor. False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    prctl.restype = ctypes.c_int
    zero = ctypes.c_ulong(0)
    return bool(prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), zero, zero, zero) == 0)


def harden_process() -> Hardening:
    """Forbid core dumps of this process (and, on Linux, ptrace by same-user processes).

    Safe to call more than once. Never raises: a measure the platform lacks is reported in
    :attr:`Hardening.notes`.

    Returns:
        A :class:`Hardening` saying what holds.
    """
    core_note, dump_note = _set_core_limit(), _set_not_dumpable()
    return Hardening(
        core_limit_zero=core_note is None,
        not_dumpable=dump_note is None,
        notes=tuple(n for n in (core_note, dump_note) if n),
    )


def child_env(
    *,
    keep: Iterable[str] = (),
    python: bool = False,
    extra: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a child process: an allow-list of the parent's, plus *extra*.

    Args:
        keep: further variable names to pass through (for example :data:`HOOK_ENV`).
        python: also pass :data:`PYTHON_ENV` (a Python child that imports custody).
        extra: variables to set in the child (for example ``SOFTHSM2_CONF``).
        environ: the parent's environment (default ``os.environ``).

    Returns:
        A new dict; nothing else of the parent's environment is in it.
    """
    src = os.environ if environ is None else environ
    names = (*BASE_ENV, *(PYTHON_ENV if python else ()), *keep)
    env = {k: src[k] for k in names if k in src}
    env.update(extra or {})
    return env
