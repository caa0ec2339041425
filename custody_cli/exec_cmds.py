"""``custody exec``: run a command with secrets in its environment or in private files.

``custody exec --env prod --secret DB_PASSWORD=payments/db -- CMD ARGS`` reads each secret
(authorised by access control as the acting principal and audited as ``secret get`` with
``via: exec``, like every read) and starts CMD with ``DB_PASSWORD`` in its environment. With
``--files`` each variable holds instead the path of a 0600 file in a private directory on a
tmpfs (``/dev/shm`` when there is one), removed when CMD ends. ``--template FILE`` renders a
config file whose ``custody://ENV/PATH`` references are replaced by the values into that
directory (``$CUSTODY_EXEC_DIR``). A value never appears in an argument list: not CMD's, not
custody's.

With ``--on-rotate restart`` custody watches the secrets' current versions (metadata only,
every ``--poll`` seconds) and, when one changes, reads the new values and restarts CMD;
``--on-rotate signal`` rewrites the files and sends CMD ``--signal`` (HUP by default) instead.
CMD gets custody's own environment without its ``CUSTODY_*`` variables (no PIN, token or
passphrase reaches it). The exit code is CMD's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from custody.errors import UsageError
from custody.privatefile import write_private
from custody_cli import access_session, common

REF = re.compile(r"custody://([a-z0-9][a-z0-9._-]*)/([a-z0-9._/-]+)")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Ref:
    env: str
    path: str


@dataclass
class Fetched:
    values: dict[Ref, str] = field(default_factory=dict, repr=False)
    versions: dict[Ref, int] = field(default_factory=dict)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "exec",
        help="run a command with secrets in its environment or private files; follow rotations",
        description="Run CMD with secrets: --secret NAME=PATH (or NAME=custody://ENV/PATH) "
        "puts the value in $NAME, or with --files the path of a 0600 file on a private tmpfs "
        "directory. --template renders custody://ENV/PATH references in a config file into "
        "that directory ($CUSTODY_EXEC_DIR). Values never appear in argv. Each read is "
        "authorised and audited. --on-rotate restart|signal follows rotations.",
    )
    p.add_argument("--env", metavar="ENV", help="environment of plain PATHs")
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="put the secret at PATH in $NAME (repeat)",
    )
    p.add_argument(
        "--files", action="store_true", help="$NAME is the path of a 0600 file with the value"
    )
    p.add_argument(
        "--template",
        action="append",
        default=[],
        metavar="FILE",
        help="render custody://ENV/PATH references of FILE into $CUSTODY_EXEC_DIR (repeat)",
    )
    p.add_argument(
        "--on-rotate",
        choices=("restart", "signal"),
        help="when a secret's current version changes: restart CMD, or signal it",
    )
    p.add_argument("--signal", default="HUP", metavar="SIG", help="for --on-rotate signal (HUP)")
    p.add_argument(
        "--poll", type=float, default=10.0, metavar="SECONDS", help="rotation check period (10)"
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    access_session.add_principal_args(p)
    common.add_standard(p, pin=True)
    p.set_defaults(func=cmd_exec)


def _ref(text: str, env: str | None) -> Ref:
    m = REF.fullmatch(text)
    if m:
        return Ref(m.group(1), m.group(2))
    if env is None:
        raise UsageError(f"{text[:60]!r} needs --env", "Or write custody://ENV/PATH.")
    return Ref(env, text)


def parse_secrets(items: list[str], env: str | None) -> dict[str, Ref]:
    """``NAME=PATH`` pairs.

    Raises:
        UsageError: a pair without ``=``, a bad or repeated variable name, no --env.
    """
    out: dict[str, Ref] = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not NAME.match(name) or not target:
            raise UsageError(
                f"Not NAME=PATH: {item[:60]!r}", "e.g. --secret DB_PASSWORD=payments/db"
            )
        if name in out or name.startswith("CUSTODY_"):
            raise UsageError(f"--secret {name} is repeated or reserved", "Use another name.")
        out[name] = _ref(target, env)
    return out


def render(text: str, values: dict[Ref, str]) -> str:
    """*text* with each ``custody://ENV/PATH`` replaced by its value."""
    return REF.sub(lambda m: values[Ref(m.group(1), m.group(2))], text)


