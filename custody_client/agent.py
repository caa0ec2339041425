"""``custody agent``: keep rendered secret files fresh for a service on the same host.

Run as ``python -m custody_client.agent --config agent.toml`` (``custody agent`` hands over
to it, as ``custody serve`` hands over to the server). It talks to ``custody serve`` only
through :class:`custody_client.CustodyClient`, so it imports no other custody package.

Each round it reads the configured secrets (and the ``custody://ENV/PATH`` references of
its templates), writes each output file atomically (a 0600 temporary file in the target's
own directory, fsync, rename over the target, fsync the directory), runs the reload
command or sends the signal, and then acknowledges the versions it now serves
(``POST /api/v1/ack``), so the server can revoke ``previous`` before the overlap window
ends. Between rounds it polls the secrets' metadata (``current`` only, no value) every
``poll`` seconds and reads and rewrites only when a version changed.

Refusals, all before anything is written: a target that is a symlink or not a regular
file, a target directory that is a symlink, that others may write, or that belongs to
another user; a token file others may read. A value never reaches argv, a log line, an
exception message or a repr; the token comes from a 0600 file or ``$CUSTODY_TOKEN``.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import re
import resource
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from custody_client import (
    AuthenticationFailed,
    CustodyClient,
    CustodyClientError,
    Forbidden,
)

__all__ = ["Agent", "AgentConfig", "AgentConfigError", "AgentError", "UnsafeTarget", "main"]

REF = re.compile(r"custody://([a-z0-9][a-z0-9._-]*)/([a-z0-9._/-]+)")
MIN_POLL_S = 0.2
RELOAD_TIMEOUT_S = 60.0
EXIT_CONFIG = 3
EXIT_UNSAFE = 6
EXIT_DENIED = 7
EXIT_FAILED = 1


class AgentError(CustodyClientError):
    """The agent cannot go on; ``exit_code`` is its process's exit status."""

    exit_code = EXIT_FAILED


class AgentConfigError(AgentError):
    """A bad configuration (file, flags, token file): nothing was written."""

    exit_code = EXIT_CONFIG


class UnsafeTarget(AgentError):
    """An output path that would not be safe to write (symlink, others may write the dir)."""

    exit_code = EXIT_UNSAFE


@dataclass(frozen=True, slots=True)
class Ref:
    env: str
    path: str

    def __str__(self) -> str:
        return f"{self.env}:{self.path}"


@dataclass(frozen=True, slots=True)
class Output:
    """One file the agent keeps: a single secret's value, or a rendered template."""

    target: Path
    refs: tuple[Ref, ...]
    template: str | None = field(default=None, repr=False)

    def render(self, values: dict[Ref, str]) -> str:
        if self.template is None:
            return values[self.refs[0]]
        return REF.sub(lambda m: values[Ref(m.group(1), m.group(2))], self.template)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    url: str
    outputs: tuple[Output, ...]
    token: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: tuple[str, str] | None = None
    poll: float = 30.0
    reload_command: tuple[str, ...] = ()
    signal: int | None = None
    pid_file: Path | None = None
    pid: int | None = None

    @property
    def refs(self) -> tuple[Ref, ...]:
        seen: dict[Ref, None] = {}
        for o in self.outputs:
            for r in o.refs:
                seen[r] = None
        return tuple(seen)


# -- configuration ----------------------------------------------------------------------
def _ref(text: str) -> Ref:
    m = REF.fullmatch(text.strip())
    if not m:
        raise AgentConfigError(
            f"Not a secret reference: {text[:60]!r}", "Write custody://ENV/PATH."
        )
    return Ref(m.group(1), m.group(2))


def _pair(item: str, what: str) -> tuple[str, str]:
    left, sep, right = item.rpartition("=")
    if not sep or not left or not right:
        raise AgentConfigError(f"Not {what}=FILE: {item[:60]!r}", f"e.g. {what}=/run/app/x")
    return left, right


def read_token_file(path: str | Path) -> str:
    """The token in *path*, which must be a regular file of ours that only we may read.

    Raises:
        AgentConfigError: missing, a symlink, readable by others, not ours, or empty.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise AgentConfigError(
            f"Cannot open the token file {p} ({exc.strerror})",
            "Give a regular 0600 file (not a symlink).",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AgentConfigError(f"The token file {p} is not a regular file")
        if st.st_mode & 0o077 or st.st_uid != os.geteuid():
            raise AgentConfigError(
                f"The token file {p} is readable by others or not ours",
                f"chmod 600 {p} (and own it).",
            )
        token = os.read(fd, 4096).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if not token:
        raise AgentConfigError(f"The token file {p} is empty")
    return token


def _signal(name: object) -> int:
    if isinstance(name, int):
        valid = {s.value for s in signal.Signals}
        if name in valid:
            return name
    elif isinstance(name, str):
        n = name.upper()
        n = n if n.startswith("SIG") else "SIG" + n
        if n in signal.Signals.__members__:
            return int(signal.Signals[n])
    raise AgentConfigError(f"Unknown signal {str(name)[:20]!r}", "e.g. HUP, USR1, TERM.")


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise AgentConfigError(f"Cannot read {path} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"{path} is not valid TOML ({exc})") from None


_KEYS = {
    "url", "ca", "cert", "key", "token_file", "poll", "secret", "template", "reload",
}  # fmt: skip
_RELOAD_KEYS = {"command", "signal", "pid_file", "pid"}


def _str(d: dict[str, Any], key: str, where: str) -> str | None:
    v = d.get(key)
    if v is not None and not (isinstance(v, str) and v):
        raise AgentConfigError(f"{where}: {key} must be a non-empty string")
    return v


def load_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> AgentConfig:
    """The configuration from ``--config`` and the flags (flags add to or override it).

    Raises:
        AgentConfigError: anything missing, unknown or malformed.
    """
    env = os.environ if environ is None else environ
    d: dict[str, Any] = {}
    base = Path.cwd()
    if args.config:
        cpath = Path(args.config)
        d = _load_toml(cpath)
        base = cpath.resolve().parent
        unknown = set(d) - _KEYS
        if unknown:
            raise AgentConfigError(
                f"{cpath}: unknown keys {sorted(unknown)}", f"Known: {sorted(_KEYS)}."
            )

    def rel(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    url = args.url or _str(d, "url", "config")
    if not url or not url.startswith("https://"):
        raise AgentConfigError("Give the server's https:// URL", "--url or url = in the config.")
    ca = args.ca or _str(d, "ca", "config")
    ca = str(rel(ca)) if ca and not args.ca else ca
    crt = args.cert or _str(d, "cert", "config")
    key = args.key or _str(d, "key", "config")
    if bool(crt) != bool(key):
        raise AgentConfigError("Give both cert and key for mutual TLS")
    cert = None
    if crt and key:
        cert = (str(Path(crt)) if args.cert else str(rel(crt)),
                str(Path(key)) if args.key else str(rel(key)))  # fmt: skip
    token_file = args.token_file or _str(d, "token_file", "config")
    token = None
    if token_file:
        token = read_token_file(token_file if args.token_file else rel(token_file))
    elif env.get("CUSTODY_TOKEN"):
        token = env["CUSTODY_TOKEN"].strip()
    if token is None and cert is None:
        raise AgentConfigError(
            "No credential", "Give --token-file (0600), $CUSTODY_TOKEN, or --cert and --key."
        )
    poll = args.poll if args.poll is not None else d.get("poll", 30.0)
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or poll < MIN_POLL_S:
        raise AgentConfigError(f"poll must be a number of seconds >= {MIN_POLL_S}")

    outputs: list[Output] = []
    secrets = d.get("secret", [])
    templates = d.get("template", [])
    if not isinstance(secrets, list) or not isinstance(templates, list):
        raise AgentConfigError("secret and template are arrays of tables ([[secret]])")
    for i, s in enumerate(secrets):
        where = f"secret #{i + 1}"
        if not isinstance(s, dict) or set(s) - {"ref", "env", "path", "out"}:
            raise AgentConfigError(f"{where}: give ref (or env and path) and out")
        if s.get("ref"):
            ref = _ref(str(s["ref"]))
        else:
            ref = _ref(f"custody://{_str(s, 'env', where)}/{_str(s, 'path', where)}")
        out = _str(s, "out", where)
        if not out:
            raise AgentConfigError(f"{where}: out is missing")
        outputs.append(Output(rel(out), (ref,)))
    for item in args.secret:
        r, out = _pair(item, "custody://ENV/PATH")
        outputs.append(Output(Path(out).expanduser().absolute(), (_ref(r),)))
    pairs: list[tuple[Path, Path]] = []
    for i, t in enumerate(templates):
        where = f"template #{i + 1}"
        if not isinstance(t, dict) or set(t) - {"source", "out"}:
            raise AgentConfigError(f"{where}: give source and out")
        src, out = _str(t, "source", where), _str(t, "out", where)
        if not src or not out:
            raise AgentConfigError(f"{where}: give source and out")
        pairs.append((rel(src), rel(out)))
    for item in args.template:
        src, out = _pair(item, "TEMPLATE")
        pairs.append((Path(src).expanduser().absolute(), Path(out).expanduser().absolute()))
    for src_p, out_p in pairs:
        try:
            text = src_p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AgentConfigError(f"Cannot read the template {src_p} ({exc})") from None
        refs = tuple(dict.fromkeys(Ref(m.group(1), m.group(2)) for m in REF.finditer(text)))
        if not refs:
            raise AgentConfigError(
                f"The template {src_p} has no custody://ENV/PATH reference",
                "Without one there is nothing to keep fresh.",
            )
        outputs.append(Output(out_p, refs, template=text))
    if not outputs:
        raise AgentConfigError(
            "Nothing to render", "Give --secret REF=FILE, --template SRC=FILE or a config."
        )
    targets = [o.target for o in outputs]
    if len(set(targets)) != len(targets):
        raise AgentConfigError("Two outputs write the same file")

    reload = d.get("reload", {})
    if not isinstance(reload, dict) or set(reload) - _RELOAD_KEYS:
        raise AgentConfigError(f"[reload] takes {sorted(_RELOAD_KEYS)}")
    command: Any = reload.get("command", ())
    if args.reload_command:
        command = args.reload_command
    if isinstance(command, str):
        try:
            command = tuple(shlex.split(command))
        except ValueError as exc:
            raise AgentConfigError(f"Cannot split the reload command ({exc})") from None
    if not isinstance(command, (list, tuple)) or not all(isinstance(c, str) and c for c in command):
        raise AgentConfigError(
            "reload command must be an argument list",
            'e.g. command = ["systemctl", "reload", "app"]',
        )
    sig_name = args.signal or reload.get("signal")
    sig = _signal(sig_name) if sig_name is not None else None
    pid_file_s = args.pid_file or reload.get("pid_file")
    pid = args.pid if args.pid is not None else reload.get("pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 2):
        raise AgentConfigError("pid must be a process id (> 1)")
    if sig is not None and pid is None and not pid_file_s:
        raise AgentConfigError("A signal needs pid or pid_file", "--pid N or --pid-file FILE.")
    if sig is None and (pid is not None or pid_file_s):
        raise AgentConfigError("pid or pid_file without a signal", "Add --signal HUP.")
    pid_file = None
    if pid_file_s:
        pid_file = Path(pid_file_s) if args.pid_file else rel(str(pid_file_s))
    return AgentConfig(
        url=url, outputs=tuple(outputs), token=token, ca=ca, cert=cert, poll=float(poll),
        reload_command=tuple(command), signal=sig, pid_file=pid_file, pid=pid,
    )  # fmt: skip


# -- atomic, symlink-proof writes -------------------------------------------------------
def check_target(target: Path) -> None:
    """Refuse an output path that someone else could redirect or replace.

    Raises:
        UnsafeTarget: the directory is missing, a symlink, not ours (nor root's), or others
            may write it; the target is a symlink or not a regular file.
    """
    d = target.parent
    try:
        dst = os.lstat(d)
    except OSError as exc:
        raise UnsafeTarget(f"The directory {d} is missing ({exc.strerror})") from None
    if stat.S_ISLNK(dst.st_mode):
        raise UnsafeTarget(f"The directory {d} is a symlink", "Give its real path.")
    if not stat.S_ISDIR(dst.st_mode):
        raise UnsafeTarget(f"{d} is not a directory")
    if dst.st_mode & 0o022:
        raise UnsafeTarget(
            f"Others may write the directory {d}",
            f"chmod go-w {d}, or render into a directory only the service's user writes.",
        )
    if dst.st_uid not in (os.geteuid(), 0):
        raise UnsafeTarget(f"The directory {d} belongs to another user")
    try:
        tst = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(tst.st_mode):
        raise UnsafeTarget(
            f"The target {target} is a symlink", "Remove it; the agent never follows one."
        )
    if not stat.S_ISREG(tst.st_mode):
        raise UnsafeTarget(f"The target {target} is not a regular file")
    if tst.st_uid != os.geteuid():
        raise UnsafeTarget(f"The target {target} belongs to another user")


def holds(target: Path, data: str) -> bool:
    """Whether *target* is already a 0600 regular file (not a symlink) holding *data*."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o777 != 0o600:
            return False
        want = data.encode("utf-8")
        if st.st_size != len(want):
            return False
        got = b""
        while len(got) < len(want) and (chunk := os.read(fd, len(want) - len(got))):
            got += chunk
        return hmac.compare_digest(got, want)
    finally:
        os.close(fd)


def write_atomic(target: Path, data: str) -> None:
    """Replace *target* with *data* so a reader sees the old file or the new one, whole.

    A 0600 temporary file is created (``O_EXCL | O_NOFOLLOW``) in the target's directory,
    written, fsynced and renamed over the target (a rename replaces a symlink itself, it
    never writes through one); then the directory is fsynced.
    """
    check_target(target)
    d = target.parent
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    tmp = f".{target.name}.custody-agent.{os.getpid()}.{time.monotonic_ns()}"
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dfd,
        )
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):  # planted since the check
            raise UnsafeTarget(f"The target {target} is not a regular file any more")
        os.rename(tmp, target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = ""
        os.fsync(dfd)
    finally:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
        os.close(dfd)


def read_pid_file(path: Path) -> int:
    """The process id in *path*, a regular file that only its owner (us or root) may write:
    a pid file others could write would let them choose whom the agent signals.

    Raises:
        UnsafeTarget: missing, a symlink, writable by others, someone else's, not a pid.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafeTarget(f"Cannot open the pid file {path} ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022:
            raise UnsafeTarget(f"The pid file {path} is not a file only its owner may write")
        if st.st_uid not in (os.geteuid(), 0):
            raise UnsafeTarget(f"The pid file {path} belongs to another user")
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if not text.isdigit() or int(text) < 2:
        raise UnsafeTarget(f"The pid file {path} holds no process id")
    return int(text)


# -- the agent --------------------------------------------------------------------------
def _log(msg: str, **fields: Any) -> None:
    line = json.dumps({"time": round(time.time(), 3), "msg": msg, **fields}, sort_keys=True)
    print(f"custody-agent: {line}", file=sys.stderr, flush=True)


class Agent:
    """Render, reload, acknowledge; then poll for new versions.

    Args:
        config: what to render and how to reach the server.
        client: a connected client (default: one made from *config*).
        log: where structured lines go (never a value).
    """

    def __init__(
        self,
        config: AgentConfig,
        client: CustodyClient | None = None,
        *,
        log: Callable[..., None] = _log,
    ) -> None:
        self.config = config
        self.client = client or CustodyClient(
            config.url, token=config.token, ca=config.ca, cert=config.cert
        )
        self.log = log
        self.served: dict[Ref, int] = {}  # the versions now in the files
        self.acked: dict[Ref, int] = {}
        self._metadata_ok = True
        self._reload_due = False
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"Agent({self.config.url!r}, outputs={len(self.config.outputs)})"

    def close(self) -> None:
        self.client.close()

    def stop(self) -> None:
        self._stop.set()

    # one round ---------------------------------------------------------------------
    def current_versions(self) -> dict[Ref, int]:
        """Each secret's ``current`` version from its metadata (no value is read); a
        principal without the metadata action reads the value instead."""
        out: dict[Ref, int] = {}
        for r in self.config.refs:
            if self._metadata_ok:
                try:
                    labels = self.client.metadata(r.env, r.path)["labels"]
                except Forbidden:
                    self._metadata_ok = False
                else:
                    out[r] = int(labels["current"])
                    served = self.served.get(r)
                    if served is not None and served not in (out[r], labels["previous"]):
                        # the overlap window ended before this poll saw the rotation
                        hint = "poll more often than the rotations' overlap window"
                        self.log("revoked before the switch", secret=str(r), version=served,
                                 hint=hint)  # fmt: skip
                    continue
            out[r] = self.client.get(r.env, r.path).version
        return out

    def render(self, *, force: bool = False) -> list[str]:
        """Read, write what changed, reload, acknowledge. The files written."""
        if not force and self.served:
            now = self.current_versions()
            if all(self.served.get(r) == v for r, v in now.items()):
                if self._reload_due and not self._reload():
                    return []  # the service still has not taken it: no acknowledgement
                self._reload_due = False
                self._ack_pending()
                return []
        for o in self.config.outputs:  # refuse before reading any value
            check_target(o.target)
        got = {r: self.client.get(r.env, r.path) for r in self.config.refs}
        versions = {r: s.version for r, s in got.items()}
        values = {r: s.value for r, s in got.items()}
        written: list[str] = []
        for o in self.config.outputs:
            if not force and all(self.served.get(r) == versions[r] for r in o.refs):
                continue
            data = o.render(values)
            if force and holds(o.target, data):  # e.g. --once from cron: nothing changed
                continue
            write_atomic(o.target, data)
            del data
            written.append(str(o.target))
            self.log(
                "wrote", file=str(o.target),
                versions={str(r): versions[r] for r in o.refs},
            )  # fmt: skip
        del values
        self.served = versions
        if written and not self._reload():
            self._reload_due = True  # tried again at the next poll
            return written  # not acknowledged: the service may still use the old value
        self._reload_due = False
        self._ack_pending()
        return written

    def _ack_pending(self) -> None:
        for r, v in self.served.items():
            if self.acked.get(r) == v:
                continue
            try:
                self.client.ack(r.env, r.path, v)
            except AuthenticationFailed:
                raise
            except CustodyClientError as exc:  # e.g. a version no longer current nor previous
                self.log("ack failed", secret=str(r), version=v, error=exc.title)
                continue
            self.acked[r] = v
            self.log("acknowledged", secret=str(r), version=v)

    def _reload(self) -> bool:
        c = self.config
        ok = True
        if c.reload_command:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}
            try:
                rc = subprocess.run(  # an argument list from the config, no shell
                    list(c.reload_command), env=env, timeout=RELOAD_TIMEOUT_S,
                    stdin=subprocess.DEVNULL, check=False,
                ).returncode  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.log("reload failed", error=type(exc).__name__)
                return False
            self.log("reloaded", exit=rc)
            ok = rc == 0
        if c.signal is not None:
            pid = c.pid
            if c.pid_file is not None:
                try:
                    pid = read_pid_file(c.pid_file)
                except UnsafeTarget as exc:
                    self.log("signal failed", error=exc.title)
                    return False
            if pid is None or pid < 2:
                self.log("signal failed", error="no pid")
                return False
            try:
                os.kill(pid, c.signal)
            except OSError as exc:
                self.log("signal failed", pid=pid, error=exc.strerror or type(exc).__name__)
                return False
            self.log("signalled", pid=pid, signal=signal.Signals(c.signal).name)
        return ok

    # the loop ----------------------------------------------------------------------
    def run(self, *, once: bool = False) -> int:
        """Render once (``once``), or render and keep polling until :meth:`stop`. The first
        round's errors end it (the caller exits non-zero); later ones are logged and the next
        poll tries again."""
        if not self.served:
            self.render(force=True)
        if once:
            return 0
        while not self._stop.wait(self.config.poll):
            try:
                self.render()
            except UnsafeTarget as exc:
                self.log("refused", error=exc.title)
            except (AuthenticationFailed, Forbidden) as exc:
                self.log("denied", error=exc.title)
            except CustodyClientError as exc:  # unreachable, overloaded: try again later
                self.log("poll failed", error=exc.title)
        return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="custody agent",
        allow_abbrev=False,
        description="Keep rendered secret files fresh for a service on this host: read "
        "the secrets from custody serve, write each file atomically (0600), reload or "
        "signal the service, acknowledge the versions it now serves, and poll for new ones. "
        "The token comes from --token-file (0600) or $CUSTODY_TOKEN, never argv.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The agent's options (``custody agent`` defines the same ones)."""
    p.add_argument("--config", metavar="TOML", help="agent.toml (see docs/agent.md)")
    p.add_argument("--url", metavar="URL", help="https://host:port of custody serve")
    p.add_argument("--ca", metavar="PEM", help="CA that signed the server's certificate")
    p.add_argument("--token-file", metavar="FILE", help="the service's token (0600)")
    p.add_argument("--cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--key", metavar="PEM", help="the client certificate's key")
    p.add_argument(
        "--secret", action="append", default=[], metavar="custody://ENV/PATH=FILE",
        help="write the secret's value to FILE (repeat)",
    )  # fmt: skip
    p.add_argument(
        "--template", action="append", default=[], metavar="SRC=FILE",
        help="render SRC's custody://ENV/PATH references into FILE (repeat)",
    )  # fmt: skip
    p.add_argument("--poll", type=float, metavar="SECONDS", help="check period (30)")
    p.add_argument(
        "--reload-command",
        metavar="CMD",
        help="run CMD (split like a shell would, but no shell) after a file changed",
    )
    p.add_argument("--signal", metavar="SIG", help="send SIG (e.g. HUP) after a change")
    p.add_argument("--pid", type=int, metavar="PID", help="the process to signal")
    p.add_argument("--pid-file", metavar="FILE", help="file holding the process id to signal")
    p.add_argument("--once", action="store_true", help="render once and exit (cron, tests)")
    p.add_argument("--json", action="store_true", help="with --once: print a JSON summary")


def _error(exc: CustodyClientError, code: int) -> int:
    print(f"error: {exc.title}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
    except AgentConfigError as exc:
        return _error(exc, exc.exit_code)
    agent = Agent(config)

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        agent.run(once=args.once)
    except AgentError as exc:
        return _error(exc, exc.exit_code)
    except (AuthenticationFailed, Forbidden) as exc:
        return _error(exc, EXIT_DENIED)
    except CustodyClientError as exc:
        return _error(exc, EXIT_FAILED)
    finally:
        agent.close()
    if args.once and args.json:
        out = {
            "files": [str(o.target) for o in config.outputs],
            "versions": {str(r): v for r, v in agent.served.items()},
            "acknowledged": {str(r): v for r, v in agent.acked.items()},
        }
        print(json.dumps(out, sort_keys=True))
    elif args.once:
        for o in config.outputs:
            vs = ", ".join(f"{r} v{agent.served[r]}" for r in o.refs)
            print(f"{o.target}: {vs}")
    return 0


def harden() -> None:
    """The agent's process: files it creates are private, and no core dump (with values
    in it) is written."""
    os.umask(0o077)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


if __name__ == "__main__":
    harden()
    sys.exit(main())