def _private_dir() -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs; mkdtemp makes a fresh 0700 directory in it
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="custody-exec-", dir=base))


class _Reader:
    """Reads (authorised, audited) and watches the secrets for one ``custody exec``."""

    def __init__(self, dep: Any, ac: Any, args: argparse.Namespace, refs: set[Ref]) -> None:
        from custody.audit.log import AuditLog
        from custody_cli.secret_cmds import _vault

        self.dep, self.ac, self.refs = dep, ac, sorted(refs, key=lambda r: (r.env, r.path))
        self.vault = _vault(dep, args)
        self.who = access_session.acting(ac, args)
        self.mfa = access_session.mfa_code(args)
        self.log = AuditLog.for_home(common.home_of(args))

    def fetch(self) -> Fetched:
        out = Fetched()
        for ref in self.refs:
            self.ac.authorize(self.who, "read", ref.env, ref.path, mfa_code=self.mfa)
            r = self.vault.get(ref.env, ref.path)
            self.log.append(
                "secret get", f"{ref.env}:{ref.path}", self.who.name,
                details={"via": "exec", "version": r.version},
            )  # fmt: skip
            out.values[ref], out.versions[ref] = r.value, r.version
        return out

    def current(self) -> dict[Ref, int]:
        return {r: self.vault.show(r.env, r.path)["labels"]["current"] for r in self.refs}

    def close(self) -> None:
        self.log.close()


def _materialise(
    names: dict[str, Ref], templates: list[Path], got: Fetched, files: bool, d: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}
    env.pop("SOFTHSM2_CONF", None)
    for name, ref in names.items():
        if files:
            f = write_private(d / name, got.values[ref].encode("utf-8"))
            env[name] = str(f)
        else:
            env[name] = got.values[ref]
    for t in templates:
        write_private(d / t.name, render(t.read_text(encoding="utf-8"), got.values).encode())
    env["CUSTODY_EXEC_DIR"] = str(d)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def cmd_exec(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("No command to run", "custody exec --secret NAME=PATH -- CMD ...")
    names = parse_secrets(args.secret, args.env)
    templates = [Path(t) for t in args.template]
    refs = set(names.values())
    for t in templates:
        try:
            refs |= {Ref(m.group(1), m.group(2)) for m in REF.finditer(t.read_text("utf-8"))}
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"Cannot read the template {t}", "Check the path.") from exc
    if not refs:
        raise UsageError("No secrets to inject", "Give --secret NAME=PATH or a --template.")
    sig = getattr(signal, "SIG" + args.signal.upper().removeprefix("SIG"), None)
    if not isinstance(sig, signal.Signals):
        raise UsageError(f"Unknown signal {args.signal[:20]!r}", "e.g. HUP, USR1, TERM.")
    if args.poll <= 0:
        raise UsageError("--poll must be positive", "")
    d = _private_dir()
    old = signal.signal(signal.SIGTERM, _terminated)
    proc: subprocess.Popen[bytes] | None = None
    try:
        with common.open_home(args, pin=True) as dep, access_session.opened(dep, args) as ac:
            reader = _Reader(dep, ac, args, refs)
            try:
                got = reader.fetch()
                env = _materialise(names, templates, got, args.files, d)
                proc = subprocess.Popen(cmd, env=env)
                while True:
                    try:
                        return int(proc.wait(timeout=args.poll if args.on_rotate else None))
                    except subprocess.TimeoutExpired:
                        pass
                    if reader.current() == got.versions:
                        continue
                    got = reader.fetch()
                    env = _materialise(names, templates, got, args.files, d)
                    print(
                        "custody exec: a secret rotated; "
                        + ("restarting" if args.on_rotate == "restart" else f"sending {sig.name}"),
                        file=sys.stderr,
                    )
                    if args.on_rotate == "restart":
                        _stop(proc)
                        proc = subprocess.Popen(cmd, env=env)
                    else:
                        proc.send_signal(sig)
            finally:
                reader.close()
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(d, ignore_errors=True)
        signal.signal(signal.SIGTERM, old)
